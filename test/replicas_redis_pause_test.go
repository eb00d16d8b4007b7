package test

// Redis paused (CLIENT PAUSE, issue 6): its connections stay open, every
// command waits. The owner's clients keep receiving (no stall beyond a
// bound, no duplicate, no gap); afterwards every client resumes, through the
// balancer, on another replica and gets the exact frames or an explicit sync
// event.

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// replicaStallBound is how long an owner's clients may go without a frame
// while Redis is slow or gone (LASTEVENT_REDIS_TIMEOUT is 500ms).
const replicaStallBound = 2 * time.Second

func TestReplicaRedisPaused(t *testing.T) {
	seed := faultSeed(t)
	rs := startReplicaSet(t, replicaConfig{mode: "shared"})
	const path = "/feed/replica-redis-pause"
	feed := rs.up.Feed(path)
	rng := newFaultRand(seed, 1)

	var viaLB atomic.Bool
	to := func(i int) func() string {
		return func() string {
			if viaLB.Load() {
				return rs.lb.Addr()
			}
			return rs.procs[i].Addr
		}
	}
	// Replica-0 opens the stream and owns it; three clients on each replica.
	first := newFaultClient("owner-0", path, to(0), rng)
	fcFirst := startFaultClients([]*faultClient{first})
	defer fcFirst.Stop()
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("replica-0 did not connect to the upstream")
	}
	if o := rs.owner(path, nil, 5*time.Second); o != 0 {
		t.Fatalf("replica-%d owns the stream; replica-0 opened it", o)
	}
	ownerClients := []*faultClient{first}
	all := []*faultClient{first}
	var rest []*faultClient
	for i := 1; i < 9; i++ {
		r := i % 3
		c := newFaultClient(fmt.Sprintf("r%d-%d", r, i), path, to(r), rng)
		rest = append(rest, c)
		all = append(all, c)
		if r == 0 {
			ownerClients = append(ownerClients, c)
		}
	}
	fc := startFaultClients(rest)
	defer fc.Stop()
	waitFor(t, 10*time.Second, "9 clients attached", func() bool { return rs.connections() == 9 })
	rs.owner(path, []int{0, 1, 2}, 10*time.Second)
	time.Sleep(200 * time.Millisecond)

	f := faultStartFeeder(feed, 20*time.Millisecond, func(*http.Request) string { return "shared" })
	defer f.Stop()
	waitN := func(n int, d time.Duration) bool {
		ok := true
		for _, set := range []*faultClients{fcFirst, fc} {
			ok = set.waitAll(t, n, d) && ok
		}
		return ok
	}
	if !waitN(20, 10*time.Second) {
		t.FailNow()
	}

	pause := 4 * time.Second
	mon := watchStalls(ownerClients)
	nAt := f.N()
	rs.redis.Pause(t, pause)
	time.Sleep(pause + 500*time.Millisecond)
	stalls := mon.Stop()
	t.Logf("CLIENT PAUSE %v from n=%d to n=%d; longest stall of the owner's clients: %v", pause, nAt, f.N(), stalls)
	for name, d := range stalls {
		if d > replicaStallBound {
			t.Errorf("%s (on the owner) went %v without a frame while Redis was paused, bound %v", name, d.Round(time.Millisecond), replicaStallBound)
		}
	}
	// Right after the pause the owner's clients are live: within 10 frames
	// of the upstream (polled for a second: the check itself may be late).
	target := f.N() - 10
	for _, c := range ownerClients {
		if !waitUntil(time.Second, func() bool { return c.LastN() >= target }) {
			t.Errorf("%s (on the owner) is at n=%d right after the pause, the upstream at %d", c.name, c.LastN(), f.N())
		}
	}

	// After the pause: everyone resumes on the next replica.
	viaLB.Store(true)
	for _, c := range all {
		c.Drop()
	}
	ok := waitN(f.N()+20, 15*time.Second)
	if ok {
		for _, c := range all {
			c.Drop()
		}
		ok = waitN(f.N()+10, 10*time.Second)
	}
	final := f.Stop()
	if ok {
		waitN(final, 5*time.Second)
	}
	fc.Stop()
	fcFirst.Stop()

	for _, c := range all {
		checkReplicaHistory(t, c.summary(), c.events(), replicaRules{tag: "shared", first: 1, final: final, syncs: []string{"system-sync", "*"}})
		t.Logf("%s: sync events %v", c.name, syncCount(c.events()))
	}
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
