package test

// Redis unreachable at start (issue 6): lastevent does not exit or crash
// loop; it names LASTEVENT_REDIS_URL and the address (never the password)
// in its log, /healthz stays 200, /readyz answers 503 naming Redis, a
// stream opened meanwhile works locally; once Redis is started /readyz
// turns 200, the stream goes on, and its frames (written back to Redis)
// resume exactly on another replica: both when the upstream goes on
// sending after Redis came ("busy") and when it is quiet then ("idle": the
// frames of the degraded time must be written back all the same, and the
// other replica must follow this stream rather than open a second one).

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRedisUnreachableAtStart(t *testing.T) {
	for _, name := range []string{"busy", "idle"} {
		t.Run(name, func(t *testing.T) { runRedisUnreachable(t, name == "busy") })
	}
}

func runRedisUnreachable(t *testing.T, busy bool) {
	const password = "s3cret-pw-77"
	port := loopbackPort(t)
	r := newRedis(t, port, "--requirepass", password) // not started yet
	url := fmt.Sprintf("redis://:%s@%s", password, r.Addr())
	up := startUpstream(t)
	env := func(node string) []string {
		return []string{
			"LASTEVENT_STORE=redis",
			"LASTEVENT_REDIS_URL=" + url,
			"LASTEVENT_NODE_ID=" + node,
			"LASTEVENT_MODE=shared",
			"LASTEVENT_REDIS_LEASE=" + replicaLease.String(),
			"LASTEVENT_HEARTBEAT=500ms",
			"LASTEVENT_LINGER=30s",
		}
	}
	p := startProxy(t, up.URL(), env("replica-0")...)
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-p.exited:
		t.Fatalf("lastevent exited with Redis unreachable: %v\n%s", p.err, p.Logs())
	default:
	}
	logs := p.Logs()
	if !strings.Contains(logs, "LASTEVENT_REDIS_URL") || !strings.Contains(logs, r.Addr()) {
		t.Errorf("the log does not name LASTEVENT_REDIS_URL and %s:\n%s", r.Addr(), logs)
	}
	if strings.Contains(logs, password) {
		t.Errorf("the log shows the Redis password")
	}
	if code, body := p.adminGet(t, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d %q, want 200 (liveness never depends on Redis)", code, body)
	}
	code, body := p.adminGet(t, "/readyz")
	if code != 503 || !strings.Contains(strings.ToLower(string(body)), "redis") {
		t.Errorf("/readyz with Redis unreachable: %d %q, want 503 naming Redis", code, body)
	}
	if strings.Contains(string(body), password) {
		t.Errorf("/readyz shows the Redis password: %q", body)
	}
	if st, err := tryState(p); err != nil || st.Redis.State == "ok" || st.Redis.State == "" {
		t.Errorf("stream-state redis.state with Redis unreachable: %q (%v), want it to say it is not ok", st.Redis.State, err)
	}
	if v, ok := p.faultMetrics(t)["lastevent_redis_up"]; !ok || v != 0 {
		t.Errorf("lastevent_redis_up = %v (present %v), want 0", v, ok)
	}

	// A stream opened meanwhile runs locally.
	const path = "/feed/redis-unreachable"
	feed := up.Feed(path)
	f := faultStartFeeder(feed, 0, func(*http.Request) string { return "u" })
	defer f.Stop()
	c := dialWire(t, p.URL(), path)
	if c.Status != 200 {
		t.Fatalf("SSE request with Redis unreachable: %d %q", c.Status, c.Body)
	}
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("lastevent did not open the upstream stream while Redis is unreachable")
	}
	time.Sleep(100 * time.Millisecond)
	for f.N() < 5 {
		f.Send()
	}
	evs := readTicks(t, "client while Redis is unreachable", c, "u", 1, 5)

	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitFor(t, 15*time.Second, "/readyz 200 once Redis answers", func() bool {
		code, _ := p.adminGet(t, "/readyz")
		return code == 200
	})
	t.Logf("ready %v after Redis started", time.Since(started).Round(time.Millisecond))
	if v := p.faultMetrics(t)["lastevent_redis_up"]; v != 1 {
		t.Errorf("lastevent_redis_up = %v with Redis up, want 1", v)
	}
	final := 5
	if busy {
		// Frames after Redis came, spaced so that the degraded owner's
		// next try of Redis falls between them.
		for f.N() < 10 {
			time.Sleep(200 * time.Millisecond)
			f.Send()
		}
		final = 10
		evs = append(evs, readTicks(t, "the same client after Redis came", c, "u", 6, 5)...)
	}
	checkReplicaHistory(t, "client on replica-0", evs, replicaRules{tag: "u", first: 1, final: final})

	// Written back: another replica resumes the frames after n=3 exactly.
	time.Sleep(1500 * time.Millisecond)
	p2 := startProxy(t, up.URL(), env("replica-1")...)
	c2 := dialWire(t, p2.URL(), path, "Last-Event-ID: "+evs[2].ID)
	if c2.Status != 200 {
		t.Fatalf("resume on replica-1: %d %q", c2.Status, c2.Body)
	}
	readTicks(t, "resume of n=3's id (issued while Redis was unreachable) on replica-1", c2, "u", 4, final-3)
	if got := feed.Total(); got != 1 {
		t.Errorf("%d upstream connections, want 1 (replica-1 follows replica-0)", got)
	}
}
