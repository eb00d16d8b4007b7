package proxy

import (
	"runtime"
	"sync/atomic"
)

// sweepPer is how many clients one sweeper takes before a stream starts
// another, up to GOMAXPROCS.
const sweepPer = 64

// sweepSet is the fan-out of a memory-mode stream with more than inlineMax
// clients: a few goroutines (sweepers), each offering the frames just
// published to its part of the client list (offer: one non-blocking write to
// a client whose loop waits caught up) and waking only the loops of the
// clients offer did not write to (behind, busy, a full socket). A frame then
// costs one wake-up per sweeper instead of one per client, and the writes
// skip the loops' hand-offs (README, Performance, has S2's figures before
// and after). Sweepers are started as the clients grow and stay, idle, until
// the stream ends: at most GOMAXPROCS per stream.
//
// No frame is missed: the run goroutine stores a new list before it wakes
// the sweepers, every sweeper woken after a publish starts a sweep after it
// and reads the newest list then, and a change of the list comes with a
// publish. A client that attaches reads the log itself first.
type sweepSet struct {
	cur atomic.Pointer[sweepList] // read by the sweepers; nil with inlineMax clients or fewer

	// Owned by the run goroutine.
	wakes   []chan struct{} // one per sweeper started
	stopped bool            // the stream's run returned: no sweepers any more
}

// sweepList is a snapshot of a stream's clients, cut into parts, one per
// sweeper; it is never changed once stored.
type sweepList struct {
	clients []*client
	parts   int
}

// use makes clients the list the next sweeps read (nil: none), cut into one
// part per sweepPer clients, at most GOMAXPROCS (read here, at a change of
// the clients, not per frame).
func (w *sweepSet) use(clients []*client) {
	if clients == nil {
		w.cur.Store(nil)
		return
	}
	parts := min(runtime.GOMAXPROCS(0), (len(clients)+sweepPer-1)/sweepPer)
	w.cur.Store(&sweepList{clients: clients, parts: parts})
}

// sweepAll hands the frames just published to the sweepers, starting them
// as the clients grow.
func (s *stream) sweepAll() {
	w := &s.sweep
	l := w.cur.Load()
	if w.stopped || l == nil {
		for _, c := range s.wakeList {
			c.notify()
		}
		return
	}
	for len(w.wakes) < l.parts {
		wake := make(chan struct{}, 1)
		w.wakes = append(w.wakes, wake)
		go s.sweeper(len(w.wakes)-1, wake)
	}
	for _, wake := range w.wakes[:l.parts] {
		select {
		case wake <- struct{}{}:
		default: // a sweep is due already, and reads the list when it starts
		}
	}
}

// sweeper i offers the new frames to the clients of part i, each time it is
// woken, until stop.
func (s *stream) sweeper(i int, wake <-chan struct{}) {
	for range wake {
		l := s.sweep.cur.Load()
		if l == nil || i >= l.parts {
			continue // a wake-up from before the list shrank
		}
		n := len(l.clients)
		for _, c := range l.clients[i*n/l.parts : (i+1)*n/l.parts] {
			if !c.offer() {
				c.notify()
			}
		}
	}
}

// stop ends the sweepers and lets go of their list; the stream's run calls
// it when it returns, and later wake-ups go to the loops. It does not wait:
// a sweep under way finishes, and offers to clients that have ended write
// nothing (offer sees gone).
func (w *sweepSet) stop() {
	for _, wake := range w.wakes {
		close(wake)
	}
	w.wakes, w.stopped = nil, true
	w.cur.Store(nil)
}
