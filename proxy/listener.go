package proxy

import (
	"net"
	"syscall"
	"time"
)

// tcpUserTimeout is TCP_USER_TIMEOUT from linux/tcp.h: how long sent data may
// stay unacknowledged before the kernel drops the connection. Heartbeats
// alone keep "succeeding" into the send buffer of a vanished client for
// minutes; with this, the next write fails soon after.
const tcpUserTimeout = 0x12

// deadClientListener sets TCP_USER_TIMEOUT and short keepalive probes on
// every accepted connection, so a client that vanished without FIN or RST
// is found within about d.
type deadClientListener struct {
	net.Listener
	d time.Duration
}

// WrapListener applies the dead-client settings of d (0 leaves the OS
// defaults).
func WrapListener(ln net.Listener, d time.Duration) net.Listener {
	if d <= 0 {
		return ln
	}
	return &deadClientListener{Listener: ln, d: d}
}

func (l *deadClientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		probe := max(l.d/3, time.Second)
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3})
		if raw, err := tc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, int(l.d.Milliseconds()))
			})
		}
	}
	return c, nil
}
