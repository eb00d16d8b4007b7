package test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// bigAnswers is an upstream on loopback whose every answer is size bytes of
// text/plain with no Content-Length (net/http sends it chunked).
func bigAnswers(t *testing.T, size int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	piece := []byte(strings.Repeat("x", 64<<10))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for n := 0; n < size; n += len(piece) {
			if _, err := w.Write(piece[:min(len(piece), size-n)]); err != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// stalledClients opens n connections that each send request (with a tiny
// receive buffer) and never read; the function returned closes them.
func stalledClients(t *testing.T, addr, request string, n int) (closeAll func()) {
	t.Helper()
	var conns []net.Conn
	closeAll = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	t.Cleanup(closeAll)
	for range n {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).SetReadBuffer(4096)
		conns = append(conns, conn)
		if _, err := conn.Write([]byte(request)); err != nil {
			t.Fatal(err)
		}
	}
	return closeAll
}

// heapAfter waits d and returns the proxy's heap in use.
func heapAfter(t *testing.T, p *proc, d time.Duration) float64 {
	t.Helper()
	time.Sleep(d)
	return scrape(t, p)["go_memstats_heap_inuse_bytes"]
}

// TestAnswersReadWholeAreBounded: an answer lastevent reads whole before it
// writes it (a plain answer without a length to an HTTP/1.0 client; an
// upstream answer passed to an SSE client instead of a stream) holds up to
// LASTEVENT_MAX_BODY_BYTES (io.ReadAll's growth: twice that) for as long as
// its client takes to read it. Nothing bounded them together: 40 clients
// that sent one request each and never read held 700+ MiB, and any number
// of them could hold any amount (the promise: never unbounded memory). They
// must count against LASTEVENT_MAX_BODY_MEMORY, as request bodies do, with
// a 503 for one that does not fit.
func TestAnswersReadWholeAreBounded(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"http10-plain", "GET /big HTTP/1.0\r\nHost: x\r\n\r\n"},
		{"sse-passed", "GET /big HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := bigAnswers(t, 3<<20)
			p := startProxy(t, up, "LASTEVENT_MAX_BODY_BYTES=4MiB", "LASTEVENT_MAX_BODY_MEMORY=16MiB",
				"LASTEVENT_WRITE_TIMEOUT=30s")
			base := heapAfter(t, p, 0)
			closeStalled := stalledClients(t, p.Addr, tc.request, 40)
			heap := heapAfter(t, p, 3*time.Second)
			t.Logf("heap in use: %.0f MiB before, %.0f MiB with 40 stalled clients", base/(1<<20), heap/(1<<20))
			if limit := base + 16<<20 + 24<<20; heap > limit {
				t.Fatalf("heap in use %.0f MiB with LASTEVENT_MAX_BODY_MEMORY=16MiB, want below %.0f MiB", heap/(1<<20), limit/(1<<20))
			}
			// Once they are gone, their room is given back: a client that
			// reads gets the whole answer.
			closeStalled()
			waitFor(t, 10*time.Second, "the whole answer for a client that reads", func() bool {
				conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				_, _ = conn.Write([]byte(tc.request))
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				b, _ := io.ReadAll(conn)
				return strings.HasPrefix(string(b), "HTTP/1.1 200 ") && strings.HasSuffix(string(b), strings.Repeat("x", 3<<20))
			})
		})
	}
}
