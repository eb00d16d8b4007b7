package test

// A rollout (issue 6, README "Running replicas"): replicas get SIGTERM one
// after the other, owner first. A stopping replica drains: its clients'
// responses end and they reconnect through the balancer to the others, which
// resume them exactly from Redis (memory mode would answer system-sync), and
// it gives its leases up, so a replica with clients on the stream takes the
// upstream over at once rather than after the lease. Each takeover is an
// upstream reconnect (the fake upstream cannot resume): one sync-required
// there, nothing else; no duplicate, no silent gap, ids increasing.

import (
	"fmt"
	"testing"
	"time"
)

func TestReplicaRollout(t *testing.T) {
	const path = "/feed/replica-rollout"
	run := startSharedRun(t, path, faultSeed(t))
	rs, feed, clients, fc, f, owner := run.rs, run.feed, run.clients, run.fc, run.f, run.owner
	if !fc.waitAll(t, 30, 10*time.Second) {
		t.FailNow()
	}
	stopped := map[int]bool{}
	for step := 1; step <= 2; step++ {
		nAt := f.N()
		if err := rs.procs[owner].Stop(); err != nil {
			t.Errorf("replica-%d did not stop cleanly: %v", owner, err)
		}
		began := time.Now() // the stopped owner has given its lease up
		// Right after its exit no lease in Redis names it (had it kept the
		// lease, the key would name it for up to the 2 s lease).
		for _, holder := range rs.leaseHolders(t) {
			if holder == fmt.Sprintf("replica-%d", owner) {
				t.Errorf("step %d: replica-%d exited still holding its lease", step, owner)
			}
		}
		stopped[owner] = true
		var left []int
		for i := range rs.procs {
			if !stopped[i] {
				left = append(left, i)
			}
		}
		waitFor(t, 5*time.Second, "a remaining replica reading the upstream", func() bool {
			return feed.Total() >= int64(step+1) && feed.Conns() == 1
		})
		took := time.Since(began)
		next := rs.owner(path, left, 5*time.Second)
		t.Logf("step %d: stopped the owner replica-%d at n=%d; replica-%d took over %v after it exited (lease %v)",
			step, owner, nAt, next, took.Round(time.Millisecond), replicaLease)
		// A free lease is taken on a follower's second look (every lease/3,
		// an XREAD of lease/3 between): about 1.4 s at worst, plus round
		// trips on a loaded machine.
		if bound := replicaLease * 3 / 2; took > bound {
			t.Errorf("step %d: the takeover took %v, more than %v after the owner gave its lease up", step, took, bound)
		}
		if !fc.waitAll(t, f.N()+20, 10*time.Second) {
			t.FailNow()
		}
		owner = next
	}
	final := f.Stop()
	fc.waitAll(t, final, 5*time.Second)
	fc.Stop()

	for _, c := range clients {
		evs := c.events()
		checkReplicaHistory(t, c.summary(), evs, replicaRules{tag: "shared", first: 1, final: final, syncs: []string{"upstream-reconnect"}, maxSyncs: 2})
		if n := syncCount(evs)["system-sync"]; n != 0 {
			t.Errorf("%s: %d system-sync in a rollout with Redis", c.name, n)
		}
	}
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
