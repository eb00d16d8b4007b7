package test

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPSUpstream: an https upstream (its certificate trusted through
// SSL_CERT_FILE, as a user's own CA would be) serves a stream that is quiet
// for three times LASTEVENT_UPSTREAM_TIMEOUT and a plain answer whose body
// takes that long. The stream must go on over its one connection (it was cut
// at the head deadline and reconnected, with a sync-required each time, while
// the head's end was looked for in TLS records), and the plain answer must
// arrive whole.
func TestHTTPSUpstream(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	next := make(chan struct{})
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl := w.(http.Flusher)
		if r.URL.Path == "/plain" {
			fmt.Fprint(w, "first-")
			fl.Flush()
			time.Sleep(1500 * time.Millisecond)
			fmt.Fprint(w, "second")
			return
		}
		n := conns.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: conn%d-a\n\n", n)
		fl.Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "data: conn%d-b\n\n", n)
		fl.Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(up.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, up.URL, "SSL_CERT_FILE="+ca, "LASTEVENT_UPSTREAM_TIMEOUT=500ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=40ms")

	c := dialWire(t, p.URL(), "/feed")
	if ev := c.Next(5 * time.Second); ev.Data != "conn1-a" || ev.ID == "" {
		t.Fatalf("first event %+v, want conn1-a with an id", ev)
	}
	time.Sleep(1500 * time.Millisecond)
	close(next)
	if ev := c.Next(5 * time.Second); ev.Data != "conn1-b" {
		t.Fatalf("after 1.5 s of quiet: event %+v, want conn1-b (%d upstream connections)", ev, conns.Load())
	}

	resp, err := http.Get(p.URL() + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "first-second" {
		t.Fatalf("plain answer: %d %q %v", resp.StatusCode, body, err)
	}
	if strings.Contains(p.Logs(), "upstream stream ended") {
		t.Fatalf("the stream was reconnected:\n%s", p.Logs())
	}
}
