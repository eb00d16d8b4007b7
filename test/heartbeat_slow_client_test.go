package test

// Point 9: heartbeats on an idle stream, and a client that stops reading is
// dropped without slowing the others or growing memory past the bound.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestHeartbeatOnIdleStream(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_HEARTBEAT=200ms", "LASTEVENT_RETRY=3s")
	const path = "/feed/idle"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	waitFor(t, 10*time.Second, "three heartbeats on an idle stream", func() bool { return c.comments.Load() >= 3 })
	feed.Send("data: wake\n\n")
	if ev := c.Next(5 * time.Second); ev.Data != "wake" {
		t.Fatalf("after heartbeats: got %v", ev)
	}
	beats := c.comments.Load()
	waitFor(t, 10*time.Second, "heartbeats after a frame", func() bool { return c.comments.Load() >= beats+2 })

	chunks := c.Chunks()
	if string(chunks[0]) != "retry: 3000\n\n" {
		t.Fatalf("first chunk %q, want the retry preamble", chunks[0])
	}
	var beatChunks int
	for _, ch := range chunks[1:] {
		s := string(ch)
		if strings.HasPrefix(s, "id: ") && strings.HasSuffix(s, "\ndata: wake\n\n") {
			continue
		}
		// A heartbeat is a comment block and nothing else: no id, no data,
		// so an EventSource dispatches nothing and its last id is kept.
		if !strings.HasPrefix(s, ":") || !strings.HasSuffix(s, "\n\n") || strings.Contains(s, "\n\n\n") {
			t.Fatalf("chunk %q is neither the frame nor a comment block", s)
		}
		for _, line := range strings.Split(strings.TrimSuffix(s, "\n\n"), "\n") {
			if !strings.HasPrefix(line, ":") {
				t.Fatalf("heartbeat chunk %q has a non-comment line %q", s, line)
			}
		}
		beatChunks++
	}
	if beatChunks < 5 {
		t.Fatalf("%d heartbeat chunks, want at least 5", beatChunks)
	}
}

// TestSlowClientDropped: on a shared stream, a client that connects and then
// never reads is dropped (its writes time out) while a reading client gets
// every frame, and the buffered bytes stay within LASTEVENT_MAX_MEMORY.
func TestSlowClientDropped(t *testing.T) {
	t.Parallel()
	const maxMemory = 2 << 20
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_WRITE_TIMEOUT=1s",
		fmt.Sprintf("LASTEVENT_MAX_MEMORY=%d", maxMemory), "LASTEVENT_MAX_FRAME_BYTES=1MiB", "LASTEVENT_BUFFER_FRAMES=1000")
	const path = "/feed/slow"
	feed := up.Feed(path)
	good := dialWire(t, p.URL(), path)
	stuck := dialStuck(t, p.URL(), path)
	_ = stuck
	waitFor(t, 10*time.Second, "both clients attached", func() bool { return p.state(t).Totals.Connections == 2 })

	pad := strings.Repeat("x", 32<<10)
	// Slack for the soft bound: the ring keeps its newest frame, and the
	// admin may look between an append and the eviction it causes.
	const slack = 64 << 10
	checkMemory := func(st streamState) {
		t.Helper()
		if st.Totals.MaxMemory != maxMemory {
			t.Fatalf("max_memory %d, want %d", st.Totals.MaxMemory, maxMemory)
		}
		if st.Totals.BufferedBytes > maxMemory+slack {
			t.Fatalf("buffered_bytes %d exceeds LASTEVENT_MAX_MEMORY %d", st.Totals.BufferedBytes, maxMemory)
		}
		for _, s := range st.Streams {
			if s.Bytes > maxMemory+slack {
				t.Fatalf("stream buffers %d bytes, bound %d", s.Bytes, maxMemory)
			}
		}
	}
	read, sent := 0, 0
	readOne := func() {
		t.Helper()
		ev := good.Next(10 * time.Second)
		want := fmt.Sprintf("%d %s", read+1, pad)
		if ev.Type != "message" || ev.Data != want {
			t.Fatalf("the reading client: want frame %d, got %.80v", read+1, ev)
		}
		read++
	}
	send := func() {
		sent++
		feed.Send(fmt.Sprintf("data: %d %s\n\n", sent, pad))
		for sent-read > 8 { // the reading client keeps up; the other never reads
			readOne()
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	dropped := false
	for !dropped {
		if time.Now().After(deadline) {
			t.Fatalf("the client that does not read was not dropped after %d frames of %d KiB", sent, len(pad)>>10)
		}
		for range 16 {
			send()
		}
		st := p.state(t)
		checkMemory(st)
		dropped = st.Totals.Connections == 1
	}
	t.Logf("the stuck client was dropped after %d frames (%d MiB)", sent, sent*len(pad)>>20)
	for range 50 {
		send()
	}
	for read < sent {
		readOne()
	}
	good.NoEvent(100 * time.Millisecond)
	st := p.state(t)
	checkMemory(st)
	if len(st.Streams) != 1 || st.Streams[0].Connections != 1 {
		t.Fatalf("after the drop: %+v", st.Streams)
	}
	_, b := p.adminGet(t, "/debug/stream-state")
	var totals struct {
		Totals struct {
			Dropped uint64 `json:"clients_dropped_slow"`
		} `json:"totals"`
	}
	if err := json.Unmarshal(b, &totals); err != nil || totals.Totals.Dropped < 1 {
		t.Fatalf("clients_dropped_slow: %d (%v)", totals.Totals.Dropped, err)
	}
	if d := feed.Dropped(); d != 0 {
		t.Fatalf("the fake upstream dropped %d sends", d)
	}
}
