package proxy

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
	"weak"
)

// TestSweepListsLetDepartedClientsGo: a stream that had 70 clients
// (sweepers) and is down to 3 (the stream's goroutine offers inline) keeps
// none of the 67 that left in a list: not in the sweepers' snapshot, not in
// the tail of the reused wake list. Each would hold a client's own buffer
// (up to 256 KiB after big frames) and its connection for the stream's life,
// outside LASTEVENT_MAX_MEMORY. The clients leave at once (a network blip on
// a quiet stream) or one by one. Found by a review: the sweepers' last
// snapshot was never cleared, and 67 of 67 stayed reachable.
func TestSweepListsLetDepartedClientsGo(t *testing.T) {
	for _, atOnce := range []bool{true, false} {
		t.Run(fmt.Sprintf("atOnce=%v", atOnce), func(t *testing.T) {
			sweepListsLetGo(t, atOnce)
		})
	}
}

func sweepListsLetGo(t *testing.T, atOnce bool) {
	s := newStressStream()
	s.hub.cfg.Heartbeat = time.Hour // only frames are written
	const n, stay = 70, 3
	loops := make([]*fpLoop, n)
	for i := range loops {
		loops[i] = startFPLoop(t, s, 0, false, 0)
	}
	defer endStream(s)
	var want []byte
	await := func(ls []*fpLoop) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for i, l := range ls {
			for {
				got, bad, _, _ := l.p.snapshot()
				if bad != "" {
					t.Fatalf("client %d: %s", i, bad)
				}
				if bytes.Equal(got, want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("client %d: %d of %d bytes", i, len(got), len(want))
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	for range 3 { // 20 KiB frames: every client grows an own buffer
		want = append(want, fpPublish(s, 20<<10)...)
	}
	await(loops)
	if s.sweep.cur.Load() == nil {
		t.Fatal("the sweepers never ran: the test does not reach them")
	}

	// All but 3 leave: the peers close; a loop ends on its second write
	// after that (the first reaches the socket, the peer answers with a
	// reset).
	var gone []weak.Pointer[client]
	departed := map[*client]bool{}
	for i, l := range loops[stay:] {
		gone = append(gone, weak.Make(l.c))
		departed[l.c] = true
		l.peer.Close()
		if !atOnce && i%8 == 7 {
			want = append(want, fpPublish(s, 100)...)
		}
	}
	want = append(want, fpPublish(s, 100)...)
	time.Sleep(20 * time.Millisecond)
	want = append(want, fpPublish(s, 100)...)
	for _, l := range loops[stay:] {
		select {
		case <-l.out:
		case <-time.After(10 * time.Second):
			t.Fatal("a departed client's loop did not end")
		}
		l.c.mu.Lock()
		kept := cap(l.c.buf)
		l.c.mu.Unlock()
		if kept > 0 {
			t.Fatalf("a client whose loop ended keeps its own buffer of %d bytes", kept)
		}
	}
	for range 5 { // the wake list is refreshed: 3 clients, inline
		want = append(want, fpPublish(s, 100)...)
	}
	await(loops[:stay])
	loops = loops[:stay:stay]

	if l := len(s.wakeList); l != stay {
		t.Fatalf("wake list has %d clients, want %d", l, stay)
	}
	if cur := s.sweep.cur.Load(); cur != nil {
		t.Errorf("with %d clients the sweepers' snapshot still holds %d", stay, len(cur.clients))
	}
	if slices.ContainsFunc(s.wakeList[:cap(s.wakeList)], func(c *client) bool { return departed[c] }) {
		t.Errorf("the wake list's spare capacity holds departed clients")
	}
	clear(departed)
	// What the garbage collector finds: a few may still be held a while by
	// the runtime (their stopped heartbeat timers); without the fix all
	// were.
	reachable := 0
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range gone {
		if w.Value() != nil {
			reachable++
		}
	}
	t.Logf("%d of %d departed clients reachable after GC", reachable, len(gone))
	if reachable > len(gone)/2 {
		t.Errorf("%d of %d departed clients still reachable after GC", reachable, len(gone))
	}
}
