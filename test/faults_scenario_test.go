package test

// Client-side and upstream-side faults, through the Go fault proxy of
// test/faults: 100 clients (10 under -short) whose connections are reset,
// half-closed, black-holed, stalled, at random byte offsets and times, for
// many cycles; an upstream that is cut mid-frame, sends garbage, restarts,
// flaps, answers 503 or hangs. Then the faults stop and every client must
// end with the upstream's sequence: with client faults only, exactly (no
// sync event at all: nothing was lost upstream); with upstream faults, with
// a sync-required (upstream-reconnect) exactly where frames were lost.

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/faults"
)

type faultScenario struct {
	mode     string // session or shared
	clients  int
	dur      time.Duration
	every    time.Duration // the upstream's pace
	front    bool          // client-side faults
	upstream bool          // upstream-side faults
	syncs    []string      // sync reasons a client may see
}

// faultStats counts what was injected, for the log of a run.
type faultStats struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *faultStats) add(k string) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]int{}
	}
	s.m[k]++
	s.mu.Unlock()
}

func (s *faultStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, s.m[k])
	}
	return strings.TrimSpace(b.String())
}

// faultOnClient arms one random client-side fault on a new connection to
// lastevent, at a random byte offset of the response or a random time.
func faultOnClient(rng *faultRand, st *faultStats) func(*faults.Conn) {
	return func(c *faults.Conn) {
		off := func() int64 { return int64(1 + rng.IntN(6000)) }
		switch k := rng.IntN(100); {
		case k < 20:
			st.add("none")
		case k < 38:
			st.add("reset-at-byte")
			c.At(faults.ToClient, off(), faults.Reset)
		case k < 48:
			st.add("reset-after-time")
			c.After(rng.between(20*time.Millisecond, 2*time.Second), faults.Reset)
		case k < 56:
			st.add("close-at-byte")
			c.At(faults.ToClient, off(), faults.Close)
		case k < 64:
			// The client half-closes (shutdown(SHUT_WR)) and goes on
			// reading: the response must go on; later it is reset.
			st.add("client-half-close")
			c.After(rng.between(5*time.Millisecond, 500*time.Millisecond), faults.HalfCloseToServer)
			c.At(faults.ToClient, 6000+off(), faults.Reset)
		case k < 72:
			st.add("half-close-to-client")
			c.At(faults.ToClient, off(), faults.HalfCloseToClient)
		case k < 84:
			st.add("black-hole")
			c.At(faults.ToClient, off(), faults.BlackHole)
		default:
			// A reader that stops, for less or more than the client's
			// watchdog: it either goes on where it was or reconnects.
			st.add("stop-reading")
			stopAt := rng.between(20*time.Millisecond, 1500*time.Millisecond)
			resumeAfter := rng.between(100*time.Millisecond, 3500*time.Millisecond)
			go func() {
				for _, step := range []struct {
					d time.Duration
					f func()
				}{{stopAt, func() { c.Do(faults.StopReadingServer) }}, {resumeAfter, c.Resume}} {
					select {
					case <-c.Done():
						return
					case <-time.After(step.d):
						step.f()
					}
				}
			}()
		}
	}
}

// faultUpstreamChaos breaks the upstream side until stop: cuts mid-frame,
// garbage, restarts, flapping, 503s, hangs and aborts by the upstream itself.
func faultUpstreamChaos(rng *faultRand, st *faultStats, upf *faults.Proxy, feed func(), stop <-chan struct{}) {
	sleep := func(lo, hi time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(rng.between(lo, hi)):
			return true
		}
	}
	some := func(f func(*faults.Conn)) {
		for _, c := range upf.Conns() {
			if rng.IntN(3) == 0 {
				f(c)
			}
		}
	}
	defer func() {
		upf.SetMode(faults.Forward, nil)
		_ = upf.Up()
	}()
	for sleep(200*time.Millisecond, 1200*time.Millisecond) {
		switch k := rng.IntN(100); {
		case k < 25:
			st.add("cut-mid-frame")
			some(func(c *faults.Conn) {
				c.At(faults.ToClient, c.Forwarded(faults.ToClient)+int64(1+rng.IntN(3000)), faults.Reset)
			})
		case k < 35:
			st.add("fin-mid-frame")
			some(func(c *faults.Conn) {
				c.At(faults.ToClient, c.Forwarded(faults.ToClient)+int64(1+rng.IntN(3000)), faults.Close)
			})
		case k < 45:
			st.add("garbage-mid-stream")
			some(func(c *faults.Conn) {
				c.At(faults.ToClient, c.Forwarded(faults.ToClient)+int64(1+rng.IntN(3000)), faults.Garbage)
			})
		case k < 55:
			st.add("restart")
			upf.Down()
			sleep(100*time.Millisecond, 1500*time.Millisecond)
			_ = upf.Up()
		case k < 65:
			st.add("flapping")
			for range 3 + rng.IntN(4) {
				upf.Down()
				sleep(30*time.Millisecond, 200*time.Millisecond)
				_ = upf.Up()
				sleep(30*time.Millisecond, 300*time.Millisecond)
			}
		case k < 75:
			st.add("503-for-a-while")
			upf.SetMode(faults.Respond, []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"))
			upf.ResetAll()
			sleep(300*time.Millisecond, 2*time.Second)
			upf.SetMode(faults.Forward, nil)
		case k < 82:
			st.add("garbage-answers")
			upf.SetMode(faults.RespondGarbage, nil)
			upf.ResetAll()
			sleep(200*time.Millisecond, time.Second)
			upf.SetMode(faults.Forward, nil)
		case k < 88:
			st.add("hang")
			upf.SetMode(faults.Hang, nil)
			upf.ResetAll()
			sleep(500*time.Millisecond, 2500*time.Millisecond)
			upf.SetMode(faults.Forward, nil)
			upf.ResetAll() // the hanging ones
		default:
			st.add("upstream-abort")
			feed()
		}
	}
}

func runFaultScenario(t *testing.T, sc faultScenario) {
	seed := faultSeed(t)
	up := startUpstream(t)
	feed := up.Feed("/feed/f")
	upstreamURL := up.URL()
	var upf *faults.Proxy
	if sc.upstream {
		var err error
		upf, err = faults.New(up.Addr, faults.Options{Seed: seed, HoldBlackHole: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(upf.Close)
		upstreamURL = upf.URL()
	}
	p := startProxy(t, upstreamURL,
		"LASTEVENT_MODE="+sc.mode,
		"LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_HEARTBEAT=300ms",
		"LASTEVENT_WRITE_TIMEOUT=1s",
		"LASTEVENT_CLIENT_DEAD_TIMEOUT=2s",
		"LASTEVENT_LINGER=60s",
		"LASTEVENT_BUFFER_FRAMES=5000",
		"LASTEVENT_UPSTREAM_TIMEOUT=1s",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=50ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MAX=400ms",
	)
	front, err := faults.New(p.Addr, faults.Options{Seed: seed + 1, Buffer: 16 << 10, HoldBlackHole: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(front.Close)
	var st faultStats
	if sc.front {
		front.OnConn(faultOnClient(newFaultRand(seed, 2), &st))
	}
	tagOf := func(*http.Request) string { return "shared" }
	if sc.mode == "session" {
		tagOf = faultClientTag
	}
	cs := make([]*faultClient, sc.clients)
	for i := range cs {
		name := fmt.Sprintf("c%03d", i)
		cs[i] = newFaultClient(name, "/feed/f", front.Addr, newFaultRand(seed, uint64(100+i)), "X-Fault-Client: "+name)
	}
	fd := faultStartFeeder(feed, sc.every, tagOf)
	defer fd.Stop()
	clients := startFaultClients(cs)
	defer clients.Stop()

	stopChaos := make(chan struct{})
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		if sc.upstream {
			faultUpstreamChaos(newFaultRand(seed, 3), &st, upf, feed.Kill, stopChaos)
		}
	}()
	time.Sleep(sc.dur)

	// Calm: no new fault; stalled readers go on; the upstream is back.
	front.OnConn(nil)
	front.Calm()
	close(stopChaos)
	<-chaosDone
	if upf != nil {
		upf.Calm()
	}
	calm := fd.N()
	t.Logf("%s: %d clients, %v of faults, %d frames sent; injected: %s", sc.mode, sc.clients, sc.dur, calm, st.String())
	ok := clients.waitAll(t, calm+3, faultPick(30*time.Second, 60*time.Second))
	final := fd.Stop()
	ok = ok && clients.waitAll(t, final, 15*time.Second)
	clients.Stop()

	var conns, syncs int
	seen := map[string]int{}
	for _, c := range cs {
		evs := c.events()
		checkDelivery(t, c.name, evs, deliveryRules{seed: seed, tag: tagOf(&http.Request{Header: http.Header{"X-Fault-Client": {c.name}}}), final: final, syncs: sc.syncs})
		c.mu.Lock()
		conns += c.conns
		for k, v := range c.ends {
			seen[k] += v
		}
		if len(c.answers) > 0 {
			t.Errorf("%s got answers other than a 200 event stream: %v", c.name, c.answers)
		}
		c.mu.Unlock()
		for k, v := range faultCountTypes(evs) {
			if k != "tick" {
				syncs += v
			}
		}
	}
	t.Logf("%d client connections in all (ends: %v), %d sync events seen", conns, seen, syncs)
	if d := feed.Dropped(); d != 0 {
		t.Errorf("the fake upstream dropped %d sends (a stuck reader): the check above cannot be trusted", d)
	}
	if !ok {
		return
	}
	// Every connection the clients left, including black-holed ones that
	// nobody closed, leaves lastevent within a bounded time.
	start := time.Now()
	waitFor(t, 30*time.Second, "lastevent's connection count to return to 0", func() bool {
		return p.state(t).Totals.Connections == 0
	})
	t.Logf("connections back to 0 %v after the clients left", time.Since(start).Round(100*time.Millisecond))
}

func TestFaultClients(t *testing.T) {
	for _, mode := range []string{"session", "shared"} {
		t.Run(mode, func(t *testing.T) {
			runFaultScenario(t, faultScenario{
				mode:    mode,
				clients: faultPick(10, 100),
				dur:     faultPick(3*time.Second, 12*time.Second),
				every:   faultPick(50*time.Millisecond, map[string]time.Duration{"session": 100 * time.Millisecond, "shared": 50 * time.Millisecond}[mode]),
				front:   true,
			})
		})
	}
}

func TestFaultUpstream(t *testing.T) {
	for _, mode := range []string{"session", "shared"} {
		t.Run(mode, func(t *testing.T) {
			runFaultScenario(t, faultScenario{
				mode:     mode,
				clients:  faultPick(5, 20),
				dur:      faultPick(4*time.Second, 12*time.Second),
				every:    30 * time.Millisecond,
				upstream: true,
				syncs:    []string{"upstream-reconnect"},
			})
		})
	}
}

// Both sides at once.
func TestFaultBothSides(t *testing.T) {
	runFaultScenario(t, faultScenario{
		mode:     "session",
		clients:  faultPick(8, 40),
		dur:      faultPick(3*time.Second, 12*time.Second),
		every:    50 * time.Millisecond,
		front:    true,
		upstream: true,
		syncs:    []string{"upstream-reconnect"},
	})
}
