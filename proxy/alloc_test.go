//go:build !race

package proxy

import (
	"io"
	"testing"
)

// TestFanoutAllocs pins the hot path: encoding, appending, waking and copying
// a frame to subscribers allocates nothing once warm.
func TestFanoutAllocs(t *testing.T) {
	s, clients := newBenchStream(50)
	defer s.sweep.stop()
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

// TestStreamConnReadAllocs pins the upstream read: a read of bytes waiting
// in the socket allocates nothing.
func TestStreamConnReadAllocs(t *testing.T) {
	sc, peer := dialPair(t, 0, 0)
	msg := []byte("data: 0123456789\n\n")
	buf := make([]byte, 100)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := io.ReadFull(sc, buf[:len(msg)]); n != len(msg) || err != nil {
			t.Fatalf("read %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per upstream read, want 0", allocs)
	}
}
