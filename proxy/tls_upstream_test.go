package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// An https upstream: the stream connection's head detection (streamConn.
// scanHead) must not run over TLS ciphertext. A quiet but healthy stream must
// not be cut at LASTEVENT_UPSTREAM_TIMEOUT (the head deadline) and reconnected
// with a sync-required marker.
func TestTLSUpstreamQuietStreamNotCut(t *testing.T) {
	var conns atomic.Int32
	next := make(chan struct{})
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := conns.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
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
	srv, addr := serveInProcess(t, up.URL, zerolog.Nop(),
		"LASTEVENT_UPSTREAM_TIMEOUT=500ms", "LASTEVENT_HEARTBEAT=100ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=40ms")
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	srv.hub.streamClient.TLSConfig = &tls.Config{RootCAs: pool}

	c := mustOpenSSE(t, addr, "/feed")
	got := c.readEvents(t, 1)
	if got[0] != "data: conn1-a" {
		t.Fatalf("first event: %q", got)
	}
	time.Sleep(1500 * time.Millisecond) // three head deadlines of quiet
	close(next)
	got = c.readEvents(t, 1)
	if got[0] != "data: conn1-b" {
		t.Fatalf("a quiet https stream was cut and reconnected (%d upstream connections): next event %q, want \"data: conn1-b\"",
			conns.Load(), strings.Join(got, " | "))
	}
}

// The same for the plain client: an answer's body from an https upstream may
// take longer than LASTEVENT_UPSTREAM_TIMEOUT (each read gets 60 s).
func TestTLSUpstreamSlowPlainBody(t *testing.T) {
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fl := w.(http.Flusher)
		fmt.Fprint(w, "first-")
		fl.Flush()
		time.Sleep(1500 * time.Millisecond)
		fmt.Fprint(w, "second")
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	cl := newPlainClient(&Config{Upstream: u, UpstreamTimeout: 500 * time.Millisecond, UpstreamMaxConnections: 4, MaxHeaderBytes: 8 << 10})
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	cl.TLSConfig = &tls.Config{RootCAs: pool}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(up.URL + "/plain")
	if err := cl.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.BodyStream())
	if err != nil || string(b) != "first-second" {
		t.Fatalf("plain answer from an https upstream: %q, %v", b, err)
	}
}
