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
// to 600 KiB, sent one at a time (each meets a waiting client) and then in a
// burst, arrive whole, in order, exactly once, each chunk ending on a frame
// boundary.
func TestSessionBigFramesThroughTheFastPath(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=session", "LASTEVENT_MAX_FRAME_BYTES=1MiB")
	const path = "/feed/big"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	defer c.Close()
	waitFor(t, 10*time.Second, "the stream is open", func() bool { return feed.Conns() == 1 })

	sizes := []int{10, 300 << 10, 1 << 10, 600 << 10, 70 << 10, 200}
	data := func(n int) string {
		size := sizes[n%len(sizes)]
		head := fmt.Sprintf("%d:", n)
		return head + strings.Repeat(string(rune('a'+n%26)), max(size-len(head), 0))
	}
	got := 0
	expect := func() {
		t.Helper()
		got++
		ev := c.Next(20 * time.Second)
		if want := data(got); ev.Data != want {
			t.Fatalf("frame %d: got %d bytes starting %.20q, want %d bytes starting %.20q", got, len(ev.Data), ev.Data, len(want), want)
		}
	}
	sent := 0
	send := func() {
		sent++
		feed.Send("data: " + data(sent) + "\n\n")
	}
	for range 36 { // one at a time: each frame finds the client caught up
		send()
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
