package proxy

import (
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
			// A modest send buffer: a client that reads slowly but steadily
			// frees room often enough to finish each write within
			// LASTEVENT_WRITE_TIMEOUT (the kernel wakes a blocked writer
			// only when a third of the buffer is free), and a stalled one
			// parks less in the kernel.
			_ = tc.SetWriteBuffer(clientSendBuffer)
		}
		if tc, ok := c.(*net.TCPConn); ok && l.dead > 0 {
			probe := max(l.dead/3, time.Second)
			_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3})
			if raw, err := tc.SyscallConn(); err == nil {
				_ = raw.Control(func(fd uintptr) {
					_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(l.dead.Milliseconds()))
				})
			}
		}
		return &countedConn{Conn: c, l: l}, nil
	}
}

// refuse answers a connection over the limit; the request is not read.
func (l *clientListener) refuse(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(l.full)
	_ = c.Close()
}

type countedConn struct {
	net.Conn
	l    *clientListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
