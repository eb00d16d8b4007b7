package test

// Dead clients. A client that vanished (its host is gone: no FIN, no RST,
// no ACK) is found through TCP_USER_TIMEOUT and keepalive on the accepted
// connection (LASTEVENT_CLIENT_DEAD_TIMEOUT); a client that is there but
// stopped reading is found through the per-write deadline
// (LASTEVENT_WRITE_TIMEOUT) once the kernel buffers are full. Both are
// dropped within a bounded time and leave the connection count.
//
// The black hole is real at the TCP level on 127.0.0.1: a classic BPF
// socket filter on the client's socket (faults.DropIncoming, or the fault
// proxy's BlackHole on its own sockets) makes the kernel drop every segment
// lastevent sends, unacknowledged, as with a host that went away. No network
// namespace or firewall is needed (there is no iptables/nft on this machine,
// and tc has no qdisc modules).

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/faults"
	"github.com/lastevent/lastevent/test/upstream"
)

// faultGen is the generation part of an id.
func faultGen(id string) string {
	g, _, _ := strings.Cut(id, "-")
	return g
}

// faultStreamConns returns the connection count of the stream of generation gen
// (-1 when the stream is not listed).
func faultStreamConns(st streamState, gen string) int {
	for _, s := range st.Streams {
		if s.Generation == gen {
			return s.Connections
		}
	}
	return -1
}

// faultDetectTimes black-holes each client (via hole) at once and measures how
// long lastevent takes to drop each one (its stream's connection count
// falls to 0), up to limit; a client not dropped by then gets -1.
func faultDetectTimes(t *testing.T, p *proc, gens []string, hole func(i int), limit time.Duration) []time.Duration {
	t.Helper()
	start := time.Now()
	for i := range gens {
		hole(i)
	}
	out := make([]time.Duration, len(gens))
	for i := range out {
		out[i] = -1
	}
	for time.Since(start) < limit {
		st := p.state(t)
		left := 0
		for i, g := range gens {
			if out[i] >= 0 {
				continue
			}
			if faultStreamConns(st, g) == 0 {
				out[i] = time.Since(start)
			} else {
				left++
			}
		}
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return out
}

func faultDurations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		if d < 0 {
			s[i] = "not dropped"
		} else {
			s[i] = d.Round(10 * time.Millisecond).String()
		}
	}
	return strings.Join(s, " ")
}

// faultDeadCandidates starts n session-mode clients through base and returns
// them with their streams' generations, once each has seen a frame.
func faultDeadCandidates(t *testing.T, base string, up *upstream.Server, n int) ([]*sseClient, []string) {
	t.Helper()
	feed := up.Feed("/feed/dead")
	before := feed.Conns()
	cs := make([]*sseClient, n)
	for i := range cs {
		cs[i] = dial(t, base, "/feed/dead")
	}
	if !feed.WaitConns(before+n, 10*time.Second) {
		t.Fatal("upstream connections missing")
	}
	feed.Send("data: hello\n\n")
	gens := make([]string, n)
	for i, c := range cs {
		gens[i] = faultGen(c.Next(10 * time.Second).ID)
	}
	return cs, gens
}

func TestFaultDeadClientBlackHole(t *testing.T) {
	const dead = 2 * time.Second
	const hb = 500 * time.Millisecond
	// Bound: the dead timeout, a heartbeat or two to have unacknowledged
	// data in flight, and generous slack for busy machines.
	bound := dead + 2*hb + 10*time.Second
	env := func(deadTimeout string) []string {
		return []string{"LASTEVENT_MODE=session", "LASTEVENT_LOG_LEVEL=info", "LASTEVENT_HEARTBEAT=" + hb.String(),
			"LASTEVENT_CLIENT_DEAD_TIMEOUT=" + deadTimeout, "LASTEVENT_WRITE_TIMEOUT=60s", "LASTEVENT_LINGER=60s"}
	}
	n := faultPick(3, 5)
	t.Run("client-socket", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t)
		p := startProxy(t, up.URL(), env(dead.String())...)
		cs, gens := faultDeadCandidates(t, p.URL(), up, n)
		ds := faultDetectTimes(t, p, gens, func(i int) {
			if err := faults.DropIncoming(cs[i].conn); err != nil {
				t.Fatal(err)
			}
		}, bound)
		t.Logf("black-holed clients dropped after: %s (LASTEVENT_CLIENT_DEAD_TIMEOUT=%v, heartbeat %v, bound %v)", faultDurations(ds), dead, hb, bound)
		for i, d := range ds {
			if d < 0 {
				t.Errorf("client %d: still connected %v after it was black-holed", i, bound)
			}
		}
	})
	t.Run("fault-proxy", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t)
		p := startProxy(t, up.URL(), env(dead.String())...)
		fp, err := faults.New(p.Addr, faults.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fp.Close)
		_, gens := faultDeadCandidates(t, fp.URL(), up, n)
		conns := fp.Conns()
		ds := faultDetectTimes(t, p, gens, func(i int) {
			if i == 0 {
				for _, c := range conns {
					c.Do(faults.BlackHole)
				}
			}
		}, bound)
		t.Logf("clients black-holed by the fault proxy dropped after: %s", faultDurations(ds))
		for i, d := range ds {
			if d < 0 {
				t.Errorf("client %d: still connected %v after it was black-holed", i, bound)
			}
		}
	})
	if testing.Short() {
		return
	}
	// The control: without TCP_USER_TIMEOUT (0 keeps the OS defaults) the
	// same black hole goes unnoticed, heartbeats "succeeding" into the
	// kernel buffer: it is the setting that finds the dead client.
	t.Run("os-defaults", func(t *testing.T) {
		t.Parallel()
		up := startUpstream(t)
		p := startProxy(t, up.URL(), env("0")...)
		cs, gens := faultDeadCandidates(t, p.URL(), up, 1)
		wait := dead + 3*hb + 5*time.Second
		ds := faultDetectTimes(t, p, gens, func(i int) {
			if err := faults.DropIncoming(cs[i].conn); err != nil {
				t.Fatal(err)
			}
		}, wait)
		if ds[0] >= 0 {
			t.Logf("note: with the OS defaults the black hole was still noticed, after %v", ds[0])
		} else {
			t.Logf("with LASTEVENT_CLIENT_DEAD_TIMEOUT=0 the black-holed client is still counted after %v, as expected", wait)
		}
	})
}

// TestFaultDeadClientStopsReading: a client stops reading (the fault proxy
// stops reading from lastevent, with small buffers of its own) while frames
// keep coming. lastevent's writes fill the kernel buffers, then a write
// times out (LASTEVENT_WRITE_TIMEOUT) and the client is dropped; the other
// client on the same stream gets every frame meanwhile; and the stalled
// client, once it reads again, reconnects with its last id and ends with the
// upstream's sequence too.
func TestFaultDeadClientStopsReading(t *testing.T) {
	seed := faultSeed(t)
	up := startUpstream(t)
	feed := up.Feed("/feed/stall")
	const writeTimeout = time.Second
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_LOG_LEVEL=info", "LASTEVENT_HEARTBEAT=500ms",
		"LASTEVENT_WRITE_TIMEOUT="+writeTimeout.String(), "LASTEVENT_CLIENT_DEAD_TIMEOUT=0",
		"LASTEVENT_BUFFER_FRAMES=50000", "LASTEVENT_MAX_MEMORY=1GiB", "LASTEVENT_LINGER=60s")
	fp, err := faults.New(p.Addr, faults.Options{Buffer: 4096})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	connCh := make(chan *faults.Conn, 16)
	fp.OnConn(func(c *faults.Conn) { connCh <- c })

	rng := newFaultRand(seed, 1)
	healthy := newFaultClient("healthy", "/feed/stall", func() string { return p.Addr }, rng)
	stuck := newFaultClient("stuck", "/feed/stall", fp.Addr, rng)
	stuck.silence = time.Minute // it waits; lastevent must act
	tag := func(*http.Request) string { return "bigstall" }
	clients := startFaultClients([]*faultClient{healthy, stuck})
	defer clients.Stop()
	if !feed.WaitConns(1, 10*time.Second) {
		t.Fatal("no upstream connection")
	}
	waitFor(t, 10*time.Second, "both clients on the stream", func() bool { return p.state(t).Totals.Connections == 2 })
	fd := faultStartFeeder(feed, 2*time.Millisecond, tag)
	defer fd.Stop()
	clients.waitAll(t, fd.N()+5, 20*time.Second)

	stalledConn := <-connCh
	stalledConn.Do(faults.StopReadingServer)
	start := time.Now()
	sentAtStall := fd.N()
	var dropped time.Duration = -1
	for time.Since(start) < 60*time.Second {
		if p.state(t).Totals.Connections == 1 {
			dropped = time.Since(start)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	framesDuring := fd.N() - sentAtStall
	var bytesDuring int64
	for n := sentAtStall + 1; n <= sentAtStall+framesDuring; n++ {
		bytesDuring += int64(len(faultTickFrame("bigstall", n)))
	}
	slow := p.faultMetrics(t)[`lastevent_clients_closed_total{reason="slow"}`]
	t.Logf("stalled reader dropped after %v (%d frames, about %s, sent meanwhile; LASTEVENT_WRITE_TIMEOUT=%v); clients closed as slow: %v",
		dropped.Round(10*time.Millisecond), framesDuring, faultMiB(bytesDuring), writeTimeout, slow)
	if dropped < 0 {
		t.Fatalf("the stalled client is still connected after 60s")
	}
	if slow < 1 {
		t.Errorf(`lastevent_clients_closed_total{reason="slow"} = %v, want >= 1`, slow)
	}
	// It reads again: what the kernel held, then the end, then a resume.
	stalledConn.Resume()
	final := fd.Stop()
	clients.waitAll(t, final, 30*time.Second)
	clients.Stop()
	for _, c := range []*faultClient{healthy, stuck} {
		checkDelivery(t, c.name, c.events(), deliveryRules{seed: seed, tag: "bigstall", final: final})
	}
	if healthy.conns != 1 {
		t.Errorf("the healthy client needed %d connections, want 1", healthy.conns)
	}
	ends := make([]string, 0)
	for k, v := range stuck.ends {
		ends = append(ends, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(ends)
	t.Logf("stuck client: %d connections, ends %v", stuck.conns, ends)
}
