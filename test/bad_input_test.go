package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// badInputSync is the data of a sync-required event.
type badInputSync struct {
	Reason string `json:"reason"`
	ID     string `json:"id"`
}

func mustSyncRequired(t *testing.T, ev rawFrame, reason string) {
	t.Helper()
	if ev.Event != "sync-required" {
		t.Fatalf("want a sync-required event, got %v", ev)
	}
	var p badInputSync
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
		t.Fatalf("sync-required data %q is not JSON: %v", ev.Data, err)
	}
	if p.Reason != reason {
		t.Fatalf("sync-required reason %q, want %q", p.Reason, reason)
	}
}

// TestBadInputOversizedFrame: a frame above LASTEVENT_MAX_FRAME_BYTES is
// dropped and marked with sync-required (reason frame-too-large) exactly
// where it was, and the following frames flow.
func TestBadInputOversizedFrame(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_FRAME_BYTES=4KiB")
	feed := up.Feed("/feed/oversized")
	c := rawGet(t, p.Addr, "/feed/oversized")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("data: before\n\n")
	// One long line, sent in pieces.
	long := "data: " + strings.Repeat("x", 10000) + "\n\n"
	for i := 0; i < len(long); i += 3000 {
		feed.Send(long[i:min(i+3000, len(long))])
	}
	feed.Send("data: middle\n\n")
	// Many short lines that add up to too much.
	feed.Send("event: big\n" + strings.Repeat("data: 0123456789012345678901234567890123456789\n", 200) + "\n")
	// Just under the bound is fine.
	fits := strings.Repeat("y", 3000)
	feed.Send("data: " + fits + "\n\n")
	feed.Send("data: after\n\n")

	evs := c.eventsUntil("after", 10*time.Second)
	if len(evs) != 6 {
		t.Fatalf("got %d events, want 6: %v", len(evs), evs)
	}
	if evs[0].Data != "before" || evs[2].Data != "middle" || evs[4].Data != fits || evs[5].Data != "after" {
		t.Fatalf("events %v", evs)
	}
	mustSyncRequired(t, evs[1], "frame-too-large")
	mustSyncRequired(t, evs[3], "frame-too-large")
	checkProxyIDs(t, evs)
	checkWholeChunks(t, c.Chunks())
}

// procStatus reads a field (in kB) of /proc/<pid>/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", field, rest)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func healthz(t *testing.T, p *proc) {
	t.Helper()
	if code, body := p.adminGet(t, "/healthz"); code != 200 {
		t.Fatalf("healthz %d %q", code, body)
	}
}

// TestBadInputEndlessFrame: an upstream frame that never ends (data lines
// without a blank line, then one endless line), many MiB of it, does not make
// lastevent buffer it: the buffered bytes and the process's memory stay
// bounded, it keeps serving, and once the frame ends the stream goes on,
// with sync-required where the frame was dropped.
func TestBadInputEndlessFrame(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_FRAME_BYTES=64KiB")
	pid := p.cmd.Process.Pid
	feed := up.Feed("/feed/endless")
	c := rawGet(t, p.Addr, "/feed/endless")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("data: start\n\n")
	if ev := c.NextEvent(5 * time.Second); ev.Data != "start" {
		t.Fatalf("first event %v", ev)
	}
	baseKB := procStatus(t, pid, "VmRSS")

	const piece = 64 << 10
	const total = 48 << 20
	lines := strings.Repeat("data: "+strings.Repeat("z", 1017)+"\n", piece/1024)
	endless := strings.Repeat("w", piece)
	for round, body := range []string{lines, endless} {
		if round == 1 {
			feed.Send("data: ")
		}
		for sent := 0; sent < total/2; sent += len(body) {
			feed.Send(body)
			if sent%(8<<20) == 0 {
				// While the frame is going on: bounded, alive.
				st := p.state(t)
				if st.Totals.BufferedBytes > 1<<20 {
					t.Fatalf("%d bytes buffered while one endless frame streams in", st.Totals.BufferedBytes)
				}
				healthz(t, p)
			}
		}
		end := fmt.Sprintf("after-%d", round)
		feed.Send("\n\ndata: " + end + "\n\n")
		evs := c.eventsUntil(end, 20*time.Second)
		if len(evs) != 2 {
			t.Fatalf("round %d: events %v, want sync-required then %s", round, evs, end)
		}
		mustSyncRequired(t, evs[0], "frame-too-large")
	}
	st := p.state(t)
	if st.Totals.BufferedBytes > 1<<20 || len(st.Streams) != 1 || st.Streams[0].Frames != 5 {
		t.Fatalf("after the endless frames: %+v", st)
	}
	healthz(t, p)
	rss, peak := procStatus(t, pid, "VmRSS"), procStatus(t, pid, "VmHWM")
	t.Logf("VmRSS %d kB before, %d kB after, peak %d kB, for %d MiB of one frame", baseKB, rss, peak, total>>20)
	// Generous: holding the frame would take 48 MiB and more.
	if limit := baseKB + 32<<10; peak > limit {
		t.Fatalf("peak RSS %d kB, above %d kB: the endless frame was held in memory", peak, limit)
	}
}

// TestBadInputBinaryGarbage: random bytes from the upstream (NUL, invalid
// UTF-8, stray CR, field names) never crash lastevent; whatever it passes on
// is well formed (ids on every event, no CR), it recovers once the upstream
// sends a proper frame, and it still serves new clients.
func TestBadInputBinaryGarbage(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_FRAME_BYTES=16KiB", "LASTEVENT_LOG_LEVEL=info")
	feed := up.Feed("/feed/garbage")
	c := rawGet(t, p.Addr, "/feed/garbage")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	tokens := []string{"data:", "data: ", "id:", "id: ", "event:", "retry:", "retry: 99999999999", ":", " ",
		"\n", "\n", "\n\n", "\r", "\r\n", "\x00", "\xEF\xBB\xBF", "\xff\xfe", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80"}
	var sent int
	for sent < 2<<20 {
		var b strings.Builder
		n := 1 + rng.IntN(8<<10)
		for b.Len() < n {
			if rng.IntN(4) == 0 {
				b.WriteString(tokens[rng.IntN(len(tokens))])
			} else {
				for range 1 + rng.IntN(64) {
					b.WriteByte(byte(rng.IntN(256)))
				}
			}
		}
		feed.Send(b.String())
		sent += b.Len()
		if rng.IntN(16) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	feed.Send("\n\n\ndata: alive\n\n")
	evs := c.eventsUntil("alive", 20*time.Second)
	checkProxyIDs(t, evs)
	for i, ch := range c.Chunks() {
		if strings.IndexByte(string(ch), '\r') >= 0 {
			t.Fatalf("chunk %d holds a CR", i)
		}
	}
	checkWholeChunks(t, c.Chunks())
	t.Logf("%d bytes of garbage gave %d events", sent, len(evs))

	select {
	case <-p.exited:
		t.Fatalf("lastevent exited: %v", p.err)
	default:
	}
	healthz(t, p)
	feed2 := up.Feed("/feed/garbage-after")
	c2 := rawGet(t, p.Addr, "/feed/garbage-after")
	if !feed2.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the new connection")
	}
	feed2.Send("data: fresh\n\n")
	if ev := c2.NextEvent(5 * time.Second); ev.Data != "fresh" {
		t.Fatalf("new client got %v", ev)
	}
}

// TestBadInputHugeHeader: a request with a 1 MiB header is refused with a
// 4xx (431) and lastevent goes on serving.
func TestBadInputHugeHeader(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())
	for _, accept := range []string{"text/event-stream", "application/json"} {
		conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		req := "GET /feed/huge HTTP/1.1\r\nHost: " + p.Addr + "\r\nAccept: " + accept + "\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n"
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.WriteString(conn, req) // the server may stop reading early
		}()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		wg.Wait()
		if err != nil {
			t.Fatalf("Accept %s: no answer to a 1 MiB header: %v", accept, err)
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("status line %q", line)
		}
		code, _ := strconv.Atoi(f[1])
		if code < 400 || code > 499 {
			t.Fatalf("Accept %s: status %d for a 1 MiB header, want a 4xx (431)", accept, code)
		}
		t.Logf("Accept %s: %s", accept, strings.TrimSpace(line))
	}
	healthz(t, p)
	feed := up.Feed("/feed/huge")
	c := rawGet(t, p.Addr, "/feed/huge")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("data: ok\n\n")
	if ev := c.NextEvent(5 * time.Second); ev.Data != "ok" {
		t.Fatalf("event %v", ev)
	}
}

// TestBadInputConnectionLimit: with LASTEVENT_MAX_CONNECTIONS=20, 30
// concurrent SSE connections: the extra ten get a 503 and the first twenty
// keep streaming.
func TestBadInputConnectionLimit(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_CONNECTIONS=20")
	feed := up.Feed("/feed/limit")
	var clients []*rawSSE
	for i := range 20 {
		c := rawGet(t, p.Addr, "/feed/limit")
		if c.Status != 200 {
			t.Fatalf("connection %d: status %d", i, c.Status)
		}
		clients = append(clients, c)
	}
	if !feed.WaitConns(20, 10*time.Second) {
		t.Fatalf("upstream has %d connections, want 20", feed.Conns())
	}
	feed.Send("data: one\n\n")
	for i, c := range clients {
		if ev := c.NextEvent(5 * time.Second); ev.Data != "one" {
			t.Fatalf("client %d: %v", i, ev)
		}
	}
	for i := range 10 {
		code, body := overLimitAnswer(t, p.Addr)
		if code != 503 {
			t.Fatalf("extra connection %d: status %d (%q), want 503", i, code, body)
		}
		if body == "" {
			t.Fatalf("extra connection %d: 503 without a reason", i)
		}
		if i == 0 {
			t.Logf("over the limit: 503 %q", body)
		}
	}
	feed.Send("data: two\n\n")
	for i, c := range clients {
		if ev := c.NextEvent(5 * time.Second); ev.Data != "two" {
			t.Fatalf("client %d after the refusals: %v", i, ev)
		}
	}
	if st := p.state(t); st.Totals.Connections != 20 {
		t.Fatalf("%d connections counted, want 20", st.Totals.Connections)
	}
	// A freed slot can be used again.
	clients[0].Close()
	waitFor(t, 10*time.Second, "the closed client to leave", func() bool {
		feed.Send("data: ping\n\n") // a write finds the closed connection
		return p.state(t).Totals.Connections == 19
	})
	var c *rawSSE
	waitFor(t, 10*time.Second, "a slot to free up", func() bool {
		r, err := tryRawDo(t, p.Addr, "GET /feed/limit HTTP/1.1", []string{"Accept: text/event-stream"}, "")
		if err == nil && r.Status == 200 {
			c = r
			return true
		}
		if r != nil {
			r.Close()
		}
		return false
	})
	if !feed.WaitConns(21, 5*time.Second) { // the closed client's stream lingers
		t.Fatal("the new client got no upstream connection")
	}
	feed.Send("data: three\n\n")
	if ev := c.eventsUntil("three", 5*time.Second); len(ev) == 0 {
		t.Fatal("no event for the new client")
	}
}

// overLimitAnswer opens a connection beyond the limit and returns the status
// and body it gets. The refusal may come before the request is sent (the
// server answers on accept), so the request is sent only if nothing came.
func overLimitAnswer(t *testing.T, addr string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := br.Peek(1); err != nil {
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("over the limit: %v before any answer", err)
		}
		_, _ = io.WriteString(conn, "GET /feed/limit HTTP/1.1\r\nHost: "+addr+"\r\nAccept: text/event-stream\r\n\r\n")
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := &rawSSE{t: t, conn: conn, br: br, newCh: make(chan struct{}, 1), frames: make(chan rawFrameOrErr, 16), done: make(chan struct{})}
	if err := r.readHead(); err != nil {
		t.Fatalf("over the limit: %v", err)
	}
	if r.Chunked {
		return r.Status, "(a stream)"
	}
	return r.Status, string(r.Body)
}
