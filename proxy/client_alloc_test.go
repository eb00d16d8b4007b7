//go:build !race

package proxy

import "testing"

// TestClientLoopAllocs pins the client's write loop: waking, reading a frame
// from the log and writing it to a real socket allocates nothing, nor does a
// replay batch (a borrowed pool buffer).
func TestClientLoopAllocs(t *testing.T) {
	s, lc, size := startLiveLoop(t)
	defer lc.stop()
	live := func() {
		publishOne(s)
		lc.recv(t, size)
	}
	for range 2000 { // warm: fill the ring so its slots are reused
		live()
	}
	if n := testing.AllocsPerRun(500, live); n != 0 {
		t.Errorf("live frame through the client loop: %v allocations, want 0", n)
	}
	// Batches: 20 frames appended before the client is woken (publish wakes
	// it, so hold it off by appending to the log directly).
	batch := func() {
		for range 20 {
			seq := s.seq.Load() + 1
			s.idText = s.id(seq).AppendText(s.idText[:0])
			s.scratch = appendEventForBench(s.scratch[:0], s.idText)
			if err := s.log.Append(seq, s.scratch); err != nil {
				t.Fatal(err)
			}
			s.seq.Store(seq)
		}
		lc.c.notify()
		lc.recv(t, 20*size)
	}
	batch()
	if n := testing.AllocsPerRun(200, batch); n != 0 {
		t.Errorf("20-frame batch through the client loop: %v allocations, want 0", n)
	}
}
