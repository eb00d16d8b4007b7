package test

// A degraded owner (Redis gone) and an id of its own stream from ahead of
// anything it issued: the owner's own sequence is the truth there, so the
// client must get sync-required (unknown-id) at once, not a resume that waits
// for the owner's sequence to reach the forged one and silently skips the
// frames in between. (A follower, whose view of Redis is old, may resume such
// an id: that is a different case.)

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
)

func TestDegradedOwnerRefusesAFutureID(t *testing.T) {
	r := startRedis(t)
	up := startUpstream(t)
	p := startProxy(t, up.URL(),
		"LASTEVENT_STORE=redis",
		"LASTEVENT_REDIS_URL="+r.URL(),
		"LASTEVENT_NODE_ID=replica-0",
		"LASTEVENT_MODE=shared",
		"LASTEVENT_REDIS_LEASE="+replicaLease.String(),
		"LASTEVENT_HEARTBEAT=500ms",
		"LASTEVENT_LINGER=30s",
	)
	const path = "/feed/degraded-owner-future-id"
	feed := up.Feed(path)
	f := faultStartFeeder(feed, 0, func(*http.Request) string { return "u" })
	defer f.Stop()
	c := dialWire(t, p.URL(), path)
	if c.Status != 200 {
		t.Fatalf("SSE request: %d %q", c.Status, c.Body)
	}
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("lastevent did not open the upstream stream")
	}
	time.Sleep(100 * time.Millisecond)
	for f.N() < 3 {
		f.Send()
	}
	evs := readTicks(t, "client with Redis up", c, "u", 1, 3)

	r.Kill()
	waitFor(t, 15*time.Second, "lastevent_redis_up 0 after Redis was killed", func() bool {
		return p.faultMetrics(t)["lastevent_redis_up"] == 0
	})
	last, err := replay.ParseID([]byte(evs[2].ID))
	if err != nil {
		t.Fatalf("id %q: %v", evs[2].ID, err)
	}
	forged := replay.ID{Gen: last.Gen, Seq: last.Seq + 1000}.String()
	c2 := dialWire(t, p.URL(), path, "Last-Event-ID: "+forged)
	if c2.Status != 200 {
		t.Fatalf("resume of %s: %d %q", forged, c2.Status, c2.Body)
	}
	for f.N() < 5 {
		f.Send()
	}
	ev, err := c2.TryNext(5 * time.Second)
	if err != nil {
		t.Fatalf("resume of a future id on the degraded owner: no event: %v", err)
	}
	if ev.Type != "sync-required" || !strings.Contains(ev.Data, "unknown-id") {
		t.Fatalf("resume of a future id (%s, newest issued %s) on the degraded owner: first event %v, want sync-required with unknown-id", forged, evs[2].ID, ev)
	}
	readTicks(t, "the same client after its sync event", c2, "u", 4, 2)
}
