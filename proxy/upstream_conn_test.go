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
	t.Run("first byte timeout", func(t *testing.T) {
		sc, peer := dialPair(t, 100*time.Millisecond, 0)
		start := time.Now()
		_, err := sc.Read(make([]byte, 100))
		var ne net.Error
		var oe *net.OpError
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("Read with nothing sent: %v; want a read timeout", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Fatalf("the timeout came after %v, before the 100 ms", d)
		}
		// After the first byte there is no deadline (no idle timeout): a
		// read waits past the first-byte timeout.
		_, _ = peer.Write([]byte("a"))
		if n, err := sc.Read(make([]byte, 100)); n != 1 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		go func() { time.Sleep(300 * time.Millisecond); _, _ = peer.Write([]byte("bc")) }()
		if n, err := sc.Read(make([]byte, 100)); n != 2 || err != nil {
			t.Fatalf("Read after 300 ms of silence = %d, %v; want the 2 bytes", n, err)
		}
	})
}
