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
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// tickUpstream is a legacy SSE server: every connection gets a frame every
// few milliseconds until it goes away or quit is closed.
func tickUpstream(quit chan struct{}) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fl.Flush()
		t := time.NewTicker(3 * time.Millisecond)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-r.Context().Done():
				return
			case <-quit:
				return
			case <-t.C:
			}
			if _, err := fmt.Fprintf(w, "id: up-%d\ndata: %d\n\n", n, n); err != nil {
				return
			}
			fl.Flush()
		}
	}))
}

// sseConn is a raw client connection reading frames.
type sseConn struct {
	c  net.Conn
	br *bufio.Reader
}

func openSSE(addr, path string, headers ...string) (*sseConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return &sseConn{c: c, br: bufio.NewReader(c)}, nil
}

func mustOpenSSE(t *testing.T, addr, path string, headers ...string) *sseConn {
	t.Helper()
	c, err := openSSE(addr, path, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// lastID reads until n more id lines have been seen and returns the last.
func (s *sseConn) lastID(n int) (string, error) {
	var id string
	for n > 0 {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return id, fmt.Errorf("reading the stream: %w", err)
		}
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			id = strings.TrimSpace(v)
			n--
		}
	}
	return id, nil
}

func (s *sseConn) mustLastID(t *testing.T, n int) string {
	t.Helper()
	id, err := s.lastID(n)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// runServerRound starts a server against a fresh upstream, lets clients come
// and go (some resuming, some leaving streams to linger, two still attached
// at the end), and shuts it all down.
func runServerRound(t *testing.T, mode string, linger time.Duration) {
	quit := make(chan struct{})
	up := tickUpstream(quit)
	defer up.Close()
	defer close(quit)
	cfg, _, err := LoadConfig([]string{
		"LASTEVENT_UPSTREAM_URL=" + up.URL,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:0",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:0",
		"LASTEVENT_MODE=" + mode,
		"LASTEVENT_LINGER=" + linger.String(),
		"LASTEVENT_HEARTBEAT=20ms",
		"LASTEVENT_BUFFER_FRAMES=50",
	})
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
	srv := NewServer(&cfg, zerolog.Nop(), "test")
	// fasthttp's worker pool cleaner sees a stopped pool only after its
	// next sleep (MaxIdleWorkerDuration, 10 s by default): shorten it here
	// so that the check below can be quick. A pool never stopped would
	// still loop forever and be caught.
	srv.client.MaxIdleWorkerDuration = time.Second
	srv.admin.MaxIdleWorkerDuration = time.Second
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, adminLn) }()
	addr := ln.Addr().String()

	// Clients come and go, some at once.
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/feed/%d", i%2)
			c, err := openSSE(addr, path)
			if err != nil {
				t.Error(err)
				return
			}
			id, err := c.lastID(3 + i)
			c.c.Close()
			if err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				// Back with its id: a resume (or a sync event).
				if c, err = openSSE(addr, path, "Last-Event-ID: "+id); err != nil {
					t.Error(err)
					return
				}
				if _, err := c.lastID(2); err != nil {
					t.Error(err)
				}
				c.c.Close()
			}
		}()
	}
	// One with a bad id, one that never reads a byte.
	bad := mustOpenSSE(t, addr, "/feed/0", "Last-Event-ID: nonsense")
	bad.mustLastID(t, 2)
	bad.c.Close()
	mute := mustOpenSSE(t, addr, "/feed/mute")
	wg.Wait()
	mute.c.Close()
	// Let lingering streams expire (with a short linger; with a long one
	// Shutdown must close them), then keep two clients attached.
	time.Sleep(300 * time.Millisecond)
	staying := []*sseConn{mustOpenSSE(t, addr, "/feed/0"), mustOpenSSE(t, addr, "/feed/1")}
	for _, c := range staying {
		c.mustLastID(t, 2)
	}
	for _, p := range []string{"/debug/stream-state", "/metrics", "/healthz"} {
		resp, err := http.Get("http://" + adminLn.Addr().String() + p)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	http.DefaultClient.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	// The attached clients were ended: their responses finish.
	for _, c := range staying {
		_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(c.br)
		if err != nil {
			t.Errorf("an attached client's response did not end cleanly: %v", err)
		}
		if !bytes.HasSuffix(rest, []byte("0\r\n\r\n")) {
			t.Errorf("an attached client's response does not end with the last chunk: ...%q", rest[max(0, len(rest)-40):])
		}
		c.c.Close()
	}
}

// TestServerLeavesNoGoroutines: after Shutdown, every goroutine the server
// started (listeners, streams, subscribers, linger timers, upstream
// connections) is gone.
func TestServerLeavesNoGoroutines(t *testing.T) {
	// A first round starts the process-wide goroutines of the libraries
	// (fasthttp's date updater, for one); they are part of the baseline,
	// taken once the round's own goroutines are gone.
	runServerRound(t, "shared", time.Minute)
	base := lowest(3 * time.Second)
	for _, mode := range []string{"shared", "session"} {
		for _, linger := range []time.Duration{100 * time.Millisecond, time.Minute} {
			runServerRound(t, mode, linger)
		}
	}
	waitGoroutines(t, base)
}

// lowest is the lowest goroutine count seen during d.
func lowest(d time.Duration) int {
	n := runtime.NumGoroutine()
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// waitGoroutines waits up to a few seconds for the count to fall to want;
// fasthttp's client cleaners need a second or two to notice they are idle.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(6 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines left, baseline %d:\n%s", runtime.NumGoroutine(), want, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
