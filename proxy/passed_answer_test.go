package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// An upstream answer passed on instead of a stream (here a slow 401) goes to
// every client that joined the stream while it was awaited, but its
// Set-Cookie only to the client whose request it answered, as on a stream:
// all four clients of one shared URL got the one session cookie. And an
// answer without a Content-Type reaches them without one (fasthttp added
// text/plain). Found by review.
func TestPassedAnswerCookieOnlyToOpener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if l, err := br.ReadString('\n'); err != nil || l == "\r\n" {
						break
					}
				}
				time.Sleep(300 * time.Millisecond) // the others join meanwhile
				fmt.Fprintf(c, "HTTP/1.1 401 Unauthorized\r\nSet-Cookie: sid=session-%d; HttpOnly\r\nContent-Length: 12\r\nConnection: close\r\n\r\nlogin first\n", n)
			}()
		}
	}()
	_, addr := serveInProcess(t, "http://"+ln.Addr().String(), zerolog.Nop(), "LASTEVENT_MODE=shared")
	const clients = 4
	answers := make([]string, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 30 * time.Millisecond) // the first opens, the others join
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			io.WriteString(c, "GET /feed HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, _ := io.ReadAll(c)
			answers[i] = string(b)
		}()
	}
	wg.Wait()
	withCookie := 0
	for i, a := range answers {
		if !strings.HasPrefix(a, "HTTP/1.1 401") || !strings.HasSuffix(a, "\r\n\r\nlogin first\n") {
			t.Fatalf("client %d: %q, want the upstream's 401", i, a)
		}
		if strings.Contains(a, "Set-Cookie: sid=session-1") {
			withCookie++
		}
		if strings.Contains(strings.ToLower(a), "content-type") {
			t.Errorf("client %d got a Content-Type the upstream did not send: %q", i, a)
		}
	}
	if withCookie != 1 {
		t.Fatalf("%d of %d clients of one shared stream got the Set-Cookie; want only the one that opened it", withCookie, clients)
	}
}
