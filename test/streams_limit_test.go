package test

// LASTEVENT_UPSTREAM_MAX_CONNECTIONS is also the most streams open at once:
// a stream that lingers with no client gives its room to one a client asks
// for. Without that, short visits (page reloads, a reconnect storm without
// ids) left one lingering stream each for LASTEVENT_LINGER; once they held
// every upstream connection, a new client got a 200 and heartbeats but no
// frame, with the proxy nearly idle and the upstream healthy.

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

func TestLingeringStreamsGiveWay(t *testing.T) {
	up := startUpstream(t)
	const maxConns = 2 // the upstream pool: maxConns + 64 = 66
	p := startProxy(t, up.URL(), fmt.Sprintf("LASTEVENT_MAX_CONNECTIONS=%d", maxConns),
		"LASTEVENT_LINGER=60s", "LASTEVENT_HEARTBEAT=500ms", "LASTEVENT_LOG_LEVEL=info")
	const churn = 70
	var firstID string
	for i := range churn {
		c := dial(t, p.URL(), "/events?interval=20ms")
		if c.Resp.StatusCode != 200 {
			t.Fatalf("client %d: status %d", i, c.Resp.StatusCode)
		}
		ev, err := c.TryNext(3 * time.Second)
		if err != nil {
			t.Fatalf("client %d of %d short visits got no frame: %v", i+1, churn, err)
		}
		if i == 0 {
			firstID = ev.ID
		}
		c.Close()
		// lastevent notices the close at its second write after it.
		waitFor(t, 5*time.Second, "the client detached", func() bool { return p.state(t).Totals.Connections == 0 })
	}
	if n := p.state(t).Totals.Streams; n > maxConns+64 {
		t.Errorf("%d streams open after %d short visits, want at most LASTEVENT_UPSTREAM_MAX_CONNECTIONS=%d", n, churn, maxConns+64)
	}
	resp, err := http.Get("http://" + p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ended := -1.0
	for _, s := range parseProm(t, string(body)) {
		if s.name == "lastevent_streams_ended_early_total" {
			ended = s.value
		}
	}
	if ended < churn-(maxConns+64) {
		t.Errorf("lastevent_streams_ended_early_total = %v, want at least %d", ended, churn-(maxConns+64))
	}

	// The first visit's stream was ended early: its id now gets system-sync,
	// as after its linger, then the new stream's frames.
	c := dial(t, p.URL(), "/events?interval=20ms", "Last-Event-ID: "+firstID)
	ev := c.Next(5 * time.Second)
	if ev.Type != "system-sync" {
		t.Fatalf("resume of a stream ended early: first event %v, want system-sync", ev)
	}
	if ev := c.Next(5 * time.Second); ev.Type != "" && ev.Type != "message" {
		t.Fatalf("after system-sync: %v, want a frame", ev)
	}
}
