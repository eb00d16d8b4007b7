package test

// The chaos test: many clients drop their connections at random points and
// come back with their last id while the upstream sends a numbered
// sequence. Each client must end with exactly the upstream's sequence (no
// duplicate, no gap), or an explicit sync event at every discontinuity.
//
// The seed is printed; rerun a failure with -seed=N or CHAOS_SEED=N.

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func init() {
	// Defined here unless another file of the package already has -seed.
	if flag.Lookup("seed") == nil {
		flag.Uint64("seed", 0, "seed of the chaos test (0: from CHAOS_SEED or the clock)")
	}
}

func chaosSeed(t *testing.T) uint64 {
	if f := flag.Lookup("seed"); f != nil {
		if n, err := strconv.ParseUint(f.Value.String(), 10, 64); err == nil && n != 0 {
			return n
		}
	}
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// chaosEntry is one event a chaos client consumed: data frame n, or a sync
// event (n == 0) with its reason.
type chaosEntry struct {
	n    int
	sync string
	id   string
}

type chaosResult struct {
	log        []chaosEntry
	conns      int
	unexpected []string // responses that ended or failed without the client dropping them
	cut        []string // chunks that did not hold whole frames
	err        error
}

type chaosConfig struct {
	mode     string
	buffer   int
	clients  int
	frames   int
	maxPause time.Duration // longest pause between a drop and the reconnect
	syncsOK  bool          // small buffer: discontinuities are allowed when marked
	deadline time.Duration
}

func TestChaos(t *testing.T) {
	t.Parallel()
	seed := chaosSeed(t)
	t.Logf("chaos seed %d (rerun with: go test ./test -run TestChaos -seed=%d, or CHAOS_SEED=%d)", seed, seed, seed)
	clients, frames := 40, 600
	if testing.Short() {
		clients, frames = 10, 150
	}
	for i, cfg := range []chaosConfig{
		{mode: "shared", buffer: 100000, clients: clients, frames: frames, maxPause: 20 * time.Millisecond},
		{mode: "session", buffer: 100000, clients: clients * 3 / 4, frames: frames, maxPause: 20 * time.Millisecond},
		{mode: "shared", buffer: 16, clients: clients / 2, frames: frames, maxPause: 80 * time.Millisecond, syncsOK: true},
	} {
		cfg.deadline = 20 * time.Second
		name := fmt.Sprintf("%s/buffer=%d", cfg.mode, cfg.buffer)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runChaos(t, seed+uint64(i)*1000003, cfg)
		})
	}
}

func runChaos(t *testing.T, seed uint64, cfg chaosConfig) {
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE="+cfg.mode, fmt.Sprintf("LASTEVENT_BUFFER_FRAMES=%d", cfg.buffer),
		"LASTEVENT_LINGER=60s", "LASTEVENT_HEARTBEAT=1s", "LASTEVENT_LOG_LEVEL=info")
	const path = "/feed/chaos"
	feed := up.Feed(path)

	// Everyone is connected before the first frame: a client that connects
	// without an id starts live, so the sequence starts at 1 for all.
	first := make([]*wireClient, cfg.clients)
	for i := range first {
		first[i] = dialWire(t, p.URL(), path)
	}
	waitFor(t, 10*time.Second, "all clients attached", func() bool {
		if cfg.mode == "session" && feed.Conns() != cfg.clients {
			return false
		}
		return p.state(t).Totals.Connections == int64(cfg.clients)
	})

	deadline := time.Now().Add(cfg.deadline)
	results := make([]chaosResult, cfg.clients)
	var wg sync.WaitGroup
	for i := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			results[i] = chaosClient(t, p, path, first[i], rng, cfg, deadline)
		}()
	}
	// The upstream: frames 1..N, at an uneven pace with bursts.
	rng := rand.New(rand.NewPCG(seed, 1<<32))
	for k := 1; k <= cfg.frames; k++ {
		feed.Send(fmt.Sprintf("data: %d\n\n", k))
		switch r := rng.IntN(20); {
		case r == 0: // a burst follows
		case r < 3:
			time.Sleep(5 * time.Millisecond)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	// Then "end" frames until every client is done: a client whose last
	// resume was answered with sync-required at the head has seen the head
	// already, and learns here that nothing more is coming.
	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	for ended := false; !ended; {
		feed.Send("data: end\n\n")
		select {
		case <-clientsDone:
			ended = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	if d := feed.Dropped(); d != 0 {
		t.Fatalf("the fake upstream dropped %d sends: the test is invalid", d)
	}

	totalConns, totalSyncs := 0, 0
	for i, r := range results {
		totalConns += r.conns
		where := checkChaosLog(r.log, cfg.frames)
		var syncs []string
		for _, e := range r.log {
			if e.sync != "" {
				syncs = append(syncs, e.sync)
			}
		}
		totalSyncs += len(syncs)
		fail := func(format string, args ...any) {
			t.Errorf("seed %d, client %d (%d connections): %s\n  expected: 1-%d\n  seen:     %s",
				seed, i, r.conns, fmt.Sprintf(format, args...), cfg.frames, summarize(r.log))
		}
		switch {
		case r.err != nil:
			fail("%v", r.err)
		case where.problem != "":
			fail("%s", where.problem)
		case len(syncs) > 0 && !cfg.syncsOK:
			fail("%d sync events with a buffer of %d frames: %v", len(syncs), cfg.buffer, where.marks)
		case len(r.unexpected) > 0:
			fail("responses ended without the client dropping them: %v", r.unexpected)
		case len(r.cut) > 0:
			fail("chunks not holding whole frames: %q", r.cut[0])
		}
		if len(where.marks) > 0 && cfg.syncsOK && testing.Verbose() {
			t.Logf("client %d: sync events at %v", i, where.marks)
		}
	}
	t.Logf("%d clients, %d frames, %d connections in all, %d sync events", cfg.clients, cfg.frames, totalConns, totalSyncs)
}

// chaosClient consumes the stream until it has seen frame n, dropping the
// connection at random points and resuming with its last id.
func chaosClient(t *testing.T, p *proc, path string, c *wireClient, rng *rand.Rand, cfg chaosConfig, deadline time.Time) (res chaosResult) {
	lastID := ""
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		if c == nil {
			if time.Now().After(deadline) {
				res.err = fmt.Errorf("deadline passed while reconnecting")
				return res
			}
			var err error
			c, err = tryDialWire(t, p.URL(), path, "Last-Event-ID: "+lastID)
			if err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if c.Status != 200 {
				res.err = fmt.Errorf("resume with %s: status %d %q", lastID, c.Status, c.Body)
				return res
			}
		}
		res.conns++
		// This connection is dropped after a random number of events, or at a
		// random moment, whichever comes first; never before the first event
		// of all (without an id a shared client would start live).
		budget := 1 + rng.IntN(40)
		var dropAt time.Time
		if rng.IntN(2) == 0 {
			dropAt = time.Now().Add(time.Duration(1+rng.IntN(50)) * time.Millisecond)
		}
		dropped := false
		for !dropped {
			if time.Now().After(deadline) {
				res.err = fmt.Errorf("deadline passed; last id %s", lastID)
				return res
			}
			wait := time.Until(deadline)
			if !dropAt.IsZero() && lastID != "" {
				wait = time.Until(dropAt)
				if wait <= 0 {
					dropped = true
					break
				}
			}
			ev, err := c.TryNext(wait)
			if err == errTimeout {
				continue // the drop time (or the deadline) is checked above
			}
			if err != nil {
				res.unexpected = append(res.unexpected, fmt.Sprintf("after %s: %v", lastID, err))
				dropped = true
				break
			}
			e := chaosEntry{id: ev.ID}
			switch ev.Type {
			case "message":
				if ev.Data == "end" {
					ev.Data = strconv.Itoa(cfg.frames + 1)
				}
				n, err := strconv.Atoi(ev.Data)
				if err != nil {
					res.err = fmt.Errorf("unexpected data %q", ev.Data)
					return res
				}
				e.n = n
			case "sync-required", "system-sync":
				e.sync = ev.Type
				if ev.Type == "sync-required" {
					var reason string
					if _, r, ok := strings.Cut(ev.Data, `"reason":"`); ok {
						reason, _, _ = strings.Cut(r, `"`)
					}
					e.sync += "(" + reason + ")"
				}
			default:
				res.err = fmt.Errorf("unexpected event %v", ev)
				return res
			}
			res.log = append(res.log, e)
			lastID = ev.ID
			if e.n >= cfg.frames {
				res.cut = append(res.cut, c.CutChunks()...)
				return res
			}
			budget--
			if budget <= 0 {
				dropped = true
			}
		}
		res.cut = append(res.cut, c.CutChunks()...)
		c.Close()
		c = nil
		time.Sleep(time.Duration(rng.Int64N(int64(cfg.maxPause) + 1)))
	}
}

type chaosVerdict struct {
	problem string   // empty when the log is the upstream's sequence (with marked jumps)
	marks   []string // where sync events arrived
}

// checkChaosLog compares a client's log with 1..frames: each data frame must
// be the one after the previous, except right after a sync event, where it
// may jump forward (never back). Frame frames+1 stands for the "end" frames
// sent after the sequence. Ids must increase throughout.
func checkChaosLog(log []chaosEntry, frames int) chaosVerdict {
	var v chaosVerdict
	want, prevID, afterSync := 1, "", false
	for i, e := range log {
		if e.n == frames+1 && want == frames+1 {
			break // the "end" frame after frame frames: not part of the sequence
		}
		if prevID != "" && !(e.id > prevID) {
			v.problem = fmt.Sprintf("entry %d: id %s does not follow %s", i, e.id, prevID)
			return v
		}
		prevID = e.id
		if e.sync != "" {
			v.marks = append(v.marks, fmt.Sprintf("%s before frame %d (entry %d)", e.sync, want, i))
			afterSync = true
			continue
		}
		switch {
		case e.n == want:
		case e.n < want:
			v.problem = fmt.Sprintf("entry %d: frame %d again (duplicate), want %d", i, e.n, want)
			return v
		case !afterSync:
			v.problem = fmt.Sprintf("entry %d: frame %d, want %d: frames %d-%d skipped without a sync event", i, e.n, want, want, e.n-1)
			return v
		default:
			v.marks[len(v.marks)-1] += fmt.Sprintf(", skipping to %d", e.n)
		}
		want, afterSync = e.n+1, false
	}
	if want < frames+1 {
		v.problem = fmt.Sprintf("ended before frame %d", want)
	}
	return v
}

// summarize renders a log as ranges: "1-37 [sync-required(evicted)] 45-600".
func summarize(log []chaosEntry) string {
	var b strings.Builder
	for i := 0; i < len(log); {
		e := log[i]
		if e.sync != "" {
			fmt.Fprintf(&b, "[%s] ", e.sync)
			i++
			continue
		}
		j := i
		for j+1 < len(log) && log[j+1].sync == "" && log[j+1].n == log[j].n+1 {
			j++
		}
		if j == i {
			fmt.Fprintf(&b, "%d ", e.n)
		} else {
			fmt.Fprintf(&b, "%d-%d ", e.n, log[j].n)
		}
		i = j + 1
	}
	return strings.TrimSpace(b.String())
}

// TestChaosChecker: the checker itself catches duplicates, silent gaps and
// reordering, and accepts marked jumps.
func TestChaosChecker(t *testing.T) {
	t.Parallel()
	id := func(k int) string { return fmt.Sprintf("G-%05d", k) }
	seq := func(ns ...int) []chaosEntry {
		var log []chaosEntry
		for i, n := range ns {
			e := chaosEntry{n: n, id: id(i)}
			if n < 0 {
				e = chaosEntry{sync: "sync-required(evicted)", id: id(i)}
			}
			log = append(log, e)
		}
		return log
	}
	for _, tc := range []struct {
		log []chaosEntry
		ok  bool
	}{
		{seq(1, 2, 3, 4), true},
		{seq(1, 2, 3, 4, 5), true}, // 5 is the "end" frame
		{seq(1, 2, -1, 4), true},
		{seq(1, -1, 5), true}, // a marked jump past the end
		{seq(1, 2, 2, 3, 4), false},
		{seq(1, 3, 4), false},
		{seq(1, 2, 3), false},
		{seq(1, -1, 1, 2, 3, 4), false},
		{append(seq(1, 2), chaosEntry{n: 3, id: id(0)}, chaosEntry{n: 4, id: id(9)}), false},
	} {
		v := checkChaosLog(tc.log, 4)
		if (v.problem == "") != tc.ok {
			t.Errorf("%s: problem %q, want ok=%v", summarize(tc.log), v.problem, tc.ok)
		}
	}
}
