package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// readEvents reads lines until n "data:" or "event:" lines were seen (chunk
// size lines and ids are skipped) and returns those lines.
func (s *sseConn) readEvents(t *testing.T, n int) []string {
	t.Helper()
	_ = s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []string
	for len(out) < n {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", out, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(line, "data: ") || strings.HasPrefix(line, "event: ") {
			out = append(out, line)
		}
	}
	return out
}

// Every loss gets its own sync-required, also when no frame came between
// two of them: a client reloads its state at the first marker, so frames
// lost after that (a second upstream gap, a second frame too large) need a
// second one. One marker used to stand for both.
func TestEveryLossHasItsMarker(t *testing.T) {
	cases := map[string]struct {
		conn   func(n int32, w http.ResponseWriter, fl http.Flusher, next <-chan struct{}, done <-chan struct{})
		reason string
	}{
		"upstream-reconnect": {
			reason: ReasonUpstreamReconnect,
			conn: func(n int32, w http.ResponseWriter, fl http.Flusher, next, done <-chan struct{}) {
				switch n {
				case 1:
					fmt.Fprint(w, "data: 1\n\n")
					fl.Flush() // then the first gap
				case 2:
					select { // connected, quiet, then dropped: the second gap
					case <-next:
					case <-done:
					}
				default:
					fmt.Fprint(w, "data: 4\n\n")
					fl.Flush()
					<-done
				}
			},
		},
		"frame-too-large": {
			reason: ReasonFrameTooLarge,
			conn: func(n int32, w http.ResponseWriter, fl http.Flusher, next, done <-chan struct{}) {
				big := "data: " + strings.Repeat("x", 2<<10) + "\n\n"
				fmt.Fprint(w, "data: 1\n\n"+big)
				fl.Flush()
				select {
				case <-next:
				case <-done:
					return
				}
				fmt.Fprint(w, big+"data: 4\n\n")
				fl.Flush()
				<-done
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var conns atomic.Int32
			next := make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				fl := w.(http.Flusher)
				fl.Flush()
				tc.conn(conns.Add(1), w, fl, next, r.Context().Done())
			}))
			t.Cleanup(up.Close) // after the proxy's shutdown (cleanups run last in, first out)
			_, addr := serveInProcess(t, up.URL, zerolog.Nop(), "LASTEVENT_MAX_FRAME_BYTES=1KiB",
				"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=40ms")
			c := mustOpenSSE(t, addr, "/feed")
			marker := []string{"event: sync-required", `data: {"reason":"` + tc.reason + `"`}
			got := c.readEvents(t, 3)
			if got[0] != "data: 1" || got[1] != marker[0] || !strings.HasPrefix(got[2], marker[1]) {
				t.Fatalf("first loss: %q", got)
			}
			// The client reloads its state here; then frames are lost again.
			close(next)
			got = c.readEvents(t, 3)
			if got[0] != marker[0] || !strings.HasPrefix(got[1], marker[1]) || got[2] != "data: 4" {
				t.Fatalf("second loss: want the marker, then data: 4; got %q", got)
			}
		})
	}
}
