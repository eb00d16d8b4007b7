package test

// Point 10: the admin endpoints. /debug/stream-state describes every stream,
// /healthz is liveness (never depends on the upstream), /readyz readiness
// (serving and not draining), /metrics the Prometheus text format.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAdminStreamState(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_BUFFER_FRAMES=5", "LASTEVENT_MAX_MEMORY=64MiB")
	const path = "/feed/admin"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	var ids []string
	for k := 1; k <= 8; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
		ids = append(ids, c.Next(5*time.Second).ID)
	}
	other := dialWire(t, p.URL(), "/feed/admin-other")
	waitFor(t, 5*time.Second, "two streams", func() bool { return len(p.state(t).Streams) == 2 })

	st := p.state(t)
	si := -1
	var sum int64
	for i := range st.Streams {
		sum += st.Streams[i].Bytes
		if st.Streams[i].Path == path {
			si = i
		}
	}
	if si < 0 {
		t.Fatalf("no stream for %s in %+v", path, st.Streams)
	}
	s := st.Streams[si]
	gen, _ := splitID(t, ids[7])
	switch {
	case s.Generation != gen:
		t.Errorf("generation %q, the client's ids have %q", s.Generation, gen)
	case s.LastID != ids[7]:
		t.Errorf("last_id %q, the client last saw %q", s.LastID, ids[7])
	case s.OldestID != ids[3]:
		t.Errorf("oldest_id %q, want frame 4 (%q): 8 frames, 5 kept", s.OldestID, ids[3])
	case s.Frames != 5:
		t.Errorf("buffer_frames %d, want 5", s.Frames)
	case s.Bytes < int64(5*len("id: \ndata: 1\n\n")+5*len(ids[0])):
		t.Errorf("buffer_bytes %d is less than the 5 frames it holds", s.Bytes)
	case s.Connections != 1:
		t.Errorf("connections %d, want 1", s.Connections)
	case s.Upstream != "live":
		t.Errorf("upstream_state %q, want live", s.Upstream)
	}
	tt := st.Totals
	if tt.Streams != 2 || tt.Connections != 2 || tt.BufferedBytes != sum || tt.MaxMemory != 64<<20 {
		t.Errorf("totals %+v, want 2 streams, 2 connections, buffered_bytes %d, max_memory %d", tt, sum, 64<<20)
	}

	// A second client on the first stream; the other one leaves.
	c2 := dialWire(t, p.URL(), path)
	other.Close()
	feed.Send("data: 9\n\n")
	last := c.Next(5 * time.Second)
	if ev := c2.Next(5 * time.Second); ev.ID != last.ID {
		t.Fatalf("second client got %v, first %v", ev, last)
	}
	waitFor(t, 5*time.Second, "the counts to follow", func() bool {
		// Writes let the proxy see the closed client (a FIN shows on the
		// second write after it).
		up.Feed("/feed/admin-other").Send("data: nobody\n\n")
		st := p.state(t)
		for _, s := range st.Streams {
			if s.Path == path && (s.Connections != 2 || s.LastID != last.ID || s.OldestID != ids[4]) {
				return false
			}
			if s.Path == "/feed/admin-other" && s.Connections != 0 {
				return false
			}
		}
		return st.Totals.Connections == 2
	})

	// The upstream goes away: the state says so, the clients are held.
	up.Close()
	waitFor(t, 10*time.Second, "upstream_state to leave live", func() bool {
		for _, s := range p.state(t).Streams {
			if s.Path == path {
				return s.Upstream == "reconnecting" || s.Upstream == "connecting"
			}
		}
		return false
	})
	if st := p.state(t); st.Totals.Connections != 2 {
		t.Fatalf("clients dropped when the upstream went away: %+v", st.Totals)
	}
}

// TestAdminHealthUpstreamDown: liveness and readiness never depend on the
// upstream, here one that was never there.
func TestAdminHealthUpstreamDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	p := startProxy(t, dead, "LASTEVENT_HEARTBEAT=100ms", "LASTEVENT_UPSTREAM_TIMEOUT=500ms")
	c := dialWire(t, p.URL(), "/feed/nothing")
	if c.Status != 200 {
		t.Fatalf("SSE request with the upstream down: %d, want a held 200 stream", c.Status)
	}
	waitFor(t, 5*time.Second, "a heartbeat", func() bool { return c.comments.Load() >= 1 })
	if code, body := p.adminGet(t, "/healthz"); code != 200 {
		t.Fatalf("/healthz with the upstream down: %d %s", code, body)
	}
	if code, body := p.adminGet(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz while serving: %d %s", code, body)
	}
	if st := p.state(t); len(st.Streams) != 1 || st.Streams[0].Upstream == "live" || st.Streams[0].Connections != 1 {
		t.Fatalf("stream-state with the upstream down: %+v", st.Streams)
	}
}

func TestAdminDrain(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())
	const path = "/feed/drain"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	if code, _ := p.adminGet(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz before draining: %d", code)
	}
	// The wrong method gets 405 naming the right one (RFC 9110 15.5.6): GET
	// on /drain, a write on a reading endpoint (which answered 200).
	for _, m := range []struct{ method, path, allow string }{
		{"GET", "/drain", "POST"}, {"POST", "/readyz", "GET, HEAD"}, {"DELETE", "/metrics", "GET, HEAD"},
		{"PUT", "/debug/stream-state", "GET, HEAD"},
	} {
		req, _ := http.NewRequest(m.method, "http://"+p.Admin+m.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != m.allow {
			t.Fatalf("%s %s: %d, Allow %q; want 405, Allow %q", m.method, m.path, resp.StatusCode, resp.Header.Get("Allow"), m.allow)
		}
	}
	if code, _ := p.adminGet(t, "/readyz"); code != 200 {
		t.Fatalf("/readyz after GET /drain: %d", code)
	}
	resp, err := http.Post("http://"+p.Admin+"/drain", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /drain: %d", resp.StatusCode)
	}
	if code, body := p.adminGet(t, "/readyz"); code != 503 {
		t.Fatalf("/readyz after POST /drain: %d %s, want 503", code, body)
	}
	if code, _ := p.adminGet(t, "/healthz"); code != 200 {
		t.Fatalf("/healthz while draining: %d, want 200", code)
	}
	// Draining does not end the streams that are open.
	feed.Send("data: still here\n\n")
	if ev := c.Next(5 * time.Second); ev.Data != "still here" {
		t.Fatalf("after drain: %v", ev)
	}
}

// promSample is one sample line of the Prometheus text format.
type promSample struct {
	name, labels string
	value        float64
}

// parseProm parses the Prometheus text exposition format strictly enough to
// catch a malformed line (TYPE lines are optional in the format).
func parseProm(t *testing.T, body string) []promSample {
	t.Helper()
	types := map[string]string{}
	var out []promSample
	for i, line := range strings.Split(body, "\n") {
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == "TYPE" {
				switch f[3] {
				case "counter", "gauge", "histogram", "summary", "untyped":
				default:
					t.Fatalf("line %d: bad TYPE %q", i+1, line)
				}
				types[f[2]] = f[3]
			}
			continue
		}
		var s promSample
		rest := line
		if j := strings.IndexAny(rest, "{ "); j > 0 && rest[j] == '{' {
			k := strings.Index(rest, "} ")
			if k < 0 {
				t.Fatalf("line %d: unterminated labels: %q", i+1, line)
			}
			s.name, s.labels, rest = rest[:j], rest[j+1:k], rest[k+2:]
		} else if j > 0 {
			s.name, rest = rest[:j], rest[j+1:]
		} else {
			t.Fatalf("line %d: not a sample: %q", i+1, line)
		}
		valueText, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseFloat(valueText, 64)
		if err != nil {
			t.Fatalf("line %d: bad value in %q", i+1, line)
		}
		s.value = v
		for j := 0; j < len(s.name); j++ {
			ch := s.name[j]
			if !(ch == '_' || ch == ':' || ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || j > 0 && ch >= '0' && ch <= '9') {
				t.Fatalf("line %d: bad metric name %q", i+1, s.name)
			}
		}
		base := s.name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(s.name, suf); ok && types[b] != "" {
				base = b
			}
		}
		if typ := types[base]; typ != "" && typ != "histogram" && typ != "summary" && base != s.name {
			t.Errorf("line %d: %s sample of a %s", i+1, s.name, typ)
		}
		out = append(out, s)
	}
	return out
}

func TestAdminMetrics(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared")
	const path = "/feed/metrics"
	feed := up.Feed(path)
	a := dialWire(t, p.URL(), path)
	b := dialWire(t, p.URL(), path)
	for k := 1; k <= 3; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
	}
	expectFrames(t, "a", a, 1, 3, "")
	expectFrames(t, "b", b, 1, 3, "")

	resp, err := http.Get("http://" + p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("/metrics Content-Type %q, want the Prometheus text format", ct)
	}
	got := map[string]float64{}
	for _, s := range parseProm(t, string(body)) {
		if s.labels == "" {
			got[s.name] = s.value
		}
	}
	for name, want := range map[string]float64{
		"lastevent_connections": 2,
		"lastevent_streams":     1,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", name, v, ok, want, body)
		}
	}
	if v := got["lastevent_frames_in_total"]; v < 3 {
		t.Errorf("lastevent_frames_in_total = %v, want at least 3", v)
	}
	if v, ok := got["lastevent_buffered_bytes"]; !ok || v <= 0 {
		t.Errorf("lastevent_buffered_bytes = %v (present %v), want > 0", v, ok)
	}
}
