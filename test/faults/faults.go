// Package faults is a fault-injecting TCP proxy for tests. It listens on
// 127.0.0.1, forwards every accepted connection to a target, and lets a test
// break connections the ways real networks and peers do: resets, half-closes,
// black holes (segments dropped without ACK, no FIN), a peer that stops
// reading, a slow link, garbage; and break the service itself: down
// (connection refused), up again on the same port, answering canned bytes
// (a 503), answering garbage, or accepting and never answering.
//
// It sits in front of lastevent (the test's SSE clients dial the proxy) or in
// front of an upstream (lastevent's LASTEVENT_UPSTREAM_URL points at it). In
// this package "client" is the side that connected to the proxy and "server"
// is the target.
//
// A black hole is real at the TCP level: the proxy attaches a classic BPF
// socket filter that drops every segment to its sockets, so the kernel sends
// no ACK and the peer's unacknowledged data is retransmitted until its
// TCP_USER_TIMEOUT (or the retry limit) ends the connection, exactly as with a
// peer that vanished. No privileges or firewall are needed.
//
// All methods are safe for concurrent use.
package faults

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Dir is a direction of a connection.
type Dir int

const (
	// ToServer is what the client sends to the server (a request).
	ToServer Dir = iota
	// ToClient is what the server sends to the client (a response stream).
	ToClient
)

func (d Dir) String() string {
	if d == ToServer {
		return "to-server"
	}
	return "to-client"
}

// Action is a fault applied to one connection.
type Action int

const (
	// Reset aborts both sides with RST (SO_LINGER 0).
	Reset Action = iota
	// Close closes both sides with FIN.
	Close
	// HalfCloseToServer sends FIN to the server, as a client does that has
	// nothing more to send (shutdown(SHUT_WR)); the server's bytes still
	// reach the client. Later client bytes are dropped.
	HalfCloseToServer
	// HalfCloseToClient sends FIN to the client, as if the server had ended
	// its response; what the server sends afterwards is read and dropped, so
	// the server does not notice until the client closes too.
	HalfCloseToClient
	// BlackHole stops forwarding both ways without closing anything, and
	// makes both sockets drop every incoming segment without ACK: the peers
	// see a vanished host. The connection is reset after Options.HoldBlackHole.
	BlackHole
	// StopReadingServer stops reading from the server: its writes fill the
	// kernel buffers and then block, as with a client that stopped reading.
	// Resume undoes it.
	StopReadingServer
	// StopReadingClient stops reading from the client. Resume undoes it.
	StopReadingClient
	// Garbage sends 64..512 random bytes to the client (never CR, LF or a
	// hex digit, so they cannot complete an SSE line or an HTTP chunk
	// header) and then resets both sides.
	Garbage
)

var actionNames = [...]string{"reset", "close", "half-close-to-server", "half-close-to-client", "black-hole", "stop-reading-server", "stop-reading-client", "garbage"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "action?"
}

// Mode says how the proxy treats new connections.
type Mode int

const (
	// Forward forwards to the target (the default).
	Forward Mode = iota
	// Refuse accepts and resets at once.
	Refuse
	// Respond reads the request head and answers the bytes given to SetMode,
	// then closes (e.g. a canned 503).
	Respond
	// RespondGarbage reads the request head and answers random bytes (no CR,
	// LF), then closes.
	RespondGarbage
	// Hang accepts, reads and drops what the client sends, and never answers;
	// the connection is reset after Options.HoldBlackHole, by ResetAll,
	// Down or Close.
	Hang
)

// Options configure a Proxy; the zero value is usable.
type Options struct {
	// Addr is the address to listen on; "" means 127.0.0.1:0.
	Addr string
	// Buffer, when > 0, sets SO_RCVBUF and SO_SNDBUF of both of the proxy's
	// sockets of every connection, so that a stopped reader fills the
	// kernel buffers after a few KiB instead of megabytes.
	Buffer int
	// HoldBlackHole is how long a black-holed (or hanging) connection is
	// kept before it is reset; 0 means 60s.
	HoldBlackHole time.Duration
	// Seed seeds the garbage bytes (each connection mixes in its number).
	Seed uint64
}

// Proxy is a fault-injecting TCP proxy. Make one with New.
type Proxy struct {
	opts Options

	mu       sync.Mutex
	addr     string
	ln       net.Listener
	target   string
	mode     Mode
	respond  []byte
	onConn   func(*Conn)
	conns    map[*Conn]struct{}
	closed   bool
	nextID   int64
	accepted atomic.Int64
	wg       sync.WaitGroup
}

// New starts a proxy that forwards to target (host:port).
func New(target string, opts Options) (*Proxy, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.HoldBlackHole <= 0 {
		opts.HoldBlackHole = 60 * time.Second
	}
	p := &Proxy{opts: opts, target: target, conns: make(map[*Conn]struct{})}
	ln, err := p.listen(opts.Addr)
	if err != nil {
		return nil, err
	}
	p.addr = ln.Addr().String()
	p.ln = ln
	p.wg.Add(1)
	go p.accept(ln)
	return p, nil
}

func (p *Proxy) listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: p.control}
	return lc.Listen(context.Background(), "tcp", addr)
}

// control sets the buffer sizes on a socket before listen or connect;
// accepted sockets inherit them from the listener.
func (p *Proxy) control(_, _ string, c syscall.RawConn) error {
	if p.opts.Buffer <= 0 {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		if e := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, p.opts.Buffer); e != nil {
			serr = e
		}
		if e := syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, p.opts.Buffer); e != nil {
			serr = e
		}
	})
	return errors.Join(err, serr)
}

// Addr is the host:port the proxy listens on; it stays the same across Down
// and Up.
func (p *Proxy) Addr() string { return p.addr }

// URL is "http://" + Addr.
func (p *Proxy) URL() string { return "http://" + p.addr }

// SetTarget makes new connections go to target (a restarted server on
// another port, say).
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// SetMode sets how new connections are treated; respond is the answer for
// Respond.
func (p *Proxy) SetMode(m Mode, respond []byte) {
	p.mu.Lock()
	p.mode, p.respond = m, respond
	p.mu.Unlock()
}

// OnConn sets a function called with every new forwarded connection once the
// target has been dialed, before any byte is forwarded; it typically arms
// faults with Conn.At. nil removes it.
func (p *Proxy) OnConn(f func(*Conn)) {
	p.mu.Lock()
	p.onConn = f
	p.mu.Unlock()
}

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Conns returns the connections open now.
func (p *Proxy) Conns() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Conn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

// ResetAll resets every open connection.
func (p *Proxy) ResetAll() {
	for _, c := range p.Conns() {
		c.Do(Reset)
	}
}

// Calm disarms every pending trigger and resumes every stopped reader; it
// does not undo black holes or closes.
func (p *Proxy) Calm() {
	for _, c := range p.Conns() {
		c.Disarm()
		c.Resume()
	}
}

// Down takes the service away: the listener closes (new connections are
// refused) and every open connection is reset.
func (p *Proxy) Down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	p.ResetAll()
}

// Up listens again on the same address after Down. It retries for a while if
// the port is still held.
func (p *Proxy) Up() error {
	p.mu.Lock()
	if p.closed || p.ln != nil {
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = p.listen(p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	if p.closed || p.ln != nil {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.ln = ln
	p.wg.Add(1)
	p.mu.Unlock()
	go p.accept(ln)
	return nil
}

// Close stops the proxy, resets every connection and waits for its
// goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	ln := p.ln
	p.ln = nil
	p.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	p.ResetAll()
	p.wg.Wait()
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p.accepted.Add(1)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			abort(nc)
			return
		}
		p.nextID++
		id := p.nextID
		mode, respond, target, onConn := p.mode, p.respond, p.target, p.onConn
		p.wg.Add(1)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			p.serve(id, nc.(*net.TCPConn), mode, respond, target, onConn)
		}()
	}
}

func (p *Proxy) serve(id int64, client *net.TCPConn, mode Mode, respond []byte, target string, onConn func(*Conn)) {
	c := &Conn{p: p, ID: id, client: client, done: make(chan struct{}),
		rng: rand.New(rand.NewPCG(p.opts.Seed, uint64(id)))}
	c.cond = sync.NewCond(&c.mu)
	if !p.track(c) {
		abort(client)
		return
	}
	defer p.untrack(c)
	switch mode {
	case Refuse:
		c.Do(Reset)
		return
	case Respond, RespondGarbage:
		readHead(client)
		if mode == RespondGarbage {
			respond = garbage(c.rng, 64+c.rng.IntN(448))
		}
		_, _ = client.Write(respond)
		c.Do(Close)
		return
	case Hang:
		c.holdTimer(p.opts.HoldBlackHole)
		_, _ = io.Copy(io.Discard, client)
		c.Do(Reset)
		return
	}
	d := net.Dialer{Timeout: 5 * time.Second, Control: p.control}
	sc, err := d.Dial("tcp", target)
	if err != nil {
		c.Do(Reset) // the client sees what it would see behind a load balancer
		return
	}
	c.mu.Lock()
	c.server = sc.(*net.TCPConn)
	closed := c.closed
	c.mu.Unlock()
	if closed {
		abort(sc)
		return
	}
	if onConn != nil {
		onConn(c)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.pipe(ToServer) }()
	go func() { defer wg.Done(); c.pipe(ToClient) }()
	wg.Wait()
	c.Do(Close)
}

func (p *Proxy) track(c *Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c *Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// readHead reads a request head (up to the blank line, 64 KiB, or 2 s) so
// that closing afterwards sends FIN rather than RST.
func readHead(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var b []byte
	buf := make([]byte, 4096)
	for len(b) < 64<<10 {
		n, err := c.Read(buf)
		b = append(b, buf[:n]...)
		if bytes.Contains(b, []byte("\r\n\r\n")) || err != nil {
			return
		}
	}
}

// garbage returns n random bytes that are neither CR, LF nor hex digits.
func garbage(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	for len(b) < n {
		x := byte(rng.UintN(256))
		switch {
		case x == '\r' || x == '\n':
		case x >= '0' && x <= '9', x >= 'a' && x <= 'f', x >= 'A' && x <= 'F':
		default:
			b = append(b, x)
		}
	}
	return b
}

func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// dropAll attaches a socket filter that drops every incoming segment before
// TCP sees it, so nothing is acknowledged.
func dropAll(c *net.TCPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = raw.Control(func(fd uintptr) {
		ferr = syscall.AttachLsf(int(fd), []syscall.SockFilter{{Code: syscall.BPF_RET | syscall.BPF_K, K: 0}})
	})
	return errors.Join(err, ferr)
}

// DropIncoming makes the kernel drop every segment that arrives for c
// without acknowledging it: from then on c's peer sees a vanished host (its
// data is retransmitted until its TCP_USER_TIMEOUT or retry limit). Use it on
// a test client's own socket to black-hole it without a proxy.
func DropIncoming(c net.Conn) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return errors.New("faults: not a TCP connection")
	}
	return dropAll(tc)
}

type trigger struct {
	at int64
	a  Action
}

// Conn is one proxied connection.
type Conn struct {
	p      *Proxy
	ID     int64 // 1 for the first connection the proxy accepted
	client *net.TCPConn
	server *net.TCPConn // nil until dialed
	done   chan struct{}

	mu       sync.Mutex
	cond     *sync.Cond
	closed   bool
	holed    bool
	stopped  [2]bool // not reading the sending side of each direction
	shut     [2]bool // the receiving side of each direction got FIN (or is dropped)
	trig     [2]*trigger
	rate     [2]int // bytes per second, 0 unlimited
	count    [2]int64
	applied  []string
	rng      *rand.Rand
	holdOnce sync.Once
}

// ClientAddr is the address of the client side's peer.
func (c *Conn) ClientAddr() string { return c.client.RemoteAddr().String() }

// ServerLocalAddr is the proxy's own address on the server side (what the
// server sees as the client's address), "" before the dial.
func (c *Conn) ServerLocalAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.server == nil {
		return ""
	}
	return c.server.LocalAddr().String()
}

// Done is closed when the connection is finished (closed or reset).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Forwarded is the number of bytes forwarded in d so far.
func (c *Conn) Forwarded(d Dir) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[d]
}

// Applied lists the actions applied so far, for a test's report.
func (c *Conn) Applied() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.applied...)
}

// At arms a trigger: once exactly n bytes have been forwarded in d, a is
// applied (a read that crosses n is cut there, so with a byte offset inside a
// frame the fault lands mid-frame). It replaces a trigger armed before in d.
// n <= the bytes already forwarded fires on the next forwarded byte.
func (c *Conn) At(d Dir, n int64, a Action) {
	c.mu.Lock()
	c.trig[d] = &trigger{at: n, a: a}
	c.mu.Unlock()
}

// After applies a after delay, unless the connection ended first.
func (c *Conn) After(delay time.Duration, a Action) {
	go func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-c.done:
		case <-t.C:
			c.Do(a)
		}
	}()
}

// Disarm drops the pending triggers.
func (c *Conn) Disarm() {
	c.mu.Lock()
	c.trig = [2]*trigger{}
	c.mu.Unlock()
}

// Throttle limits d to bytesPerSec (0 removes the limit): a slow link.
func (c *Conn) Throttle(d Dir, bytesPerSec int) {
	c.mu.Lock()
	c.rate[d] = bytesPerSec
	c.mu.Unlock()
}

// Resume undoes StopReadingServer and StopReadingClient.
func (c *Conn) Resume() {
	c.mu.Lock()
	c.stopped = [2]bool{}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Do applies a now.
func (c *Conn) Do(a Action) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.applied = append(c.applied, a.String())
	switch a {
	case Reset:
		c.finishLocked(true)
	case Close:
		c.finishLocked(false)
	case HalfCloseToServer:
		c.shut[ToServer] = true
		if c.server != nil {
			_ = c.server.CloseWrite()
		}
		c.maybeFinishLocked()
	case HalfCloseToClient:
		c.shut[ToClient] = true
		_ = c.client.CloseWrite()
		c.maybeFinishLocked()
	case BlackHole:
		c.holed = true
		_ = dropAll(c.client)
		if c.server != nil {
			_ = dropAll(c.server)
		}
		c.mu.Unlock()
		c.holdTimer(c.p.opts.HoldBlackHole)
		return
	case StopReadingServer:
		c.stopped[ToClient] = true
	case StopReadingClient:
		c.stopped[ToServer] = true
	case Garbage:
		g := garbage(c.rng, 64+c.rng.IntN(448))
		c.mu.Unlock()
		_ = c.client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.client.Write(g)
		c.Do(Reset)
		return
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *Conn) holdTimer(d time.Duration) {
	c.holdOnce.Do(func() {
		go func() {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-c.done:
			case <-t.C:
				c.Do(Reset)
			}
		}()
	})
}

// maybeFinishLocked closes the connection once both directions are shut.
func (c *Conn) maybeFinishLocked() {
	if c.shut[ToServer] && c.shut[ToClient] {
		c.finishLocked(false)
	}
}

func (c *Conn) finishLocked(rst bool) {
	if c.closed {
		return
	}
	c.closed = true
	for _, s := range []*net.TCPConn{c.client, c.server} {
		if s == nil {
			continue
		}
		if rst {
			_ = s.SetLinger(0)
		}
		_ = s.Close()
	}
	close(c.done)
	c.cond.Broadcast()
}

func (c *Conn) sides(d Dir) (src, dst *net.TCPConn) {
	if d == ToServer {
		return c.client, c.server
	}
	return c.server, c.client
}

// pipe forwards one direction until the connection ends.
func (c *Conn) pipe(d Dir) {
	src, dst := c.sides(d)
	buf := make([]byte, 32<<10)
	for {
		c.mu.Lock()
		for c.stopped[d] && !c.closed {
			c.cond.Wait()
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return
		}
		n, err := src.Read(buf)
		if n > 0 && !c.forward(d, dst, buf[:n]) {
			return
		}
		if err != nil {
			c.mu.Lock()
			holed := c.holed
			c.mu.Unlock()
			switch {
			case holed:
				// Nothing passes a black hole, not even a close.
				<-c.done
			case errors.Is(err, io.EOF):
				c.mu.Lock()
				if !c.shut[d] {
					c.shut[d] = true
					_ = dst.CloseWrite()
				}
				c.maybeFinishLocked()
				c.mu.Unlock()
			default:
				c.Do(Reset) // a reset on one side is passed on as a reset
			}
			return
		}
	}
}

// forward writes b to dst, honouring stops, drops, triggers and throttling;
// false when the connection has ended.
func (c *Conn) forward(d Dir, dst *net.TCPConn, b []byte) bool {
	for len(b) > 0 {
		c.mu.Lock()
		for c.stopped[d] && !c.closed {
			c.cond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return false
		}
		if c.holed || c.shut[d] {
			c.mu.Unlock()
			return true // dropped
		}
		chunk := b
		var fire *trigger
		if t := c.trig[d]; t != nil && c.count[d]+int64(len(chunk)) >= t.at {
			chunk = chunk[:max(t.at-c.count[d], 0)]
			fire, c.trig[d] = t, nil
		}
		rate := c.rate[d]
		c.mu.Unlock()
		if rate > 0 {
			if piece := max(rate/50, 1); len(chunk) > piece {
				chunk = chunk[:piece]
				if fire != nil { // not reached yet: arm it again
					c.mu.Lock()
					if c.trig[d] == nil {
						c.trig[d] = fire
					}
					c.mu.Unlock()
					fire = nil
				}
			}
		}
		if len(chunk) > 0 {
			n, err := dst.Write(chunk)
			c.mu.Lock()
			c.count[d] += int64(n)
			c.mu.Unlock()
			if err != nil {
				c.Do(Reset)
				return false
			}
			if rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
		}
		b = b[len(chunk):]
		if fire != nil {
			c.Do(fire.a)
		}
	}
	return true
}
