package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// A request is treated as SSE when it is a GET whose Accept names
// text/event-stream, unless with q=0, which says it is not acceptable.
func TestIsSSERequest(t *testing.T) {
	for _, tc := range []struct {
		method, accept string
		want           bool
	}{
		{"GET", "text/event-stream", true},
		{"GET", "text/html, text/event-stream;q=0.5", true},
		{"GET", "TEXT/EVENT-STREAM", true},
		{"GET", "text/event-stream;q=0", false},
		{"GET", "text/event-stream; q=0.0", false},
		{"GET", "text/event-stream;q=bogus", true},
		{"GET", "*/*", false},
		{"GET", "", false},
		{"POST", "text/event-stream", false},
	} {
		ctx := &fasthttp.RequestCtx{}
		ctx.Request.Header.SetMethod(tc.method)
		if tc.accept != "" {
			ctx.Request.Header.Set("Accept", tc.accept)
		}
		if got := isSSERequest(ctx); got != tc.want {
			t.Errorf("%s with Accept %q: SSE %v, want %v", tc.method, tc.accept, got, tc.want)
		}
	}
}

func TestHasDotSegment(t *testing.T) {
	for path, want := range map[string]bool{
		"/events": false, "/": false, "": false, "/a/b/": false, "/.well-known/x": false,
		"/a..b/c": false, "/...": false, "/a/.b": false, "/%2e%2e%2e": false, "/%2ex": false,
		"/..": true, "/../admin": true, "/a/./b": true, "/a/.": true, "/.": true, "/a/..?x=1": true,
		"/%2e%2e/admin": true, "/%2E./x": true, "/.%2e": true, "/%2e": true, "/a/%2E%2E": true,
		"/a?p=/../x": false, // the query is not the path
		// A slash encoded, or a backslash (plain or encoded), ends a segment
		// for an upstream that decodes before it resolves, or takes \ for /.
		"/..%2Fadmin": true, "/.%2fx": true, "/a/%2e%2e%2Fb": true, "/x%2F..": true, "/x/..%2F": true,
		"/..\\admin": true, "/..%5cadmin": true, "/a%5C.%5Cb": true,
		"/a%2Fb": false, "/a..%2fb": false, "/%2F%2F": false, "/.well-known%2Fx": false, "/a\\b": false,
	} {
		if got := hasDotSegment([]byte(path)); got != want {
			t.Errorf("hasDotSegment(%q) = %v, want %v", path, got, want)
		}
	}
}

// Under an upstream base path, a client path with dot segments is refused
// (400), plain or SSE, and never reaches the upstream: it went on as
// /app/../admin, which an upstream that resolves dot segments serves from
// outside /app. Without a base path it goes on as before. Found by a
// black-box probe.
func TestDotSegmentsUnderBasePath(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}))
	defer up.Close()
	get := func(addr, target, accept string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: %s\r\nConnection: close\r\n\r\n", target, accept)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line)
	}
	_, addr := serveInProcess(t, up.URL+"/app", zerolog.Nop())
	for _, target := range []string{"/../admin", "/%2e%2e/admin", "/a/./b", "http://other/../admin"} {
		for _, accept := range []string{"*/*", "text/event-stream"} {
			if got := get(addr, target, accept); got != "HTTP/1.1 400 Bad Request" {
				t.Errorf("GET %s (Accept %s): %q, want 400", target, accept, got)
			}
		}
	}
	if got := get(addr, "/.well-known/x", "*/*"); got != "HTTP/1.1 200 OK" {
		t.Errorf("GET /.well-known/x: %q, want 200", got)
	}
	_, bare := serveInProcess(t, up.URL, zerolog.Nop())
	if got := get(bare, "/a/../b", "*/*"); got != "HTTP/1.1 200 OK" {
		t.Errorf("without a base path, GET /a/../b: %q, want 200", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"/app/.well-known/x", "/a/../b"}; !slices.Equal(seen, want) {
		t.Fatalf("the upstream saw %q, want %q", seen, want)
	}
}
