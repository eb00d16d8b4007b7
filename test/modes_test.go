package test

// The two modes: shared (clients with the same path, query and stream-key
// headers share one upstream connection) and session (every connection has
// its own, re-attached by its Last-Event-ID while it lingers).

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/upstream"
)

func TestSharedFanOut200(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared")
	const path, n, frames = "/feed/fanout", 200, 20
	feed := up.Feed(path)
	clients := make([]*wireClient, n)
	for i := range clients {
		clients[i] = dialWire(t, p.URL(), path)
	}
	waitFor(t, 10*time.Second, "200 connections in stream-state", func() bool {
		return p.state(t).Totals.Connections == n
	})
	if feed.Conns() != 1 || feed.Total() != 1 {
		t.Fatalf("200 clients on one URL: %d upstream connections open, %d opened; want 1 and 1", feed.Conns(), feed.Total())
	}
	for k := 1; k <= frames; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
	}
	ids := make([][]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= frames; k++ {
				ev, err := c.TryNext(10 * time.Second)
				if err != nil || ev.Data != fmt.Sprint(k) {
					errs <- fmt.Errorf("client %d: want frame %d, got %v (%v)", i, k, ev, err)
					return
				}
				ids[i] = append(ids[i], ev.ID)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for i := range ids {
		for k := range ids[i] {
			if ids[i][k] != ids[0][k] {
				t.Fatalf("client %d frame %d has id %s, client 0 has %s", i, k+1, ids[i][k], ids[0][k])
			}
			if k > 0 && !(ids[i][k] > ids[i][k-1]) {
				t.Fatalf("ids do not increase: %s then %s", ids[i][k-1], ids[i][k])
			}
		}
	}
	if feed.Conns() != 1 || feed.Total() != 1 {
		t.Fatalf("after the frames: %d upstream connections open, %d opened; want 1 and 1", feed.Conns(), feed.Total())
	}
}

// TestSharedStartsLive: a shared client without Last-Event-ID gets the
// frames from its arrival on, none of the buffered ones.
func TestSharedStartsLive(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared")
	const path = "/feed/live"
	feed := up.Feed(path)
	a := dialWire(t, p.URL(), path)
	for k := 1; k <= 5; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
	}
	expectFrames(t, "first client", a, 1, 5, "")
	b := dialWire(t, p.URL(), path)
	feed.Send("data: 6\n\n")
	evA, evB := a.Next(5*time.Second), b.Next(5*time.Second)
	if evB.Data != "6" {
		t.Fatalf("a late shared client got %v first, want the live frame 6", evB)
	}
	if evA.ID != evB.ID {
		t.Fatalf("the same frame has ids %s and %s", evA.ID, evB.ID)
	}
	if feed.Total() != 1 {
		t.Fatalf("%d upstream connections opened, want 1", feed.Total())
	}
}

// isolation runs two clients with different Authorization headers on the
// same path, the upstream sending each connection data naming its own
// header, and checks that each client sees only its own.
func isolation(t *testing.T, mode string) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode)
	const path = "/feed/private"
	feed := up.Feed(path)
	a := dialWire(t, p.URL(), path, "Authorization: "+authAlice)
	b := dialWire(t, p.URL(), path, "Authorization: "+authBob)
	waitFor(t, 5*time.Second, "two upstream connections", func() bool { return feed.Conns() == 2 })
	if st := p.state(t); len(st.Streams) != 2 {
		t.Fatalf("two stream keys, %d streams: %+v", len(st.Streams), st.Streams)
	}
	for k := 1; k <= 10; k++ {
		tagged(feed, k)
	}
	var genA, genB string
	for k := 1; k <= 10; k++ {
		evA, evB := a.Next(5*time.Second), b.Next(5*time.Second)
		if evA.Data != tagOf(path, authAlice, k) {
			t.Fatalf("alice got %v, want frame %d of her own stream", evA, k)
		}
		if evB.Data != tagOf(path, authBob, k) {
			t.Fatalf("bob got %v, want frame %d of his own stream", evB, k)
		}
		genA, _ = splitID(t, evA.ID)
		genB, _ = splitID(t, evB.ID)
	}
	if genA == genB {
		t.Fatalf("alice and bob share generation %s", genA)
	}
	a.NoEvent(100 * time.Millisecond)
	b.NoEvent(0)
	// Bob presenting alice's id does not get her stream.
	c := dialWire(t, p.URL(), path, "Authorization: "+authBob, "Last-Event-ID: "+makeID(genA, 3))
	if ev := c.Next(5 * time.Second); ev.Type != "sync-required" {
		t.Fatalf("bob resuming with alice's id got %v, want sync-required", ev)
	}
	tagged(feed, 11)
	if ev := c.Next(5 * time.Second); ev.Data != tagOf(path, authBob, 11) {
		t.Fatalf("bob resuming with alice's id then got %v", ev)
	}
}

func TestSharedIsolationByHeaders(t *testing.T) {
	t.Parallel()
	isolation(t, "shared")
}

func TestSessionIsolationByHeaders(t *testing.T) {
	t.Parallel()
	isolation(t, "session")
}

// TestSessionOwnUpstream: in session mode every client connection, even on
// the same URL with the same headers, gets its own upstream connection.
func TestSessionOwnUpstream(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=session")
	const path, n = "/feed/session", 5
	feed := up.Feed(path)
	clients := make([]*wireClient, n)
	for i := range clients {
		clients[i] = dialWire(t, p.URL(), path, "Authorization: "+authAlice)
	}
	waitFor(t, 5*time.Second, "one upstream connection per client", func() bool { return feed.Conns() == n })
	if feed.Total() != n {
		t.Fatalf("%d upstream connections opened for %d clients", feed.Total(), n)
	}
	st := p.state(t)
	if len(st.Streams) != n {
		t.Fatalf("%d streams for %d session clients", len(st.Streams), n)
	}
	for _, s := range st.Streams {
		if s.Connections != 1 {
			t.Fatalf("session stream with %d connections: %+v", s.Connections, s)
		}
	}
	feed.Send("data: hello\n\n")
	gens := map[string]bool{}
	for i, c := range clients {
		ev := c.Next(5 * time.Second)
		if ev.Data != "hello" {
			t.Fatalf("client %d got %v", i, ev)
		}
		gen, seq := splitID(t, ev.ID)
		if seq != 1 {
			t.Fatalf("client %d: first frame of its session has sequence %d", i, seq)
		}
		gens[gen] = true
	}
	if len(gens) != n {
		t.Fatalf("%d clients share %d generations", n, len(gens))
	}
}

// TestSessionLingerReattach: a session client that drops and comes back
// with its last id within LASTEVENT_LINGER re-attaches to its stream and
// gets what was sent meanwhile; once nobody has come back for the linger,
// the stream and its upstream connection are closed, and its ids turn into
// system-sync.
func TestSessionLingerReattach(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=session", "LASTEVENT_LINGER=5s", "LASTEVENT_HEARTBEAT=100ms")
	const path = "/feed/linger"
	feed := up.Feed(path)
	c := dialWire(t, p.URL(), path)
	for k := 1; k <= 3; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
	}
	last := expectFrames(t, "client", c, 1, 3, "")
	gen, _ := splitID(t, last)
	c.Close()
	waitFor(t, 5*time.Second, "the client to leave its stream", func() bool {
		st := p.state(t)
		i, ok := st.byGen(gen)
		return ok && st.Streams[i].Connections == 0
	})
	st := p.state(t)
	if i, _ := st.byGen(gen); st.Streams[i].Upstream != "live" || feed.Conns() != 1 {
		t.Fatalf("a lingering stream keeps its upstream: %+v, %d upstream connections", st.Streams[i], feed.Conns())
	}
	// Sent while nobody is attached: the lingering stream buffers it.
	for k := 4; k <= 6; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
	}
	waitFor(t, 5*time.Second, "the lingering stream to buffer frames 4-6", func() bool {
		st := p.state(t)
		i, ok := st.byGen(gen)
		return ok && st.Streams[i].LastID == makeID(gen, 6)
	})
	c2 := dialWire(t, p.URL(), path, "Last-Event-ID: "+last)
	last = expectFrames(t, "resumed client", c2, 4, 6, last)
	feed.Send("data: 7\n\n")
	last = expectFrames(t, "resumed client", c2, 7, 7, last)
	if g, _ := splitID(t, last); g != gen {
		t.Fatalf("resume moved to generation %s from %s", g, gen)
	}
	if feed.Total() != 1 {
		t.Fatalf("the resume opened a new upstream connection (%d in all)", feed.Total())
	}
	c2.Close()
	waitFor(t, 15*time.Second, "the stream to close after the linger", func() bool {
		_, ok := p.state(t).byGen(gen)
		return !ok && feed.Conns() == 0
	})
	// Its generation is gone now: system-sync, a new generation.
	c3 := dialWire(t, p.URL(), path, "Last-Event-ID: "+last)
	if ev := c3.Next(5 * time.Second); ev.Type != "system-sync" || !(ev.ID > last) {
		t.Fatalf("resume after the stream expired: got %v, want system-sync with an id after %s", ev, last)
	}
}

// TestClientArrivesWhileStreamCloses: a stream whose linger has run out but
// whose upstream reader has not returned yet (here it is stuck reconnecting
// to an upstream that does not answer) must not turn a new client away with
// an error status, which would stop an EventSource for good: shared mode
// gives it a fresh stream, session mode answers its resume with system-sync.
func TestClientArrivesWhileStreamCloses(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"shared", "session"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t)
			p := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode, "LASTEVENT_LINGER=100ms", "LASTEVENT_HEARTBEAT=50ms",
				"LASTEVENT_UPSTREAM_BACKOFF_MIN=10ms", "LASTEVENT_UPSTREAM_BACKOFF_MAX=20ms", "LASTEVENT_UPSTREAM_TIMEOUT=5s")
			const path = "/feed/closing"
			feed := up.Feed(path)
			a := dialWire(t, p.URL(), path)
			feed.Send("data: 1\n\n")
			last := a.Next(5 * time.Second)
			// The reconnect hangs for 3 s; meanwhile the client leaves and the
			// linger runs out.
			up.QueueStatus(path, upstream.Status{Code: 503, Delay: 3 * time.Second})
			feed.Kill()
			waitFor(t, 5*time.Second, "the hanging reconnect", func() bool { return len(requestsTo(up.Requests(), path)) >= 2 })
			a.Close()
			waitFor(t, 5*time.Second, "the client to leave", func() bool { return p.state(t).Totals.Connections == 0 })
			time.Sleep(time.Second) // the 100 ms linger expires; the reader is still in the 3 s reconnect
			gen, _ := splitID(t, last.ID)
			if _, ok := p.state(t).byGen(gen); !ok {
				t.Fatalf("test setup: the closing stream is gone already; the window was missed")
			}

			var hdrs []string
			if mode == "session" {
				hdrs = append(hdrs, "Last-Event-ID: "+last.ID)
			}
			b := dialWire(t, p.URL(), path, hdrs...)
			if b.Status != 200 {
				t.Fatalf("a client arriving while its stream closes: status %d %q, want 200", b.Status, b.Body)
			}
			if mode == "session" {
				if ev := b.Next(5 * time.Second); ev.Type != "system-sync" {
					t.Fatalf("resume into a closed session: %v, want system-sync", ev)
				}
			}
			waitFor(t, 5*time.Second, "a live upstream connection", func() bool { return feed.Conns() == 1 })
			feed.Send("data: 2\n\n")
			if ev := b.Next(5 * time.Second); ev.Data != "2" {
				t.Fatalf("then: %v, want frame 2", ev)
			}
		})
	}
}
