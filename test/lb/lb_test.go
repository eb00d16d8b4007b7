package lb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// backend answers every line it reads with "<name>:<line>".
func backend(t *testing.T, name string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := fmt.Fprintf(c, "%s:%s\n", name, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, line string) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", line, err)
	}
	return strings.TrimSuffix(got, "\n")
}

func TestRoundRobin(t *testing.T) {
	a, stopA := backend(t, "a")
	defer stopA()
	bAddr, stopB := backend(t, "b")
	defer stopB()
	cAddr, stopC := backend(t, "c")
	defer stopC()
	b, err := New(a, bAddr, cAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var seen []string
	var conns []net.Conn
	for k := 0; k < 6; k++ {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		br := bufio.NewReader(c)
		got := roundTrip(t, c, br, fmt.Sprintf("hello %d", k))
		name, rest, _ := strings.Cut(got, ":")
		if rest != fmt.Sprintf("hello %d", k) {
			t.Fatalf("connection %d: answer %q, want the line echoed", k, got)
		}
		// Bytes keep flowing both ways on the same backend.
		if again := roundTrip(t, c, br, "again"); again != name+":again" {
			t.Fatalf("connection %d: second answer %q from another backend than %q", k, again, name)
		}
		i, ok := b.Backend(c.LocalAddr().String())
		if !ok || "abc"[i:i+1] != name {
			t.Fatalf("connection %d: Backend says %d,%v; the answer came from %q", k, i, ok, name)
		}
		seen = append(seen, name)
	}
	if got := strings.Join(seen, ""); got != "abcabc" {
		t.Fatalf("backends in order %q, want abcabc", got)
	}
	for i := range 3 {
		if n := b.Count(i); n != 2 {
			t.Errorf("backend %d got %d connections, want 2", i, n)
		}
	}
	if n := b.Open(); n != 6 {
		t.Errorf("%d open connections, want 6", n)
	}

	// A backend that refuses is skipped.
	stopB()
	waitClosed := time.Now().Add(2 * time.Second)
	for time.Now().Before(waitClosed) {
		if c, err := net.Dial("tcp", bAddr); err != nil {
			break
		} else {
			c.Close()
			time.Sleep(10 * time.Millisecond)
		}
	}
	for k := 0; k < 3; k++ {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		got := roundTrip(t, c, bufio.NewReader(c), "x")
		if strings.HasPrefix(got, "b:") || !strings.HasSuffix(got, ":x") {
			t.Fatalf("with b down, answer %q", got)
		}
	}

	// Close ends the open connections and stops listening.
	b.Close()
	for k, c := range conns[:1] {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("connection %d still open after Close: %v", k, err)
		}
	}
	if c, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the balancer still accepts after Close")
	}
	b.Close() // twice is fine
}

// TestHalfClose: a client's FIN reaches the backend, and the backend's
// answer written after it still reaches the client.
func TestHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's FIN
		fmt.Fprintf(c, "got %d bytes", len(b))
	}()
	b, err := New(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, strings.Repeat("z", 100000))
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 100000 bytes" {
		t.Fatalf("answer %q, %v", got, err)
	}
}
