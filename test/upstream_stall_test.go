package test

// Review of the upstream side: a hand-written upstream over raw TCP, so that
// each connection can answer with exactly the bytes a broken legacy service
// sends (a response header cut short, an error body that never completes).

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// urUpstream accepts connections and hands the i-th one (from 0), after its
// request head was read, to serve.
type urUpstream struct {
	ln    net.Listener
	mu    sync.Mutex
	heads []string
	conns []net.Conn
	done  chan struct{}
}

func startURUpstream(t *testing.T, serve func(i int, c net.Conn)) *urUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &urUpstream{ln: ln, done: make(chan struct{})}
	t.Cleanup(func() {
		close(u.done)
		ln.Close()
		u.mu.Lock()
		for _, c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
	})
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns = append(u.conns, c)
			u.mu.Unlock()
			go func(i int, c net.Conn) {
				br := bufio.NewReader(c)
				var head strings.Builder
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						c.Close()
						return
					}
					head.WriteString(line)
					if line == "\r\n" {
						break
					}
				}
				u.mu.Lock()
				u.heads = append(u.heads, head.String())
				u.mu.Unlock()
				serve(i, c)
			}(i, c)
		}
	}()
	return u
}

func (u *urUpstream) URL() string { return "http://" + u.ln.Addr().String() }

func (u *urUpstream) Heads() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.heads...)
}

// hold keeps c open, silent, until the test ends.
func (u *urUpstream) hold(c net.Conn) { <-u.done; c.Close() }

const urSSEHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

func urChunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// urGzipHello is an event-stream answer whose one event ("data: hello")
// is gzip-compressed, as compression middleware sends it.
func urGzipHello() string {
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write([]byte("data: hello\n\n"))
	zw.Flush()
	return "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n" + urChunk(zb.String())
}

// urGet sends an SSE request for /feed (with the extra header lines, each
// ending in CRLF) to the proxy at addr and reads the answer's head within d.
func urGet(t *testing.T, addr, extra string, d time.Duration) (*http.Response, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /feed HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n", extra)
	_ = conn.SetReadDeadline(time.Now().Add(d))
	return http.ReadResponse(bufio.NewReader(conn), nil)
}

// TestUpstreamHeaderStallOnReconnect: after the upstream stream drops,
// the reconnect's answer stops after its status line (a hung service, a
// proxy in between that died). LASTEVENT_UPSTREAM_TIMEOUT covers only the
// first byte and LASTEVENT_UPSTREAM_IDLE_TIMEOUT is 0 (the default), so the
// header read has no deadline at all: the stream must still move on to a
// new attempt and, once the upstream answers properly, give the client the
// marker and the new frames.
func TestUpstreamHeaderStallOnReconnect(t *testing.T) {
	t.Parallel()
	var u *urUpstream
	serve := func(i int, c net.Conn) {
		switch i {
		case 0:
			c.Write([]byte(urSSEHead + urChunk("id: u1\ndata: one\n\n")))
			time.Sleep(100 * time.Millisecond)
			c.Close() // the stream drops (no last chunk)
		case 1:
			c.Write([]byte("HTTP/1.1 200 OK\r\n")) // and nothing more
			u.hold(c)
		default:
			c.Write([]byte(urSSEHead + urChunk("data: two\n\n")))
			u.hold(c)
		}
	}
	u = startURUpstream(t, serve)
	u2 := u
	p := startProxy(t, u2.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_UPSTREAM_TIMEOUT=1s", "LASTEVENT_SHUTDOWN_GRACE=2s",
		"LASTEVENT_HEARTBEAT=200ms", "LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=100ms")
	c := dialWire(t, p.URL(), "/feed")
	if ev := c.Next(5 * time.Second); ev.Data != "one" {
		t.Fatalf("first event %v", ev)
	}
	ev, err := c.TryNext(8 * time.Second)
	if err != nil {
		t.Fatalf("8 s after the reconnect's answer stalled mid-header (LASTEVENT_UPSTREAM_TIMEOUT=1s): %v; upstream connections: %d; stream: %+v",
			err, len(u2.Heads()), p.state(t).Streams)
	}
	if ev.Type != "sync-required" {
		t.Fatalf("want the reconnect marker, got %v", ev)
	}
	if ev := c.Next(5 * time.Second); ev.Data != "two" {
		t.Fatalf("after the marker: %v", ev)
	}
}

// TestUpstreamHeaderStallAtStart: the first answer stops after its
// status line. The client must get an answer (a held 200, as with an
// upstream that is down) within a few LASTEVENT_UPSTREAM_TIMEOUTs, and the
// events of the next, healthy attempt.
// With an informational head first (103 Early Hints, which fasthttp reads
// past), the final head is still within the same deadline: the stall after
// its status line must end the attempt all the same. And a healthy answer
// after a 103 streams.
func TestUpstreamHeaderStallAtStart(t *testing.T) {
	for _, c := range []struct{ name, interim string }{
		{"plain", ""},
		{"after 103", "HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) { runHeaderStallAtStart(t, c.interim) })
	}
}

func runHeaderStallAtStart(t *testing.T, interim string) {
	t.Parallel()
	var u *urUpstream
	u = startURUpstream(t, func(i int, c net.Conn) {
		if i == 0 {
			c.Write([]byte(interim + "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"))
			u.hold(c)
			return
		}
		c.Write([]byte(interim + urSSEHead + urChunk("data: hello\n\n")))
		u.hold(c)
	})
	p := startProxy(t, u.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_UPSTREAM_TIMEOUT=1s", "LASTEVENT_SHUTDOWN_GRACE=2s",
		"LASTEVENT_HEARTBEAT=200ms", "LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=100ms")
	conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /feed HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(6 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer 6 s after the upstream's first answer stalled mid-header (LASTEVENT_UPSTREAM_TIMEOUT=1s): %v; upstream connections: %d", err, len(u.Heads()))
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	buf := make([]byte, 4096)
	var got strings.Builder
	for !strings.Contains(got.String(), "data: hello") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading the stream: %v; got %q", err, got.String())
		}
	}
}

// TestUpstreamErrorBodyStall: the upstream answers 401 with a body
// that never completes (Content-Length larger than what it sends, the
// connection kept open). An answer passed through is read whole first; that
// read must be bounded too: the client gets an answer (a 502, "unreadable")
// instead of waiting forever.
func TestUpstreamErrorBodyStall(t *testing.T) {
	t.Parallel()
	var u *urUpstream
	u = startURUpstream(t, func(i int, c net.Conn) {
		c.Write([]byte("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"error\":"))
		u.hold(c)
	})
	p := startProxy(t, u.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_UPSTREAM_TIMEOUT=1s", "LASTEVENT_SHUTDOWN_GRACE=2s")
	resp, err := urGet(t, p.Addr, "", 6*time.Second)
	if err != nil {
		t.Fatalf("no answer 6 s after the upstream's 401 body stalled (LASTEVENT_UPSTREAM_TIMEOUT=1s): %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502 (the body did not come within LASTEVENT_UPSTREAM_TIMEOUT)", resp.StatusCode)
	}
}

// TestUpstreamCompressedStream: lastevent forwards the client's
// Accept-Encoding (every browser's EventSource sends "gzip, deflate, br"),
// so an upstream with ordinary compression middleware answers the stream
// gzip-compressed. lastevent cannot parse frames out of compressed bytes and
// must not tell the client its (plain) output is gzip: the client must get
// the upstream's event, readable by the encoding the response declares.
func TestUpstreamCompressedStream(t *testing.T) {
	t.Parallel()
	var u *urUpstream
	u = startURUpstream(t, func(i int, c net.Conn) {
		head := u.Heads()[i]
		if !strings.Contains(strings.ToLower(head), "accept-encoding: gzip") {
			c.Write([]byte(urSSEHead + urChunk("data: hello\n\n")))
			u.hold(c)
			return
		}
		c.Write([]byte(urGzipHello()))
		u.hold(c)
	})
	p := startProxy(t, u.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_SHUTDOWN_GRACE=2s")
	resp, err := urGet(t, p.Addr, "Accept-Encoding: gzip, deflate, br\r\n", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var body io.Reader = resp.Body
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		if ce != "gzip" {
			t.Fatalf("Content-Encoding %q", ce)
		}
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("the response says Content-Encoding: gzip, but its body is not gzip: %v", err)
		}
		body = zr
	}
	buf := make([]byte, 4096)
	var got strings.Builder
	for !strings.Contains(got.String(), "data: hello") {
		n, err := body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("no event from a gzip-compressed upstream stream: %v; client got %q (Content-Encoding %q)", err, got.String(), resp.Header.Get("Content-Encoding"))
		}
	}
}

// TestUpstreamCompressedAnyway: an upstream that compresses the event
// stream although lastevent asked for identity is not parsed (its bytes are
// not SSE) nor passed on as a stream: the client gets a 502 at once (not
// after LASTEVENT_UPSTREAM_TIMEOUT, 30 s here, waiting for a stream to end)
// that says why, and the upstream was asked for identity.
func TestUpstreamCompressedAnyway(t *testing.T) {
	t.Parallel()
	var u *urUpstream
	u = startURUpstream(t, func(i int, c net.Conn) {
		c.Write([]byte(urGzipHello()))
		u.hold(c)
	})
	p := startProxy(t, u.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_UPSTREAM_TIMEOUT=30s", "LASTEVENT_SHUTDOWN_GRACE=2s")
	resp, err := urGet(t, p.Addr, "Accept-Encoding: gzip, deflate, br\r\n", 10*time.Second)
	if err != nil {
		t.Fatalf("no answer within 10 s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if !strings.Contains(string(body), "compressed (Content-Encoding: gzip)") {
		t.Fatalf("502 body %q does not say the stream came compressed", body)
	}
	if h := u.Heads(); len(h) == 0 || !strings.Contains(strings.ToLower(h[0]), "accept-encoding: identity") {
		t.Fatalf("the upstream request did not ask for identity: %q", h)
	}
}

// TestUpstreamTooLargeFrameDoesNotResetBackoff: an upstream that accepts,
// sends one frame over LASTEVENT_MAX_FRAME_BYTES and drops, every time, is
// retried with a growing backoff, as one that drops at once is: the
// frame-too-large marker is lastevent's, not a frame of the upstream's, and
// used to reset the backoff to its minimum at every connection. Found by a
// review.
func TestUpstreamTooLargeFrameDoesNotResetBackoff(t *testing.T) {
	t.Parallel()
	big := "data: " + strings.Repeat("x", 4<<10) + "\n\n"
	u := startURUpstream(t, func(i int, c net.Conn) {
		c.Write([]byte(urSSEHead + urChunk(big) + "0\r\n\r\n"))
		c.Close()
	})
	p := startProxy(t, u.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_MAX_FRAME_BYTES=1KiB",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=50ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=2s")
	c := dialWire(t, p.URL(), "/feed")
	if ev := c.Next(5 * time.Second); ev.Type != "sync-required" || !strings.Contains(ev.Data, "frame-too-large") {
		t.Fatalf("first event %v, want sync-required (frame-too-large)", ev)
	}
	start := len(u.Heads())
	time.Sleep(2500 * time.Millisecond)
	// Backoff from 50 ms doubling (with jitter, 0.5-1.5 times) leaves two
	// to four attempts for these 2.5 s; reset to 50 ms each time it was
	// 16-18 here.
	n := len(u.Heads()) - start
	t.Logf("%d upstream connections in 2.5 s", n)
	if n > 8 {
		t.Fatalf("%d upstream connections in 2.5 s: the backoff does not grow", n)
	}
}
