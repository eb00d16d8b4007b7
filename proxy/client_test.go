package proxy

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
)

// TestClientChunksHoldWholeFrames runs the client's loop over a real socket
// and decodes its chunks: a live frame, a replay batch (a borrowed buffer), a
// replay larger than one batch, a frame larger than a batch, and the
// sync-required of a client that fell off the log. Every chunk holds whole
// frames, in order, exactly the bytes of the log, and only a single frame
// makes a chunk larger than a batch. (How many chunks a replay takes depends
// on how far the client got when the frames arrived: not asserted.)
func TestClientChunksHoldWholeFrames(t *testing.T) {
	s, _ := newBenchStream(0)
	lc := newLoopClient(t, s, 0, true)
	defer lc.stop()
	<-lc.chunks // the preamble

	// expect wakes the client and reads chunks until they add up to want.
	expect := func(lc *loopClient, name string, want []byte) {
		t.Helper()
		lc.c.notify()
		var got []byte
		chunks := 0
		for len(got) < len(want) {
			ch := <-lc.chunks
			chunks++
			if !bytes.HasPrefix(ch, []byte("id: ")) || !bytes.HasSuffix(ch, []byte("\n\n")) {
				t.Fatalf("%s: chunk %d does not hold whole frames: %.40q…%q", name, chunks, ch, ch[max(0, len(ch)-10):])
			}
			if len(ch) > maxBatch && bytes.Count(ch, []byte("\n\nid: ")) > 0 {
				t.Errorf("%s: chunk %d has %d bytes of several frames, above the %d-byte batch", name, chunks, len(ch), maxBatch)
			}
			got = append(got, ch...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes, want %d (or other bytes)", name, len(got), len(want))
		}
		lc.recvDrain()
	}

	expect(lc, "live frame", appendFrames(t, s, 100))
	expect(lc, "replay of 20 frames", appendFrames(t, s, repeat(100, 20)...))
	expect(lc, "replay of 100 KB", appendFrames(t, s, repeat(1000, 100)...))
	expect(lc, "frame of 200 KiB", appendFrames(t, s, 200<<10))
	expect(lc, "small frames after it", appendFrames(t, s, repeat(50, 3)...))

	// A client whose frames left the log (it was asleep while more than the
	// log keeps arrived) gets sync-required at that point and goes on from
	// the head.
	from := s.seq.Load()
	appendFrames(t, s, repeat(10, s.hub.cfg.BufferFrames+100)...)
	behind := newLoopClient(t, s, from, true)
	defer behind.stop()
	<-behind.chunks // the preamble
	behind.c.notify()
	if ch := <-behind.chunks; !strings.Contains(string(ch), "event: "+EventSyncRequired) || !strings.Contains(string(ch), ReasonSlowClient) {
		t.Fatalf("fell off the log: got %.80q, want a sync-required (%s)", ch, ReasonSlowClient)
	}
	behind.recvDrain()
	expect(behind, "live frame after the sync", appendFrames(t, s, 100))
	// The frames it skipped are not counted as sent (the client's log line,
	// lastevent_frames_out_total): only the live one is.
	behind.c.mu.Lock()
	sent := behind.c.sent
	behind.c.mu.Unlock()
	if sent != 1 {
		t.Errorf("the client that fell off the log counts %d frames sent, want 1 (the live frame after the sync)", sent)
	}
}

func repeat(n, times int) []int {
	r := make([]int, times)
	for i := range r {
		r[i] = n
	}
	return r
}

// appendFrames puts frames with data of the given sizes into the log without
// waking the clients, and returns their bytes.
func appendFrames(t *testing.T, s *stream, sizes ...int) []byte {
	t.Helper()
	var all []byte
	for _, n := range sizes {
		seq := s.seq.Load() + 1
		s.idText = s.id(seq).AppendText(s.idText[:0])
		f := &frame.Frame{Data: bytes.Repeat([]byte{'x'}, n), Retry: -1, Dispatch: true}
		s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, f)
		if err := s.log.Append(seq, s.scratch); err != nil {
			t.Fatal(err)
		}
		s.seq.Store(seq)
		all = append(all, s.scratch...)
	}
	return all
}

// TestOfferWritesFromTheStream: a caught-up client's frames are written by
// the stream's goroutine (offer) as whole chunks; a chunk the socket takes
// only in part is finished by the client's loop before anything else, and
// once the loop has returned offer writes nothing.
func TestOfferWritesFromTheStream(t *testing.T) {
	s, _ := newBenchStream(0)
	lc := newLoopClient(t, s, 0, true)
	<-lc.chunks // the preamble; the loop now waits, caught up
	add := func(n int) []byte { return appendFrames(t, s, n) }
	next := func(what string) []byte {
		t.Helper()
		select {
		case ch := <-lc.chunks:
			return ch
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no whole chunk within 10 s", what)
			return nil
		}
	}
	lockedPending := func() int {
		lc.c.mu.Lock()
		defer lc.c.mu.Unlock()
		return len(lc.c.pending)
	}

	// The peer has the preamble a moment before the loop lets mu go and
	// waits: offer only tries mu, so wait for that (on a loaded machine the
	// gap failed this test).
	for deadline := time.Now().Add(5 * time.Second); !lc.c.mu.TryLock(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop did not come to wait within 5 s")
		}
	}
	lc.c.mu.Unlock()
	small := add(100)
	if !lc.c.offer() {
		t.Fatal("offer did not write a small frame to a waiting, caught-up client")
	}
	if got := next("small frame"); !bytes.Equal(got, small) {
		t.Fatalf("offered chunk = %q, want %q", got, small)
	}

	// Far more than the socket takes at once: offer writes part of the
	// chunk and leaves the rest to the loop.
	_ = lc.c.conn.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = lc.peer.(*net.TCPConn).SetReadBuffer(16 << 10)
	big := add(900 << 10)
	if lc.c.offer() {
		t.Fatal("offer reported a 900 KiB chunk written in one non-blocking write into 16 KiB buffers")
	}
	if lockedPending() == 0 {
		t.Fatal("a partly written chunk left nothing pending")
	}
	after := add(10)
	lc.c.notify()
	if got := next("partly written chunk"); !bytes.Equal(got, big) {
		t.Fatalf("the partly written chunk arrived with %d bytes, want %d (or other bytes)", len(got), len(big))
	}
	if got := next("frame after it"); !bytes.Equal(got, after) {
		t.Fatalf("the frame after it = %.60q, want %.60q", got, after)
	}

	// A frame bigger than a batch and a small one behind it, as one
	// upstream read can bring: offer writes the first, and the stream's
	// wake-up (the flush before its next read) must get the second out.
	_ = lc.c.conn.(*net.TCPConn).SetWriteBuffer(4 << 20)
	_ = lc.peer.(*net.TCPConn).SetReadBuffer(4 << 20)
	large, tiny := add(maxBatch+(6<<10)), add(200)
	s.wakeDue = true
	s.flushStage()
	if got := next("frame bigger than a batch"); !bytes.Equal(got, large) {
		t.Fatalf("the big frame arrived with %d bytes, want %d", len(got), len(large))
	}
	if got := next("small frame behind a big one"); !bytes.Equal(got, tiny) {
		t.Fatalf("the frame behind the big one = %.60q, want %.60q", got, tiny)
	}

	lc.stop()
	add(10)
	if lc.c.offer() {
		t.Error("offer wrote after the client's loop returned")
	}
}
