package replay

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// newestCap is the arena a ring shrinks to when it keeps only its newest
// frame under a spent budget: the soft bound's slack per ring.
func (r *Ring) newestCap() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.n == 0 {
		return 0
	}
	return int64(roundArena(r.tail - r.starts[r.newest%uint64(len(r.starts))]))
}

func TestBudgetSharedByTwoRings(t *testing.T) {
	const limit = 20000
	budget := NewBudget(limit)
	rings := []*Ring{NewRing(1000, budget), NewRing(1000, budget)}
	next := []uint64{1, 1}
	rng := rand.New(rand.NewPCG(1, 2))
	evicted := false
	for i := range 20000 {
		k := rng.IntN(2)
		if i > 10000 {
			k = 0 // then starve ring 1 of appends: it must not be forced out
		}
		size := 1 + rng.IntN(1500)
		if rng.IntN(50) == 0 {
			size = 6000 + rng.IntN(20000) // now and then one bigger than the whole budget
		}
		r := rings[k]
		if err := r.Append(next[k], bytes.Repeat([]byte{byte(k)}, size)); err != nil {
			t.Fatal(err)
		}
		next[k]++

		var sum int64
		for _, r := range rings {
			_, b := r.Stats()
			sum += b
		}
		used := budget.Used()
		if used != sum {
			t.Fatalf("step %d: Used = %d, rings hold %d", i, used, sum)
		}
		// Over the bound only by the one newest frame each ring must keep.
		if slack := rings[0].newestCap() + rings[1].newestCap(); used > limit+slack {
			n0, b0 := rings[0].Stats()
			n1, b1 := rings[1].Stats()
			t.Fatalf("step %d: Used = %d > Max %d + newest frames %d (ring %d appended %d bytes; ring 0: %d frames %d bytes, ring 1: %d frames %d bytes)", i, used, limit, slack, k, size, n0, b0, n1, b1)
		}
		// The ring that appended stopped evicting only at the bound, at one
		// frame, or where dropping frames frees nothing (its arena is as
		// small as the one for its newest frame).
		if frames, held := r.Stats(); used > limit && frames != 1 && held > r.newestCap() {
			t.Fatalf("step %d: Used = %d over %d with the appending ring at %d frames in %d bytes", i, used, limit, frames, held)
		}
		if frames, _ := r.Stats(); uint64(frames) < next[k]-1 {
			evicted = true
		}
		// Every frame the appending ring still reports is readable and intact.
		oldest, newest := r.Bounds()
		got, last, err := r.Read(newest-1, nil, 1<<30)
		if err != nil || last != newest || len(got) != size || got[0] != byte(k) {
			t.Fatalf("step %d: newest frame unreadable: %d bytes, %d, %v", i, len(got), last, err)
		}
		if _, _, err := r.Read(oldest-1, nil, 1<<30); err != nil {
			t.Fatalf("step %d: Read(oldest-1): %v", i, err)
		}
	}
	if !evicted {
		t.Fatal("budget never evicted")
	}
	_, held1 := rings[1].Stats()
	rings[0].Close()
	if budget.Used() != held1 {
		t.Fatalf("after closing ring 0: Used = %d, ring 1 holds %d", budget.Used(), held1)
	}
	rings[1].Close()
	if budget.Used() != 0 {
		t.Fatalf("after closing both: Used = %d", budget.Used())
	}
}

// Under a spent budget a ring does not grow: it drops its oldest frames and
// reuses their bytes, without allocating; a frame bigger than the arena
// still fits (the bound is soft by one frame per ring).
func TestBudgetSpentRotatesInPlace(t *testing.T) {
	budget := NewBudget(4096)
	r := NewRing(1000, budget)
	frame := make([]byte, 100)
	seq := uint64(0)
	for range 50 {
		seq++
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
	}
	frames, held := r.Stats()
	if held > 4096 || frames < 20 || budget.Used() != held {
		t.Fatalf("frames %d, arena %d, budget used %d under a 4096-byte budget", frames, held, budget.Used())
	}
	arena := &r.data[0]
	for range 1000 {
		seq++
		frame[0] = byte(seq)
		if err := r.Append(seq, frame[:90+seq%10]); err != nil {
			t.Fatal(err)
		}
	}
	if &r.data[0] != arena {
		t.Fatal("the arena was replaced under a spent budget")
	}
	if n, now := r.Stats(); now != held || n < 20 {
		t.Fatalf("arena %d → %d bytes, %d frames", held, now, n)
	}
	got, last, err := r.Read(seq-1, nil, 1<<20)
	if err != nil || last != seq || len(got) != int(90+seq%10) || got[0] != byte(seq) {
		t.Fatalf("Read(newest-1) = %d bytes, %d, %v", len(got), last, err)
	}
	big := bytes.Repeat([]byte{'b'}, 10000)
	if err := r.Append(seq+1, big); err != nil {
		t.Fatal(err)
	}
	got, _, err = r.Read(seq, nil, 1<<20)
	if frames, _ := r.Stats(); err != nil || !bytes.Equal(got, big) || frames != 1 {
		t.Fatalf("a frame bigger than the budget: %d bytes back, %d frames, %v", len(got), frames, err)
	}
}

// A full ring reuses its arena: frames of the same or a smaller size go
// where the oldest were, and the arena stays.
func TestArenaReuse(t *testing.T) {
	r := NewRing(8, nil)
	frame := bytes.Repeat([]byte{'a'}, 100)
	for seq := uint64(1); seq <= 8; seq++ {
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
	}
	arena := &r.data[0]
	_, held := r.Stats()
	for seq := uint64(9); seq <= 80; seq++ {
		frame[0] = byte(seq)
		if err := r.Append(seq, frame[:90+seq%10]); err != nil { // smaller or equal: fits
			t.Fatal(err)
		}
	}
	if &r.data[0] != arena {
		t.Error("the arena was replaced")
	}
	if _, now := r.Stats(); now != held {
		t.Errorf("bytes changed from %d to %d with a reused arena", held, now)
	}
	got, _, err := r.Read(79, nil, 1<<20)
	if err != nil || len(got) != 90 || got[0] != 80 {
		t.Fatalf("Read(79) = %d bytes, first %d, %v", len(got), got[0], err)
	}
}

// An arena that holds less than an eighth of its size shrinks: a stream
// whose frames got smaller does not keep a big one.
func TestArenaShrinks(t *testing.T) {
	r := NewRing(2, nil)
	big := make([]byte, 64<<10)
	r.Append(1, big)
	r.Append(2, big)
	_, before := r.Stats()
	r.Append(3, []byte("small\n"))
	r.Append(4, []byte("small\n"))
	_, after := r.Stats()
	if before < 128<<10 || after > 2*minArena {
		t.Fatalf("bytes %d → %d: a big arena was kept for small frames", before, after)
	}
	got, last, err := r.Read(2, nil, 1<<20)
	if err != nil || last != 4 || string(got) != "small\nsmall\n" {
		t.Fatalf("Read(2) = %q, %d, %v", got, last, err)
	}
}

// modelRead is what Ring.Read(after, dst, maxBytes) gives for the frames of
// the model up to newest: the first frame after after always, the next ones
// while their bytes (dst's not counted) stay within maxBytes > 0; and the
// sequence of the last frame read (after, when there is none).
func modelRead(frames map[uint64][]byte, dst []byte, after, newest uint64, maxBytes int) ([]byte, uint64) {
	want, last := dst, after
	for s := after + 1; after < newest && s <= newest; s++ {
		if s > after+1 && (maxBytes <= 0 || len(want)-len(dst)+len(frames[s]) > maxBytes) {
			break
		}
		want, last = append(want, frames[s]...), s
		if s == newest {
			break // s++ would wrap at the top of uint64
		}
	}
	return want, last
}

// Random frame sizes through small rings, with and without a budget, the
// arena wrapping, growing and shrinking: every Read gives exactly the frames
// a plain list of the kept frames gives.
func TestArenaMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for _, tc := range []struct {
		capacity int
		budget   int64
	}{{3, 0}, {17, 0}, {64, 0}, {200, 0}, {50, 6000}, {500, 20000}} {
		var budget *Budget
		if tc.budget > 0 {
			budget = NewBudget(tc.budget)
		}
		r := NewRing(tc.capacity, budget)
		other := NewRing(tc.capacity, budget) // shares the budget, keeps it under pressure
		frames := map[uint64][]byte{}
		first := 1 + rng.Uint64N(1000)
		for seq := first; seq < first+5000; seq++ {
			size := 1 + rng.IntN(300)
			switch rng.IntN(100) {
			case 0:
				size = 3000 + rng.IntN(5000)
			case 1, 2:
				size = 1
			case 3:
				size = 0
			}
			if rng.IntN(2) == 0 {
				_, on := other.Bounds()
				if err := other.Append(on+1, make([]byte, rng.IntN(600))); err != nil {
					t.Fatal(err)
				}
			}
			f := make([]byte, size)
			for i := range f {
				f[i] = byte(seq*31 + uint64(i))
			}
			if err := r.Append(seq, f); err != nil {
				t.Fatal(err)
			}
			frames[seq] = f
			oldest, newest := r.Bounds()
			delete(frames, oldest-1)
			if n, b := r.Stats(); n != int(newest-oldest+1) || n > tc.capacity || n < 1 || newest != seq || b < int64(r.tail-r.head()) {
				t.Fatalf("cap %d after %d: Bounds %d-%d, Stats %d frames %d bytes", tc.capacity, seq, oldest, newest, n, b)
			}
			if budget != nil && budget.Used() != int64(len(r.data)+len(other.data)) {
				t.Fatalf("budget used %d, arenas %d + %d", budget.Used(), len(r.data), len(other.data))
			}
			after := oldest - 1 + uint64(rng.IntN(int(newest-oldest+1)))
			maxBytes := rng.IntN(2000)
			got, last, err := r.Read(after, nil, maxBytes)
			want, wantLast := modelRead(frames, nil, after, newest, maxBytes)
			if err != nil || !bytes.Equal(got, want) || last != wantLast {
				t.Fatalf("cap %d after %d: Read(%d, %d) = %d bytes to %d, %v; want %d bytes to %d", tc.capacity, seq, after, maxBytes, len(got), last, err, len(want), wantLast)
			}
			if _, _, err := r.Read(oldest-2, nil, 100); oldest > first && err != ErrEvicted {
				t.Fatalf("Read before the oldest: %v", err)
			}
		}
		r.Close()
		other.Close()
		if budget != nil && budget.Used() != 0 {
			t.Fatalf("budget used %d after Close", budget.Used())
		}
	}
}

func TestRingGrowKeepsFrames(t *testing.T) {
	r := NewRing(1000, nil)
	for seq := uint64(5); seq <= 900; seq++ {
		if err := r.Append(seq, []byte{byte(seq), byte(seq >> 8)}); err != nil {
			t.Fatal(err)
		}
		if seq%97 == 0 {
			got, last, err := r.Read(4, nil, 1<<30)
			if err != nil || last != seq || len(got) != int(2*(seq-4)) {
				t.Fatalf("at %d: Read(4) = %d bytes, %d, %v", seq, len(got), last, err)
			}
			for i := range int(seq - 4) {
				if s := uint64(i) + 5; got[2*i] != byte(s) || got[2*i+1] != byte(s>>8) {
					t.Fatalf("at %d: frame %d corrupt", seq, s)
				}
			}
		}
	}
	if len(r.starts) != 1000 {
		t.Fatalf("index %d, want 1000", len(r.starts))
	}
}

func TestRingTopOfSequenceSpace(t *testing.T) {
	r := NewRing(4, nil)
	top := ^uint64(0)
	for seq := top - 2; ; seq++ {
		if err := r.Append(seq, []byte{byte(seq)}); err != nil {
			t.Fatal(err)
		}
		if seq == top {
			break
		}
	}
	got, last, err := r.Read(top-3, nil, 1<<20)
	if err != nil || last != top || !bytes.Equal(got, []byte{byte(top - 2), byte(top - 1), byte(top)}) {
		t.Fatalf("Read = %v, %d, %v", got, last, err)
	}
	if err := r.Append(0, nil); err != ErrOutOfOrder {
		t.Fatalf("Append after the top = %v, want ErrOutOfOrder", err)
	}
}

// A budget over by a little costs a ring a few frames, not half of them.
func TestBudgetSmallOverageDropsFew(t *testing.T) {
	budget := NewBudget(1 << 20)
	a, b := NewRing(1000, budget), NewRing(1000, budget)
	frame := make([]byte, 500)
	for seq := uint64(1); seq <= 1000; seq++ {
		for _, r := range []*Ring{a, b} {
			if err := r.Append(seq, frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	before, _ := a.Stats()
	c := NewRing(1000, budget)
	if err := c.Append(1, make([]byte, 100)); err != nil { // over the bound by up to an arena
		t.Fatal(err)
	}
	if err := a.Append(1001, frame); err != nil {
		t.Fatal(err)
	}
	after, _ := a.Stats()
	if after < before-10 || budget.Used() > budget.Max() {
		t.Fatalf("one small new stream took the ring from %d to %d frames; budget %d of %d", before, after, budget.Used(), budget.Max())
	}
}

// Rings whose arenas are as small as they get, together over the bound,
// drop no frames for it: that would free nothing.
func TestBudgetArenaFloorKeepsFrames(t *testing.T) {
	budget := NewBudget(4 << 10)
	rings := make([]*Ring, 70)
	for i := range rings {
		rings[i] = NewRing(100, budget)
	}
	for seq := uint64(1); seq <= 20; seq++ {
		for _, r := range rings {
			if err := r.Append(seq, make([]byte, 50)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, r := range rings {
		if frames, held := r.Stats(); frames < 4 || held != minArena {
			t.Fatalf("ring %d: %d frames in %d bytes; want the %d-byte arena full of frames", i, frames, held, minArena)
		}
	}
}

// A single ring uses the whole bound: the arena grows into what is left when
// doubling would not fit.
func TestBudgetGrowthUsesTheRest(t *testing.T) {
	budget := NewBudget(1_000_000)
	r := NewRing(100_000, budget)
	frame := make([]byte, 1000)
	for seq := uint64(1); seq <= 2000; seq++ {
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
	}
	if frames, held := r.Stats(); held < 900_000 || held > 1_000_000 || frames < 890 {
		t.Fatalf("%d frames in %d bytes under a 1,000,000-byte bound", frames, held)
	}
}

// maxBytes <= 0 reads exactly one frame, also of length zero.
func TestReadOneFrame(t *testing.T) {
	r := NewRing(10, nil)
	for seq := uint64(1); seq <= 3; seq++ {
		if err := r.Append(seq, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, mb := range []int{0, -1} {
		if got, last, err := r.Read(0, nil, mb); err != nil || last != 1 || len(got) != 0 {
			t.Fatalf("Read(0, %d) = %q, %d, %v; want frame 1 only", mb, got, last, err)
		}
	}
}
