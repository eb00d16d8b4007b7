package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMetricsAndClientLog: the counters behind a resume, a sync-required by
// reason, an upstream reconnect and the replay histogram move as the wire
// says they should, and each client connection leaves one log line at its
// end with its stream, frames sent, how it started and how it ended.
func TestMetricsAndClientLog(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_HEARTBEAT=200ms", "LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=50ms")
	const path = "/feed/obs"
	feed := up.Feed(path)
	c := dial(t, p.URL(), path)
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("no upstream connection")
	}
	for i := 1; i <= 5; i++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", i))
	}
	var second event
	for i := 1; i <= 5; i++ {
		ev := c.Next(5 * time.Second)
		if i == 2 {
			second = ev
		}
	}
	c.Close()

	// A resume (3 frames replayed), a malformed id, an upstream reconnect.
	r := dial(t, p.URL(), path, "Last-Event-ID: "+second.ID)
	for i := 3; i <= 5; i++ {
		if ev := r.Next(5 * time.Second); ev.Data != fmt.Sprint(i) {
			t.Fatalf("resume: got %v, want data %d", ev, i)
		}
	}
	bad := dial(t, p.URL(), path, "Last-Event-ID: nonsense")
	if ev := bad.Next(5 * time.Second); ev.Type != "sync-required" {
		t.Fatalf("malformed id: got %v", ev)
	}
	feed.Kill()
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("lastevent did not reconnect upstream")
	}
	if ev := r.Next(5 * time.Second); ev.Type != "sync-required" {
		t.Fatalf("after the upstream reconnect: got %v, want the marker", ev)
	}

	m := scrape(t, p)
	for name, want := range map[string]float64{
		`lastevent_resumes_total{outcome="hit"}`:                                 1,
		`lastevent_resumes_total{outcome="sync_required",reason="malformed-id"}`: 1,
		`lastevent_resumes_total{outcome="sync_required",reason="evicted"}`:      0,
		`lastevent_upstream_reconnects_total`:                                    1,
		`lastevent_replay_seconds_count`:                                         1,
		`lastevent_sync_markers_total`:                                           1,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	// The process's descriptors: this client's, the upstream's, the listeners.
	if m["process_open_fds"] < 4 || m["process_max_fds"] < m["process_open_fds"] {
		t.Errorf("process_open_fds %v, process_max_fds %v", m["process_open_fds"], m["process_max_fds"])
	}
	if m["lastevent_upstream_connects_total"] < 2 {
		t.Errorf("lastevent_upstream_connects_total = %v, want >= 2", m["lastevent_upstream_connects_total"])
	}

	// The first client's line: it started the stream and left after 5 frames
	// (6 when the reconnect marker went out before its close was noticed).
	waitFor(t, 10*time.Second, "the first client's log line", func() bool {
		return clientLine(p.Logs(), "new") != nil
	})
	line := clientLine(p.Logs(), "new")
	if line["path"] != path || (line["frames"] != float64(5) && line["frames"] != float64(6)) || line["outcome"] != "client-gone" || line["stream"] == "" {
		t.Errorf("client log line: %v", line)
	}
	if strings.Count(p.Logs(), `"message":"client done"`) > 1 {
		t.Errorf("more client lines than clients that left:\n%s", p.Logs())
	}
}

// clientLine finds the "client done" log line of a client that started as
// start.
func clientLine(logs, start string) map[string]any {
	for _, l := range strings.Split(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["message"] == "client done" && rec["start"] == start {
			return rec
		}
	}
	return nil
}

// scrape reads /metrics into name{labels} -> value.
func scrape(t *testing.T, p *proc) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := map[string]float64{}
	for _, s := range parseProm(t, string(body)) {
		key := s.name
		if s.labels != "" {
			key += "{" + s.labels + "}"
		}
		out[key] = s.value
	}
	return out
}
