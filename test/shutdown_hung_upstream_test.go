package test

// SIGTERM while a stream is still waiting for its upstream's answer head (a
// hung app: it accepted and says nothing). A stream's halt cannot reach that
// wait (there is no body to close yet), so the hub closes its upstream
// connections on shutdown: lastevent exits 0 well within
// LASTEVENT_SHUTDOWN_GRACE, not with "shutdown incomplete" and exit status 1
// after waiting out the grace (LASTEVENT_UPSTREAM_TIMEOUT is longer here;
// by default both are 10 s).

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestShutdownWithUpstreamHeadPending(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close() // reads nothing, answers nothing
		}
	}()
	p := startProxy(t, "http://"+hung.Addr().String(), "LASTEVENT_UPSTREAM_TIMEOUT=20s",
		"LASTEVENT_SHUTDOWN_GRACE=2s", "LASTEVENT_LOG_LEVEL=info")
	go func() { _, _ = tryDial(t, p.URL(), "/events") }() // waits for the upstream's head
	waitFor(t, 5*time.Second, "the stream opened", func() bool { return p.state(t).Totals.Streams == 1 })
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	took := time.Since(start)
	if p.err != nil || strings.Contains(p.Logs(), "shutdown incomplete") || took > 1500*time.Millisecond {
		var last string
		for _, l := range strings.Split(p.Logs(), "\n") {
			if strings.Contains(l, "shutdown") {
				last = l
			}
		}
		t.Errorf("SIGTERM with a stream waiting for its upstream's head: %v after %s (grace 2s); last shutdown log: %s", p.err, took.Round(time.Millisecond), last)
	}
}
