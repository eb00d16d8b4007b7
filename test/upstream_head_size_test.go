package test

// An upstream SSE answer's head must fit lastevent's 8 KiB read buffer per
// upstream connection (session mode has one per client). One that does not
// is answered 502 at once, as nginx answers "upstream sent too big header";
// before, it was retried for good while the client got heartbeats and never
// a frame. A head just under the bound streams.

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestUpstreamHeadOver8KiB(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_UPSTREAM_BACKOFF_MIN=50ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=200ms")

	feed := up.Feed("/feed/bighead")
	req, _ := http.NewRequest("GET", p.URL()+"/feed/bighead?set-cookie=s="+strings.Repeat("c", 9<<10), nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("a 9 KiB upstream head: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(string(body), "8 KiB") {
		t.Fatalf("a 9 KiB upstream head: %d %q, want 502 naming the 8 KiB bound", resp.StatusCode, body)
	}
	time.Sleep(300 * time.Millisecond)
	if n := feed.Total(); n != 1 {
		t.Errorf("%d upstream requests for one client, want 1 (no retries)", n)
	}

	small := up.Feed("/feed/head7k")
	c := dial(t, p.URL(), "/feed/head7k?set-cookie=s="+strings.Repeat("c", 7<<10))
	if c.Resp.StatusCode != 200 {
		t.Fatalf("a 7 KiB upstream head: status %d", c.Resp.StatusCode)
	}
	if !small.WaitConns(1, 5*time.Second) {
		t.Fatal("no upstream connection")
	}
	small.Send("data: hello\n\n")
	if ev := c.Next(5 * time.Second); ev.Data != "hello" {
		t.Fatalf("a 7 KiB upstream head: %v, want the frame", ev)
	}
}
