package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialPair gives a streamConn dialled to a real TCP listener on 127.0.0.1,
// and the listener's end of the connection.
func dialPair(t *testing.T, first, idle time.Duration) (*streamConn, *net.TCPConn) {
	t.Helper()
	c, peer := tcpPair(t)
	sc := newStreamConn(c, first, idle)
	t.Cleanup(func() { sc.Close(); peer.Close() })
	if sc.raw == nil {
		t.Fatal("a TCP connection has no RawConn: reads would not go through sysRead")
	}
	return sc, peer.(*net.TCPConn)
}

// The upstream's reads go through the descriptor (sysRead) and give what
// Conn.Read gives: the bytes, in order, across reads that must wait; io.EOF
// at the end.
func TestStreamConnReads(t *testing.T) {
	sc, peer := dialPair(t, 0, 0)
	want := bytes.Repeat([]byte("data: 0123456789\n\n"), 4000) // 72 KB: many reads
	go func() {
		for i := 0; i < len(want); i += 7000 {
			_, _ = peer.Write(want[i:min(i+7000, len(want))])
			time.Sleep(time.Millisecond) // reads find the socket empty and wait
		}
		_ = peer.CloseWrite()
	}()
	got, err := io.ReadAll(sc)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, %v; want the %d sent, then io.EOF", len(got), err, len(want))
	}
	if n, err := sc.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the end = %d, %v; want 0, io.EOF", n, err)
	}
}

// A reset and a read deadline come back as Conn.Read's errors would: a
// *net.OpError "read", a timeout that says so.
func TestStreamConnReadErrors(t *testing.T) {
	t.Run("reset", func(t *testing.T) {
		sc, peer := dialPair(t, 0, 0)
		_ = peer.SetLinger(0)
		_ = peer.Close() // RST
		_, err := sc.Read(make([]byte, 100))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" || !errors.Is(err, syscall.ECONNRESET) || !strings.Contains(err.Error(), "connection reset by peer") {
			t.Fatalf("Read after a reset: %v (%T); want read tcp ...: connection reset by peer", err, err)
		}
	})
	t.Run("head timeout", func(t *testing.T) {
		timedOut := func(err error) bool {
			var ne net.Error
			var oe *net.OpError
			return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout() && errors.As(err, &oe) && oe.Op == "read"
		}
		sc, peer := dialPair(t, 100*time.Millisecond, 0)
		start := time.Now()
		if _, err := sc.Read(make([]byte, 100)); !timedOut(err) {
			t.Fatalf("Read with nothing sent: %v; want a read timeout", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Fatalf("the timeout came after %v, before the 100 ms", d)
		}
		// A head that stops halfway times out too, at the same fixed
		// deadline: bytes that came do not move it (a hung upstream after
		// its status line blocked the stream for good).
		sc, peer = dialPair(t, 150*time.Millisecond, 0)
		start = time.Now()
		_, _ = peer.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"))
		if n, err := sc.Read(make([]byte, 100)); n == 0 || err != nil {
			t.Fatalf("Read of the head's start = %d, %v", n, err)
		}
		if _, err := sc.Read(make([]byte, 100)); !timedOut(err) {
			t.Fatalf("Read with the head unfinished: %v; want a read timeout", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("an unfinished head timed out after %v, not at the 150 ms", d)
		}
		// After the head's empty line there is no deadline (no idle
		// timeout): a read waits past the head's timeout.
		sc, peer = dialPair(t, 100*time.Millisecond, 0)
		_, _ = peer.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\na"))
		if n, err := sc.Read(make([]byte, 100)); n == 0 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		go func() { time.Sleep(300 * time.Millisecond); _, _ = peer.Write([]byte("bc")) }()
		if n, err := sc.Read(make([]byte, 100)); n != 2 || err != nil {
			t.Fatalf("Read after 300 ms of silence = %d, %v; want the 2 bytes", n, err)
		}
		// A new request on the connection (fasthttp's pool) is a new head.
		if _, err := sc.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Read(make([]byte, 100)); !timedOut(err) {
			t.Fatalf("Read after a new request with nothing sent: %v; want a read timeout", err)
		}
	})
}

// The head ends at the empty line of the final head: informational heads
// (1xx but 101) before it are part of it, read in any pieces.
func TestScanHeadSkipsInterimHeads(t *testing.T) {
	for _, c := range []struct {
		in   string
		body int // index of the first body byte; -1 still in the head
	}{
		{"HTTP/1.1 200 OK\r\nA: b\r\n\r\nxyz", 25},
		{"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nxyz", 58},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\n\nx", 69},
		{"HTTP/1.1 101 Switching Protocols\r\n\r\nx", 36},
		{"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\n", -1},
		{"HTTP/1.1 1x3 odd\r\n\r\nx", 20},
		{"HTTP/1.1 1999 odd\r\n\r\nx", 21},
	} {
		// Byte by byte: where the head ends.
		sc := &streamConn{}
		sc.inHead.Store(true)
		got := -1
		for i := 0; i < len(c.in) && got < 0; i++ {
			sc.scanHead([]byte{c.in[i]})
			if !sc.inHead.Load() {
				got = i + 1
			}
		}
		if got != c.body {
			t.Errorf("%q: body from %d, want %d", c.in, got, c.body)
		}
		// In pieces (the ones the head ends in included): whether it ends.
		for _, piece := range []int{3, 7, len(c.in)} {
			sc := &streamConn{}
			sc.inHead.Store(true)
			for i := 0; i < len(c.in) && sc.inHead.Load(); i += piece {
				sc.scanHead([]byte(c.in[i:min(i+piece, len(c.in))]))
			}
			if ended := !sc.inHead.Load(); ended != (c.body >= 0) {
				t.Errorf("%q in pieces of %d: head ended %v", c.in, piece, ended)
			}
		}
	}
}
