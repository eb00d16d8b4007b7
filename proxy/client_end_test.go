package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A response that ends after the client has had nothing for longer than
// LASTEVENT_WRITE_TIMEOUT (and less than LASTEVENT_HEARTBEAT) still ends
// cleanly: fasthttp's terminating chunk is written under a fresh deadline,
// not the one set at the last frame, which has passed by then (the client
// then got a chunked body cut off without its end).
func TestResponseEndsCleanlyAfterSilence(t *testing.T) {
	ends := map[string]func(srv *Server, release chan struct{}){
		// The upstream refuses the reconnect: the stream ends.
		"stream-ended": func(_ *Server, release chan struct{}) { close(release) },
		"shutdown": func(srv *Server, _ chan struct{}) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			go func() { _ = srv.Shutdown(ctx) }()
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			var conns atomic.Int32
			release := make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if conns.Add(1) > 1 {
					http.Error(w, "gone", http.StatusNotFound)
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				fmt.Fprintf(w, "data: one\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			defer up.Close()
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			srv, addr := serveInProcess(t, up.URL, zerolog.Nop(),
				"LASTEVENT_WRITE_TIMEOUT=300ms", "LASTEVENT_HEARTBEAT=1h",
				"LASTEVENT_UPSTREAM_BACKOFF_MIN=10ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=20ms")
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				if line == "data: one\n" {
					break
				}
			}
			time.Sleep(700 * time.Millisecond) // past the last frame's write deadline
			end(srv, release)
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("the response did not end cleanly after %q: %v (read %q)", name, err, rest)
			}
			if strings.Contains(string(rest), "data:") {
				t.Fatalf("unexpected frames after the end: %q", rest)
			}
		})
	}
}
