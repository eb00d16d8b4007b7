package test

// Point 8: when the upstream connection drops, the clients keep theirs,
// lastevent reconnects with the upstream's own last id, and every client
// gets exactly one sync-required at the place where frames may have been
// lost (none when the upstream is trusted to resume).

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/upstream"
)

// sendUp sends frame n with the upstream's own id "up-n".
func sendUp(feed *upstream.Feed, n int) {
	feed.Send(fmt.Sprintf("id: up-%d\ndata: %d\n\n", n, n))
}

// expectFrames reads frames from..to (data "n"), each id after prev; it
// returns the last id.
func expectFrames(t *testing.T, who string, c *wireClient, from, to int, prev string) string {
	t.Helper()
	for n := from; n <= to; n++ {
		ev := c.Next(5 * time.Second)
		if ev.Type != "message" || ev.Data != fmt.Sprint(n) {
			t.Fatalf("%s: want frame %d, got %v", who, n, ev)
		}
		if ev.ID == "up-"+fmt.Sprint(n) || !(ev.ID > prev) {
			t.Fatalf("%s: frame %d has id %q after %q: not a fresh, increasing lastevent id", who, n, ev.ID, prev)
		}
		prev = ev.ID
	}
	return prev
}

// expectMarker reads the sync-required marker of an upstream reconnect.
func expectMarker(t *testing.T, who string, c *wireClient, prev string) string {
	t.Helper()
	ev := c.Next(5 * time.Second)
	if ev.Type != "sync-required" {
		t.Fatalf("%s: want sync-required after the upstream reconnect, got %v", who, ev)
	}
	if r := syncPayload(t, ev)["reason"]; r != "upstream-reconnect" {
		t.Fatalf("%s: marker reason %v, want upstream-reconnect", who, r)
	}
	if !(ev.ID > prev) {
		t.Fatalf("%s: marker id %s does not follow %s", who, ev.ID, prev)
	}
	return ev.ID
}

// waitReconnected waits until the feed has been opened total times and has
// want open connections.
func waitReconnected(t *testing.T, feed *upstream.Feed, total int64, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d upstream connections (%d opened in all)", want, total), func() bool {
		return feed.Total() >= total && feed.Conns() == want
	})
}

// checkReconnectIDs: every request after the first on path sent the
// upstream's own last id.
func checkReconnectIDs(t *testing.T, reqs []*http.Request, opens int, lastUpID string) {
	t.Helper()
	if len(reqs) <= opens {
		t.Fatalf("%d upstream requests, want more than %d", len(reqs), opens)
	}
	for i, r := range reqs {
		got := r.Header.Get("Last-Event-ID")
		if i < opens && got != "" {
			t.Errorf("first request %d sent Last-Event-ID %q", i, got)
		}
		if i >= opens && got != lastUpID {
			t.Errorf("reconnect request %d sent Last-Event-ID %q, want the upstream's own %q", i, got, lastUpID)
		}
	}
}

func TestUpstreamReconnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    string
		resumes bool
	}{{"shared", false}, {"session", false}, {"shared", true}, {"session", true}} {
		t.Run(fmt.Sprintf("%s/resumes=%v", tc.mode, tc.resumes), func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t)
			p := startProxy(t, up.URL(), "LASTEVENT_MODE="+tc.mode, "LASTEVENT_LINGER=30s",
				"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=100ms",
				fmt.Sprintf("LASTEVENT_UPSTREAM_RESUMES=%v", tc.resumes))
			const path = "/feed/reconnect"
			feed := up.Feed(path)
			// Two clients stay; one leaves before the upstream drops and
			// resumes after it.
			clients := []*wireClient{dialWire(t, p.URL(), path), dialWire(t, p.URL(), path)}
			leaver := dialWire(t, p.URL(), path)
			conns := 1
			if tc.mode == "session" {
				conns = 3
			}
			waitReconnected(t, feed, int64(conns), conns)
			last := make([]string, len(clients))
			for n := 1; n <= 5; n++ {
				sendUp(feed, n)
			}
			for i, c := range clients {
				last[i] = expectFrames(t, fmt.Sprintf("client %d", i), c, 1, 5, "")
			}
			leaverID := expectFrames(t, "leaver", leaver, 1, 3, "")
			leaver.Close()

			// The connection dies in the middle of a frame: that frame is
			// never dispatched, its id is not the upstream's last id, and
			// nothing of it leaks into the next connection's first frame.
			feed.Send("id: up-6\ndata: cut")
			time.Sleep(20 * time.Millisecond)
			feed.Kill()
			waitReconnected(t, feed, int64(2*conns), conns)
			checkReconnectIDs(t, requestsTo(up.Requests(), path), conns, "up-5")
			for n := 6; n <= 8; n++ {
				sendUp(feed, n)
			}
			for i, c := range clients {
				who := fmt.Sprintf("client %d", i)
				prev := last[i]
				if !tc.resumes {
					prev = expectMarker(t, who, c, prev)
				}
				expectFrames(t, who, c, 6, 8, prev)
				c.NoEvent(100 * time.Millisecond) // exactly one marker, nothing more
			}
			// The leaver resumes across the marker and gets it in order.
			back := dialWire(t, p.URL(), path, "Last-Event-ID: "+leaverID)
			prev := expectFrames(t, "leaver", back, 4, 5, leaverID)
			if !tc.resumes {
				prev = expectMarker(t, "leaver", back, prev)
			}
			expectFrames(t, "leaver", back, 6, 8, prev)
			back.NoEvent(100 * time.Millisecond)
		})
	}
}

// TestUpstreamDownHoldsClients: while the upstream answers 503 during a
// reconnect, clients keep a 200 stream that carries heartbeats; when it is
// back, they get the marker and then the frames.
func TestUpstreamDownHoldsClients(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_HEARTBEAT=100ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=100ms")
	const path = "/feed/down"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	waitReconnected(t, feed, 1, 1)
	for n := 1; n <= 3; n++ {
		sendUp(feed, n)
	}
	prev := expectFrames(t, "client", c, 1, 3, "")

	unavailable := make([]upstream.Status, 1000)
	for i := range unavailable {
		unavailable[i] = upstream.Status{Code: 503, Body: "down for maintenance"}
	}
	up.QueueStatus(path, unavailable...)
	feed.Kill()
	beats := c.comments.Load()
	waitFor(t, 10*time.Second, "several 503 answers and heartbeats while the upstream is down", func() bool {
		return len(requestsTo(up.Requests(), path)) >= 4 && c.comments.Load() >= beats+3
	})
	st := p.state(t)
	if len(st.Streams) != 1 || st.Streams[0].Upstream != "reconnecting" || st.Streams[0].Connections != 1 {
		t.Fatalf("while the upstream is down: %+v", st.Streams)
	}
	// Nothing but heartbeats so far.
	for {
		it, err := c.NextItem(10 * time.Millisecond)
		if err == errTimeout {
			break
		}
		if err != nil || it.kind != wireComment {
			t.Fatalf("while the upstream is down the client got %+v (%v), want heartbeats only", it, err)
		}
	}
	up.ClearStatus(path)
	reqs := len(requestsTo(up.Requests(), path))
	waitReconnected(t, feed, 2, 1)
	checkReconnectIDs(t, requestsTo(up.Requests(), path), 1, "up-3")
	for n := 4; n <= 6; n++ {
		sendUp(feed, n)
	}
	prev = expectMarker(t, "client", c, prev)
	expectFrames(t, "client", c, 4, 6, prev)
	c.NoEvent(100 * time.Millisecond)
	t.Logf("%d upstream requests while down, %d heartbeats", reqs-1, c.comments.Load()-beats)
}

// TestUpstreamFirstByteTimeoutOnReusedConnection: after an upstream stream
// ends cleanly, the reconnect can go over the same pooled connection; an
// answer that then never comes is still cut after LASTEVENT_UPSTREAM_TIMEOUT
// and retried, as on a new connection.
func TestUpstreamFirstByteTimeoutOnReusedConnection(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_UPSTREAM_TIMEOUT=1s",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=100ms")
	const path = "/events"
	c := dialWire(t, p.URL(), path+"?count=2&interval=300ms")
	defer c.Close()
	if ev := c.Next(10 * time.Second); !strings.Contains(ev.Data, `"n":1`) {
		t.Fatalf("first event: %v", ev)
	}
	// The stream ends after its second event; the answer to the reconnect
	// is held back for a minute.
	up.QueueStatus(path, upstream.Status{Code: 200, Delay: time.Minute})
	waitFor(t, 10*time.Second, "the reconnect after the clean end", func() bool {
		return len(requestsTo(up.Requests(), path)) >= 2
	})
	started := time.Now()
	waitFor(t, 8*time.Second, "a retry after LASTEVENT_UPSTREAM_TIMEOUT cut the held-back answer", func() bool {
		return len(requestsTo(up.Requests(), path)) >= 3
	})
	reqs := requestsTo(up.Requests(), path)
	if reqs[0].RemoteAddr != reqs[1].RemoteAddr {
		t.Fatalf("the reconnect used a new connection (%s, then %s): this test needs the pooled one", reqs[0].RemoteAddr, reqs[1].RemoteAddr)
	}
	t.Logf("retried %v after the held-back request", time.Since(started).Round(10*time.Millisecond))
}

// TestUpstreamResumesNeedsAnID: with LASTEVENT_UPSTREAM_RESUMES=true an
// upstream that never sent an id: is asked to resume from nothing when its
// stream drops (no Last-Event-ID), so frames may be missing there as with
// any upstream: the clients get the upstream-reconnect marker. It used to
// be left out: a silent gap. Found by a review.
func TestUpstreamResumesNeedsAnID(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_UPSTREAM_RESUMES=true",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=20ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=100ms")
	const path = "/feed/resumes-without-ids"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	waitReconnected(t, feed, 1, 1)
	feed.Send("data: before\n\n")
	if ev := c.Next(5 * time.Second); ev.Data != "before" {
		t.Fatalf("got %v, want the frame before the drop", ev)
	}
	feed.Kill()
	waitReconnected(t, feed, 2, 1)
	if got := requestsTo(up.Requests(), path)[1].Header.Get("Last-Event-ID"); got != "" {
		t.Fatalf("the reconnect sent Last-Event-ID %q; the upstream never sent an id", got)
	}
	feed.Send("data: after\n\n")
	if ev := c.Next(5 * time.Second); ev.Type != "sync-required" || !strings.Contains(ev.Data, "upstream-reconnect") {
		t.Fatalf("after the reconnect got %v, want sync-required (upstream-reconnect)", ev)
	}
	if ev := c.Next(5 * time.Second); ev.Data != "after" {
		t.Fatalf("got %v, want the frame after the drop", ev)
	}
}
