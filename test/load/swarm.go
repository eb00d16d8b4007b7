package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// SwarmConfig describes N concurrent SSE clients.
type SwarmConfig struct {
	Addr    string   // host:port to connect to
	Path    string   // request target, e.g. /stream?rate=10&size=100
	Clients int      // number of connections
	Ramp    float64  // new connections per second while connecting (<= 0: all at once)
	Sources []net.IP // local addresses, round robin (nil: the kernel picks)
	ReadBuf int      // bytes per connection read buffer (default 8 KiB)
}

// Swarm is a set of SSE clients over raw TCP with a light parser. Each
// received event is checked for duplicates and gaps (by the sequence in its
// data) and, when its send time falls in the measurement window, its
// delivery latency goes into the histogram.
type Swarm struct {
	cfg     SwarmConfig
	clients []*Client
	hists   [16]Histogram // sharded by client to spread the atomic adds
	wg      sync.WaitGroup

	winFrom, winTo atomic.Int64 // send-time window, ns; empty when from >= to

	// Reconnect storm: a client whose event sequence reaches catchTarget
	// records when.
	catchTarget atomic.Int64
	caughtUp    atomic.Int64

	established, connectErrors, disconnects atomic.Int64

	mu        sync.Mutex
	errSample map[string]int // connect errors by kind, for the report
}

// Client is one connection of the swarm; it keeps its state (the last id and
// sequence, counters) across reconnects.
type Client struct {
	sw   *Swarm
	idx  int
	hist *Histogram

	mu     sync.Mutex
	conn   net.Conn
	closed bool // DropAll or Stop closed it on purpose

	lastID  []byte
	lastSeq int64
	resync  bool // a sync event came: the next sequence may jump

	received, inWindow, dups, gaps, syncs, malformed atomic.Int64
	caughtUpNs                                       atomic.Int64
	sessionUp                                        atomic.Bool
}

// NewSwarm prepares the clients; Connect starts them.
func NewSwarm(cfg SwarmConfig) *Swarm {
	if cfg.ReadBuf <= 0 {
		cfg.ReadBuf = 8 << 10
	}
	s := &Swarm{cfg: cfg, errSample: make(map[string]int)}
	for i := range cfg.Clients {
		s.clients = append(s.clients, &Client{sw: s, idx: i, hist: &s.hists[i%len(s.hists)], lastSeq: -1})
	}
	return s
}

// SetWindow sets the send-time window [from, to) of the events whose latency
// is recorded and counted as delivered in the window.
func (s *Swarm) SetWindow(from, to int64) {
	s.winFrom.Store(from)
	s.winTo.Store(to)
}

// Connect opens every client's connection at the configured ramp and
// returns when each has its response head or failed, or ctx ends.
func (s *Swarm) Connect(ctx context.Context) {
	s.launch(ctx, s.cfg.Ramp, nil)
}

func (s *Swarm) launch(ctx context.Context, ramp float64, release <-chan struct{}) {
	start := time.Now()
	before := s.established.Load() + s.connectErrors.Load()
	for i, c := range s.clients {
		if ramp > 0 && release == nil {
			due := start.Add(time.Duration(float64(i) / ramp * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if release != nil {
				<-release
			}
			c.session()
		}()
	}
	if release != nil {
		return
	}
	s.waitConnected(ctx, before)
}

func (s *Swarm) waitConnected(ctx context.Context, before int64) {
	for s.established.Load()+s.connectErrors.Load()-before < int64(len(s.clients)) {
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// WaitAllReceived waits until every connected client has received at least
// one event (so that it has a Last-Event-ID), or ctx ends.
func (s *Swarm) WaitAllReceived(ctx context.Context) bool {
	for {
		all := true
		for _, c := range s.clients {
			if c.sessionUp.Load() && c.received.Load() == 0 {
				all = false
				break
			}
		}
		if all {
			return true
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
}

// DropAll closes every connection at once and waits for the clients to end.
func (s *Swarm) DropAll() {
	for _, c := range s.clients {
		c.close()
	}
	s.wg.Wait()
	for _, c := range s.clients {
		c.mu.Lock()
		c.closed = false
		c.mu.Unlock()
	}
}

// Storm reconnects every client at the same instant, each with its last id
// as Last-Event-ID; a client is caught up when it receives sequence target.
// It returns the release time; wait with WaitCaughtUp.
func (s *Swarm) Storm(ctx context.Context, target int64) time.Time {
	s.caughtUp.Store(0)
	for _, c := range s.clients {
		c.caughtUpNs.Store(0)
	}
	s.catchTarget.Store(target)
	release := make(chan struct{})
	s.launch(ctx, 0, release)
	time.Sleep(50 * time.Millisecond) // let every goroutine reach the barrier
	t := time.Now()
	close(release)
	return t
}

// WaitCaughtUp waits until n clients have caught up or ctx ends.
func (s *Swarm) WaitCaughtUp(ctx context.Context, n int) bool {
	for s.caughtUp.Load() < int64(n) {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Stop closes every connection and waits for the clients.
func (s *Swarm) Stop() {
	for _, c := range s.clients {
		c.close()
	}
	s.wg.Wait()
}

func (c *Client) close() {
	c.mu.Lock()
	c.closed = true
	if c.conn != nil {
		c.conn.Close()
	}
	c.mu.Unlock()
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h): with a bound
// source address, the port is picked at connect time by the 4-tuple, so
// many connections do not exhaust the ephemeral ports of one address.
const ipBindAddressNoPort = 24

func (s *Swarm) dialer(i int) *net.Dialer {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	if n := len(s.cfg.Sources); n > 0 {
		d.LocalAddr = &net.TCPAddr{IP: s.cfg.Sources[i%n]}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
		}
	}
	return d
}

func (s *Swarm) connectError(kind string) {
	s.connectErrors.Add(1)
	s.mu.Lock()
	s.errSample[kind]++
	s.mu.Unlock()
}

// ErrorKinds returns the connect errors by kind.
func (s *Swarm) ErrorKinds() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.errSample))
	for k, v := range s.errSample {
		m[k] = v
	}
	return m
}

// session is one connection's life: request, head, then events until the
// connection ends.
func (c *Client) session() {
	s := c.sw
	conn, err := s.dialer(c.idx).Dial("tcp", s.cfg.Addr)
	if err != nil {
		s.connectError("dial: " + errKind(err))
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return
	}
	c.conn = conn
	c.mu.Unlock()
	defer func() {
		c.sessionUp.Store(false)
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
		conn.Close()
	}()

	var req []byte
	req = fmt.Appendf(req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n", s.cfg.Path, s.cfg.Addr)
	if len(c.lastID) > 0 {
		req = fmt.Appendf(req, "Last-Event-ID: %s\r\n", c.lastID)
	}
	req = append(req, "\r\n"...)
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := conn.Write(req); err != nil {
		s.connectError("write: " + errKind(err))
		return
	}
	buf := make([]byte, s.cfg.ReadBuf)
	n := 0
	end := -1
	for end < 0 {
		if n == len(buf) {
			s.connectError("head too large")
			return
		}
		m, err := conn.Read(buf[n:])
		n += m
		end = HeadEnd(buf[:n])
		if end < 0 && err != nil {
			s.connectError("head: " + errKind(err))
			return
		}
	}
	head, err := ParseResponseHead(buf[:end])
	if err != nil {
		s.connectError("head: malformed")
		return
	}
	if head.Status != 200 {
		s.connectError(fmt.Sprintf("status %d", head.Status))
		return
	}
	_ = conn.SetDeadline(time.Time{})
	s.established.Add(1)
	c.sessionUp.Store(true)

	var p SSEParser
	var dec ChunkedDecoder
	var now int64
	emit := func(ev *Event) { c.onEvent(ev, now) }
	body := func(b []byte) { p.Feed(b, emit) }
	feed := func(b []byte) error {
		now = time.Now().UnixNano()
		if !head.Chunked {
			body(b)
			return nil
		}
		done, err := dec.Feed(b, body)
		if err == nil && done {
			err = io.EOF
		}
		return err
	}
	if err := feed(buf[end:n]); err != nil {
		s.disconnects.Add(1)
		return
	}
	for {
		m, err := conn.Read(buf)
		if m > 0 {
			if ferr := feed(buf[:m]); ferr != nil {
				err = ferr
			}
		}
		if err != nil {
			c.mu.Lock()
			onPurpose := c.closed
			c.mu.Unlock()
			if !onPurpose {
				s.disconnects.Add(1)
			}
			return
		}
	}
}

func (c *Client) onEvent(ev *Event, now int64) {
	if ev.HasID {
		c.lastID = append(c.lastID[:0], ev.ID...)
	}
	if len(ev.Type) > 0 && !bytes.Equal(ev.Type, []byte("message")) {
		// sync-required, system-sync: an explicit discontinuity, not a gap.
		c.syncs.Add(1)
		c.resync = true
		return
	}
	seq, sent, ok := ParsePayload(ev.Data)
	if !ok {
		c.malformed.Add(1)
		return
	}
	c.received.Add(1)
	dup := false
	switch {
	case c.lastSeq < 0 || c.resync:
	case seq <= c.lastSeq:
		c.dups.Add(1)
		dup = true
	case seq > c.lastSeq+1:
		c.gaps.Add(seq - c.lastSeq - 1)
	}
	c.resync = false
	if seq > c.lastSeq {
		c.lastSeq = seq
	}
	// A duplicate is not a delivery: counted, it would hide as many
	// missing events in the delivered ratio (and add a latency).
	if !dup && sent >= c.sw.winFrom.Load() && sent < c.sw.winTo.Load() {
		c.hist.Record(now - sent)
		c.inWindow.Add(1)
	}
	if t := c.sw.catchTarget.Load(); t > 0 && seq >= t && c.caughtUpNs.Load() == 0 {
		c.caughtUpNs.Store(now)
		c.sw.caughtUp.Add(1)
	}
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local address/port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}

// Totals sums the clients' counters.
type Totals struct {
	Received, InWindow, Dups, Gaps, Syncs, Malformed int64
	Established, ConnectErrors, Disconnects          int64
	Hist                                             *Histogram
}

// Totals returns the counters so far; the histogram is a merged copy.
func (s *Swarm) Totals() Totals {
	t := Totals{Hist: &Histogram{}}
	for _, c := range s.clients {
		t.Received += c.received.Load()
		t.InWindow += c.inWindow.Load()
		t.Dups += c.dups.Load()
		t.Gaps += c.gaps.Load()
		t.Syncs += c.syncs.Load()
		t.Malformed += c.malformed.Load()
	}
	for i := range s.hists {
		t.Hist.Merge(&s.hists[i])
	}
	t.Established = s.established.Load()
	t.ConnectErrors = s.connectErrors.Load()
	t.Disconnects = s.disconnects.Load()
	return t
}

// ResetCounters zeroes the connect counters and the histogram (between the
// phases of a run).
func (s *Swarm) ResetCounters() {
	s.established.Store(0)
	s.connectErrors.Store(0)
	s.disconnects.Store(0)
	for _, c := range s.clients {
		c.dups.Store(0)
		c.gaps.Store(0)
		c.syncs.Store(0)
	}
	s.mu.Lock()
	s.errSample = make(map[string]int)
	s.mu.Unlock()
}

// CatchUpTimes returns, sorted, how long after release each client that
// caught up took.
func (s *Swarm) CatchUpTimes(release time.Time) []time.Duration {
	var out []time.Duration
	for _, c := range s.clients {
		if ns := c.caughtUpNs.Load(); ns > 0 {
			out = append(out, time.Duration(ns-release.UnixNano()))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
