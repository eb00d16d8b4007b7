package replay_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/storetest"
)

func TestRingStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T, capacity int, budget *replay.Budget) replay.Store {
		r := replay.NewRing(capacity, budget)
		t.Cleanup(r.Close)
		return r
	})
}

func TestRingZeroCapacityKeepsOne(t *testing.T) {
	for _, capacity := range []int{-5, 0, 1} {
		r := replay.NewRing(capacity, nil)
		for seq := uint64(1); seq <= 3; seq++ {
			if err := r.Append(seq, []byte{byte('a' + seq)}); err != nil {
				t.Fatal(err)
			}
		}
		if oldest, newest := r.Bounds(); oldest != 3 || newest != 3 {
			t.Errorf("capacity %d: Bounds = %d, %d; want 3, 3", capacity, oldest, newest)
		}
	}
}

func TestRingEvictsByCount(t *testing.T) {
	// 1000 frames through a ring of 100: it grows its slot array on the way
	// (64 → 100) and then evicts one frame per append.
	r := replay.NewRing(100, nil)
	for seq := uint64(1); seq <= 1000; seq++ {
		if err := r.Append(seq, []byte{byte(seq), '\n'}); err != nil {
			t.Fatal(err)
		}
		oldest, newest := r.Bounds()
		want := uint64(1)
		if seq > 100 {
			want = seq - 99
		}
		if oldest != want || newest != seq {
			t.Fatalf("after %d: Bounds = %d, %d; want %d, %d", seq, oldest, newest, want, seq)
		}
		if frames, _ := r.Stats(); uint64(frames) != seq-oldest+1 {
			t.Fatalf("after %d: frames = %d", seq, frames)
		}
	}
	if _, _, err := r.Read(899, nil, 1<<20); !errors.Is(err, replay.ErrEvicted) {
		t.Fatalf("Read(899) err = %v, want ErrEvicted", err)
	}
	got, last, err := r.Read(900, nil, 1<<20)
	if err != nil || last != 1000 || len(got) != 200 {
		t.Fatalf("Read(900) = %d bytes, %d, %v", len(got), last, err)
	}
	for i := range 100 {
		if got[2*i] != byte(901+i) {
			t.Fatalf("frame %d = %d, want %d", i, got[2*i], byte(901+i))
		}
	}
}

func TestRingCloseReturnsBudget(t *testing.T) {
	b := replay.NewBudget(0) // unlimited, still counts
	r := replay.NewRing(10, b)
	for seq := uint64(1); seq <= 25; seq++ {
		if err := r.Append(seq, bytes.Repeat([]byte{'x'}, 100)); err != nil {
			t.Fatal(err)
		}
	}
	_, held := r.Stats()
	if b.Used() != held || held < 1000 {
		t.Fatalf("Used = %d, ring holds %d", b.Used(), held)
	}
	r.Close()
	if b.Used() != 0 {
		t.Fatalf("Used after Close = %d", b.Used())
	}
	if err := r.Append(26, []byte("x")); err == nil {
		t.Fatal("Append after Close succeeded")
	}
	if _, _, err := r.Read(24, nil, 1<<20); !errors.Is(err, replay.ErrEvicted) {
		t.Fatalf("Read after Close err = %v, want ErrEvicted", err)
	}
}

func TestBudgetZeroValues(t *testing.T) {
	var nilBudget *replay.Budget
	if nilBudget.Used() != 0 || nilBudget.Max() != 0 {
		t.Fatal("nil Budget is not zero")
	}
	if m := replay.NewBudget(-1).Max(); m != 0 {
		t.Fatalf("NewBudget(-1).Max() = %d, want 0 (unlimited)", m)
	}
	if m := replay.NewBudget(123).Max(); m != 123 {
		t.Fatalf("Max = %d", m)
	}
	// Unlimited never evicts.
	b := replay.NewBudget(0)
	r := replay.NewRing(1000, b)
	for seq := uint64(1); seq <= 1000; seq++ {
		if err := r.Append(seq, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	if frames, _ := r.Stats(); frames != 1000 {
		t.Fatalf("unlimited budget evicted: %d frames", frames)
	}
}
