package test

// Redis is killed and restarted empty (issue 6): the generation is gone.
// Clients that resume with their old ids get system-sync (except on the
// owner, which may still resume them from its own frames), then continue;
// nothing is lost without a sync event, nothing comes twice, ids increase
// across the system-sync; the replicas see Redis as "ok" again.

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestReplicaRedisRestartedEmpty(t *testing.T) {
	const path = "/feed/replica-redis-restart"
	run := startSharedRun(t, path, faultSeed(t))
	rs, clients, fc, f, owner := run.rs, run.clients, run.fc, run.f, run.owner
	if !fc.waitAll(t, 20, 10*time.Second) {
		t.FailNow()
	}
	// Everyone moves once before the restart, so that ids resume across
	// replicas in the old generation too.
	for _, c := range clients {
		c.Drop()
	}
	if !fc.waitAll(t, f.N()+10, 10*time.Second) {
		t.FailNow()
	}
	nAt := f.N()
	rs.redis.Restart(t)
	t.Logf("redis restarted empty at n=%d (owner was replica-%d)", nAt, owner)
	// Every client resumes with its old id on the next replica, at once
	// (the followers may not have noticed yet) and again a second later.
	for _, c := range clients {
		c.Drop()
	}
	ok := fc.waitAll(t, f.N()+10, 15*time.Second)
	time.Sleep(time.Second)
	for _, c := range clients {
		c.Drop()
	}
	ok = ok && fc.waitAll(t, f.N()+20, 15*time.Second)
	if ok {
		// And once more, now with ids of the new generation.
		for _, c := range clients {
			c.Drop()
		}
		ok = fc.waitAll(t, f.N()+10, 10*time.Second)
	}
	final := f.Stop()
	if ok {
		fc.waitAll(t, final, 5*time.Second)
	}
	fc.Stop()

	systemSyncs := 0
	for _, c := range clients {
		evs := c.events()
		checkReplicaHistory(t, c.summary(), evs, replicaRules{tag: "shared", first: 1, final: final, syncs: []string{"system-sync", "*"},
			lowerAtSystemSync: true}) // two streams opened at once as Redis came back: see the rule
		systemSyncs += syncCount(evs)["system-sync"]
	}
	if systemSyncs == 0 {
		t.Errorf("no client got system-sync after Redis came back empty (9 clients resumed with ids of the lost generation)")
	}
	waitFor(t, 10*time.Second, "every replica seeing Redis ok again", func() bool {
		for _, p := range rs.procs {
			st, err := tryState(p)
			if err != nil || st.Redis.State != "ok" {
				return false
			}
		}
		return true
	})
	var counts []string
	for _, c := range clients {
		counts = append(counts, fmt.Sprintf("%s %v", c.name, syncCount(c.events())))
	}
	t.Logf("sync events per client: %s", strings.Join(counts, "; "))
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
