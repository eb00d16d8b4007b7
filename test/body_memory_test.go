package test

// Request bodies and heads cost memory before any handler runs: fasthttp
// takes a declared body's whole buffer as soon as the head is read. These
// tests hold lastevent to LASTEVENT_MAX_BODY_MEMORY for bodies, and show the
// per-connection head buffer is LASTEVENT_MAX_HEADER_BYTES at most.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// heapInUse reads go_memstats_heap_inuse_bytes off /metrics.
func heapInUse(t *testing.T, p *proc) float64 {
	t.Helper()
	_, b := p.adminGet(t, "/metrics")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("go_memstats_heap_inuse_bytes %q: %v", rest, err)
			}
			return v
		}
	}
	t.Fatal("no go_memstats_heap_inuse_bytes in /metrics")
	return 0
}

// TestRequestBodiesBounded: heads that declare 10 MiB bodies (a 16 MiB
// buffer each) and then send one byte. With LASTEVENT_MAX_BODY_MEMORY=32MiB
// two are read (and wait for their bodies); the other six get 503 at once,
// and the heap holds about the two. Once those two connections go, their
// room comes back: a whole 5 MiB upload goes through.
//
// The same with chunked bodies, each of one 10 MiB chunk: they declare no
// length, but fasthttp takes the chunk's buffer as soon as its size line
// arrives. They used to be counted as nothing, so eight held 128 MiB.
func TestRequestBodiesBounded(t *testing.T) {
	t.Run("content-length", func(t *testing.T) {
		testRequestBodiesBounded(t, "Content-Length: 10485760\r\n\r\nx")
	})
	t.Run("chunked", func(t *testing.T) {
		testRequestBodiesBounded(t, "Transfer-Encoding: chunked\r\n\r\n9FFFFE\r\nx")
	})
}

func testRequestBodiesBounded(t *testing.T, bodyHead string) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_BODY_MEMORY=32MiB")
	before := heapInUse(t, p)
	const n = 8
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("POST /echo/up HTTP/1.1\r\nHost: x\r\n" + bodyHead)); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	var refused, held []net.Conn
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		switch {
		case err == nil && resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
			refused = append(refused, c)
		case err != nil && isTimeoutErr(err):
			held = append(held, c)
		case err == nil:
			t.Fatalf("a 10 MiB body that never came: status %d", resp.StatusCode)
		default:
			t.Fatalf("reading the answer: %v", err)
		}
	}
	grown := heapInUse(t, p) - before
	t.Logf("%d refused, %d held; heap grew %.1f MiB", len(refused), len(held), grown/(1<<20))
	if len(refused) != n-2 || len(held) != 2 {
		t.Fatalf("%d refused with 503 and %d held, want %d and 2 (LASTEVENT_MAX_BODY_MEMORY=32MiB, 16 MiB each)", len(refused), len(held), n-2)
	}
	if grown > 40<<20 {
		t.Errorf("heap grew %.0f MiB with LASTEVENT_MAX_BODY_MEMORY=32MiB", grown/(1<<20))
	}

	for _, c := range held {
		c.Close()
	}
	body := bytes.Repeat([]byte("b"), 5<<20)
	waitFor(t, 5*time.Second, "a 5 MiB upload accepted once the held bodies went", func() bool {
		resp, err := http.Post(p.URL()+"/echo/up", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200
	})
	if got := up.Requests(); len(got) == 0 {
		t.Fatal("the upload did not reach the upstream")
	}
}

// TestHeaderBytesBounded: LASTEVENT_MAX_HEADER_BYTES is the buffer of every
// connection reading a request head, held while a client stalls there; it
// is bounded at 1MiB (16MiB was accepted: 8 stalled heads held 128 MiB).
func TestHeaderBytesBounded(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_HEADER_BYTES=1MiB")
	before := heapInUse(t, p)
	for range 8 {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /events HTTP/1.1\r\nHost: x\r\nX-Slow: a")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if grown := heapInUse(t, p) - before; grown > 12<<20 {
		t.Errorf("8 stalled heads with LASTEVENT_MAX_HEADER_BYTES=1MiB grew the heap %.1f MiB", grown/(1<<20))
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// heapAfterGC is heapInUse after two collections (LASTEVENT_PPROF=true): a
// buffer let go is gone, pooled ones included (a pool survives one).
func heapAfterGC(t *testing.T, p *proc) float64 {
	t.Helper()
	for range 2 {
		if code, b := p.adminGet(t, "/debug/pprof/heap?gc=1"); code != 200 {
			t.Fatalf("/debug/pprof/heap: %d %s", code, b)
		}
	}
	return heapInUse(t, p)
}

// TestStreamRequestBodyLetGo: an event stream request's body is not
// forwarded, and is let go when its stream starts. fasthttp kept it until
// the response ended, which for a stream is its whole life, after the
// budget had given its count back: 4 streams opened with 10 MiB bodies held
// 64 MiB (a 16 MiB buffer each) outside LASTEVENT_MAX_BODY_MEMORY.
func TestStreamRequestBodyLetGo(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_PPROF=true")
	before := heapAfterGC(t, p)
	body := bytes.Repeat([]byte("b"), 10<<20)
	for i := range 4 {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		head := "GET /events?n=" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
		if _, err := c.Write(append([]byte(head), body...)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("stream %d: status %d, Content-Type %q", i, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	grown := heapAfterGC(t, p) - before
	t.Logf("4 open streams whose requests had 10 MiB bodies: heap grew %.1f MiB", grown/(1<<20))
	if grown > 24<<20 {
		t.Errorf("4 open streams whose requests had 10 MiB bodies hold %.0f MiB more heap; want their bodies let go", grown/(1<<20))
	}
}

// TestPlainRequestBodyLetGoAfterForwarding: a plain request's body is let go
// once forwarded, before the answer is written: a client that does not read
// its answer kept it (an 8 MiB buffer for an 8 MiB body) for as long as
// LASTEVENT_WRITE_TIMEOUT let it stall, after the budget had given its count
// back.
func TestPlainRequestBodyLetGoAfterForwarding(t *testing.T) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_PPROF=true", "LASTEVENT_WRITE_TIMEOUT=60s")
	before := heapAfterGC(t, p)
	const n = 3
	body := bytes.Repeat([]byte("b"), 8<<20)
	for range n {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		head := "POST /echo/up HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
		if _, err := c.Write(append([]byte(head), body...)); err != nil {
			t.Fatal(err)
		}
		// The answer (the body again, as JSON) is read up to its first
		// bytes only: its writing has begun, the handler is done.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var first [5]byte
		if _, err := io.ReadFull(c, first[:]); err != nil || string(first[:]) != "HTTP/" {
			t.Fatalf("the answer's first bytes: %q, %v", first, err)
		}
	}
	grown := heapAfterGC(t, p) - before
	t.Logf("%d plain answers not read: heap %.1f MiB above the start", n, grown/(1<<20))
	if grown > 40<<20 {
		t.Errorf("%d stalled plain answers of 8 MiB requests hold %.0f MiB; want their request bodies let go (24-32 MiB with that, 48-56 MiB without, 4 runs each)", n, grown/(1<<20))
	}
}
