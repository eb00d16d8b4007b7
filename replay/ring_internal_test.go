package replay

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// newestCap is what the newest frame of r is charged.
func (r *Ring) newestCap() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.n == 0 {
		return 0
	}
	return int64(cap(r.slots[r.newest%uint64(len(r.slots))]))
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
			t.Fatalf("step %d: Used = %d > Max %d + newest frames %d", i, used, limit, slack)
		}
		// The ring that appended stopped evicting only at the bound or at one frame.
		if frames, _ := r.Stats(); used > limit && frames != 1 {
			t.Fatalf("step %d: Used = %d over %d with the appending ring at %d frames", i, used, limit, frames)
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

func TestBudgetEvictionFreesBuffers(t *testing.T) {
	budget := NewBudget(1000)
	r := NewRing(100, budget)
	for seq := uint64(1); seq <= 50; seq++ {
		if err := r.Append(seq, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	frames, held := r.Stats()
	if held > 1000 || frames < 5 || frames > 10 {
		t.Fatalf("frames %d, bytes %d under a 1000-byte budget", frames, held)
	}
	var live int
	for _, s := range r.slots {
		if s != nil {
			live++
		}
	}
	if live != frames {
		t.Fatalf("%d slots keep a buffer, %d frames held: evicted buffers not freed", live, frames)
	}
}

func TestSlotBufferReuse(t *testing.T) {
	r := NewRing(8, nil)
	frame := bytes.Repeat([]byte{'a'}, 100)
	for seq := uint64(1); seq <= 8; seq++ {
		if err := r.Append(seq, frame); err != nil {
			t.Fatal(err)
		}
	}
	var first [8]*byte
	for i, s := range r.slots {
		first[i] = &s[:1][0]
	}
	_, held := r.Stats()
	for seq := uint64(9); seq <= 80; seq++ {
		frame[0] = byte(seq)
		if err := r.Append(seq, frame[:90+seq%10]); err != nil { // smaller or equal: fits
			t.Fatal(err)
		}
	}
	for i, s := range r.slots {
		if &s[:1][0] != first[i] {
			t.Errorf("slot %d got a new buffer", i)
		}
	}
	if _, now := r.Stats(); now != held {
		t.Errorf("bytes changed from %d to %d with reused buffers", held, now)
	}
	got, _, err := r.Read(79, nil, 1<<20)
	if err != nil || len(got) != 90 || got[0] != 80 {
		t.Fatalf("Read(79) = %d bytes, first %d, %v", len(got), got[0], err)
	}
}

func TestSlotBufferShrinks(t *testing.T) {
	r := NewRing(2, nil)
	big := make([]byte, 64<<10)
	r.Append(1, big)
	r.Append(2, big)
	_, before := r.Stats()
	r.Append(3, []byte("small\n"))
	r.Append(4, []byte("small\n"))
	_, after := r.Stats()
	if before < 128<<10 || after > 64 {
		t.Fatalf("bytes %d → %d: a big buffer was kept for a small frame", before, after)
	}
	// Modest size changes reuse.
	r.Append(5, make([]byte, 2000))
	ptr := &r.slots[5%2][:1][0]
	r.Append(6, make([]byte, 10))
	r.Append(7, make([]byte, 1500))
	if &r.slots[7%2][:1][0] != ptr {
		t.Fatal("a 2000-byte buffer was not reused for a 1500-byte frame")
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
	if len(r.slots) != 1000 {
		t.Fatalf("slot array %d, want 1000", len(r.slots))
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
