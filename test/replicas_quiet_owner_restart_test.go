package test

// Redis restarts empty while the owner's upstream is quiet. The follower's
// stream ends on the lost log; its client reconnects and opens a second
// stream for the key, which reads the upstream too. The owner's renew loop
// must find its log gone and write back at once (a new label, a log of it,
// the key's index settled, the newest generation winning): one reader again
// within a few leases. Before, only an append noticed, so two replicas read
// the upstream for as long as it stayed quiet. The owner's client either goes
// on exactly or, when the other stream won, is ended and told on reconnect.

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestQuietOwnerAfterRedisRestartEmpty(t *testing.T) {
	rs := startReplicaSet(t, replicaConfig{mode: "shared", n: 2})
	const path = "/feed/quiet-owner-restart"
	feed := rs.up.Feed(path)
	f := faultStartFeeder(feed, 0, func(*http.Request) string { return "shared" })
	defer f.Stop()

	a := dialWire(t, rs.procs[0].URL(), path)
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("replica-0 did not connect to the upstream")
	}
	if o := rs.owner(path, nil, 5*time.Second); o != 0 {
		t.Fatalf("replica-%d owns the stream", o)
	}
	b := dialWire(t, rs.procs[1].URL(), path)
	rs.owner(path, []int{1}, 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	for f.N() < 3 {
		f.Send()
	}
	aev := readTicks(t, "a", a, "shared", 1, 3)
	bev := readTicks(t, "b", b, "shared", 1, 3)

	rs.redis.Restart(t)
	// The follower's stream ends on the lost log; its client reconnects.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.TryNext(time.Until(deadline))
		if errors.Is(err, errTimeout) {
			t.Fatal("the follower's client was not ended within 10 s after Redis restarted empty")
		}
		if err != nil {
			break // ended
		}
	}
	b2 := dialWire(t, rs.procs[1].URL(), path, "Last-Event-ID: "+bev[2].ID)
	ev, err := b2.TryNext(5 * time.Second)
	if err != nil {
		t.Fatalf("reconnect on replica-1: %v", err)
	}
	t.Logf("reconnect on replica-1 after the restart: %v", ev)

	// Upstream quiet: after three leases there must be one reader again.
	time.Sleep(3 * replicaLease)
	if n := feed.Conns(); n != 1 {
		t.Errorf("%d upstream connections for one shared key %v after Redis came back empty (upstream quiet); want 1. roles %q; states:%s",
			n, 3*replicaLease, rs.roles(path), rs.states())
	}
	for f.N() < 6 {
		f.Send()
	}
	ev, err = a.TryNext(5 * time.Second)
	if err != nil {
		// Its stream gave way to the newer one: a reconnect with its last id
		// must be told (a sync event), then get the frames.
		a = dialWire(t, rs.procs[0].URL(), path, "Last-Event-ID: "+aev[2].ID)
		ev, err = a.TryNext(5 * time.Second)
		if err != nil {
			t.Fatalf("a's reconnect on replica-0: %v", err)
		}
		if ev.Type != "sync-required" && ev.Type != "system-sync" {
			t.Fatalf("a's reconnect on replica-0 after its stream gave way: first event %v, want a sync event", ev)
		}
		return
	}
	readTicks(t, "a, on the owner, after the restart", a, "shared", 5, 2)
	if checkReplicaHistory(t, "a", append(aev, ev), replicaRules{tag: "shared", first: 1, final: 4}); t.Failed() {
		t.FailNow()
	}
}
