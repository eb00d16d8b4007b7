package proxy

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A stream whose upstream stays down logs its failed attempts at warn only
// for attempts 1, 2, 4, 8, ... (the others at debug, all with their
// number): every session client's stream retrying for as long as the
// upstream is down flooded the logs (50 clients, 271 warn lines in 5 s).
// Found by a black-box probe.
func TestRetryLogsThinOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // connections to it are refused
	var logs syncBuffer
	_, addr := serveInProcess(t, "http://"+dead, zerolog.New(&logs).Level(zerolog.DebugLevel),
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=10ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=10ms")
	c := mustOpenSSE(t, addr, "/feed")
	defer c.c.Close()
	count := func() (all, warn int) {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "upstream connect failed") {
				all++
				if strings.Contains(l, `"level":"warn"`) {
					warn++
				}
			}
		}
		return all, warn
	}
	deadline := time.Now().Add(10 * time.Second)
	for all, _ := count(); all < 40 && time.Now().Before(deadline); all, _ = count() {
		time.Sleep(20 * time.Millisecond)
	}
	all, warn := count()
	if all < 40 {
		t.Fatalf("%d failed attempts logged in 10 s, want 40", all)
	}
	// Attempts 1, 2, 4, ..., up to all, give or take one that lands meanwhile.
	want := 0
	for n := 1; n <= all; n *= 2 {
		want++
	}
	if warn < want-1 || warn > want+1 {
		t.Fatalf("%d of %d failed attempts logged at warn, want %d", warn, all, want)
	}
}
