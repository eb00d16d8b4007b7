package replay

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
)

// edgeCheck verifies the ring's invariants against the model: the bytes held
// fit the arena, Bounds and the frame count agree, and a Read of everything
// gives exactly the model's frames.
func edgeCheck(t *testing.T, r *Ring, frames map[uint64][]byte, tag string) {
	t.Helper()
	if r.n != int(r.newest-r.oldest+1) || r.n > r.capacity || r.n > len(r.starts) {
		t.Fatalf("%s: n %d oldest %d newest %d cap %d slots %d", tag, r.n, r.oldest, r.newest, r.capacity, len(r.starts))
	}
	if r.tail-r.head() > uint64(len(r.data)) {
		t.Fatalf("%s: holds %d bytes in a %d-byte arena", tag, r.tail-r.head(), len(r.data))
	}
	var want []byte
	for s := r.oldest; s-r.oldest < uint64(r.n); s++ {
		f, ok := frames[s]
		if !ok {
			t.Fatalf("%s: ring keeps %d the model does not have", tag, s)
		}
		want = append(want, f...)
	}
	got, last, err := r.Read(r.oldest-1, nil, 1<<40)
	if err != nil || last != r.newest || !bytes.Equal(got, want) {
		t.Fatalf("%s: Read(oldest-1) = %d bytes to %d, %v; want %d bytes to %d", tag, len(got), last, err, len(want), r.newest)
	}
}

// TestArenaMatchesModelWide extends TestArenaMatchesModel to capacities 1,
// 2, 63-65 and 129 (index growth), budgets down to 1 byte, frames of exactly
// 255/256/257/512 bytes and up to 22 KB, sequences ending at the top of
// uint64 while the arena wraps, a non-empty dst and maxBytes -1..30000; the
// Budget balances to zero after Close.
func TestArenaMatchesModelWide(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	top := ^uint64(0)
	for _, capacity := range []int{1, 2, 3, 5, 63, 64, 65, 129, 1000} {
		for _, bmax := range []int64{0, 1, 256, 300, 1000, 5000, 50000} {
			for _, first := range []uint64{1, top - 350} {
				var budget *Budget
				if bmax > 0 {
					budget = NewBudget(bmax)
				}
				r := NewRing(capacity, budget)
				other := NewRing(capacity, budget)
				frames := map[uint64][]byte{}
				for seq := first; ; seq++ {
					var size int
					switch rng.IntN(12) {
					case 0:
						size = 0
					case 1:
						size = []int{1, 255, 256, 257, 511, 512, 513}[rng.IntN(7)]
					case 2:
						size = 2000 + rng.IntN(20000)
					default:
						size = rng.IntN(400)
					}
					if rng.IntN(3) == 0 {
						_, on := other.Bounds()
						if err := other.Append(on+1, make([]byte, rng.IntN(3000))); err != nil {
							t.Fatal(err)
						}
					}
					f := make([]byte, size)
					for i := range f {
						f[i] = byte(seq*131 + uint64(i)*7)
					}
					if err := r.Append(seq, f); err != nil {
						t.Fatal(err)
					}
					frames[seq] = f
					if budget != nil && budget.Used() > budget.Max() && r.n != 1 && int64(len(r.data)) > r.newestCap() {
						t.Fatalf("over the bound (%d > %d) after Append(%d) with %d frames in %d bytes", budget.Used(), budget.Max(), seq, r.n, len(r.data))
					}
					for s := range frames {
						if s < r.oldest {
							delete(frames, s)
						}
					}
					tag := "cap " + strconv.Itoa(capacity) + " budget " + strconv.Itoa(int(bmax))
					edgeCheck(t, r, frames, tag)
					if budget != nil && budget.Used() != int64(len(r.data)+len(other.data)) {
						t.Fatalf("%s: Used %d arenas %d+%d", tag, budget.Used(), len(r.data), len(other.data))
					}
					// Random batched read.
					after := r.oldest - 1 + uint64(rng.IntN(r.n))
					maxBytes := []int{-1, 0, 1, 100, 1000, 30000}[rng.IntN(6)]
					dst := []byte("pre")
					got, last, err := r.Read(after, dst, maxBytes)
					want, wantLast := modelRead(frames, []byte("pre"), after, r.newest, maxBytes)
					if err != nil || last != wantLast || !bytes.Equal(got, want) {
						t.Fatalf("%s seq %d: Read(%d,%d) = %d bytes to %d %v; want %d to %d", tag, seq, after, maxBytes, len(got), last, err, len(want), wantLast)
					}
					if seq == top || seq-first >= 400 {
						break
					}
				}
				r.Close()
				other.Close()
				if budget != nil && budget.Used() != 0 {
					t.Fatalf("Used %d after Close", budget.Used())
				}
			}
		}
	}
}

// Growth is checked against the Budget's room at the size the arena gets,
// rounded to arenaStep. Checked unrounded, a 256-byte arena growing by half
// (384, allocated as 512) passed with 128 bytes of room and took 256: with
// room in [128, 256) every Append that overflowed the arena moved it to 512
// bytes, went over the bound (which other rings sharing the Budget see), and
// giveBack moved it back to 256: two allocations and two copies per Append,
// where a spent Budget rotates in place.
func TestArenaGrowthChecksRoundedSize(t *testing.T) {
	other := NewRing(10, nil)
	budget := NewBudget(1024 + 256 + 200) // other's arena + r's arena + 200 bytes of room
	other.budget = budget
	if err := other.Append(1, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	r := NewRing(1000, budget)
	frame := make([]byte, 100)
	seq := uint64(0)
	for range 2 {
		seq++
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.data) != 256 || budget.room() != 200 {
		t.Fatalf("setup: arena %d, room %d", len(r.data), budget.room())
	}
	moves := 0
	for range 100 {
		arena := &r.data[0]
		seq++
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
		if &r.data[0] != arena {
			moves++
		}
		if budget.Used() > budget.Max() {
			t.Fatalf("over the bound after Append: %d > %d", budget.Used(), budget.Max())
		}
	}
	if moves > 0 {
		t.Fatalf("arena replaced on %d of 100 appends with a %d-byte arena that never changes size (room %d < 256)", moves, len(r.data), budget.room())
	}
}

// A frame exactly the arena's size under a spent Budget evicts every frame
// (n drops to 0 inside Append) and is then the only one kept; a zero-length
// frame after it fits without a move. Bounds stay exact throughout.
func TestFrameExactlyArenaSizeUnderSpentBudget(t *testing.T) {
	budget := NewBudget(256)
	r := NewRing(100, budget)
	for seq := uint64(1); seq <= 5; seq++ {
		if err := r.Append(seq, bytes.Repeat([]byte{byte(seq)}, 40)); err != nil {
			t.Fatal(err)
		}
	}
	arena := &r.data[0]
	big := bytes.Repeat([]byte{'B'}, 256)
	if err := r.Append(6, big); err != nil {
		t.Fatal(err)
	}
	if o, n := r.Bounds(); o != 6 || n != 6 || &r.data[0] != arena || budget.Used() != 256 {
		t.Fatalf("Bounds %d-%d, moved %v, Used %d", o, n, &r.data[0] != arena, budget.Used())
	}
	if err := r.Append(7, nil); err != nil {
		t.Fatal(err)
	}
	if o, n := r.Bounds(); o != 6 || n != 7 {
		t.Fatalf("after a zero-length frame: Bounds %d-%d, want 6-7", o, n)
	}
	got, last, err := r.Read(5, nil, 1)
	if err != nil || last != 6 || !bytes.Equal(got, big) {
		t.Fatalf("Read(5, 1) = %d bytes to %d, %v", len(got), last, err)
	}
	got, last, err = r.Read(5, nil, 256)
	if err != nil || last != 7 || !bytes.Equal(got, big) {
		t.Fatalf("Read(5, 256) = %d bytes to %d, %v; want frames 6 and 7", len(got), last, err)
	}
	if _, _, err := r.Read(4, nil, 1<<20); err != ErrEvicted {
		t.Fatalf("Read(4) = %v, want ErrEvicted", err)
	}
}

// Several rings share one Budget, each with its own writer and readers, all
// concurrent (the storetest suite's concurrent test has one ring and no
// Budget). Readers see every frame whole and in order or an ErrEvicted that
// is true; the Budget balances to zero after Close.
func TestRingsShareBudgetConcurrently(t *testing.T) {
	const (
		rings   = 4
		readers = 3
		total   = 4000
	)
	budget := NewBudget(24 << 10)
	frameOf := func(ring int, seq uint64) []byte {
		n := int(seq * 7919 % 900) // 0..899 bytes of payload
		if seq%50 == 0 {
			n = 9000 // now and then bigger than a ring's share
		}
		f := make([]byte, n+9)
		f[0] = byte(ring)
		for i := range 8 {
			f[1+i] = byte(seq >> (8 * i))
		}
		for i := 9; i < len(f); i++ {
			f[i] = byte(seq + uint64(i))
		}
		return f
	}
	errs := make(chan string, rings*(readers+1))
	done := make(chan struct{}, rings)
	var all []*Ring
	var wgs []chan struct{}
	for k := range rings {
		r := NewRing(200, budget)
		all = append(all, r)
		writerDone := make(chan struct{})
		go func() {
			defer close(writerDone)
			for seq := uint64(1); seq <= total; seq++ {
				if err := r.Append(seq, frameOf(k, seq)); err != nil {
					errs <- err.Error()
					return
				}
			}
		}()
		for j := range readers {
			fin := make(chan struct{})
			wgs = append(wgs, fin)
			maxBytes := []int{0, 1000, 1 << 20}[j]
			go func() {
				defer close(fin)
				var cursor uint64
				buf := make([]byte, 0, 256)
				for cursor < total {
					got, last, err := r.Read(cursor, buf[:0], maxBytes)
					if err == ErrEvicted {
						oldest, _ := r.Bounds()
						if oldest <= cursor+1 {
							errs <- "ErrEvicted but frame is kept"
							return
						}
						cursor = oldest - 1
						continue
					}
					if err != nil {
						errs <- err.Error()
						return
					}
					b := got
					for s := cursor + 1; s <= last; s++ {
						f := frameOf(k, s)
						if !bytes.HasPrefix(b, f) {
							errs <- "torn or wrong frame at seq " + strconv.Itoa(int(s))
							return
						}
						b = b[len(f):]
					}
					if len(b) != 0 {
						errs <- "extra bytes"
						return
					}
					if last == cursor {
						runtime.Gosched()
					}
					cursor = last
					buf = got[:0]
				}
			}()
		}
		go func() { <-writerDone; done <- struct{}{} }()
	}
	for range rings {
		<-done
	}
	for _, c := range wgs {
		<-c
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	var sum int64
	for _, r := range all {
		_, b := r.Stats()
		sum += b
	}
	if budget.Used() != sum {
		t.Fatalf("Used %d, arenas %d", budget.Used(), sum)
	}
	for _, r := range all {
		r.Close()
	}
	if budget.Used() != 0 {
		t.Fatalf("Used %d after Close", budget.Used())
	}
}
