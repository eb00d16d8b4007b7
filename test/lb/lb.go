// Package lb is a round-robin TCP load balancer for tests, the shape of a
// plain Kubernetes Service without session affinity: it listens on
// 127.0.0.1, sends each new connection to the next backend in turn, and
// copies bytes both ways (half-closes included) until either side ends.
//
// A backend that refuses the connection (a killed replica) is skipped for
// that connection, as an endpoint controller would soon remove it; the next
// connection tries the rotation again from where it stands.
//
// All methods are safe for concurrent use.
package lb

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Balancer is a running round-robin TCP balancer. Make one with New.
type Balancer struct {
	ln   net.Listener
	addr string

	mu       sync.Mutex
	backends []string
	next     int
	conns    map[*pair]struct{}
	picked   map[string]int // client address (as the balancer sees it) -> backend index
	closed   bool
	accepted atomic.Int64
	counts   []atomic.Int64

	wg sync.WaitGroup
}

type pair struct {
	client, server net.Conn
	once           sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		p.client.Close()
		p.server.Close()
	})
}

// New listens on 127.0.0.1:0 and balances over backends (host:port each).
func New(backends ...string) (*Balancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("lb: no backends")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Balancer{
		ln:       ln,
		addr:     ln.Addr().String(),
		backends: append([]string(nil), backends...),
		conns:    make(map[*pair]struct{}),
		picked:   make(map[string]int),
		counts:   make([]atomic.Int64, len(backends)),
	}
	b.wg.Add(1)
	go b.accept()
	return b, nil
}

// Addr is the host:port clients dial.
func (b *Balancer) Addr() string { return b.addr }

// URL is "http://" + Addr.
func (b *Balancer) URL() string { return "http://" + b.addr }

// Accepted is the number of client connections accepted so far.
func (b *Balancer) Accepted() int64 { return b.accepted.Load() }

// Count is the number of connections backend i has been given.
func (b *Balancer) Count(i int) int64 { return b.counts[i].Load() }

// SetBackend replaces backend i (a replica restarted on another port); the
// rotation keeps its place.
func (b *Balancer) SetBackend(i int, addr string) {
	b.mu.Lock()
	b.backends[i] = addr
	b.mu.Unlock()
}

// Backend returns the index of the backend that the connection from
// clientAddr (the client's local address, host:port) was sent to.
func (b *Balancer) Backend(clientAddr string) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.picked[clientAddr]
	return i, ok
}

// Open is the number of connections being forwarded now.
func (b *Balancer) Open() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Close stops listening, ends every forwarded connection and waits for
// the copying goroutines. It may be called more than once.
func (b *Balancer) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	ps := make([]*pair, 0, len(b.conns))
	for p := range b.conns {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	b.ln.Close()
	for _, p := range ps {
		p.close()
	}
	b.wg.Wait()
}

func (b *Balancer) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		b.accepted.Add(1)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.serve(c)
		}()
	}
}

// dial connects to the next backend in turn, skipping backends that refuse.
func (b *Balancer) dial() (net.Conn, int, error) {
	b.mu.Lock()
	n := len(b.backends)
	start := b.next
	b.next = (b.next + 1) % n
	backends := append([]string(nil), b.backends...)
	b.mu.Unlock()
	var err error
	for k := 0; k < n; k++ {
		i := (start + k) % n
		var s net.Conn
		s, err = net.DialTimeout("tcp", backends[i], 2*time.Second)
		if err == nil {
			return s, i, nil
		}
	}
	return nil, -1, err
}

func (b *Balancer) serve(c net.Conn) {
	s, i, err := b.dial()
	if err != nil {
		c.Close()
		return
	}
	p := &pair{client: c, server: s}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		p.close()
		return
	}
	b.conns[p] = struct{}{}
	b.picked[c.RemoteAddr().String()] = i
	b.mu.Unlock()
	b.counts[i].Add(1)
	defer func() {
		p.close()
		b.mu.Lock()
		delete(b.conns, p)
		b.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			// A clean end (FIN) from src: pass the half-close on.
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		} else {
			p.close() // a reset or a closed balancer: end both sides
		}
		done <- struct{}{}
	}
	go pipe(s, c)
	go pipe(c, s)
	<-done
	<-done
}
