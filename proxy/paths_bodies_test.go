package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A dot segment whose slash is percent-encoded ("/..%2Fadmin") passed the
// base-path check and reached the upstream as /app/..%2Fadmin. An upstream
// that decodes the path before resolving dot segments serves /admin: nginx
// does (ngx_http_parse_complex_uri decodes %2F and resolves ".." with it),
// and so does any server that cleans its decoded path, as the one here.
func TestDotSegmentsEncodedSlashUnderBasePath(t *testing.T) {
	var mu sync.Mutex
	var outside []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := path.Clean(r.URL.Path); p != "/app" && !strings.HasPrefix(p, "/app/") {
			mu.Lock()
			outside = append(outside, r.RequestURI+" -> "+p)
			mu.Unlock()
		}
		fmt.Fprint(w, "ok")
	}))
	defer up.Close()
	_, addr := serveInProcess(t, up.URL+"/app", zerolog.Nop())
	for _, target := range []string{"/..%2Fadmin", "/..%2fadmin", "/%2e%2e%2Fadmin", "/x/..%2F..%2Fadmin"} {
		for _, accept := range []string{"*/*", "text/event-stream"} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nConnection: close\r\n\r\n", target, accept)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if got := strings.TrimSpace(line); got != "HTTP/1.1 400 Bad Request" {
				t.Errorf("GET %s (Accept %s): %q, want 400", target, accept, got)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outside) > 0 {
		t.Fatalf("the upstream served paths outside the base path /app: %q", outside)
	}
}

// MAX_BODY_MEMORY at its documented least (one MAX_BODY_BYTES buffer)
// holds one answer of MAX_BODY_BYTES. readWhole counted the old and the new
// buffer at once while growing and asked for limit+1 bytes, so on an idle
// proxy an answer above half the limit never fit: 503 "too many answers"
// for an HTTP/1.0 client's plain answer without a length and for an SSE
// client's passed answer (here a 600 KiB 403 page, 1 MiB limit).
func TestAnswerReadWholeFitsIdleBudget(t *testing.T) {
	const size = 600 << 10
	body := strings.Repeat("x", size)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Path == "/denied" {
			w.WriteHeader(http.StatusForbidden)
		}
		for i := 0; i < size; i += 64 << 10 {
			_, _ = io.WriteString(w, body[i:i+min(64<<10, size-i)]) // chunked: no Content-Length
			w.(http.Flusher).Flush()
		}
	}))
	defer up.Close()
	_, addr := serveInProcess(t, up.URL, zerolog.Nop(), "LASTEVENT_MAX_BODY_BYTES=1MiB", "LASTEVENT_MAX_BODY_MEMORY=1MiB")
	get := func(request string) (string, int) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, request)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Status, len(b)
	}
	if st, n := get("GET /plain HTTP/1.0\r\nHost: x\r\n\r\n"); st != "200 OK" || n != size {
		t.Errorf("HTTP/1.0 plain answer of 600 KiB, idle proxy: %s with %d bytes, want 200 with %d", st, n, size)
	}
	if st, n := get("GET /denied HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"); st != "403 Forbidden" || n != size {
		t.Errorf("SSE request answered 403 (600 KiB), idle proxy: %s with %d bytes, want 403 with %d", st, n, size)
	}
}

// User info without a password is often a token ("https://TOKEN@host"):
// the error that refuses it must not show it, as it shows no password or
// query. url.Redacted hides only a password.
func TestConfigErrorHidesUserOnlyToken(t *testing.T) {
	for _, env := range [][]string{
		{"LASTEVENT_UPSTREAM_URL=https://s3cr3t-token@app:9000"},
		{"LASTEVENT_UPSTREAM_URL=http://a:1", "LASTEVENT_STORE=redis", "LASTEVENT_REDIS_URL=redis://s3cr3t-token@redis:99999"},
	} {
		_, _, err := LoadConfig(env)
		if err == nil {
			t.Fatalf("%q: accepted", env)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error shows the token: %v", env, err)
		}
	}
	if got := redactURL("redis://user:pw@redis:6379"); got != "redis://user:xxxxx@redis:6379" {
		t.Errorf("redactURL with a password: %q", got)
	}
}

// An upstream on IPv6 (an IPv6-only cluster, or a literal such as
// http://[::1]:9000): streams connected, but every plain request got 502,
// since the plain client dialled with fasthttp.DialTimeout, which resolves
// IPv4 addresses only ("couldn't find dns entries for the given domain").
func TestPlainRequestToIPv6Upstream(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello over v6")
	}))
	up.Listener = ln
	up.Start()
	defer up.Close()
	_, addr := serveInProcess(t, up.URL, zerolog.Nop())
	resp, err := http.Get("http://" + addr + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "hello over v6" {
		t.Fatalf("plain request to %s: %d %q, want 200 \"hello over v6\"", up.URL, resp.StatusCode, b)
	}
}
