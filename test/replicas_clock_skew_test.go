package test

// Clock skew between replicas (issue 6): replica-1 runs an hour behind
// (LASTEVENT_CLOCK_OFFSET=-1h). Clients keep moving across the replicas
// through the balancer while: replica-0 (on time) owns the stream; Redis is
// restarted empty (system-sync, new generations made by whichever replica
// answers); replica-0 and replica-2 are killed, so that the skewed
// replica-1 takes over; and Redis is restarted empty once more, so that the
// skewed replica alone labels the frames from then on, with its clock an
// hour behind every id the clients hold.
// Each client's ids must still strictly increase as strings throughout, with
// no duplicate and no silent gap.

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestReplicaClockSkew(t *testing.T) {
	seed := faultSeed(t)
	rs := startReplicaSet(t, replicaConfig{mode: "shared", env: func(i int) []string {
		if i == 1 {
			return []string{"LASTEVENT_CLOCK_OFFSET=-1h"}
		}
		return nil
	}})
	const path = "/feed/replica-clock-skew"
	feed := rs.up.Feed(path)
	rng := newFaultRand(seed, 1)

	// Replica-0 opens the stream (and owns it); the rest come through the
	// balancer.
	first := newFaultClient("c0", path, func() string { return rs.procs[0].Addr }, rng)
	fcFirst := startFaultClients([]*faultClient{first})
	defer fcFirst.Stop()
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("replica-0 did not connect to the upstream")
	}
	if o := rs.owner(path, nil, 5*time.Second); o != 0 {
		t.Fatalf("replica-%d owns the stream; replica-0 opened it", o)
	}
	var rest []*faultClient
	for i := 1; i < 9; i++ {
		rest = append(rest, newFaultClient(fmt.Sprintf("c%d", i), path, rs.lb.Addr, rng))
	}
	fc := startFaultClients(rest)
	defer fc.Stop()
	waitFor(t, 10*time.Second, "9 clients attached", func() bool { return rs.connections() == 9 })
	rs.owner(path, []int{0, 1, 2}, 10*time.Second)
	time.Sleep(200 * time.Millisecond)

	f := faultStartFeeder(feed, 20*time.Millisecond, func(*http.Request) string { return "shared" })
	defer f.Stop()
	waitN := func(n int, d time.Duration) bool {
		return fc.waitAll(t, n, d)
	}
	if !waitN(20, 10*time.Second) {
		t.FailNow()
	}
	// Movement: every 100 ms one of the balanced clients drops and resumes
	// on the next replica.
	stopMoving := make(chan struct{})
	moved := make(chan struct{})
	go func() {
		defer close(moved)
		for {
			select {
			case <-stopMoving:
				return
			case <-time.After(100 * time.Millisecond):
				rest[rng.IntN(len(rest))].Drop()
			}
		}
	}()
	stop := func() {
		select {
		case <-stopMoving:
		default:
			close(stopMoving)
		}
		<-moved
	}
	defer stop()

	ok := waitN(f.N()+30, 10*time.Second)
	t.Logf("phase 1 (replica-0 owns, clients moving) until n=%d", f.N())
	if ok {
		rs.redis.Restart(t)
		for _, c := range rest {
			c.Drop()
		}
		time.Sleep(500 * time.Millisecond)
		ok = waitN(f.N()+30, 15*time.Second)
		t.Logf("phase 2 (Redis restarted empty) until n=%d", f.N())
	}
	if ok {
		rs.procs[0].Kill()
		rs.procs[2].Kill()
		fcFirst.Stop() // its replica is gone
		ok = waitN(f.N()+30, replicaLease+15*time.Second)
		t.Logf("phase 3 (only the skewed replica-1 left) until n=%d", f.N())
	}
	if ok {
		// Redis loses everything again: the skewed replica alone must label
		// the frames from now on, an hour behind the ids clients hold.
		rs.redis.Restart(t)
		for _, c := range rest {
			c.Drop()
		}
		ok = waitN(f.N()+30, 15*time.Second)
		t.Logf("phase 4 (Redis restarted empty, only the skewed replica-1) until n=%d", f.N())
	}
	stop()
	final := f.Stop()
	if ok {
		waitN(final, 5*time.Second)
	}
	fc.Stop()
	fcFirst.Stop()

	for _, c := range rest {
		// Redis restarts empty twice here: around each, two replicas can
		// open a new stream for the key at once, and a client that got
		// the losing one's frames gets system-sync on the winner, whose
		// generation may sort lower (README, Running replicas). Every other
		// rule holds.
		checkReplicaHistory(t, c.summary(), c.events(), replicaRules{tag: "shared", first: 1, final: final, syncs: []string{"system-sync", "*"}, lowerAtSystemSync: true})
		t.Logf("%s: sync events %v", c.name, syncCount(c.events()))
	}
	// c0 stayed on replica-0 until it was killed: its history until then
	// holds to the same rules (it may end anywhere).
	checkReplicaHistory(t, first.summary(), first.events(), replicaRules{tag: "shared", first: 1, syncs: []string{"system-sync", "*"}})
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
