package proxy

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT from linux/tcp.h: how long sent data may
// stay unacknowledged before the kernel drops the connection. Heartbeats
// alone keep "succeeding" into the send buffer of a vanished client for
// minutes; with this, the next write fails soon after.
const tcpUserTimeout = 0x12

// clientSendBuffer is SO_SNDBUF for client connections (Linux doubles it).
const clientSendBuffer = 128 << 10

// clientListener applies two things to every accepted client connection:
//   - the connection limit: past max open connections, a new one gets a 503
//     naming LASTEVENT_MAX_CONNECTIONS and is closed, before any handler or
//     buffer is spent on it;
//   - dead-client detection: TCP_USER_TIMEOUT and short keepalive probes, so
//     a client that vanished without FIN or RST is found within about dead
//     (0 keeps the OS defaults).
type clientListener struct {
	net.Listener
	dead time.Duration
	max  int64
	open atomic.Int64
	full []byte // the 503 answer
}

// WrapListener returns ln with the connection limit max and the dead-client
// timeout dead applied.
func WrapListener(ln net.Listener, max int, dead time.Duration) net.Listener {
	body := "lastevent: too many connections (LASTEVENT_MAX_CONNECTIONS=" + strconv.Itoa(max) + "); retry later\n"
	full := "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
	return &clientListener{Listener: ln, dead: dead, max: int64(max), full: []byte(full)}
}

func (l *clientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			go l.refuse(c)
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			l.tune(tc)
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// tune sets the send buffer and the dead-client detection of an accepted
// connection.
func (l *clientListener) tune(tc *net.TCPConn) {
	// A modest send buffer: a client that reads slowly but steadily frees
	// room often enough to finish each write within LASTEVENT_WRITE_TIMEOUT
	// (the kernel wakes a blocked writer only when a third of the buffer is
	// free), and a stalled one parks less in the kernel.
	_ = tc.SetWriteBuffer(clientSendBuffer)
	if l.dead <= 0 {
		return
	}
	probe := max(l.dead/3, time.Second)
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3})
	if raw, err := tc.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(l.dead.Milliseconds()))
		})
	}
}

// refuse answers a connection over the limit; the request is not read.
func (l *clientListener) refuse(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(l.full)
	_ = c.Close()
}

// countedConn is an accepted client connection: it leaves the count on
// Close, and cleans the Last-Event-ID lines of the request heads it reads.
type countedConn struct {
	net.Conn
	l    *clientListener
	once sync.Once
	head headCleaner
	// idleWrites, when set, bounds each piece of a write (writePiece bytes)
	// by its own deadline: a plain answer (the handler sets it) goes out as
	// long as the client keeps reading, and a client that stops is dropped
	// after LASTEVENT_WRITE_TIMEOUT. SSE responses move their deadlines
	// themselves (client.touch): zero. Used on the connection's goroutine
	// only.
	idleWrites time.Duration
}

// writePiece is how much of a plain answer one write deadline covers.
const writePiece = 64 << 10

func (c *countedConn) Write(p []byte) (int, error) {
	if c.idleWrites <= 0 {
		return c.Conn.Write(p)
	}
	n := 0
	for n < len(p) {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idleWrites))
		m, err := c.Conn.Write(p[n:min(len(p), n+writePiece)])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.head.clean(p[:n])
	return n, err
}

// headCleaner replaces control bytes in the Last-Event-ID lines of request
// heads with '?'. A browser may send them (Fetch forbids only NUL, CR and LF
// in a header value, and EventSource sends back whatever id a server gave
// it), but fasthttp refuses them with a 400, which makes EventSource give up
// for good. Cleaned, the id is simply malformed and gets sync-required.
// It follows heads across reads and keep-alive requests; after a head that
// announces a body it stops, since it does not parse bodies (EventSource
// requests have none).
type headCleaner struct {
	done    bool     // a body follows: stop looking
	lineLen int      // bytes of the current line so far
	blank   bool     // the current line is empty so far (a lone CR at most)
	naming  bool     // still reading the current line's field name
	name    [20]byte // the field name, lower-cased
	nameN   int
	inID    bool // inside the value of a Last-Event-ID line
	body    bool // this head announced a body
}

func (h *headCleaner) clean(b []byte) {
	for i := 0; i < len(b) && !h.done; i++ {
		c := b[i]
		if c == '\n' {
			if h.lineLen == 0 || h.blank { // the blank line that ends a head
				h.done = h.body
				h.body = false
			}
			h.lineLen, h.inID, h.naming, h.blank = 0, false, false, false
			continue
		}
		if h.lineLen == 0 {
			h.naming, h.nameN, h.blank = true, 0, c == '\r'
		} else if c != '\r' {
			h.blank = false
		}
		h.lineLen++
		switch {
		case h.inID:
			if c < 0x20 && c != '\t' && c != '\r' || c == 0x7f {
				b[i] = '?'
			}
		case !h.naming:
		case c == ':':
			switch string(h.name[:h.nameN]) {
			case "last-event-id":
				h.inID = true
			case "content-length", "transfer-encoding":
				h.body = true
			}
			h.naming = false
		case h.nameN < len(h.name):
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			h.name[h.nameN] = c
			h.nameN++
		default:
			h.naming = false // longer than any name of interest
		}
	}
}

// SyscallConn gives the descriptor of the connection beneath, for the
// clients' non-blocking writes (client.offer).
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("lastevent: connection has no file descriptor")
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
