package faults

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// server is a TCP server for the proxy to forward to: each accepted
// connection is handed to the test.
type server struct {
	ln    net.Listener
	conns chan *net.TCPConn
}

func startServer(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, conns: make(chan *net.TCPConn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c.(*net.TCPConn)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *server) next(t *testing.T) *net.TCPConn {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the server got no connection")
		return nil
	}
}

func newProxy(t *testing.T, target string, opts Options) *Proxy {
	t.Helper()
	p, err := New(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dialProxy(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readAll reads until an error, with an overall deadline.
func readAll(c net.Conn, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	var b bytes.Buffer
	_, err := io.Copy(&b, c)
	return b.Bytes(), err
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestFaultsForward(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{})
	c := dialProxy(t, p)
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	sc := s.next(t)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	sc.Close()
	got, err := readAll(c, 5*time.Second)
	if err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v; want pong, EOF", got, err)
	}
	if n := p.Conns(); len(n) > 1 {
		t.Fatalf("%d connections tracked", len(n))
	}
}

// A trigger cuts the stream at exactly the byte asked for, even inside one
// write of the server.
func TestFaultsAtCutsExactly(t *testing.T) {
	for _, tc := range []struct {
		a      Action
		wantRe bool // a reset rather than a clean EOF
	}{{Reset, true}, {Close, false}, {HalfCloseToClient, false}} {
		t.Run(tc.a.String(), func(t *testing.T) {
			s := startServer(t)
			p := newProxy(t, s.ln.Addr().String(), Options{})
			p.OnConn(func(c *Conn) { c.At(ToClient, 1234, tc.a) })
			c := dialProxy(t, p)
			sc := s.next(t)
			payload := bytes.Repeat([]byte("0123456789"), 1000)
			go func() { _, _ = sc.Write(payload) }()
			got, err := readAll(c, 5*time.Second)
			if !bytes.Equal(got, payload[:1234]) {
				t.Fatalf("got %d bytes, want exactly the first 1234", len(got))
			}
			if tc.wantRe != isReset(err) || (!tc.wantRe && err != nil) {
				t.Fatalf("ended with %v", err)
			}
		})
	}
}

// HalfCloseToServer: the server sees EOF (the client's FIN) while its own
// bytes still reach the client.
func TestFaultsHalfCloseToServer(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{})
	conns := make(chan *Conn, 1)
	p.OnConn(func(c *Conn) { conns <- c })
	c := dialProxy(t, p)
	sc := s.next(t)
	pc := <-conns
	pc.Do(HalfCloseToServer)
	if b, err := readAll(sc, 5*time.Second); err != nil || len(b) != 0 {
		t.Fatalf("server read %q, %v; want EOF", b, err)
	}
	if _, err := sc.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "still here" {
		t.Fatalf("client read %q, %v", buf, err)
	}
}

// HalfCloseToClient: the client sees EOF, the server can go on writing
// until the client closes, and then learns it.
func TestFaultsHalfCloseToClient(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{})
	conns := make(chan *Conn, 1)
	p.OnConn(func(c *Conn) { conns <- c })
	c := dialProxy(t, p)
	sc := s.next(t)
	(<-conns).Do(HalfCloseToClient)
	if b, err := readAll(c, 5*time.Second); err != nil || len(b) != 0 {
		t.Fatalf("client read %q, %v; want EOF", b, err)
	}
	for range 10 {
		if _, err := sc.Write([]byte("dropped")); err != nil {
			t.Fatalf("server write failed before the client closed: %v", err)
		}
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := sc.Write([]byte("x"))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never learnt that the client closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BlackHole is real at the TCP level: the server's data is not acknowledged,
// so with TCP_USER_TIMEOUT its writes fail with ETIMEDOUT, and nothing (not
// even a FIN) reaches either side.
func TestFaultsBlackHole(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{})
	conns := make(chan *Conn, 1)
	p.OnConn(func(c *Conn) { conns <- c })
	c := dialProxy(t, p)
	sc := s.next(t)
	setUserTimeout(t, sc, time.Second)
	(<-conns).Do(BlackHole)
	start := time.Now()
	var err error
	for time.Since(start) < 30*time.Second {
		if _, err = sc.Write([]byte("heartbeat\n")); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("server write after the black hole: %v, want ETIMEDOUT", err)
	}
	t.Logf("server saw the black hole after %v", time.Since(start).Round(10*time.Millisecond))
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 64)); n != 0 || !isTimeout(err) {
		t.Fatalf("client read %d bytes, %v through a black hole", n, err)
	}
}

// DropIncoming black-holes a plain socket of the test's own.
func TestFaultsDropIncoming(t *testing.T) {
	s := startServer(t)
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := s.next(t)
	setUserTimeout(t, sc, time.Second)
	if err := DropIncoming(c); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if _, err = sc.Write([]byte("x")); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("write to a black-holed peer: %v, want ETIMEDOUT", err)
	}
}

// StopReadingServer: with small buffers the server's writes block (its
// write deadline fires) after a bounded number of bytes; Resume delivers
// every byte in order.
func TestFaultsStopReadingAndResume(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{Buffer: 4096})
	conns := make(chan *Conn, 1)
	p.OnConn(func(c *Conn) { conns <- c })
	c := dialProxy(t, p)
	sc := s.next(t)
	pc := <-conns
	pc.Do(StopReadingServer)
	chunk := bytes.Repeat([]byte("z"), 1024)
	var sent int
	for sent < 64<<20 {
		_ = sc.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := sc.Write(chunk)
		sent += n
		if err != nil {
			if !isTimeout(err) {
				t.Fatal(err)
			}
			break
		}
	}
	if sent >= 64<<20 {
		t.Fatal("writes never blocked")
	}
	t.Logf("the server's writes blocked after %d bytes", sent)
	pc.Resume()
	sc.Close()
	got, err := readAll(c, 10*time.Second)
	if err != nil || len(got) != sent || strings.Trim(string(got), "z") != "" {
		t.Fatalf("after resume the client read %d bytes (%v), want %d", len(got), err, sent)
	}
}

func TestFaultsThrottleKeepsBytes(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{})
	p.OnConn(func(c *Conn) {
		c.Throttle(ToClient, 200<<10)
		c.At(ToClient, 30000, Close)
	})
	c := dialProxy(t, p)
	sc := s.next(t)
	payload := make([]byte, 40000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go func() { _, _ = sc.Write(payload) }()
	got, err := readAll(c, 10*time.Second)
	if err != nil || !bytes.Equal(got, payload[:30000]) {
		t.Fatalf("throttled read %d bytes (%v), want the first 30000 intact", len(got), err)
	}
}

func TestFaultsGarbageAction(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{Seed: 7})
	p.OnConn(func(c *Conn) { c.At(ToClient, 5, Garbage) })
	c := dialProxy(t, p)
	sc := s.next(t)
	go func() { _, _ = sc.Write([]byte("hello world")) }()
	got, err := readAll(c, 5*time.Second)
	if !isReset(err) || len(got) < 5+64 || string(got[:5]) != "hello" {
		t.Fatalf("got %q, %v; want hello + garbage + reset", got, err)
	}
	checkGarbage(t, got[5:])
}

func checkGarbage(t *testing.T, g []byte) {
	t.Helper()
	if bytes.ContainsAny(g, "\r\n0123456789abcdefABCDEF") {
		t.Fatalf("garbage holds CR, LF or hex digits: %q", g)
	}
}

// Down refuses connections and resets the open ones; Up listens again on the
// same address.
func TestFaultsDownUp(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{})
	c := dialProxy(t, p)
	s.next(t)
	p.Down()
	if _, err := readAll(c, 5*time.Second); !isReset(err) {
		t.Fatalf("open connection after Down: %v, want a reset", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Down: %v, want connection refused", err)
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	c2 := dialProxy(t, p)
	sc := s.next(t)
	_, _ = sc.Write([]byte("back"))
	buf := make([]byte, 4)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "back" {
		t.Fatalf("after Up read %q, %v", buf, err)
	}
}

func TestFaultsModes(t *testing.T) {
	s := startServer(t)
	p := newProxy(t, s.ln.Addr().String(), Options{HoldBlackHole: 300 * time.Millisecond})
	req := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	answer := "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"

	p.SetMode(Respond, []byte(answer))
	c := dialProxy(t, p)
	_, _ = c.Write([]byte(req))
	if got, err := readAll(c, 5*time.Second); err != nil || string(got) != answer {
		t.Fatalf("Respond: %q, %v", got, err)
	}

	p.SetMode(RespondGarbage, nil)
	c = dialProxy(t, p)
	_, _ = c.Write([]byte(req))
	got, err := readAll(c, 5*time.Second)
	if err != nil || len(got) < 64 {
		t.Fatalf("RespondGarbage: %d bytes, %v", len(got), err)
	}
	checkGarbage(t, got)

	p.SetMode(Refuse, nil)
	expectReset(t, p)

	p.SetMode(Hang, nil)
	start := time.Now() // before the dial: the hold starts at the accept
	c = dialProxy(t, p)
	_, _ = c.Write([]byte(req))
	if got, err := readAll(c, 5*time.Second); len(got) != 0 || !isReset(err) {
		t.Fatalf("Hang: %q, %v; want nothing, then a reset after the hold", got, err)
	}
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("Hang answered at once")
	}
	select {
	case sc := <-s.conns:
		sc.Close()
		t.Fatal("the server got a connection in a non-forwarding mode")
	default:
	}
}

// A target that is down: the client is reset, as behind a load balancer.
func TestFaultsTargetDown(t *testing.T) {
	p := newProxy(t, "127.0.0.1:1", Options{})
	// A port nobody listens on, other than the proxy's own.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if addr == p.Addr() {
		t.Skip("port reuse")
	}
	p.SetTarget(addr)
	expectReset(t, p)
	s := startServer(t)
	p.SetTarget(s.ln.Addr().String())
	dialProxy(t, p)
	s.next(t)
}

func TestFaultsCloseEndsEverything(t *testing.T) {
	s := startServer(t)
	p, err := New(s.ln.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 20 {
		c := dialProxy(t, p)
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = readAll(c, 5*time.Second) }()
	}
	for range 20 {
		s.next(t)
	}
	for _, c := range p.Conns()[:5] {
		c.Do(BlackHole)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	wg.Wait()
	if n := len(p.Conns()); n != 0 {
		t.Fatalf("%d connections left after Close", n)
	}
}

// expectReset dials p and expects a reset, which on loopback may already
// arrive during the connect.
func expectReset(t *testing.T, p *Proxy) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_, err = readAll(c, 5*time.Second)
	}
	if !isReset(err) {
		t.Fatalf("got %v, want a reset", err)
	}
}

func setUserTimeout(t *testing.T, c *net.TCPConn, d time.Duration) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, 0x12 /* TCP_USER_TIMEOUT */, int(d.Milliseconds()))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
