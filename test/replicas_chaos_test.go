package test

// The chaos test of issue 6: three replicas in Redis mode behind a plain
// round-robin balancer; many clients drop their connections at random
// points and come back, through the balancer, with their last id, so that
// most reconnects land on another replica than the one that served them.
// While the owner lives, each client must end with exactly the upstream's
// sequence: no sync event at all, no duplicate, no gap, ids increasing, and
// (shared mode) one id per frame whatever replica delivered it.
//
// The seed is printed; rerun with LASTEVENT_TEST_SEED=N.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type replicaChaosResult struct {
	evs        []event
	conns      int
	replicas   []int    // the replica of each connection
	unexpected []string // responses that ended without the client dropping them
	cut        []string // chunks that did not hold whole frames
	err        error
}

func TestReplicaChaos(t *testing.T) {
	seed := faultSeed(t)
	for i, mode := range []string{"shared", "session"} {
		t.Run(mode, func(t *testing.T) {
			runReplicaChaos(t, seed+uint64(i)*7919, mode)
		})
	}
}

func runReplicaChaos(t *testing.T, seed uint64, mode string) {
	clients, frames := faultPick(9, 30), faultPick(150, 500)
	rs := startReplicaSet(t, replicaConfig{mode: mode})
	const path = "/feed/replica-chaos"
	feed := rs.up.Feed(path)
	tagOf := func(r *http.Request) string {
		if mode == "session" {
			return r.Header.Get("X-Fault-Client")
		}
		return "shared"
	}
	tag := func(i int) string {
		if mode == "session" {
			return fmt.Sprintf("c%d", i)
		}
		return "shared"
	}
	header := func(i int) []string {
		if mode == "session" {
			return []string{"X-Fault-Client: " + tag(i)}
		}
		return nil
	}

	// Everyone is connected before the first frame (a client without an id
	// starts live), round-robin over the three replicas.
	first := make([]*wireClient, clients)
	firstReplica := make([]int, clients)
	for i := range first {
		first[i] = dialWire(t, rs.lb.URL(), path, header(i)...)
		if first[i].Status != 200 {
			t.Fatalf("client %d: status %d %q", i, first[i].Status, first[i].Body)
		}
		firstReplica[i] = rs.replicaOf(first[i].conn.LocalAddr())
	}
	waitFor(t, 10*time.Second, "all clients attached", func() bool {
		if mode == "session" && feed.Conns() != clients {
			return false
		}
		return rs.connections() == int64(clients)
	})
	if mode == "shared" {
		owner := rs.owner(path, []int{0, 1, 2}, 10*time.Second)
		t.Logf("replica-%d owns %s", owner, path)
	}
	time.Sleep(200 * time.Millisecond) // followers' tails in place
	if mode == "shared" && feed.Conns() != 1 {
		t.Fatalf("%d upstream connections for one shared stream over three replicas, want 1 (the owner's)", feed.Conns())
	}

	var maxUpstream atomic.Int64
	sampleDone := make(chan struct{})
	stopSample := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for {
			if n := int64(feed.Conns()); n > maxUpstream.Load() {
				maxUpstream.Store(n)
			}
			select {
			case <-stopSample:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	deadline := time.Now().Add(30 * time.Second)
	results := make([]replicaChaosResult, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			results[i] = replicaChaosClient(t, rs, path, header(i), first[i], firstReplica[i], rng, frames, deadline)
		}()
	}
	// The upstream: frames 1..N at an uneven pace with bursts.
	rng := rand.New(rand.NewPCG(seed, 1<<32))
	start := time.Now()
	for k := 1; k <= frames; k++ {
		feed.SendEach(func(r *http.Request) string { return faultTickFrame(tagOf(r), k) })
		switch r := rng.IntN(20); {
		case r == 0: // a burst follows
		case r < 3:
			time.Sleep(8 * time.Millisecond)
		default:
			time.Sleep(2 * time.Millisecond)
		}
	}
	sent := time.Since(start)
	wg.Wait()
	close(stopSample)
	<-sampleDone
	if d := feed.Dropped(); d != 0 {
		t.Fatalf("the fake upstream dropped %d sends: the test is invalid", d)
	}

	ids := &sameIDs{}
	totalConns, reconnects, moved := 0, 0, 0
	for i, r := range results {
		who := fmt.Sprintf("seed %d, client %d (%d connections, replicas %v)", seed, i, r.conns, r.replicas)
		totalConns += r.conns
		for k := 1; k < len(r.replicas); k++ {
			reconnects++
			if r.replicas[k] != r.replicas[k-1] {
				moved++
			}
		}
		switch {
		case r.err != nil:
			t.Errorf("%s: %v\n  seen: %s", who, r.err, replicaHistory(r.evs))
		case len(r.unexpected) > 0:
			t.Errorf("%s: responses ended without the client dropping them: %v\n  seen: %s", who, r.unexpected, replicaHistory(r.evs))
		case len(r.cut) > 0:
			t.Errorf("%s: chunks not holding whole frames: %.200q", who, r.cut[0])
		default:
			checkReplicaHistory(t, who, r.evs, replicaRules{tag: tag(i), first: 1, final: frames})
		}
		if mode == "shared" {
			ids.add(fmt.Sprintf("client %d", i), r.evs)
		}
	}
	for _, b := range ids.bad {
		t.Errorf("the same frame came with different ids (the log is not shared): %s", b)
	}
	// The test is only worth something if clients really moved.
	if reconnects < clients || moved*3 < reconnects {
		t.Errorf("only %d of %d reconnects went to another replica: the balancer did not spread them", moved, reconnects)
	}
	want := int64(1)
	if mode == "session" {
		want = int64(clients)
	}
	if got := feed.Total(); got != want {
		t.Errorf("%d upstream connections were opened, want %d (one reader per stream, no upstream reconnect while the owner lives)", got, want)
	}
	if mode == "shared" && maxUpstream.Load() > 1 {
		t.Errorf("up to %d replicas read the shared upstream stream at once, want 1", maxUpstream.Load())
	}
	if t.Failed() {
		t.Logf("stream states at the end:%s", rs.states())
	}
	t.Logf("%s: %d clients, %d frames sent in %v, %d connections, %d of %d reconnects to another replica, per replica %d/%d/%d",
		mode, clients, frames, sent.Round(time.Millisecond), totalConns, moved, reconnects, rs.lb.Count(0), rs.lb.Count(1), rs.lb.Count(2))
}

// replicaChaosClient consumes the stream until it has seen frame final,
// dropping the connection at random points and resuming through the
// balancer with its last id.
func replicaChaosClient(t *testing.T, rs *replicaSet, path string, header []string, c *wireClient, replica int, rng *rand.Rand, final int, deadline time.Time) (res replicaChaosResult) {
	lastID := ""
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		if c == nil {
			if time.Now().After(deadline) {
				res.err = fmt.Errorf("deadline passed while reconnecting")
				return res
			}
			var err error
			c, err = tryDialWire(t, rs.lb.URL(), path, append([]string{"Last-Event-ID: " + lastID}, header...)...)
			if err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if c.Status != 200 {
				res.err = fmt.Errorf("resume with %s: status %d %q", lastID, c.Status, c.Body)
				return res
			}
			replica = rs.replicaOf(c.conn.LocalAddr())
		}
		res.conns++
		res.replicas = append(res.replicas, replica)
		budget := 1 + rng.IntN(30)
		var dropAt time.Time
		if rng.IntN(2) == 0 {
			dropAt = time.Now().Add(time.Duration(1+rng.IntN(50)) * time.Millisecond)
		}
		for dropped := false; !dropped; {
			if time.Now().After(deadline) {
				res.err = fmt.Errorf("deadline passed; last id %s", lastID)
				return res
			}
			wait := time.Until(deadline)
			if !dropAt.IsZero() && lastID != "" {
				if wait = time.Until(dropAt); wait <= 0 {
					break
				}
			}
			ev, err := c.TryNext(wait)
			if err == errTimeout {
				continue
			}
			if err != nil {
				res.unexpected = append(res.unexpected, fmt.Sprintf("after %s on replica-%d: %v", lastID, replica, err))
				break
			}
			res.evs = append(res.evs, ev)
			lastID = ev.ID
			if _, n, ok := faultParseTick(ev.Data); ok && ev.Type == "tick" && n >= final {
				res.cut = append(res.cut, c.CutChunks()...)
				return res
			}
			if ev.Type != "tick" && ev.Type != "sync-required" && ev.Type != "system-sync" {
				res.err = fmt.Errorf("unexpected event %v", ev)
				return res
			}
			budget--
			dropped = budget <= 0
		}
		res.cut = append(res.cut, c.CutChunks()...)
		c.Close()
		c = nil
		time.Sleep(time.Duration(rng.Int64N(int64(20*time.Millisecond) + 1)))
	}
}
