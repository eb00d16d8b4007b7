package test

import (
	"encoding/json"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/test/upstream"
)

// TestWireSSEResponse: the response to an SSE request is a 200 event stream,
// uncached, unbuffered, chunked, with no Content-Length, and it starts with
// the configured retry.
func TestWireSSEResponse(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_RETRY=2500ms")
	feed := up.Feed("/feed/wire")
	c := rawGet(t, p.Addr, "/feed/wire")
	if c.Status != 200 {
		t.Fatalf("status %d, want 200", c.Status)
	}
	if c.Proto != "HTTP/1.1" {
		t.Fatalf("protocol %q", c.Proto)
	}
	mt, _, err := mime.ParseMediaType(c.Header.Get("Content-Type"))
	if err != nil || mt != "text/event-stream" {
		t.Fatalf("Content-Type %q: media type %q, %v", c.Header.Get("Content-Type"), mt, err)
	}
	if got := c.Header.Get("Cache-Control"); got != "no-cache" {
		t.Fatalf("Cache-Control %q, want no-cache", got)
	}
	if got := c.Header.Get("X-Accel-Buffering"); got != "no" {
		t.Fatalf("X-Accel-Buffering %q, want no", got)
	}
	if v, ok := c.Header["Content-Length"]; ok {
		t.Fatalf("Content-Length %q on a stream", v)
	}
	if !c.Chunked || len(c.Header.Values("Transfer-Encoding")) != 1 {
		t.Fatalf("Transfer-Encoding %q, want chunked", c.Header.Values("Transfer-Encoding"))
	}
	chunks := c.waitChunks(1, 5*time.Second)
	if len(chunks) == 0 {
		t.Fatal("no body")
	}
	if !strings.HasPrefix(string(chunks[0]), "retry: 2500\n") {
		t.Fatalf("stream starts with %q, want retry: 2500", chunks[0])
	}
	f, err := c.NextFrame(5 * time.Second)
	if err != nil || f.Retry != 2500 || f.Dispatch {
		t.Fatalf("first frame %v (%v), want a retry of 2500 ms", f, err)
	}
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("data: hello\n\n")
	if ev := c.NextEvent(5 * time.Second); ev.Data != "hello" {
		t.Fatalf("event %v", ev)
	}
}

// noRedirects is an HTTP client that shows redirects instead of following
// them, and sends no Accept-Encoding of its own.
var noRedirects = &http.Client{
	Transport:     &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

func sseGet(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestWireUpstreamRefusalPassedOn: an upstream 4xx or redirect answers the
// request itself, so the client gets it unchanged.
func TestWireUpstreamRefusalPassedOn(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())
	cases := []struct {
		name   string
		status upstream.Status
	}{
		{"401-json", upstream.Status{Code: 401, Header: http.Header{
			"Content-Type":     {"application/json"},
			"Www-Authenticate": {`Bearer realm="app"`},
		}, Body: `{"error":"unauthorized","detail":"token expired"}`}},
		{"403", upstream.Status{Code: 403, Header: http.Header{"Content-Type": {"text/plain"}}, Body: "forbidden\n"}},
		{"404", upstream.Status{Code: 404, Header: http.Header{"Content-Type": {"text/html"}}, Body: "<h1>no such feed</h1>"}},
		{"302", upstream.Status{Code: 302, Header: http.Header{"Location": {"https://login.example.com/auth?next=%2Ffeed%2Fx&a=1"}}, Body: ""}},
		{"307-relative", upstream.Status{Code: 307, Header: http.Header{"Location": {"/feed/elsewhere?x=1"}}, Body: "moved"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := "/feed/refuse-" + tc.name
			up.QueueStatus(path, tc.status)
			resp, body := sseGet(t, p.URL()+path)
			if resp.StatusCode != tc.status.Code {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status.Code, body)
			}
			if string(body) != tc.status.Body {
				t.Fatalf("body %q, want %q", body, tc.status.Body)
			}
			for k, v := range tc.status.Header {
				if got := resp.Header.Values(k); strings.Join(got, ",") != strings.Join(v, ",") {
					t.Fatalf("header %s %q, want %q", k, got, v)
				}
			}
			if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/event-stream" {
				t.Fatalf("a refusal is labelled as an event stream")
			}
		})
	}
	t.Run("no-route-404", func(t *testing.T) {
		t.Parallel()
		resp, body := sseGet(t, p.URL()+"/no/such/path")
		if resp.StatusCode != 404 || !strings.Contains(string(body), "404 page not found") {
			t.Fatalf("status %d body %q, want the upstream's 404", resp.StatusCode, body)
		}
	})
}

// heartbeatChunks counts chunks that are a heartbeat comment and nothing
// else.
func heartbeatChunks(chunks [][]byte) int {
	n := 0
	for _, c := range chunks {
		s := string(c)
		if strings.HasPrefix(s, ":") && strings.HasSuffix(s, "\n\n") && strings.Count(s, "\n") == 2 {
			n++
		}
	}
	return n
}

// TestWireUpstreamDownAtStart: with no upstream listening, the client still
// gets a 200 stream held open by heartbeats while lastevent retries; once the
// upstream comes up, frames flow.
func TestWireUpstreamDownAtStart(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := startProxy(t, "http://"+addr, "LASTEVENT_HEARTBEAT=200ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=50ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=200ms")
	c := rawGet(t, p.Addr, "/feed/late")
	if c.Status != 200 {
		t.Fatalf("status %d with the upstream down, want 200", c.Status)
	}
	if mt, _, _ := mime.ParseMediaType(c.Header.Get("Content-Type")); mt != "text/event-stream" {
		t.Fatalf("Content-Type %q", c.Header.Get("Content-Type"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for heartbeatChunks(c.Chunks()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeats while the upstream is down: %q", c.Chunks())
		}
		c.waitChunks(len(c.Chunks())+1, time.Second)
	}
	waitFor(t, 5*time.Second, "several failed upstream attempts", func() bool {
		var st struct {
			Streams []struct {
				Connects    int    `json:"upstream_connects"`
				Upstream    string `json:"upstream_state"`
				Connections int    `json:"connections"`
			} `json:"streams"`
		}
		_, b := p.adminGet(t, "/debug/stream-state")
		if err := json.Unmarshal(b, &st); err != nil || len(st.Streams) != 1 {
			t.Fatalf("stream state while the upstream is down: %v %s", err, b)
		}
		s := st.Streams[0]
		if s.Upstream == "live" || s.Connections != 1 {
			t.Fatalf("stream state while the upstream is down: %s", b)
		}
		return s.Connects >= 3
	})

	up, err := upstream.Start(addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	t.Cleanup(up.Close)
	feed := up.Feed("/feed/late")
	if !feed.WaitConns(1, 10*time.Second) {
		t.Fatal("lastevent never reached the upstream once it was up")
	}
	feed.Send("data: finally\n\n")
	ev := c.NextEvent(5 * time.Second)
	if ev.Data != "finally" || !ev.HasID {
		t.Fatalf("first event after the upstream came up: %v", ev)
	}
	checkWholeChunks(t, c.Chunks())
}

// TestWireUpstream5xxHeld: an upstream answering 503 does not reach the
// client (EventSource would give up for good): it holds a 200 stream with
// heartbeats while lastevent retries with backoff, then frames flow.
func TestWireUpstream5xxHeld(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	const path = "/feed/flaky"
	for range 200 {
		up.QueueStatus(path, upstream.Status{Code: 503, Body: "down for maintenance"})
	}
	p := startProxy(t, up.URL(), "LASTEVENT_HEARTBEAT=200ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=80ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=160ms")
	c := rawGet(t, p.Addr, path)
	if c.Status != 200 {
		t.Fatalf("status %d for an upstream 503, want 200", c.Status)
	}
	waitFor(t, 10*time.Second, "retries and heartbeats", func() bool {
		return len(up.RequestTimes(path)) >= 4 && heartbeatChunks(c.Chunks()) >= 2
	})
	up.ClearStatus(path)
	times := up.RequestTimes(path)
	// Backoff with jitter waits at least half the minimum between attempts.
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < 35*time.Millisecond {
			t.Fatalf("attempt %d came %v after the previous one: no backoff", i, gap)
		}
	}
	feed := up.Feed(path)
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("lastevent did not reconnect once the upstream recovered")
	}
	feed.Send("data: back\n\n")
	if ev := c.NextEvent(5 * time.Second); ev.Data != "back" || !ev.HasID {
		t.Fatalf("event after recovery: %v", ev)
	}
	for _, ch := range c.Chunks() {
		if strings.Contains(string(ch), "maintenance") {
			t.Fatalf("the 503 body leaked into the stream: %q", ch)
		}
	}
}

// TestWireUpstream5xxPassed: with LASTEVENT_UPSTREAM_PASS_5XX=true the 503
// goes to the client as it is.
func TestWireUpstream5xxPassed(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	const path = "/feed/pass5xx"
	up.QueueStatus(path, upstream.Status{Code: 503, Header: http.Header{"Retry-After": {"7"}, "Content-Type": {"text/plain"}}, Body: "down for maintenance"})
	p := startProxy(t, up.URL(), "LASTEVENT_UPSTREAM_PASS_5XX=true")
	resp, body := sseGet(t, p.URL()+path)
	if resp.StatusCode != 503 || string(body) != "down for maintenance" || resp.Header.Get("Retry-After") != "7" {
		t.Fatalf("got %d %q Retry-After %q, want the upstream's 503", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
}

// TestWireForwardedHeaders: hop-by-hop headers (fixed ones and those the
// Connection header names) stay at lastevent, X-Forwarded-* are added, end
// to end headers pass, and the client's Last-Event-ID (lastevent's id, not
// the upstream's) is not sent upstream on the first connect.
func TestWireForwardedHeaders(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())
	hop := []string{
		"Connection: keep-alive, X-Hop-Custom",
		"X-Hop-Custom: secret",
		"Keep-Alive: timeout=5, max=100",
		"Te: trailers",
		"Upgrade: h2c",
		"Proxy-Authorization: Basic Zm9vOmJhcg==",
		"Proxy-Connection: keep-alive",
	}
	hopNames := []string{"X-Hop-Custom", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection"}
	keep := []string{"Authorization: Bearer abc", "X-Request-Id: r-42", "Cookie: a=1"}

	// The fake upstream itself records these headers, so their absence
	// below is lastevent's doing.
	direct := rawDo(t, up.Addr, "GET /echo/direct HTTP/1.1", append(append([]string{}, hop...), keep...), "")
	if direct.Status != 200 {
		t.Fatalf("direct request: %d", direct.Status)
	}
	var echo upstream.Echo
	if err := json.Unmarshal(direct.Body, &echo); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"X-Hop-Custom", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization"} {
		if len(echo.Header[h]) == 0 {
			t.Fatalf("the fake upstream drops %s itself; the test would prove nothing", h)
		}
	}

	unknownGen := replay.ID{Gen: replay.Gen{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9}, Seq: 5}.String()
	cases := []struct {
		name, lastID, query string
	}{
		{"no-id", "", ""},
		{"unknown-generation", unknownGen, ""},
		{"malformed", "not-an-id", ""},
		{"query-param", "", "?lastEventId=" + unknownGen + "&x=1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := "/feed/hdr-" + tc.name
			hdrs := append(append([]string{}, hop...), keep...)
			hdrs = append(hdrs, "X-Forwarded-For: 10.1.2.3")
			if tc.lastID != "" {
				hdrs = append(hdrs, "Last-Event-ID: "+tc.lastID)
			}
			c := rawGet(t, p.Addr, path+tc.query, hdrs...)
			if c.Status != 200 {
				t.Fatalf("status %d", c.Status)
			}
			feed := up.Feed(path)
			if !feed.WaitConns(1, 5*time.Second) {
				t.Fatal("upstream never saw the connection")
			}
			var got *http.Request
			for _, r := range up.Requests() {
				if r.URL.Path == path {
					got = r
				}
			}
			if got == nil {
				t.Fatal("request not recorded")
			}
			for _, h := range hopNames {
				if v := got.Header.Values(h); len(v) > 0 {
					t.Errorf("hop-by-hop %s forwarded: %q", h, v)
				}
			}
			if v := got.Header.Get("Connection"); strings.Contains(strings.ToLower(v), "x-hop-custom") {
				t.Errorf("client's Connection header forwarded: %q", v)
			}
			if v := got.Header.Values("Last-Event-Id"); len(v) > 0 {
				t.Errorf("client's Last-Event-ID sent upstream on the first connect: %q", v)
			}
			if strings.Contains(got.URL.RawQuery, "lastEventId") {
				t.Errorf("lastEventId query parameter forwarded: %q", got.URL.RawQuery)
			}
			if tc.query != "" && got.URL.Query().Get("x") != "1" {
				t.Errorf("other query parameters lost: %q", got.URL.RawQuery)
			}
			for _, h := range keep {
				name, val, _ := strings.Cut(h, ": ")
				if got.Header.Get(name) != val {
					t.Errorf("end-to-end header %s = %q, want %q", name, got.Header.Get(name), val)
				}
			}
			if v := got.Header.Get("X-Forwarded-For"); v != "10.1.2.3, 127.0.0.1" {
				t.Errorf("X-Forwarded-For %q, want the prior value then 127.0.0.1", v)
			}
			if v := got.Header.Get("X-Forwarded-Proto"); v != "http" {
				t.Errorf("X-Forwarded-Proto %q, want http", v)
			}
			if v := got.Header.Get("X-Forwarded-Host"); v != p.Addr {
				t.Errorf("X-Forwarded-Host %q, want %q", v, p.Addr)
			}
			if got.Host != up.Addr {
				t.Errorf("Host sent upstream %q, want %q", got.Host, up.Addr)
			}
			// A resume id the proxy cannot use still gives a stream.
			if tc.lastID != "" || tc.query != "" {
				ev := c.NextEvent(5 * time.Second)
				if ev.Event != "system-sync" && ev.Event != "sync-required" {
					t.Fatalf("first event for id %q: %v, want a sync event", tc.lastID, ev)
				}
			}
		})
	}
}

// TestWirePlainRequestsProxied: requests that are not SSE (no Accept:
// text/event-stream) go to the upstream and back unchanged.
func TestWirePlainRequestsProxied(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())

	t.Run("post-with-body", func(t *testing.T) {
		t.Parallel()
		body := `{"message":"hello","n":[1,2,3]}` + strings.Repeat(" ", 5000)
		r := rawDo(t, p.Addr, "POST /echo/submit?status=201&q=a%20b HTTP/1.1", []string{
			"Content-Type: application/json", "Authorization: Bearer xyz",
			"Connection: keep-alive, X-Hop", "X-Hop: 1", "Accept: application/json",
		}, body)
		if r.Status != 201 {
			t.Fatalf("status %d, want 201: %q", r.Status, r.Body)
		}
		if r.Header.Get("X-Echo") != "yes" || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("response headers %v", r.Header)
		}
		var e upstream.Echo
		if err := json.Unmarshal(r.Body, &e); err != nil {
			t.Fatalf("%v: %q", err, r.Body)
		}
		if e.Method != "POST" || e.Path != "/echo/submit" || e.Query != "status=201&q=a%20b" || e.Body != body {
			t.Fatalf("upstream saw %s %s ?%s body %d bytes", e.Method, e.Path, e.Query, len(e.Body))
		}
		if got := e.Header["Content-Type"]; len(got) != 1 || got[0] != "application/json" {
			t.Fatalf("Content-Type upstream %q", got)
		}
		if got := e.Header["Authorization"]; len(got) != 1 || got[0] != "Bearer xyz" {
			t.Fatalf("Authorization upstream %q", got)
		}
		if len(e.Header["X-Hop"]) > 0 {
			t.Fatalf("hop-by-hop header forwarded on a plain request")
		}
		if len(e.Header["X-Forwarded-For"]) != 1 {
			t.Fatalf("X-Forwarded-For upstream %q", e.Header["X-Forwarded-For"])
		}
	})
	t.Run("get-json", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequest("GET", p.URL()+"/echo/items.json?page=2", nil)
		req.Header.Set("Accept", "application/json")
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e upstream.Echo
		if resp.StatusCode != 200 || json.Unmarshal(b, &e) != nil {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
		if e.Method != "GET" || e.Path != "/echo/items.json" || e.Query != "page=2" {
			t.Fatalf("upstream saw %+v", e)
		}
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
			t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("Cache-Control") == "no-cache" || resp.Header.Get("X-Accel-Buffering") != "" {
			t.Fatalf("SSE headers on a plain response: %v", resp.Header)
		}
	})
	t.Run("plain-404", func(t *testing.T) {
		t.Parallel()
		resp, err := noRedirects.Get(p.URL() + "/missing")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(b), "404 page not found") {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
	})
	t.Run("post-accepting-sse-is-not-a-stream", func(t *testing.T) {
		t.Parallel()
		r := rawDo(t, p.Addr, "POST /echo/events HTTP/1.1", []string{"Accept: text/event-stream"}, "x=1")
		var e upstream.Echo
		if r.Status != 200 || json.Unmarshal(r.Body, &e) != nil || e.Method != "POST" || e.Body != "x=1" {
			t.Fatalf("status %d body %q", r.Status, r.Body)
		}
	})
}
