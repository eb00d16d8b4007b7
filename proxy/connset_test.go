package proxy

import (
	"net"
	"testing"
	"time"
)

// Shutdown's closeAll can take a connection the stream client is still
// dialling: Dial sets the connection's set before adding it, so closeAll's
// Close sees it (it wrote it after the add, with no lock: a data race under
// -race, and a connection left in the set without). The race detector is
// what catches the old order (CI runs this under -race: it fails there every
// time without the fix); the count at the end holds without it.
func TestConnSetCloseAllDuringDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cfg := &Config{UpstreamTimeout: time.Second, UpstreamMaxConnections: 4, MaxBodyBytes: 1 << 20}
	for range 20 {
		cs := newConnSet()
		cl := newStreamClient(cfg, cs)
		done, dialFailed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				cs.mu.Lock()
				n := len(cs.m)
				cs.mu.Unlock()
				if n > 0 {
					cs.closeAll()
					return
				}
				select {
				case <-dialFailed: // nothing will be added
					return
				default:
				}
			}
		}()
		c, err := cl.Dial(ln.Addr().String())
		if err != nil {
			close(dialFailed)
			<-done
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		<-done
		cs.mu.Lock()
		left := len(cs.m)
		cs.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d connections left in the set after closeAll", left)
		}
	}
}
