package test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	bigFramesThroughOffers(t, "session", 1, []int{10, 300 << 10, 1 << 10, 600 << 10, 70 << 10, 200}, 36)
}

// TestSharedBigFramesThroughTheSweepers: the same with 70 subscribers of one
// shared stream, more than one sweeper's part (the sweepers write to
// caught-up clients the way the session stream's goroutine does, each to its
// part of the clients, and wake the loops of the others).
func TestSharedBigFramesThroughTheSweepers(t *testing.T) {
	t.Parallel()
	bigFramesThroughOffers(t, "shared", 70, []int{10, 100 << 10, 1 << 10, 200 << 10, 70 << 10, 200}, 12)
}

// bigFramesThroughOffers runs the plan of the two tests above: rounds
// frames one at a time, rounds/3 upstream writes of a 100 KiB frame and a
// 50-byte one, rounds frames in a burst; the frames' sizes cycle through
// sizes.
func bigFramesThroughOffers(t *testing.T, mode string, clients int, sizes []int, rounds int) {
	up := startUpstream(t)
	// No heartbeat within the test: its wake-up would drain a frame that a
	// lost wake-up left in the log.
	p := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode, "LASTEVENT_MAX_FRAME_BYTES=1MiB", "LASTEVENT_HEARTBEAT=1h")
	path := "/feed/big-" + mode
	feed := up.Feed(path)
	cs := make([]*wireClient, clients)
	for i := range cs {
		cs[i] = dialWire(t, p.URL(), path)
		defer cs[i].Close()
	}
	waitFor(t, 10*time.Second, "the clients are attached", func() bool {
		return p.state(t).Totals.Connections == int64(clients)
	})

	// The plan: upstream writes of one or two frames, and whether to wait
	// for every client to have them before the next write.
	type write struct {
		sizes []int
		await bool
	}
	var plan []write
	for n := range rounds {
		plan = append(plan, write{sizes: []int{sizes[n%len(sizes)]}, await: true})
	}
	for range rounds / 3 {
		plan = append(plan, write{sizes: []int{100 << 10, 50}, await: true})
	}
	for n := range rounds {
		plan = append(plan, write{sizes: []int{sizes[n%len(sizes)]}})
	}
	var want []string // frame n's data is want[n-1]
	for _, w := range plan {
		for _, size := range w.sizes {
			head := fmt.Sprintf("%d:", len(want)+1)
			want = append(want, head+strings.Repeat(string(rune('a'+len(want)%26)), max(size-len(head), 0)))
		}
	}

	var got atomic.Int64 // frames received, all clients together
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n, data := range want {
				ev, err := c.TryNext(30 * time.Second)
				if err == nil && ev.Data != data {
					err = fmt.Errorf("got %d bytes starting %.20q, want %d bytes starting %.20q", len(ev.Data), ev.Data, len(data), data)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d, frame %d: %v", i, n+1, err)
					return
				}
				got.Add(1)
			}
		}()
	}
	sent := 0
	for _, w := range plan {
		var b strings.Builder
		for range w.sizes {
			b.WriteString("data: " + want[sent] + "\n\n")
			sent++
		}
		feed.Send(b.String())
		for deadline := time.Now().Add(30 * time.Second); w.await && got.Load() < int64(sent*clients); time.Sleep(time.Millisecond) {
			if len(errs) > 0 || time.Now().After(deadline) {
				break // the readers' errors below say what is missing
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // for a frame too many to arrive
	for i, c := range cs {
		c.NoEvent(time.Millisecond)
		if cut := c.CutChunks(); len(cut) > 0 {
			t.Fatalf("client %d: %d chunks did not end on a frame boundary, the first: %.60q", i, len(cut), cut[0])
		}
	}
}
