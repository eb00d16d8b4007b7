// Command demo starts a sample legacy SSE upstream (no ids, no Last-Event-ID)
// on 127.0.0.1:9000 and lastevent in front of it on :8080 (admin :8081), and
// prints the page to open and the curl lines to try. Ctrl-C stops both.
//
// The page (served by the upstream at /, so through lastevent at
// http://127.0.0.1:8080/) has buttons for three hooks the demo adds to the
// upstream: POST /demo/drop resets every client connection of lastevent,
// POST /demo/drop-upstream aborts the upstream's /broadcast connections and
// POST /demo/restart-proxy stops lastevent and starts a new one on the same
// ports.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/proxy"
	"github.com/lastevent/lastevent/test/upstream"
	"github.com/rs/zerolog"
)

func main() {
	upAddr := flag.String("upstream", "127.0.0.1:9000", "listen address of the demo upstream")
	every := flag.Duration("interval", time.Second, "interval of the upstream's /broadcast ticks")
	flag.Parse()
	up, err := upstream.Start(*upAddr)
	if err != nil {
		fail(err)
	}
	up.StartBroadcast(*every)
	environ := append([]string{
		"LASTEVENT_UPSTREAM_URL=http://" + up.Addr,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:8080",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:8081",
		"LASTEVENT_LOG_FORMAT=console",
	}, os.Environ()...) // your own LASTEVENT_* settings win
	cfg, warnings, err := proxy.LoadConfig(environ)
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	if err != nil {
		fail(err)
	}
	p := &runner{cfg: &cfg, log: proxy.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)}
	if err := p.start(cfg.ListenAddr, cfg.AdminAddr); err != nil {
		fail(err)
	}
	// The hooks answer before they act; the pause lets that answer pass
	// through the lastevent they are about to cut.
	up.HandleDemo("drop", func() { time.Sleep(100 * time.Millisecond); p.drop() })
	up.HandleDemo("drop-upstream", func() { up.Feed("/broadcast").Kill() })
	up.HandleDemo("restart-proxy", func() {
		time.Sleep(100 * time.Millisecond)
		if err := p.restart(); err != nil {
			fail(err)
		}
	})
	a, adm := p.addr, p.admin
	fmt.Printf(`
lastevent demo: legacy upstream on http://%[1]s (it sends no ids), lastevent on http://%[2]s

  # in a browser: the live stream through lastevent and lastevent.js, with buttons to
  # drop the connection, drop the upstream and restart the proxy
  page: http://%[2]s/

  # the upstream's own stream: no ids, a reconnect loses events
  curl -N http://%[1]s/events

  # through lastevent: every frame has an id (mode %[4]s, a new upstream stream per connection)
  curl -N -H 'Accept: text/event-stream' http://%[2]s/events

  # stop it after a few events, then resume after an id you saw: exactly the missed frames follow
  curl -N -H 'Accept: text/event-stream' -H 'Last-Event-ID: <an id>' http://%[2]s/events

  # a bad id is never an error: 200 and an explicit sync-required event
  curl -N -H 'Accept: text/event-stream' -H 'Last-Event-ID: nonsense' http://%[2]s/events

  # what lastevent holds
  curl http://%[3]s/debug/stream-state

Ctrl-C stops the demo.
`, up.Addr, a, adm, cfg.Mode)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = p.stop()
	up.Close()
}

// runner runs the in-process lastevent and can restart it on the same ports.
type runner struct {
	cfg *proxy.Config
	log zerolog.Logger

	mu          sync.Mutex
	srv         *proxy.Server
	ln          *trackingListener
	addr, admin string // the addresses actually bound (the config may say :0)
}

func (p *runner) start(addr, admin string) error {
	ln, err := listen(addr)
	if err != nil {
		return err
	}
	adminLn, err := listen(admin)
	if err != nil {
		ln.Close()
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ln = &trackingListener{Listener: ln, conns: make(map[net.Conn]struct{})}
	p.addr, p.admin = ln.Addr().String(), adminLn.Addr().String()
	p.srv = proxy.NewServer(p.cfg, p.log, "demo")
	go func(srv *proxy.Server, ln net.Listener) {
		if err := srv.Serve(ln, adminLn); err != nil {
			fail(err)
		}
	}(p.srv, p.ln)
	return nil
}

// listen retries for a moment: the previous server may still hold the port.
func listen(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(40 * time.Millisecond)
	}
	return nil, err
}

func (p *runner) stop() error {
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	return srv.Shutdown(ctx)
}

// restart is a process restart in miniature: a new server, new generations,
// empty buffers; clients that resume get system-sync.
func (p *runner) restart() error {
	if err := p.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: shutdown:", err)
	}
	p.mu.Lock()
	addr, admin := p.addr, p.admin
	p.mu.Unlock()
	fmt.Fprintln(os.Stderr, "demo: lastevent restarted")
	return p.start(addr, admin)
}

// drop resets every client connection, as a network failure would.
func (p *runner) drop() {
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	fmt.Fprintf(os.Stderr, "demo: reset %d client connections\n", ln.resetAll())
}

// trackingListener remembers the connections it accepted so that drop can
// reset them. It hands out the *net.TCPConn itself, so lastevent still sets
// its TCP options on it; the set is emptied at every drop (demo use only).
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) resetAll() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN: the connection is broken, not ended
		}
		if c.Close() == nil { // else fasthttp had closed it already
			n++
		}
	}
	clear(l.conns)
	return n
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}
