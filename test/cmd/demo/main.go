// Command demo starts a sample legacy SSE upstream (no ids, no Last-Event-ID)
// on 127.0.0.1:9000 and lastevent in front of it on :8080 (admin :8081), and
// prints the curl lines to try. Ctrl-C stops both.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/proxy"
	"github.com/lastevent/lastevent/test/upstream"
)

func main() {
	up, err := upstream.Start("127.0.0.1:9000")
	if err != nil {
		fail(err)
	}
	up.StartBroadcast(time.Second)
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
	log := proxy.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		fail(err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		fail(err)
	}
	srv := proxy.NewServer(&cfg, log, "demo")
	go func() {
		if err := srv.Serve(ln, adminLn); err != nil {
			fail(err)
		}
	}()
	a, adm := ln.Addr().String(), adminLn.Addr().String()
	fmt.Printf(`
lastevent demo: legacy upstream on http://%[1]s (it sends no ids), lastevent on http://%[2]s

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
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	_ = srv.Shutdown(ctx)
	up.Close()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}
