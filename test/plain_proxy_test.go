package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// prUpstream is a raw HTTP/1.1 upstream on loopback: it records each
// request head as it arrived on the wire and answers with whatever respond
// returns for it (a complete raw response).
type prUpstream struct {
	ln      net.Listener
	mu      sync.Mutex
	heads   []string
	bodies  []string
	respond func(head string, body []byte) string
}

func startPRUpstream(t *testing.T, respond func(head string, body []byte) string) *prUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &prUpstream{ln: ln, respond: respond}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *prUpstream) URL() string { return "http://" + u.ln.Addr().String() }

func (u *prUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" || line == "\n" {
				break
			}
		}
		h := head.String()
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(h)))
		if err != nil {
			return
		}
		var body []byte
		if req.ContentLength > 0 {
			body = make([]byte, req.ContentLength)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
		}
		u.mu.Lock()
		u.heads = append(u.heads, h)
		u.bodies = append(u.bodies, string(body))
		u.mu.Unlock()
		resp := u.respond(h, body)
		if resp == "" { // hang
			time.Sleep(30 * time.Second)
			return
		}
		if _, err := c.Write([]byte(resp)); err != nil {
			return
		}
		if strings.Contains(resp, "\r\nConnection: close\r\n") {
			return // a body that ends with the connection
		}
	}
}

func (u *prUpstream) Heads() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.heads...)
}

// prExchange sends raw bytes to addr and returns everything read until the
// connection closes or idle passes without new bytes.
func prExchange(t *testing.T, addr, raw string, idle time.Duration) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	buf := make([]byte, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
}

func prOK(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// prHeaderValues returns the values of header name (case-insensitive) in a
// raw message head.
func prHeaderValues(head, name string) []string {
	var vs []string
	for _, line := range strings.Split(head, "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return vs
}

// prSplit splits a raw response into head and body.
func prSplit(t *testing.T, out string) (string, string) {
	t.Helper()
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok {
		t.Fatalf("no complete response: %q", out)
	}
	return head, body
}

// TestPlainConnectionHeaderAllLines: a header named by any Connection
// line is hop-by-hop (RFC 9110 7.6.1: several lines are one list), in both
// directions.
func TestPlainConnectionHeaderAllLines(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nConnection: X-Internal\r\nX-Internal: upstream-secret\r\nContent-Length: 2\r\n\r\nok"
	})
	p := startProxy(t, up.URL())
	out := prExchange(t, p.Addr, "GET /conn HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: X-Hop-Secret\r\nX-Hop-Secret: client-secret\r\n\r\n", time.Second)
	head, body := prSplit(t, out)
	if body != "ok" {
		t.Fatalf("body %q", body)
	}
	heads := up.Heads()
	if len(heads) != 1 {
		t.Fatalf("upstream saw %d requests", len(heads))
	}
	if v := prHeaderValues(heads[0], "X-Hop-Secret"); len(v) > 0 {
		t.Errorf("request header named by the second Connection line forwarded upstream: X-Hop-Secret: %q", v)
	}
	if v := prHeaderValues(head, "X-Internal"); len(v) > 0 {
		t.Errorf("response header named by the upstream's second Connection line reached the client: X-Internal: %q", v)
	}
}

// TestPlainNoInventedContentType: lastevent proxies plain requests
// "unchanged": it must not invent a Content-Type the upstream (or the
// client) did not send.
func TestPlainNoInventedContentType(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string {
		switch {
		case strings.Contains(head, "/204"):
			return "HTTP/1.1 204 No Content\r\n\r\n"
		case strings.Contains(head, "/304"):
			return "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"
		case strings.Contains(head, "/302"):
			return "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
		case strings.Contains(head, "/chunked"):
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	})
	p := startProxy(t, up.URL())
	for _, path := range []string{"/untyped", "/204", "/304", "/302", "/chunked"} {
		out := prExchange(t, p.Addr, "GET "+path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", time.Second)
		head, _ := prSplit(t, out)
		if v := prHeaderValues(head, "Content-Type"); len(v) > 0 {
			t.Errorf("GET %s: upstream sent no Content-Type, client got Content-Type: %q", path, v)
		}
	}
	prExchange(t, p.Addr, "POST /submit HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", time.Second)
	for _, h := range up.Heads() {
		if strings.HasPrefix(h, "POST /submit") {
			if v := prHeaderValues(h, "Content-Type"); len(v) > 0 {
				t.Errorf("client sent no Content-Type, upstream got Content-Type: %q", v)
			}
			if v := prHeaderValues(h, "User-Agent"); len(v) > 0 {
				t.Errorf("client sent no User-Agent, upstream got User-Agent: %q", v)
			}
		}
	}
}

// TestPlainHeadKeepsContentLength: a HEAD answer's Content-Length is
// the size of the representation (RFC 9110 8.6); lastevent drops it.
func TestPlainHeadKeepsContentLength(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1234\r\n\r\n"
	})
	p := startProxy(t, up.URL())
	out := prExchange(t, p.Addr, "HEAD /file.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", time.Second)
	head, body := prSplit(t, out)
	if body != "" {
		t.Fatalf("HEAD answer with a body %q", body)
	}
	if v := prHeaderValues(head, "Content-Length"); len(v) != 1 || v[0] != "1234" {
		t.Fatalf("HEAD: upstream said Content-Length: 1234, client got %q\n%s", v, head)
	}
}

// TestPlainUpstreamTimeout: LASTEVENT_UPSTREAM_TIMEOUT is documented
// as the bound on "waiting for its first response byte"; a plain request to
// a hanging upstream should end after it with 504 Gateway Timeout.
func TestPlainUpstreamTimeout(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string { return "" }) // never answers
	p := startProxy(t, up.URL(), "LASTEVENT_UPSTREAM_TIMEOUT=1s", "LASTEVENT_SHUTDOWN_GRACE=1s")
	start := time.Now()
	out := prExchange(t, p.Addr, "GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 6*time.Second)
	took := time.Since(start)
	if !strings.HasPrefix(out, "HTTP/1.1 504 ") {
		t.Fatalf("with LASTEVENT_UPSTREAM_TIMEOUT=1s and a silent upstream: after %v got %q, want a 504 within a few seconds", took.Round(time.Millisecond), out)
	}
	// Once: fasthttp's client retried a GET up to five times, each after
	// a whole LASTEVENT_UPSTREAM_TIMEOUT.
	if n := len(up.Heads()); n != 1 {
		t.Fatalf("the upstream got the request %d times, want 1", n)
	}
}

// TestPlainXForwardedForAllLines: several X-Forwarded-For lines are
// one list; lastevent keeps only the first line's addresses.
func TestPlainXForwardedForAllLines(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string { return prOK("ok") })
	p := startProxy(t, up.URL())
	prExchange(t, p.Addr, "GET /xff HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n", time.Second)
	heads := up.Heads()
	if len(heads) != 1 {
		t.Fatalf("upstream saw %d requests", len(heads))
	}
	got := strings.Join(prHeaderValues(heads[0], "X-Forwarded-For"), ", ")
	if got != "1.1.1.1, 2.2.2.2, 127.0.0.1" {
		t.Fatalf("X-Forwarded-For upstream %q, want %q", got, "1.1.1.1, 2.2.2.2, 127.0.0.1")
	}
}

// TestPlainAbsoluteForm: a server must accept the absolute form of
// the request target (RFC 9112 3.2.2); lastevent glues it to the upstream
// URL and answers 502.
func TestPlainAbsoluteForm(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string { return prOK("ok") })
	p := startProxy(t, up.URL())
	out := prExchange(t, p.Addr, "GET http://"+p.Addr+"/abs?x=1 HTTP/1.1\r\nHost: "+p.Addr+"\r\nConnection: close\r\n\r\n", time.Second)
	head, body := prSplit(t, out)
	if !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != "ok" {
		t.Fatalf("absolute-form request: %q", out)
	}
	if h := up.Heads(); len(h) != 1 || !strings.HasPrefix(h[0], "GET /abs?x=1 HTTP/1.1") {
		t.Fatalf("upstream saw %q", h)
	}
}

// TestPlainBodyFraming pins what no other test covers and holds: a
// chunked request body reaches the upstream whole with a Content-Length, a
// request with both Content-Length and Transfer-Encoding is framed by
// Transfer-Encoding and its connection closed (no smuggled second request),
// and an upstream answer over LASTEVENT_MAX_BODY_BYTES is a 502 with none of
// its body.
func TestPlainBodyFraming(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string {
		switch {
		case strings.Contains(head, "/large-close"):
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + strings.Repeat("q", 2000)
		case strings.Contains(head, "/small-close"):
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nsmall"
		case strings.Contains(head, "/large"):
			return prOK(strings.Repeat("q", 2000))
		}
		return prOK("got:" + string(body))
	})
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_BODY_BYTES=1000")

	out := prExchange(t, p.Addr, "POST /chunked HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", time.Second)
	if _, body := prSplit(t, out); body != "got:abcdefg" {
		t.Fatalf("chunked request body: %q", out)
	}
	out = prExchange(t, p.Addr, "POST /clte HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", time.Second)
	if strings.Count(out, "HTTP/1.1 ") != 1 {
		t.Fatalf("CL+TE request: more than one answer: %q", out)
	}
	for _, h := range up.Heads() {
		if strings.Contains(h, "/smuggled") {
			t.Fatalf("smuggled request reached the upstream: %q", h)
		}
		if strings.HasPrefix(h, "POST /clte") {
			if te := prHeaderValues(h, "Transfer-Encoding"); len(te) > 0 {
				t.Fatalf("Transfer-Encoding forwarded: %q", h)
			}
		}
	}
	// An answer is passed on as it arrives, so its size is not bounded
	// (LASTEVENT_MAX_BODY_BYTES bounds request bodies)...
	large := strings.Repeat("q", 2000)
	out = prExchange(t, p.Addr, "GET /large HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", time.Second)
	if head, body := prSplit(t, out); !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != large || len(prHeaderValues(head, "Content-Length")) != 1 {
		t.Fatalf("answer over LASTEVENT_MAX_BODY_BYTES, with its length: %q", out)
	}
	out = prExchange(t, p.Addr, "GET /large-close HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", time.Second)
	if head, body := prSplit(t, out); !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != "7d0\r\n"+large+"\r\n0\r\n\r\n" {
		t.Fatalf("answer over LASTEVENT_MAX_BODY_BYTES without a length, to an HTTP/1.1 client: want it chunked: %q", out)
	}
	// ...except for an HTTP/1.0 client when the upstream gives no length:
	// it has no chunked encoding, so lastevent reads the answer whole.
	out = prExchange(t, p.Addr, "GET /small-close HTTP/1.0\r\nHost: a\r\n\r\n", time.Second)
	if head, body := prSplit(t, out); !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != "small" || len(prHeaderValues(head, "Transfer-Encoding")) != 0 {
		t.Fatalf("answer without a length to an HTTP/1.0 client: want it whole, not chunked: %q", out)
	}
	out = prExchange(t, p.Addr, "GET /large-close HTTP/1.0\r\nHost: a\r\n\r\n", time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 502 ") || strings.Contains(out, "qqqq") {
		t.Fatalf("answer over LASTEVENT_MAX_BODY_BYTES without a length, to an HTTP/1.0 client: %q", out)
	}
}

// TestPlainAnswerStreamed: a plain answer reaches the client as the
// upstream sends it, not once it has ended: an event stream asked for
// without Accept: text/event-stream (curl's */*) flows as it does directly.
// lastevent used to read the whole answer first, so such a request got
// nothing, ever.
func TestPlainAnswerStreamed(t *testing.T) {
	t.Parallel()
	more := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-more:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(more) }) // before up.Close (cleanups run last in, first out)
	p := startProxy(t, up.URL)
	c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /events HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the upstream's answer is still open: %v", err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("the first part of an answer still open: %q, %v", line, err)
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("headers %v", resp.Header)
	}
}

// TestPlainRequestBodyTooLarge: a request body over
// LASTEVENT_MAX_BODY_BYTES should get 413 Content Too Large, not the 400
// "Error when parsing request" fasthttp's default error handler gives.
func TestPlainRequestBodyTooLarge(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string { return prOK("ok") })
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_BODY_BYTES=1000")
	for _, req := range []string{
		"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("b", 2000),
		"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + strings.Repeat("b", 2000) + "\r\n0\r\n\r\n",
	} {
		out := prExchange(t, p.Addr, req, time.Second)
		if !strings.HasPrefix(out, "HTTP/1.1 413 ") {
			t.Errorf("request body of 2000 bytes with LASTEVENT_MAX_BODY_BYTES=1000: got %q, want 413", out)
		}
	}
	if n := len(up.Heads()); n != 0 {
		t.Fatalf("upstream saw %d requests", n)
	}
}

// TestPlainUpstreamHeaderErrorNotLogged: when an upstream answer's
// head cannot be read (here: larger than the read buffer), fasthttp's error
// carries a quoted snippet of the head, and lastevent logs that error at
// warn: the upstream's Set-Cookie value ends up in the logs.
func TestPlainUpstreamHeaderErrorNotLogged(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string {
		return "HTTP/1.1 200 OK\r\nSet-Cookie: session=TOPSECRET-7f3a; HttpOnly\r\nX-Pad: " + strings.Repeat("p", 20<<10) + "\r\nContent-Length: 2\r\n\r\nok"
	})
	p := startProxy(t, up.URL(), "LASTEVENT_LOG_LEVEL=info")
	out := prExchange(t, p.Addr, "GET /account HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", time.Second)
	if !strings.HasPrefix(out, "HTTP/1.1 502 ") {
		t.Fatalf("oversized upstream head: %q", out)
	}
	waitUntil(2*time.Second, func() bool { return strings.Contains(p.Logs(), "upstream request failed") })
	// The SSE path's stream client logs its connect errors the same way.
	c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /events HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitUntil(3*time.Second, func() bool { return strings.Contains(p.Logs(), "upstream connect failed") })
	for _, line := range strings.Split(p.Logs(), "\n") {
		if strings.Contains(line, "TOPSECRET") {
			t.Errorf("the upstream's Set-Cookie value is in the logs: %s", line[:min(len(line), 400)])
		}
	}
}

// TestPlainWriteTimeout: LASTEVENT_WRITE_TIMEOUT ("a client that does not
// read for this long is dropped") holds for plain answers too. A client
// that stops reading a 16 MiB answer is dropped (it kept its connection and
// the buffered body for good: fasthttp sets no deadline there); one that
// reads slowly but steadily, for several times the timeout, gets it whole.
// Found by a review.
func TestPlainWriteTimeout(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 16<<20)
	u := startPRUpstream(t, func(string, []byte) string { return prOK(big) })
	p := startProxy(t, u.URL(), "LASTEVENT_WRITE_TIMEOUT=1s", "LASTEVENT_MAX_BODY_BYTES=32MiB")
	get := func() net.Conn {
		c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		return c
	}
	stopped, steady := get(), get()
	done := make(chan int64)
	go func() { // 256 KiB every 100 ms: about 6.5 s for the whole answer
		buf := make([]byte, 256<<10)
		var n int64
		for n < int64(len(big)) {
			_ = steady.SetReadDeadline(time.Now().Add(10 * time.Second))
			m, err := io.ReadFull(steady, buf)
			n += int64(m)
			if err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		done <- n
	}()
	time.Sleep(4 * time.Second) // stopped reads nothing for 4 write timeouts
	_ = stopped.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.Copy(io.Discard, stopped)
	if got >= int64(len(big)) {
		t.Errorf("a client that did not read for 4 s (LASTEVENT_WRITE_TIMEOUT=1s) still got the whole answer (%d bytes): it was never dropped", got)
	}
	if n := <-done; n < int64(len(big)) {
		t.Errorf("a client reading 256 KiB every 100 ms got %d bytes of the %d-byte answer: it was dropped", n, len(big))
	}
}

// TestPlainForwardedProtoAndHost: a client's own X-Forwarded-Proto and
// -Host go on (lastevent trusts what is in front of it), but one that its
// Connection line names is hop-by-hop: it is replaced like a missing one,
// where it used to leave the upstream with none at all.
func TestPlainForwardedProtoAndHost(t *testing.T) {
	t.Parallel()
	up := startPRUpstream(t, func(head string, body []byte) string { return prOK("ok") })
	p := startProxy(t, up.URL())
	prExchange(t, p.Addr, "GET /kept HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: front\r\n\r\n", time.Second)
	prExchange(t, p.Addr, "GET /named HTTP/1.1\r\nHost: a\r\nConnection: close, X-Forwarded-Proto, X-Forwarded-Host\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: front\r\n\r\n", time.Second)
	want := map[string][2]string{"/kept": {"https", "front"}, "/named": {"http", "a"}}
	heads := up.Heads()
	if len(heads) != 2 {
		t.Fatalf("the upstream got %d requests", len(heads))
	}
	for _, h := range heads {
		path := strings.Fields(h)[1]
		proto, host := prHeaderValues(h, "X-Forwarded-Proto"), prHeaderValues(h, "X-Forwarded-Host")
		if w := want[path]; len(proto) != 1 || proto[0] != w[0] || len(host) != 1 || host[0] != w[1] {
			t.Errorf("%s: X-Forwarded-Proto %q, X-Forwarded-Host %q; want %q, %q", path, proto, host, w[0], w[1])
		}
	}
}
