package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSessionBigFramesThroughTheFastPath: in session mode the stream's
// goroutine writes a caught-up client's frames itself, without waiting for
// room in the socket; a frame larger than the socket's send buffer then goes
// out in part and the client's own loop finishes it. Frames of mixed sizes up
// to 600 KiB, sent one at a time (each meets a waiting client), as a frame
// larger than a write batch with a small one behind it in the same upstream
// write (the small one must not wait for the next frame), and in a burst,
// arrive whole, in order, exactly once, each chunk ending on a frame
// boundary.
func TestSessionBigFramesThroughTheFastPath(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	// No heartbeat within the test: its wake-up would drain a frame that a
	// lost wake-up left in the log.
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=session", "LASTEVENT_MAX_FRAME_BYTES=1MiB", "LASTEVENT_HEARTBEAT=1h")
	const path = "/feed/big"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	defer c.Close()
	waitFor(t, 10*time.Second, "the stream is open", func() bool { return feed.Conns() == 1 })

	sizes := []int{10, 300 << 10, 1 << 10, 600 << 10, 70 << 10, 200}
	sentData := map[int]string{} // what frame n carried
	frameOf := func(n, size int) string {
		head := fmt.Sprintf("%d:", n)
		sentData[n] = head + strings.Repeat(string(rune('a'+n%26)), max(size-len(head), 0))
		return "data: " + sentData[n] + "\n\n"
	}
	sent, got := 0, 0
	send := func() {
		sent++
		feed.Send(frameOf(sent, sizes[sent%len(sizes)]))
	}
	expect := func() {
		t.Helper()
		got++
		ev := c.Next(10 * time.Second)
		if want := sentData[got]; ev.Data != want {
			t.Fatalf("frame %d: got %d bytes starting %.20q, want %d bytes starting %.20q", got, len(ev.Data), ev.Data, len(want), want)
		}
	}
	for range 36 { // one at a time: each frame finds the client caught up
		send()
		expect()
	}
	for range 12 { // a frame bigger than a write batch and a small one behind it, in one upstream write
		pair := frameOf(sent+1, 100<<10) + frameOf(sent+2, 50)
		sent += 2
		feed.Send(pair)
		expect()
		expect()
	}
	for range 36 { // a burst
		send()
	}
	for got < sent {
		expect()
	}
	c.NoEvent(200 * time.Millisecond)
	if cut := c.CutChunks(); len(cut) > 0 {
		t.Fatalf("%d chunks did not end on a frame boundary, the first: %.60q", len(cut), cut[0])
	}
}
