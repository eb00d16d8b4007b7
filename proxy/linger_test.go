package proxy

import (
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/rs/zerolog"
)

// TestStaleLingerTimerDoesNotEndStream: a linger timer that fired just as a
// client re-attached (addSub's Stop comes too late: the callback is already
// on its way to s.mu) must not end the stream once that client has left
// again: by then a new linger period has started (removeSub armed a new
// timer), and the stream owes the next resume LASTEVENT_LINGER of
// buffering. The interleaving is forced: the stale callback runs after
// addSub and removeSub, as the timer's goroutine does when it is scheduled
// late. Found by a review; it ended the stream at once.
func TestStaleLingerTimerDoesNotEndStream(t *testing.T) {
	cfg := &Config{BufferFrames: 16, MaxMemory: 1 << 20, Heartbeat: time.Hour, WriteTimeout: time.Hour, Linger: time.Hour}
	h := &Hub{cfg: cfg, log: zerolog.Nop(), gens: replay.NewGenerator(), budget: replay.NewBudget(cfg.MaxMemory),
		byGen: map[replay.Gen]*stream{}, byKey: map[string]*stream{}, byLabel: map[replay.Gen]*stream{}}
	h.metrics = newMetrics(h)
	s := &stream{hub: h, gen: h.gens.Next(), log: replay.NewRing(cfg.BufferFrames, h.budget),
		ready: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	defer s.halt()

	first := &client{s: s, wake: make(chan struct{}, 1)}
	if !s.addSub(first) {
		t.Fatal("addSub refused a fresh stream")
	}
	s.removeSub(first) // the client leaves: linger period 1 starts
	stale := s.lingerGen

	// Period 1's timer fires; before its callback takes s.mu a client
	// resumes ...
	again := &client{s: s, wake: make(chan struct{}, 1)}
	if !s.addSub(again) {
		t.Fatal("addSub refused a lingering stream")
	}
	// ... and leaves again: period 2 starts.
	s.removeSub(again)
	// Now the stale callback of period 1 runs.
	s.lingerExpired(stale)
	if s.ending() {
		t.Fatalf("the stream ended at once, although its last client left a moment ago and LASTEVENT_LINGER is %v: "+
			"the stale linger callback of the previous period halted it", cfg.Linger)
	}
	// Period 2's own callback ends it.
	s.lingerExpired(s.lingerGen)
	if !s.ending() {
		t.Fatal("the current linger period's callback did not end the stream")
	}
}
