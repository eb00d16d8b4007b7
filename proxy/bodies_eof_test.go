package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// startBodyServer runs a lastevent Server in process in front of an upstream
// that reads request bodies and answers 200 with their length.
func startBodyServer(t *testing.T, env ...string) (addr string) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d", n)
	}))
	t.Cleanup(up.Close)
	_, addr = serveInProcess(t, up.URL, zerolog.Nop(), env...)
	return addr
}

// serveInProcess runs a lastevent Server for upstream on loopback ports
// until the test ends; it returns the server and its client address.
func serveInProcess(t *testing.T, upstream string, log zerolog.Logger, env ...string) (*Server, string) {
	t.Helper()
	cfg, _, err := LoadConfig(append([]string{
		"LASTEVENT_UPSTREAM_URL=" + upstream,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:0",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:0",
	}, env...))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(&cfg, log, "test")
	go func() { _ = srv.Serve(ln, adminLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String()
}

func postStatus(t *testing.T, addr string, body []byte) int {
	t.Helper()
	st, _ := postStatusRetry(t, addr, body)
	return st
}

// postStatusRetry posts body and returns the answer's status and Retry-After.
func postStatusRetry(t *testing.T, addr string, body []byte) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body)); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = c.Write(body) }() // a refused body is answered before it is sent
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// A chunked request whose connection ends (FIN) at a chunk boundary: fasthttp
// reads io.EOF at the chunk size, takes it for a keep-alive connection
// closing, and calls neither the handler nor the ErrorHandler, so its count
// is not given back by done. Chunked bodies count (fasthttp allocates each
// chunk's declared size at once), so two such requests fill a 32 MiB budget:
// an upload then gets an explicit 503 with Retry-After (never a hang), until
// the count expires (maxBodyAge, past fasthttp's 60 s read of a request;
// TestBodyBudgetExpires) or the request's header is used for another
// request, which gives it back first.
func TestBodyBudgetAfterChunkedEOF(t *testing.T) {
	for _, tail := range []string{"", "5\r\nhello\r\n"} {
		t.Run(fmt.Sprintf("after %q", tail), func(t *testing.T) {
			addr := startBodyServer(t, "LASTEVENT_MAX_BODY_MEMORY=32MiB")
			body := bytes.Repeat([]byte("b"), 5<<20)
			if st, _ := postStatusRetry(t, addr, body); st != 200 {
				t.Fatalf("a 5 MiB upload before: %d, want 200", st)
			}
			// Two at once (two ctxs), so that the budget (32 MiB, 16 MiB each) is full.
			var conns []net.Conn
			for range 2 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+tail); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			time.Sleep(300 * time.Millisecond) // both heads read, both bodies counted
			for _, c := range conns {
				c.(*net.TCPConn).CloseWrite() // FIN at a chunk boundary
			}
			for _, c := range conns {
				_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
				b, _ := io.ReadAll(c) // the server closes without answering
				t.Logf("answer to the cut chunked request: %q", b)
				c.Close()
			}
			for i := range 3 {
				st, retry := postStatusRetry(t, addr, body)
				if st != 200 && (st != 503 || retry == "") {
					t.Fatalf("a 5 MiB upload (%d) after two chunked requests cut at a chunk boundary: %d (Retry-After %q), want 200, or 503 with Retry-After", i, st, retry)
				}
			}
		})
	}
}
