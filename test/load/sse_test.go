package load

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type gotEvent struct{ typ, data, id string }

func collect(t *testing.T, pieces ...string) []gotEvent {
	t.Helper()
	var p SSEParser
	var out []gotEvent
	for _, s := range pieces {
		p.Feed([]byte(s), func(e *Event) {
			id := "-"
			if e.HasID {
				id = string(e.ID)
			}
			out = append(out, gotEvent{string(e.Type), string(e.Data), id})
		})
	}
	return out
}

func TestSSEParserFields(t *testing.T) {
	stream := "retry: 3000\n\n: heartbeat\n\nid: 01-1\ndata: a\ndata:b\n\nevent: sync-required\r\nid: 01-2\r\ndata: {}\r\n\r\ndata: x\n\n"
	want := []gotEvent{{"", "a\nb", "01-1"}, {"sync-required", "{}", "01-2"}, {"", "x", "-"}}
	got := collect(t, stream)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	// The same bytes cut at every position give the same events.
	for i := 1; i < len(stream); i++ {
		if g := collect(t, stream[:i], stream[i:]); fmt.Sprint(g) != fmt.Sprint(want) {
			t.Fatalf("split at %d: got %v", i, g)
		}
	}
	// And one byte at a time.
	if g := collect(t, strings.Split(stream, "")...); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("bytewise: got %v", g)
	}
}

func TestChunkedDecoder(t *testing.T) {
	wire := "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\nA\r\n0123456789\r\n0\r\n\r\n"
	for step := 1; step <= len(wire); step++ {
		var d ChunkedDecoder
		var body []byte
		done := false
		for i := 0; i < len(wire); i += step {
			var err error
			done, err = d.Feed([]byte(wire[i:min(i+step, len(wire))]), func(b []byte) { body = append(body, b...) })
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		if !done || string(body) != "helloabcdefghijklmnopqrstuvwxyz0123456789" {
			t.Fatalf("step %d: done %v body %q", step, done, body)
		}
	}
	var d ChunkedDecoder
	if _, err := d.Feed([]byte("zz\r\n"), func([]byte) {}); err == nil {
		t.Fatal("bad size accepted")
	}
}

func TestResponseHead(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\n"
	end := HeadEnd([]byte(raw))
	if end != strings.Index(raw, "5\r\n") {
		t.Fatalf("head end %d", end)
	}
	h, err := ParseResponseHead([]byte(raw[:end]))
	if err != nil || h.Status != 200 || !h.Chunked || h.Length != -1 {
		t.Fatalf("%+v %v", h, err)
	}
	h, err = ParseResponseHead([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\n"))
	if err != nil || h.Status != 503 || h.Chunked || h.Length != 12 {
		t.Fatalf("%+v %v", h, err)
	}
	if HeadEnd([]byte("HTTP/1.1 200 OK\r\n")) != -1 {
		t.Fatal("partial head reported complete")
	}
	if _, err := ParseResponseHead([]byte("garbage\r\n\r\n")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	const now = int64(1767225600123456789)
	b := AppendPayload(nil, 42, now, 100)
	if len(b) != 100 || bytes.ContainsAny(b, "\r\n") {
		t.Fatalf("payload %d bytes: %q", len(b), b)
	}
	seq, sent, ok := ParsePayload(b)
	if !ok || seq != 42 || sent != now {
		t.Fatalf("got %d %d %v", seq, sent, ok)
	}
	if short := AppendPayload(nil, 7, now, 5); string(short) != fmt.Sprintf("7 %d", now) {
		t.Fatalf("short payload %q", short)
	}
	for _, bad := range []string{"", "x 1", "12", "12 ", "{\"reason\":\"slow-client\"}"} {
		if _, _, ok := ParsePayload([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestStatParsing(t *testing.T) {
	stat := "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 1000000 500 18446744073709551615"
	cpu, user, err := parseStatCPU([]byte(stat))
	if err != nil || cpu != 3.0 || user != 2.5 {
		t.Fatalf("cpu %v user %v %v", cpu, user, err)
	}
	if r, w := parseIO([]byte("rchar: 1\nsyscr: 10\nsyscw: 7\n")); r != 10 || w != 7 {
		t.Fatalf("syscr %d syscw %d", r, w)
	}
	rss, hwm := parseStatusMem([]byte("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\n"))
	if rss != 1024 || hwm != 2048 {
		t.Fatalf("rss %d hwm %d", rss, hwm)
	}
}

// TestSwarmAgainstGenerator runs three clients for a fraction of a second
// against an in-process generator: enough to see events flow through the raw
// client, nothing like a load.
func TestSwarmAgainstGenerator(t *testing.T) {
	srv := httptest.NewServer(NewGenerator())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	sw := NewSwarm(SwarmConfig{Addr: addr, Path: "/stream?rate=200&size=60", Clients: 3})
	sw.SetWindow(0, math.MaxInt64)
	sw.Connect(ctx)
	time.Sleep(150 * time.Millisecond)
	sw.Stop()
	tot := sw.Totals()
	if tot.Established != 3 || tot.ConnectErrors != 0 || tot.Received < 3 || tot.Gaps != 0 || tot.Dups != 0 {
		t.Fatalf("stream: %+v", tot)
	}
	if tot.Hist.Count() != uint64(tot.InWindow) || tot.Hist.Max() <= 0 {
		t.Fatalf("histogram %d values, %d in window", tot.Hist.Count(), tot.InWindow)
	}

	// Broadcast with ids: drop, fall behind, reconnect with Last-Event-ID.
	sw = NewSwarm(SwarmConfig{Addr: addr, Path: "/broadcast?topic=t&rate=200&size=60&ids=1", Clients: 3})
	sw.Connect(ctx)
	if !sw.WaitAllReceived(ctx) {
		t.Fatal("no events")
	}
	sw.DropAll()
	time.Sleep(50 * time.Millisecond)
	sw.ResetCounters()
	head := sw.clients[0].lastSeq + 5
	release := sw.Storm(ctx, head)
	if !sw.WaitCaughtUp(ctx, 3) {
		t.Fatal("not caught up")
	}
	sw.Stop()
	tot = sw.Totals()
	if tot.Established != 3 || tot.Gaps != 0 || tot.Dups != 0 || len(sw.CatchUpTimes(release)) != 3 {
		t.Fatalf("storm: %+v", tot)
	}
}

func TestParseOutSegs(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin ActiveOpens OutSegs RetransSegs\nTcp: 1 200 35 123456 7\nUdp: InDatagrams\nUdp: 3\n"
	if n, err := parseOutSegs([]byte(snmp)); err != nil || n != 123456 {
		t.Errorf("parseOutSegs = %d, %v; want 123456", n, err)
	}
	if _, err := parseOutSegs([]byte("Ip: a\nIp: 1\n")); err == nil {
		t.Error("parseOutSegs found OutSegs where there is none")
	}
	if n, err := TCPOutSegs(); err != nil || n <= 0 {
		t.Errorf("TCPOutSegs on this machine = %d, %v", n, err)
	}
}
