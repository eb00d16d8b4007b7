package test

// One replica cut from Redis (issue 6): replica-0 reaches Redis through a
// fault-injecting TCP proxy that stops forwarding both ways while keeping
// every connection open (what a broken network path looks like), for twice
// the owner lease. Cut the owner: its own clients keep receiving, another
// replica takes over meanwhile, and once the path heals a single reader of
// the upstream remains. Cut a follower: its clients stall, then catch up.
// In every case: no duplicate, no silent gap, ids increasing.

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/faults"
)

func TestReplicaCutFromRedis(t *testing.T) {
	for _, who := range []string{"owner", "follower"} {
		t.Run(who, func(t *testing.T) { runReplicaCut(t, who) })
	}
}

func runReplicaCut(t *testing.T, who string) {
	seed := faultSeed(t)
	var fp *faults.Proxy
	var cutting atomic.Bool
	rs := startReplicaSet(t, replicaConfig{mode: "shared", redisURL: func(i int) string {
		if i == 0 {
			return "redis://" + fp.Addr()
		}
		return ""
	}, prepare: func(rs *replicaSet) {
		var err error
		fp, err = faults.New(rs.redis.Addr(), faults.Options{HoldBlackHole: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fp.Close)
		fp.OnConn(func(c *faults.Conn) {
			if cutting.Load() {
				c.Do(faults.StopReadingClient)
				c.Do(faults.StopReadingServer)
			}
		})
	}})
	const path = "/feed/replica-redis-cut"
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
	// The stream is opened on replica-0 (to cut the owner) or replica-1 (to
	// cut a follower); then three clients on each replica.
	opener := 0
	if who == "follower" {
		opener = 1
	}
	first := newFaultClient(fmt.Sprintf("r%d-0", opener), path, to(opener), rng)
	fcFirst := startFaultClients([]*faultClient{first})
	defer fcFirst.Stop()
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatalf("replica-%d did not connect to the upstream", opener)
	}
	if o := rs.owner(path, nil, 5*time.Second); o != opener {
		t.Fatalf("replica-%d owns the stream; replica-%d opened it", o, opener)
	}
	all := []*faultClient{first}
	var rest, onCut []*faultClient
	if opener == 0 {
		onCut = append(onCut, first)
	}
	for i := 1; i < 9; i++ {
		r := (opener + i) % 3
		c := newFaultClient(fmt.Sprintf("r%d-%d", r, i), path, to(r), rng)
		rest = append(rest, c)
		all = append(all, c)
		if r == 0 {
			onCut = append(onCut, c)
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

	cut := 2 * replicaLease
	mon := watchStalls(onCut)
	nAt := f.N()
	cutting.Store(true)
	for _, c := range fp.Conns() {
		c.Do(faults.StopReadingClient)
		c.Do(faults.StopReadingServer)
	}
	time.Sleep(cut)
	cutting.Store(false)
	fp.Calm()
	stalls := mon.Stop()
	t.Logf("replica-0 (%s) cut from Redis for %v from n=%d to n=%d; %d upstream connections during the cut; longest stall of its clients %v",
		who, cut, nAt, f.N(), feed.Total(), stalls)
	if who == "owner" {
		for name, d := range stalls {
			if d > replicaStallBound {
				t.Errorf("%s (on the cut owner) went %v without a frame, bound %v", name, d.Round(time.Millisecond), replicaStallBound)
			}
		}
	}

	// Healed: everyone catches up, then moves to the next replica.
	ok := waitN(f.N()+20, 15*time.Second)
	if who == "owner" {
		waitFor(t, replicaLease+8*time.Second, "a single upstream reader after the cut healed", func() bool { return feed.Conns() == 1 })
	}
	viaLB.Store(true)
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
		checkReplicaHistory(t, c.summary(), c.events(), replicaRules{tag: "shared", first: 1, final: final, syncs: []string{"system-sync", "*"},
			lowerAtSystemSync: who == "owner" && strings.HasPrefix(c.name, "r0-")})
		t.Logf("%s: sync events %v", c.name, syncCount(c.events()))
	}
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
