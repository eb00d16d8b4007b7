package replay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func randomID(rng *rand.Rand) ID {
	var id ID
	binary.BigEndian.PutUint64(id.Gen[:8], rng.Uint64())
	binary.BigEndian.PutUint64(id.Gen[8:], rng.Uint64())
	id.Seq = rng.Uint64()
	// Bias towards edge values and shared prefixes.
	switch rng.IntN(6) {
	case 0:
		id.Seq = rng.Uint64N(1000)
	case 1:
		id.Seq = ^uint64(0) - rng.Uint64N(3)
	case 2:
		clear(id.Gen[rng.IntN(16):])
	case 3:
		for i := rng.IntN(16); i < 16; i++ {
			id.Gen[i] = 0xFF
		}
	}
	return id
}

func compareID(a, b ID) int {
	if c := bytes.Compare(a.Gen[:], b.Gen[:]); c != 0 {
		return c
	}
	switch {
	case a.Seq < b.Seq:
		return -1
	case a.Seq > b.Seq:
		return 1
	}
	return 0
}

func TestIDRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ids := []ID{{}, {Seq: 1}, {Seq: ^uint64(0)}}
	var top ID
	for i := range top.Gen {
		top.Gen[i] = 0xFF
	}
	top.Seq = ^uint64(0)
	ids = append(ids, top)
	for range 10000 {
		ids = append(ids, randomID(rng))
	}
	for _, id := range ids {
		text := id.String()
		if len(text) != TextLen || text[26] != '-' {
			t.Fatalf("%v: text %q", id, text)
		}
		got, err := ParseID([]byte(text))
		if err != nil || got != id {
			t.Fatalf("ParseID(%q) = %v, %v; want %v", text, got, err, id)
		}
		if app := id.AppendText([]byte("x:")); string(app) != "x:"+text {
			t.Fatalf("AppendText = %q", app)
		}
	}
	if s := top.String(); s != "7ZZZZZZZZZZZZZZZZZZZZZZZZZ-FZZZZZZZZZZZZ" {
		t.Fatalf("largest id = %q", s)
	}
	if s := (ID{Seq: 1}).String(); s != "00000000000000000000000000-0000000000001" {
		t.Fatalf("smallest id = %q", s)
	}
}

func TestIDTextOrderIsNumericOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 9))
	for range 100000 {
		a, b := randomID(rng), randomID(rng)
		if rng.IntN(3) == 0 {
			b.Gen = a.Gen // same generation: order by seq
		}
		want := compareID(a, b)
		if got := strings.Compare(a.String(), b.String()); got != want {
			t.Fatalf("%v vs %v: text compare %d, numeric %d (%s, %s)", a, b, got, want, a, b)
		}
	}
}

// refDecode is a slow, obviously correct decoder of one base32 part.
func refDecode(s string) (*big.Int, bool) {
	v := new(big.Int)
	for i := range len(s) {
		d := strings.IndexByte(alphabet, s[i])
		if d < 0 {
			return nil, false
		}
		v.Lsh(v, 5).Or(v, big.NewInt(int64(d)))
	}
	return v, true
}

// refParse is the differential model of ParseID.
func refParse(b []byte) (ID, bool) {
	s := string(b)
	if len(s) != TextLen || s[26] != '-' {
		return ID{}, false
	}
	g, ok1 := refDecode(s[:26])
	q, ok2 := refDecode(s[27:])
	if !ok1 || !ok2 || g.BitLen() > 128 || q.BitLen() > 64 {
		return ID{}, false
	}
	var id ID
	g.FillBytes(id.Gen[:])
	id.Seq = q.Uint64()
	return id, true
}

func TestParseIDRejects(t *testing.T) {
	good := (ID{Gen: Gen{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, Seq: 42}).String()
	if _, err := ParseID([]byte(good)); err != nil {
		t.Fatalf("good id %q: %v", good, err)
	}
	set := func(i int, c byte) string { b := []byte(good); b[i] = c; return string(b) }
	cases := map[string]string{
		"empty":              "",
		"one short":          good[:TextLen-1],
		"one long":           good + "0",
		"gen only":           good[:26],
		"8 KiB":              strings.Repeat("0", 8<<10),
		"8 KiB id prefix":    good + strings.Repeat("Z", 8<<10-TextLen),
		"lowercase":          strings.ToLower(good),
		"one lowercase":      set(5, 'a'),
		"lowercase seq":      set(39, 'z'),
		"I":                  set(3, 'I'),
		"L":                  set(3, 'L'),
		"O":                  set(3, 'O'),
		"U":                  set(30, 'U'),
		"space":              set(10, ' '),
		"NUL":                set(10, 0),
		"high byte":          set(10, 0xC3),
		"second dash":        set(30, '-'),
		"no dash":            set(26, '0'),
		"dash moved":         good[:25] + "-" + good[25:26] + good[27:],
		"underscore":         set(26, '_'),
		"gen out of range":   set(0, '8'),
		"gen Z first":        set(0, 'Z'),
		"seq out of range":   set(27, 'G'),
		"seq Z first":        set(27, 'Z'),
		"plus sign":          set(27, '+'),
		"trailing newline":   good[:TextLen-1] + "\n",
		"leading space":      " " + good[1:],
		"all dashes":         strings.Repeat("-", TextLen),
		"uuid":               "0191c7b2-8b5f-7c2e-9a3d-4e5f6a7b8c9d0123",
		"dash in seq":        set(27, '-'),
		"gen max, seq above": "7ZZZZZZZZZZZZZZZZZZZZZZZZZ-GZZZZZZZZZZZZ",
	}
	for name, in := range cases {
		if len(in) == TextLen {
			if _, ok := refParse([]byte(in)); ok {
				t.Errorf("%s: test case %q is a valid id", name, in)
				continue
			}
		}
		id, err := ParseID([]byte(in))
		if !errors.Is(err, ErrMalformedID) || id != (ID{}) {
			t.Errorf("%s: ParseID(%.60q) = %v, %v; want ErrMalformedID", name, in, id, err)
		}
	}
	// The bounds themselves parse.
	for _, in := range []string{
		"7ZZZZZZZZZZZZZZZZZZZZZZZZZ-FZZZZZZZZZZZZ",
		"00000000000000000000000000-0000000000000",
	} {
		if _, err := ParseID([]byte(in)); err != nil {
			t.Errorf("ParseID(%q): %v", in, err)
		}
	}
}

func TestParseIDMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const chars = alphabet + "ILOUilou-_ az\x00\xff"
	for range 50000 {
		b := []byte(randomID(rng).String())
		// Mutate a few bytes, sometimes into characters outside the alphabet.
		for range rng.IntN(3) {
			b[rng.IntN(len(b))] = chars[rng.IntN(len(chars))]
		}
		want, wantOK := refParse(b)
		got, err := ParseID(b)
		if (err == nil) != wantOK || got != want {
			t.Fatalf("ParseID(%q) = %v, %v; model says %v, %v", b, got, err, want, wantOK)
		}
	}
}

func FuzzParseID(f *testing.F) {
	f.Add([]byte("01JDQ8ZK3W6Y2H5V9R8T4M1N0P-0000000000001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseID(b)
		want, ok := refParse(b)
		if (err == nil) != ok || id != want {
			t.Fatalf("ParseID(%q) = %v, %v; model %v, %v", b, id, err, want, ok)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedID) || id != (ID{}) {
				t.Fatalf("ParseID(%q) failed with %v, %v", b, id, err)
			}
			return
		}
		if out := id.AppendText(nil); !bytes.Equal(out, b) {
			t.Fatalf("ParseID(%q) then AppendText = %q", b, out)
		}
	})
}

func TestGenTime(t *testing.T) {
	g := NewGenerator()
	before := time.Now().Truncate(time.Millisecond)
	gen := g.Next()
	after := time.Now()
	if got := gen.Time(); got.Before(before) || got.After(after) {
		t.Fatalf("Time() = %v, not within [%v, %v]", got, before, after)
	}
	fixed := time.UnixMilli(1733250000123)
	g = &Generator{now: func() time.Time { return fixed.Add(456 * time.Microsecond) }, rand: zeroReader{}}
	if got := g.Next().Time(); !got.Equal(fixed) {
		t.Fatalf("Time() = %v, want %v", got, fixed)
	}
	if gen.IsZero() || !(Gen{}).IsZero() {
		t.Fatal("IsZero")
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

type onesReader struct{}

func (onesReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = 0xFF
	}
	return len(b), nil
}

func checkIncreasing(t *testing.T, gens []Gen) {
	t.Helper()
	for i := 1; i < len(gens); i++ {
		if bytes.Compare(gens[i][:], gens[i-1][:]) <= 0 {
			t.Fatalf("gen %d (%x) not after gen %d (%x)", i, gens[i], i-1, gens[i-1])
		}
		a := ID{Gen: gens[i-1], Seq: 1}.String()
		b := ID{Gen: gens[i], Seq: 1}.String()
		if a >= b {
			t.Fatalf("text of gen %d not after gen %d: %s, %s", i, i-1, b, a)
		}
	}
}

func TestGeneratorSameMillisecond(t *testing.T) {
	ms := time.UnixMilli(1733250000000)
	clock := ms
	for _, tc := range []struct {
		name string
		g    *Generator
	}{
		{"random", &Generator{now: func() time.Time { return clock }, rand: NewGenerator().rand}},
		// Worst cases for "increment": fresh random bits that never sort
		// after the previous gen, and a random part about to overflow.
		{"zero random", &Generator{now: func() time.Time { return clock }, rand: zeroReader{}}},
		{"ones random", &Generator{now: func() time.Time { return clock }, rand: onesReader{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock = ms
			gens := make([]Gen, 0, 20001)
			for range 10000 {
				gens = append(gens, tc.g.Next())
			}
			clock = ms.Add(-time.Hour) // the clock steps back
			for range 10000 {
				gens = append(gens, tc.g.Next())
			}
			clock = ms.Add(time.Hour)
			gens = append(gens, tc.g.Next())
			checkIncreasing(t, gens)
			if got := gens[len(gens)-1].Time(); !got.Equal(clock) {
				t.Fatalf("after the clock caught up: Time() = %v, want %v", got, clock)
			}
			// Increments stay in the random part except for a carry: 20000
			// steps of at most 2^64 add less than 2^80, so at most one carry,
			// moving the stored time at most 1 ms ahead.
			if tc.name == "random" {
				for i, g := range gens[:20000] {
					if d := g.Time().Sub(ms); d < 0 || d > time.Millisecond {
						t.Fatalf("gen %d: Time() = %v, want %v (+1 ms at most)", i, g.Time(), ms)
					}
				}
			}
		})
	}
}

func TestGeneratorConcurrent(t *testing.T) {
	g := NewGenerator()
	const workers, each = 8, 5000
	results := make([][]Gen, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			gens := make([]Gen, each)
			for i := range gens {
				gens[i] = g.Next()
			}
			results[w] = gens
		})
	}
	wg.Wait()
	var all []Gen
	for _, gens := range results {
		checkIncreasing(t, gens) // each caller sees them increase
		all = append(all, gens...)
	}
	slices.SortFunc(all, func(a, b Gen) int { return bytes.Compare(a[:], b[:]) })
	checkIncreasing(t, all) // and no two are equal
}

func TestGeneratorRandomness(t *testing.T) {
	// Two generations of the same millisecond differ in many bits: the
	// increment is not +1.
	clock := time.UnixMilli(1733250000000)
	g := &Generator{now: func() time.Time { return clock }, rand: NewGenerator().rand}
	a := g.Next()
	b := g.Next()
	var diff int
	for i := range a {
		x := a[i] ^ b[i]
		for ; x != 0; x &= x - 1 {
			diff++
		}
	}
	if diff < 8 {
		t.Fatalf("consecutive gens %x and %x differ in %d bits", a, b, diff)
	}
}

// TestObserveIgnoresFarFuture: a generation from far ahead of the clock (a
// forged Last-Event-ID) is not observed, so later generations do not jump
// to the end of the time range (where adding to them would wrap).
func TestObserveIgnoresFarFuture(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	g := NewGeneratorClock(func() time.Time { return now })
	before := g.Next()
	forged, err := ParseID([]byte("7ZZZZZZZZZZZZZZZZZZZZZZZZZ-0000000000001"))
	if err != nil {
		t.Fatal(err)
	}
	if g.Observe(forged.Gen) {
		t.Fatal("a generation from the year 10889 was observed")
	}
	near := NewGeneratorClock(func() time.Time { return now.Add(time.Hour) }).Next()
	if !g.Observe(near) {
		t.Fatal("a generation an hour ahead (clock skew) was not observed")
	}
	next := g.Next()
	if !(ID{Gen: next}.String() > ID{Gen: near}.String()) || !(ID{Gen: next}.String() > ID{Gen: before}.String()) {
		t.Fatalf("after observing %v: next %v (before %v)", near, next, before)
	}
}
