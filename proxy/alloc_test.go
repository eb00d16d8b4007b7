//go:build !race

package proxy

import "testing"

// TestFanoutAllocs pins the hot path: encoding, appending, waking and copying
// a frame to subscribers allocates nothing once warm.
func TestFanoutAllocs(t *testing.T) {
	s, clients := newBenchStream(50)
	step := func() {
		publishOne(s)
		for _, c := range clients {
			<-c.wake
			c.buf, c.cursor, _ = s.log.Read(c.cursor, c.buf[:0], maxBatch)
		}
	}
	for range 2000 { // warm: fill the ring so slots are reused
		step()
	}
	if n := testing.AllocsPerRun(200, step); n != 0 {
		t.Fatalf("fan-out of one frame to 50 subscribers: %v allocations, want 0", n)
	}
}
