// Command legacy-upstream is a sample legacy SSE service: no ids, no
// Last-Event-ID support. The demo puts lastevent in front of it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/test/upstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address")
	every := flag.Duration("broadcast-interval", time.Second, "interval of /broadcast events")
	flag.Parse()
	s, err := upstream.Start(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legacy-upstream:", err)
		os.Exit(1)
	}
	s.StartBroadcast(*every)
	fmt.Fprintf(os.Stderr, "legacy-upstream listening on %s (/events, /broadcast)\n", s.Addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Close()
}
