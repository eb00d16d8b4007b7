package test

// Proxy-side faults: lastevent itself is stopped (SIGTERM) in the middle of
// replays to slow clients, or killed (SIGKILL) and restarted under its
// clients; and a client reconnects in the instant its stream ends.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/test/faults"
)

// faultPace calls f.Send every d until the returned stop is called.
func faultPace(f *faultFeeder, d time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f.Send()
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// faultTail returns the last n lines of s.
func faultTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// faultSystemSyncs counts the system-sync events of a history.
func faultSystemSyncs(evs []event) int { return faultCountTypes(evs)["system-sync"] }

// TestFaultProxySIGTERMDuringReplay: slow clients are in the middle of long
// replays when lastevent gets SIGTERM. lastevent exits within
// LASTEVENT_SHUTDOWN_GRACE, with status 0; every response ends cleanly (the
// chunked body's terminating chunk) after whole frames only, each client
// holding an exact prefix of its replay; then, against a restarted
// lastevent, each client resumes with its last id, gets system-sync (the
// buffer is gone) and ids that sort after the old ones, and ends with the
// upstream's sequence.
func TestFaultProxySIGTERMDuringReplay(t *testing.T) {
	seed := faultSeed(t)
	up := startUpstream(t)
	feed := up.Feed("/feed/r")
	const grace = 3 * time.Second
	env := []string{
		"LASTEVENT_MODE=session",
		"LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_BUFFER_FRAMES=5000",
		"LASTEVENT_LINGER=60s",
		"LASTEVENT_HEARTBEAT=500ms",
		"LASTEVENT_WRITE_TIMEOUT=2s",
		"LASTEVENT_SHUTDOWN_GRACE=" + grace.String(),
	}
	p1 := startProxy(t, up.URL(), env...)
	holder := dial(t, p1.URL(), "/feed/r", "X-Fault-Client: bigr")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("no upstream connection")
	}
	fd := faultStartFeeder(feed, 0, faultClientTag)
	defer fd.Stop()
	frames := faultPick(1500, 2500) // about 5 and 8 MB: more than the kernel buffers hold
	for range frames {
		fd.Send()
	}
	first := holder.Next(5 * time.Second)
	for i := 2; i <= frames; i++ {
		holder.Next(5 * time.Second)
	}
	holder.Close()

	front, err := faults.New(p1.Addr, faults.Options{Seed: seed, Buffer: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(front.Close)
	const rate = 1 << 20 // bytes per second: a replay takes seconds
	front.OnConn(func(c *faults.Conn) { c.Throttle(faults.ToClient, rate) })
	rng := newFaultRand(seed, 1)
	cs := make([]*faultClient, faultPick(2, 4))
	for i := range cs {
		cs[i] = newFaultClient(fmt.Sprintf("replayer%d", i), "/feed/r", front.Addr, rng, "X-Fault-Client: bigr")
		cs[i].lastID = first.ID // resume right after frame 1: a replay of all the others
		cs[i].silence = 20 * time.Second
	}
	clients := startFaultClients(cs)
	defer clients.Stop()
	clients.waitAll(t, 100, 20*time.Second)
	for _, c := range cs {
		if c.LastN() >= frames {
			t.Fatalf("%s finished its replay before SIGTERM: make the replay longer", c.name)
		}
	}

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- p1.Stop() }()
	var exitErr error
	select {
	case exitErr = <-stopped:
	case <-time.After(grace + 15*time.Second):
		t.Fatal("lastevent did not exit after SIGTERM")
	}
	exitAfter := time.Since(start)
	t.Logf("lastevent exited %v after SIGTERM (grace %v): %v", exitAfter.Round(10*time.Millisecond), grace, exitErr)
	if exitErr != nil {
		t.Errorf("lastevent's exit after SIGTERM during replays: %v, want status 0 (every stream ended cleanly within the grace)\n%s", exitErr, faultTail(p1.Logs(), 8))
	}
	if exitAfter > grace+2*time.Second {
		t.Errorf("lastevent took %v to exit, beyond its grace of %v", exitAfter, grace)
	}
	// Each replay's response has ended (what was queued in the kernel still
	// trickles through the throttled link).
	waitFor(t, 30*time.Second, "every replay response to end", func() bool {
		for _, c := range cs {
			c.mu.Lock()
			n := len(c.endLog)
			c.mu.Unlock()
			if n == 0 {
				return false
			}
		}
		return true
	})
	before := make([]int, len(cs))
	for i, c := range cs {
		c.mu.Lock()
		end := c.endLog[0]
		c.mu.Unlock()
		evs := c.events()
		before[i] = len(evs)
		// What lastevent wrote before it closed may still sit in its kernel
		// buffer; the kernel drops an orphaned socket whose peer reads
		// slowly (zero window) with a reset, so the client's end is only
		// logged: the process's exit status says whether lastevent ended
		// the stream itself.
		t.Logf("%s: %d of %d replayed frames before the end (%s)", c.name, len(evs), frames-1, end)
		if len(evs) == 0 || evs[0].Data != faultTickData("bigr", 2) {
			t.Errorf("%s: the replay did not start right after the resumed id: %s", c.name, faultHistory(evs))
		}
		checkDelivery(t, c.name+" before the restart", evs, deliveryRules{seed: seed, tag: "bigr"})
	}

	// A new lastevent behind the same address: the clients resume with ids
	// of a generation it never had.
	front.OnConn(nil)
	p2 := startProxy(t, up.URL(), env...)
	front.SetTarget(p2.Addr)
	stopPace := faultPace(fd, 50*time.Millisecond)
	defer stopPace()
	clients.waitAll(t, fd.N()+3, 30*time.Second)
	stopPace()
	final := fd.Stop()
	clients.waitAll(t, final, 15*time.Second)
	clients.Stop()
	for i, c := range cs {
		evs := c.events()
		checkDelivery(t, c.name, evs, deliveryRules{seed: seed, tag: "bigr", final: final, syncs: []string{"system-sync"}})
		if n := faultSystemSyncs(evs); n != 1 {
			t.Errorf("%s: %d system-sync events, want 1 (at the restart)", c.name, n)
		} else if len(evs) > before[i] && evs[before[i]].Type != "system-sync" {
			t.Errorf("%s: the first event from the new process is %s, want system-sync", c.name, evs[before[i]])
		}
	}
}

// TestFaultProxySIGKILLRestart: lastevent is killed with SIGKILL under its
// clients and started again behind the same address. Every client resumes
// with an id of the dead process, gets exactly one system-sync, ids keep
// increasing (the new generation sorts after the old), and it ends with the
// upstream's sequence.
func TestFaultProxySIGKILLRestart(t *testing.T) {
	for _, mode := range []string{"session", "shared"} {
		t.Run(mode, func(t *testing.T) {
			seed := faultSeed(t)
			up := startUpstream(t)
			feed := up.Feed("/feed/k")
			env := []string{"LASTEVENT_MODE=" + mode, "LASTEVENT_LOG_LEVEL=info", "LASTEVENT_HEARTBEAT=300ms", "LASTEVENT_LINGER=60s"}
			p1 := startProxy(t, up.URL(), env...)
			front, err := faults.New(p1.Addr, faults.Options{Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(front.Close)
			tagOf := func(*http.Request) string { return "shared" }
			if mode == "session" {
				tagOf = faultClientTag
			}
			rng := newFaultRand(seed, 1)
			cs := make([]*faultClient, faultPick(5, 20))
			for i := range cs {
				name := fmt.Sprintf("k%02d", i)
				cs[i] = newFaultClient(name, "/feed/k", front.Addr, rng, "X-Fault-Client: "+name)
			}
			fd := faultStartFeeder(feed, 40*time.Millisecond, tagOf)
			defer fd.Stop()
			clients := startFaultClients(cs)
			defer clients.Stop()
			clients.waitAll(t, fd.N()+5, 20*time.Second)

			p1.Kill()
			oldGen := ""
			for _, c := range cs {
				c.mu.Lock()
				if g := c.lastID[:replay.TextLen-14]; g > oldGen {
					oldGen = g
				}
				c.mu.Unlock()
			}
			time.Sleep(300 * time.Millisecond) // frames sent now reach no lastevent
			p2 := startProxy(t, up.URL(), env...)
			front.SetTarget(p2.Addr)
			clients.waitAll(t, fd.N()+3, 20*time.Second)
			final := fd.Stop()
			clients.waitAll(t, final, 15*time.Second)
			clients.Stop()
			for _, c := range cs {
				evs := c.events()
				checkDelivery(t, c.name, evs, deliveryRules{seed: seed, tag: tagOf(&http.Request{Header: http.Header{"X-Fault-Client": {c.name}}}), final: final, syncs: []string{"system-sync"}})
				if n := faultSystemSyncs(evs); n != 1 {
					t.Errorf("%s: %d system-sync events, want exactly 1: %s", c.name, n, faultHistory(evs))
				}
				if last := evs[len(evs)-1].ID; last[:26] <= oldGen {
					t.Errorf("%s: ids after the restart (%s) do not sort after the dead process's generation %s", c.name, last, oldGen)
				}
			}
		})
	}
}

// TestFaultReconnectWhileStreamEnds: a client connects in the instant its
// stream is ending (its last client just left, LASTEVENT_LINGER=0): it must
// get 200 and a live event stream (a new stream, or system-sync), never an
// error status (EventSource gives up for good on one) nor a response that
// ends at once.
func TestFaultReconnectWhileStreamEnds(t *testing.T) {
	for _, mode := range []string{"shared", "session"} {
		t.Run(mode, func(t *testing.T) {
			seed := faultSeed(t)
			rng := newFaultRand(seed, 1)
			up := startUpstream(t)
			feed := up.Feed("/feed/race")
			p := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode, "LASTEVENT_LINGER=0", "LASTEVENT_LOG_LEVEL=info", "LASTEVENT_HEARTBEAT=1h")
			cycles := faultPick(30, 60)
			bad := map[string]int{}
			var firstBad string
			for i := range cycles {
				path := fmt.Sprintf("/feed/race?k=%d", i)
				a := dial(t, p.URL(), path)
				feed.Send("data: hello\n\n")
				ev, err := a.TryNext(5 * time.Second)
				if err != nil {
					t.Fatalf("cycle %d: first client: %v", i, err)
				}
				// The first client vanishes with a reset; lastevent learns
				// it at its next write, which the next frame causes.
				if tc, ok := a.conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				a.Close()
				time.Sleep(5 * time.Millisecond)
				feed.Send("data: next\n\n")
				// A burst of reconnects spread over the moment lastevent
				// finds the first client gone and ends its stream.
				var hdr []string
				if mode == "session" {
					hdr = []string{"Last-Event-ID: " + ev.ID}
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				offset := time.Duration(rng.IntN(300)) * time.Microsecond
				for j := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(offset + time.Duration(j)*250*time.Microsecond)
						status, body, ended := faultRawStatus(t, p.Addr, path, 50*time.Millisecond, hdr...)
						if status != "200 text/event-stream" || ended {
							status += map[bool]string{true: " (ended at once)", false: ""}[ended]
							mu.Lock()
							bad[status+" "+body]++
							if firstBad == "" {
								firstBad = fmt.Sprintf("cycle %d: %s %q", i, status, body)
							}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
			}
			if len(bad) > 0 {
				t.Errorf("a client reconnecting while its stream ended did not get a held event stream (seed %d): %v; first: %s", seed, bad, firstBad)
			}
		})
	}
}

// TestFaultReconnectWhileStreamEndsUpstreamHanging: the same instant made
// wide. The upstream accepts and never answers (a hung service), so the
// stream's reader sits in a connect attempt for LASTEVENT_UPSTREAM_TIMEOUT;
// its only client leaves (LASTEVENT_LINGER=0) and the stream is ending all
// that time. A client arriving meanwhile for the same key must get 200 and
// a held stream of its own, not the ending stream's refusal.
func TestFaultReconnectWhileStreamEndsUpstreamHanging(t *testing.T) {
	seed := faultSeed(t)
	up := startUpstream(t)
	upf, err := faults.New(up.Addr, faults.Options{Seed: seed, HoldBlackHole: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(upf.Close)
	upf.SetMode(faults.Hang, nil)
	p := startProxy(t, upf.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_LINGER=0", "LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_HEARTBEAT=100ms", "LASTEVENT_UPSTREAM_TIMEOUT=1500ms", "LASTEVENT_UPSTREAM_BACKOFF_MIN=10ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=20ms")
	for i := range faultPick(1, 2) {
		path := fmt.Sprintf("/feed/hang?k=%d", i)
		// The first client waits out the first attempt (held: 200), then
		// leaves with a reset while the second attempt hangs.
		a := dial(t, p.URL(), path)
		if tc, ok := a.conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		a.Close()
		time.Sleep(500 * time.Millisecond) // a few heartbeats: lastevent finds it gone
		status, body, ended := faultRawStatus(t, p.Addr, path, 500*time.Millisecond)
		if status != "200 text/event-stream" || ended {
			t.Errorf("cycle %d: a client of a stream that was ending got %s %q (ended: %v), want 200 and a held event stream (seed %d)", i, status, body, ended, seed)
		}
	}
}

// faultRawStatus sends one SSE request and returns "code media-type", the start
// of the body, and for a 200 whether the stream ended within hold (an ended
// response is what lastevent answers when it cannot attach the client).
func faultRawStatus(t testing.TB, addr, path string, hold time.Duration, headers ...string) (string, string, bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "no answer: " + err.Error(), "", true
	}
	// The body of a 200 is an endless stream: the conn is closed, not drained.
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	status := fmt.Sprintf("%d %s", resp.StatusCode, mt)
	_ = conn.SetReadDeadline(time.Now().Add(hold))
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	ended := !faultIsTimeout(err)
	return status, string(b), ended
}

func faultIsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
