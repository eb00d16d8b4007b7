package test

// Memory: a bounded soak with connection churn (and some faults) whose RSS,
// goroutine count, open files, connection and stream totals return to a
// baseline; and the memory bound (LASTEVENT_MAX_MEMORY) holding with many
// streams, frames beyond it turning into an explicit sync-required.
//
// The soak lasts 60s, 5s under -short; -soak=10m (go test ./test -run Soak
// -args -soak=10m) or LASTEVENT_SOAK_DURATION=10m makes it longer.

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/faults"
)

var soakFlag = flag.Duration("soak", 0, "duration of TestSoakChurn (0: LASTEVENT_SOAK_DURATION, else 60s, 5s with -short)")

func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if v := os.Getenv("LASTEVENT_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("LASTEVENT_SOAK_DURATION=%q: %v", v, err)
		}
		return d
	}
	return faultPick(4*time.Second, 60*time.Second)
}

var (
	soakBinOnce sync.Once
	soakBin     string
	soakBinErr  error
)

// soakBinary is the lastevent executable whose memory the soak tests
// measure: the one under test, or under -race (whose shadow memory and
// heap overhead say nothing about lastevent's) a normal build beside it.
func soakBinary(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return binary
	}
	soakBinOnce.Do(func() {
		soakBin = filepath.Join(filepath.Dir(binary), "lastevent-norace")
		out, err := exec.Command("go", "build", "-o", soakBin, "..").CombinedOutput()
		if err != nil {
			soakBinErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if soakBinErr != nil {
		t.Fatalf("building lastevent without -race: %v", soakBinErr)
	}
	return soakBin
}

// soakSample is what the soak records of lastevent once a second.
type soakSample struct {
	at                 time.Duration
	fig                faultProcFigures
	conns, streams     float64
	buffered           float64
	goroutines         int
	haveGoroutineCount bool
}

func (s soakSample) String() string {
	g := "n/a"
	if s.haveGoroutineCount {
		g = fmt.Sprint(s.goroutines)
	}
	return fmt.Sprintf("t=%-5v rss=%-9s goroutines=%-5s threads=%-3d fds=%-4d conns=%-4v streams=%-4v buffered=%s",
		s.at.Round(time.Second), faultMiB(s.fig.RSS), g, s.fig.Threads, s.fig.FDs, s.conns, s.streams, faultMiB(int64(s.buffered)))
}

func (p *proc) soakSampleNow(t testing.TB, since time.Time) soakSample {
	t.Helper()
	m := p.faultMetrics(t)
	g, ok := p.faultGoroutines(t)
	return soakSample{at: time.Since(since), fig: p.faultFigures(t), conns: m["lastevent_connections"], streams: m["lastevent_streams"],
		buffered: m["lastevent_buffered_bytes"], goroutines: g, haveGoroutineCount: ok}
}

// soakSession is one client's life: connections that drop in various ways
// and resume with the last id, sometimes after a pause longer than
// LASTEVENT_LINGER; its whole history is checked at the end.
func soakSession(t *testing.T, seed uint64, rng *rand.Rand, name string, addr func() string, until time.Time) (conns int) {
	lr := newFaultRand(seed, rng.Uint64())
	var evs []event
	lastID := ""
	for k := 0; k < 1+rng.IntN(4) && time.Now().Before(until); k++ {
		c := newFaultClient(name, "/feed/soak", addr, lr, "X-Fault-Client: "+name)
		c.lastID = lastID
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); c.run(stop) }()
		for j := 0; j < 1+rng.IntN(4) && time.Now().Before(until); j++ {
			time.Sleep(time.Duration(50+rng.IntN(700)) * time.Millisecond)
			c.mu.Lock()
			if cur, ok := c.cur.(*net.TCPConn); ok && rng.IntN(2) == 0 {
				_ = cur.SetLinger(0) // leave with a reset rather than a FIN
			}
			c.mu.Unlock()
			c.Drop()
		}
		close(stop)
		<-done
		c.mu.Lock()
		evs = append(evs, c.evs...)
		lastID = c.lastID
		conns += c.conns
		if len(c.answers) > 0 {
			t.Errorf("%s got answers other than a 200 event stream: %v", name, c.answers)
		}
		c.mu.Unlock()
		if rng.IntN(4) == 0 && time.Now().Before(until) {
			time.Sleep(time.Duration(rng.IntN(2500)) * time.Millisecond) // around the linger
		}
	}
	checkDelivery(t, name, evs, deliveryRules{seed: seed, tag: name, syncs: []string{"slow-client", "evicted", "system-sync"}})
	return conns
}

func TestSoakChurn(t *testing.T) {
	dur := soakDuration(t)
	seed := faultSeed(t)
	up := startUpstream(t)
	feed := up.Feed("/feed/soak")
	const linger = time.Second
	p := startProxyBinary(t, soakBinary(t), up.URL(),
		"LASTEVENT_MODE=session",
		"LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_LINGER="+linger.String(),
		"LASTEVENT_BUFFER_FRAMES=300",
		"LASTEVENT_MAX_MEMORY=16MiB",
		"LASTEVENT_HEARTBEAT=500ms",
		"LASTEVENT_WRITE_TIMEOUT=1s",
		"LASTEVENT_CLIENT_DEAD_TIMEOUT=2s",
	)
	front, err := faults.New(p.Addr, faults.Options{Seed: seed, Buffer: 16 << 10, HoldBlackHole: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(front.Close)
	frng := newFaultRand(seed, 1)
	var injected faultStats
	front.OnConn(func(c *faults.Conn) {
		off := int64(1 + frng.IntN(8000))
		switch k := frng.IntN(100); {
		case k < 60:
		case k < 75:
			injected.add("reset")
			c.At(faults.ToClient, off, faults.Reset)
		case k < 83:
			injected.add("black-hole")
			c.At(faults.ToClient, off, faults.BlackHole)
		case k < 93:
			injected.add("stop-reading")
			c.At(faults.ToClient, off, faults.StopReadingServer)
			c.After(frng.between(500*time.Millisecond, 3*time.Second), faults.Reset)
		default:
			injected.add("half-close-to-client")
			c.At(faults.ToClient, off, faults.HalfCloseToClient)
		}
	})
	start := time.Now()
	idle := p.soakSampleNow(t, start)
	fd := faultStartFeeder(feed, 50*time.Millisecond, faultClientTag)
	defer fd.Stop()

	var samples []soakSample
	var smu sync.Mutex
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tk.C:
				s := p.soakSampleNow(t, start)
				smu.Lock()
				samples = append(samples, s)
				smu.Unlock()
			}
		}
	}()

	workers := faultPick(8, 30)
	until := start.Add(dur)
	var wg sync.WaitGroup
	var cmu sync.Mutex
	sessions, conns := 0, 0
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(1000+w)))
			for k := 0; time.Now().Before(until); k++ {
				n := soakSession(t, seed, rng, fmt.Sprintf("w%02d-s%03d", w, k), front.Addr, until)
				cmu.Lock()
				sessions++
				conns += n
				cmu.Unlock()
			}
		}()
	}
	// The baseline: the steady state once the churn has warmed up.
	time.Sleep(dur / 5)
	warm := p.soakSampleNow(t, start)
	wg.Wait()
	churnEnd := p.soakSampleNow(t, start)

	// Quiesce: every client gone, streams expire after the linger; lastevent
	// must give back its connections, streams, buffers, goroutines and files.
	front.Calm()
	// fasthttp keeps idle worker goroutines for 10s: under -short the
	// goroutine count may stay above the idle one by those.
	goroutineSlack := faultPick(5+workers*2, 5)
	back := func(s soakSample) bool {
		return s.conns == 0 && s.streams == 0 && s.buffered == 0 && feed.Conns() == 0 &&
			(!s.haveGoroutineCount || s.goroutines <= idle.goroutines+goroutineSlack) && s.fig.FDs <= idle.fig.FDs+5
	}
	var end soakSample
	deadline := time.Now().Add(45 * time.Second)
	for {
		end = p.soakSampleNow(t, start)
		if back(end) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	close(stopSampling)
	<-sampleDone

	t.Logf("soak %v: %d workers, %d sessions, %d client connections, %d frames; faults injected: %s", dur, workers, sessions, conns, fd.N(), injected.String())
	var peak soakSample
	smu.Lock()
	for i, s := range samples {
		if s.fig.RSS > peak.fig.RSS {
			peak = s
		}
		if i%max(len(samples)/8, 1) == 0 {
			t.Logf("  %s", s)
		}
	}
	smu.Unlock()
	t.Logf("idle before:   %s", idle)
	t.Logf("warm baseline: %s", warm)
	t.Logf("peak rss:      %s", peak)
	t.Logf("end of churn:  %s", churnEnd)
	t.Logf("quiesced:      %s", end)
	if !back(end) {
		t.Errorf("lastevent did not return to its idle state within 45s after the churn: %s (idle: %s; upstream connections open: %d)", end, idle, feed.Conns())
	}
	if !end.haveGoroutineCount {
		t.Logf("no goroutine count: lastevent exposes neither lastevent_goroutines in /metrics nor /debug/pprof")
	}
	// RSS: the Go heap does not shrink at once (and a -race build keeps its
	// shadow memory), so the bound is against the warm steady state, with
	// room for the heap goal: a leak of per-connection or per-stream state
	// over thousands of connections and streams grows past it.
	slack := max(warm.fig.RSS/2, 32<<20)
	if end.fig.RSS > warm.fig.RSS+slack {
		t.Errorf("RSS after the soak %s > warm baseline %s + %s", faultMiB(end.fig.RSS), faultMiB(warm.fig.RSS), faultMiB(slack))
	}
	if d := feed.Dropped(); d != 0 {
		t.Errorf("the fake upstream dropped %d sends", d)
	}
}

// TestSoakMaxMemory: many streams, each buffering far more than its share,
// stay within LASTEVENT_MAX_MEMORY all together (give or take the newest
// frame that each ring always keeps), the process's RSS grows by far less
// than the frames sent, and a client that resumes from a frame the bound
// evicted gets sync-required (evicted) and then live frames, never a
// silent gap.
func TestSoakMaxMemory(t *testing.T) {
	seed := faultSeed(t)
	up := startUpstream(t)
	maxMem := int64(faultPick(1<<20, 2<<20))
	streams := faultPick(40, 150)
	frames := faultPick(120, 100)
	p := startProxyBinary(t, soakBinary(t), up.URL(),
		"LASTEVENT_MODE=shared",
		"LASTEVENT_LOG_LEVEL=info",
		fmt.Sprintf("LASTEVENT_MAX_MEMORY=%d", maxMem),
		"LASTEVENT_BUFFER_FRAMES=1000",
		"LASTEVENT_LINGER=5m",
		"LASTEVENT_HEARTBEAT=1s",
	)
	path := func(i int) string { return fmt.Sprintf("/feed/mem%03d", i) }
	tag := "bigmem"
	// Open every stream; a few clients keep the id of their first frame.
	watched := 3
	firstIDs := make([]string, watched)
	for i := range streams {
		c := dial(t, p.URL(), path(i))
		if !up.Feed(path(i)).WaitConns(1, 10*time.Second) {
			t.Fatalf("stream %d: no upstream connection", i)
		}
		if i < watched {
			up.Feed(path(i)).Send(faultTickFrame(tag, 1))
			firstIDs[i] = c.Next(10 * time.Second).ID
		}
		c.Close()
	}
	// Phase 1 sends a share of frames up to and including a large one, so
	// that every per-stream buffer (parser, encoder, connection) has grown
	// to its size; phase 2 sends the bulk, many times the bound: the RSS
	// growth over phase 2 is what buffering it would cost.
	var sent, bulk int64
	sendRange := func(from, to int) int64 {
		var b int64
		for n := from; n <= to; n++ {
			for i := range streams {
				if i < watched && n == 1 {
					continue
				}
				f := faultTickFrame(tag, n)
				up.Feed(path(i)).Send(f)
				b += int64(len(f))
			}
		}
		waitFor(t, 120*time.Second, "lastevent to read every frame", func() bool {
			return p.faultMetrics(t)["lastevent_frames_in_total"] >= float64(streams*to)
		})
		return b
	}
	const warmFrames = 25 // frame 23 is one of the largest
	sent = sendRange(1, warmFrames)
	before := p.faultFigures(t)
	bulk = sendRange(warmFrames+1, frames)
	sent += bulk
	st := p.state(t)
	after := p.faultFigures(t)
	// Each ring keeps its newest frame even over the bound: frame `frames`
	// plus its id line, in a buffer rounded up to an allocation size class.
	newest := int64(len(faultTickFrame(tag, frames))+64) * 9 / 8
	bound := maxMem + int64(streams)*newest
	var kept int
	for _, s := range st.Streams {
		kept += s.Frames
	}
	t.Logf("%d streams x %d frames = %s sent; buffered %s in %d frames (bound %s, LASTEVENT_MAX_MEMORY=%s); RSS %s before the bulk of %s, %s after",
		streams, frames, faultMiB(sent), faultMiB(st.Totals.BufferedBytes), kept, faultMiB(bound), faultMiB(maxMem), faultMiB(before.RSS), faultMiB(bulk), faultMiB(after.RSS))
	if st.Totals.Streams != streams {
		t.Errorf("%d streams open, want %d", st.Totals.Streams, streams)
	}
	if st.Totals.MaxMemory != maxMem {
		t.Errorf("max_memory %d, want %d", st.Totals.MaxMemory, maxMem)
	}
	if st.Totals.BufferedBytes > bound {
		t.Errorf("buffered %d bytes > bound %d (LASTEVENT_MAX_MEMORY %d + the newest frame of each of %d streams)", st.Totals.BufferedBytes, bound, maxMem, streams)
	}
	if growth := after.RSS - before.RSS; growth > bulk/2 {
		t.Errorf("RSS grew by %s while %s of frames were sent under a bound of %s", faultMiB(growth), faultMiB(bulk), faultMiB(maxMem))
	}
	// Resuming from frame 1, long evicted: sync-required, then live.
	for i := range watched {
		c := dial(t, p.URL(), path(i), "Last-Event-ID: "+firstIDs[i])
		ev := c.Next(10 * time.Second)
		evs := []event{{ID: firstIDs[i], Type: "tick", Data: faultTickData(tag, 1)}, ev}
		for n := frames + 1; n <= frames+3; n++ {
			up.Feed(path(i)).Send(faultTickFrame(tag, n))
			evs = append(evs, c.Next(10*time.Second))
		}
		if ev.Type != "sync-required" {
			t.Errorf("stream %d: resuming from an evicted frame gave %s first, want sync-required", i, ev)
		}
		checkDelivery(t, fmt.Sprintf("resumer %d", i), evs, deliveryRules{seed: seed, tag: tag, final: frames + 3, syncs: []string{"evicted"}})
		c.Close()
	}
	if strings.Contains(p.Logs(), "panic") {
		t.Errorf("lastevent logged a panic")
	}
}
