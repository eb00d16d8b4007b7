package test

// The owner replica dies (SIGKILL) mid-stream (issue 6): after its lease
// expires another replica takes over and reconnects to the upstream, which
// cannot resume (the fake legacy upstream ignores Last-Event-ID). Every
// client, on the surviving replicas and those that were on the dead one,
// continues after exactly one sync-required (upstream-reconnect) at the
// takeover point: no duplicate, no silent gap, ids increasing, the same id
// for a frame on every replica, and a single upstream reader again.

import (
	"testing"
	"time"
)

func TestReplicaOwnerKilled(t *testing.T) {
	const path = "/feed/replica-failover"
	run := startSharedRun(t, path, faultSeed(t))
	rs, feed, clients, fc, f, owner := run.rs, run.feed, run.clients, run.fc, run.f, run.owner
	if !fc.waitAll(t, 30, 10*time.Second) {
		t.FailNow()
	}
	var onOwner, elsewhere []string
	for _, c := range clients {
		if rs.currentReplica(c) == owner {
			onOwner = append(onOwner, c.name)
		} else {
			elsewhere = append(elsewhere, c.name)
		}
	}
	if len(elsewhere) == 0 {
		t.Fatalf("every client is on the owner replica-%d: the test needs clients on the others", owner)
	}
	nAtKill := f.N()
	killed := time.Now()
	rs.procs[owner].Kill()
	t.Logf("killed the owner replica-%d at n=%d; its clients %v reconnect through the balancer, %v stay on their replicas", owner, nAtKill, onOwner, elsewhere)

	waitFor(t, replicaLease+8*time.Second, "another replica reading the upstream", func() bool {
		return feed.Total() >= 2 && feed.Conns() == 1
	})
	takeover := time.Since(killed)
	newOwner := rs.owner(path, nil, 5*time.Second)
	if newOwner == owner {
		t.Fatalf("the dead replica-%d is still named owner", owner)
	}
	t.Logf("replica-%d took over after %v (lease %v)", newOwner, takeover.Round(time.Millisecond), replicaLease)

	target := f.N() + 20
	ok := fc.waitAll(t, target, 10*time.Second)
	final := f.Stop()
	if ok {
		fc.waitAll(t, final, 5*time.Second)
	}
	fc.Stop()

	ids := &sameIDs{}
	for _, c := range clients {
		evs := c.events()
		checkReplicaHistory(t, c.summary(), evs, replicaRules{tag: "shared", first: 1, final: final, syncs: []string{"upstream-reconnect"}, maxSyncs: 1})
		if n := syncCount(evs)["sync-required:upstream-reconnect"]; n != 1 {
			t.Errorf("%s: %d sync-required(upstream-reconnect), want exactly 1 at the takeover (frames were lost while no replica read the upstream)", c.name, n)
		}
		ids.add(c.name, evs)
	}
	for _, b := range ids.bad {
		t.Errorf("the same frame came with different ids: %s", b)
	}
	if got := feed.Total(); got != 2 {
		t.Errorf("%d upstream connections were opened, want 2 (the first owner's and the new owner's)", got)
	}
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
