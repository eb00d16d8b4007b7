package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lastevent/lastevent/test/load"
)

// FanoutResult is one fan-out measurement: N clients on one stream of one
// proxy, latency = receive time - the generator's send time (same clock).
type FanoutResult struct {
	Measurement   string             `json:"measurement"` // "fanout"
	Mode          string             `json:"mode"`        // memory, redis-follower, redis-owner
	Round         string             `json:"round"`       // "1/2", ... or "all" (the rounds merged)
	Target        string             `json:"target"`
	Clients       int                `json:"clients"`
	Rate          int                `json:"rate"`
	WindowS       float64            `json:"window_s"`
	Events        int64              `json:"events"`   // sent by the generator in the window
	Expected      int64              `json:"expected"` // events * connected clients
	Delivered     int64              `json:"delivered"`
	DeliveredPct  float64            `json:"delivered_pct"`
	P50Ms         float64            `json:"p50_ms"`
	P90Ms         float64            `json:"p90_ms"`
	P99Ms         float64            `json:"p99_ms"`
	MaxMs         float64            `json:"max_ms"`
	Dups          int64              `json:"dups"`
	Gaps          int64              `json:"gaps"`
	IDRegressions int64              `json:"id_regressions"`
	Syncs         int64              `json:"syncs"`
	Malformed     int64              `json:"malformed"`
	NoID          int64              `json:"events_without_id"`
	Connected     int                `json:"connected"`
	ConnectErrors map[string]int     `json:"connect_errors,omitempty"`
	Disconnects   int64              `json:"unexpected_disconnects"`
	Roles         string             `json:"roles,omitempty"`
	CPUPct        map[string]float64 `json:"cpu_pct"` // % of one core over the window, per process
	MachineBusy   float64            `json:"machine_busy_pct"`
	Error         string             `json:"error,omitempty"`

	hist    *load.Histogram
	cpuSec  map[string]float64 // CPU seconds over the window
	busySec float64
	tookSec float64
}

// summarize fills the latency, delivery and CPU fields from the raw ones.
func (r *FanoutResult) summarize() {
	if r.Expected > 0 {
		r.DeliveredPct = round2(float64(r.Delivered) / float64(r.Expected) * 100)
	}
	r.P50Ms = ms(r.hist.Quantile(0.5))
	r.P90Ms = ms(r.hist.Quantile(0.9))
	r.P99Ms = ms(r.hist.Quantile(0.99))
	r.MaxMs = ms(r.hist.Max())
	r.CPUPct = map[string]float64{}
	if r.tookSec > 0 {
		for k, v := range r.cpuSec {
			r.CPUPct[k] = round1(v / r.tookSec * 100)
		}
		r.MachineBusy = round1(r.busySec / r.tookSec * 100)
	}
}

// mergeFanout sums the rounds of one mode.
func mergeFanout(rs []FanoutResult) FanoutResult {
	m := FanoutResult{Measurement: "fanout", Round: "all", hist: &load.Histogram{}, cpuSec: map[string]float64{}}
	for i, r := range rs {
		if i == 0 {
			m.Mode, m.Target, m.Clients, m.Rate, m.Roles = r.Mode, r.Target, r.Clients, r.Rate, r.Roles
		}
		if r.Error != "" {
			m.Error = strings.TrimPrefix(m.Error+"; ", "; ") + "round " + r.Round + ": " + r.Error
			continue
		}
		m.WindowS += r.WindowS
		m.Events += r.Events
		m.Expected += r.Expected
		m.Delivered += r.Delivered
		m.Dups += r.Dups
		m.Gaps += r.Gaps
		m.IDRegressions += r.IDRegressions
		m.Syncs += r.Syncs
		m.Malformed += r.Malformed
		m.NoID += r.NoID
		m.Disconnects += r.Disconnects
		if i == 0 || r.Connected < m.Connected {
			m.Connected = r.Connected
		}
		for k, v := range r.ConnectErrors {
			if m.ConnectErrors == nil {
				m.ConnectErrors = map[string]int{}
			}
			m.ConnectErrors[k] += v
		}
		if r.Roles != m.Roles {
			m.Roles += " | " + r.Roles
		}
		m.hist.Merge(r.hist)
		for k, v := range r.cpuSec {
			m.cpuSec[k] += v
		}
		m.busySec += r.busySec
		m.tookSec += r.tookSec
	}
	m.summarize()
	return m
}

// fanout connects n clients to addr/path (after the holders, if any, which
// keep the stream open where it must be opened first), waits warmup, then
// measures for window and waits drain for late events.
func (e *env) fanout(mode string, target *lastevent, topic string, watch []*lastevent) FanoutResult {
	c := e.cfg
	path := fmt.Sprintf("/broadcast?topic=%s&rate=%d&size=%d", topic, c.rate, c.size)
	window := c.window / time.Duration(c.rounds)
	r := FanoutResult{Measurement: "fanout", Mode: mode, Round: e.round, Target: target.name, Clients: c.clients, Rate: c.rate,
		WindowS: window.Seconds(), CPUPct: map[string]float64{}, hist: &load.Histogram{}}

	// Latency slots per client by seq - h0; sized for the window and drain
	// at twice the rate (a late generator catches up, it does not skip).
	slots := int(float64(c.rate)*(window+c.drain).Seconds()*2) + 200
	type fc struct {
		chk check
		lat []int64 // ns + 1; 0 = not received
		got atomic.Bool
		err error
	}
	var h0 atomic.Int64
	h0.Store(1 << 62) // nothing recorded before the window
	clients := make([]*fc, c.clients)
	conns := make([]*sse, c.clients)
	var connMu sync.Mutex
	var stopping atomic.Bool
	var disconnects atomic.Int64
	var wg sync.WaitGroup
	errKinds := map[string]int{}
	var connected atomic.Int64
	var failed atomic.Int64
	start := time.Now()
	for i := range clients {
		cl := &fc{lat: make([]int64, slots)}
		clients[i] = cl
		if c.ramp > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / c.ramp * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := dialSSE(target.addr, path, "", 10*time.Second)
			if err != nil {
				connMu.Lock()
				errKinds[errKind(err)]++
				connMu.Unlock()
				failed.Add(1)
				return
			}
			connMu.Lock()
			if stopping.Load() {
				connMu.Unlock()
				s.close()
				return
			}
			conns[i] = s
			connMu.Unlock()
			connected.Add(1)
			err = s.run(time.Time{}, func(ev *load.Event, now int64) bool {
				seq, sent, ok := cl.chk.see(ev)
				if !ok {
					return true
				}
				cl.got.Store(true)
				if off := seq - h0.Load(); off > 0 && off < int64(len(cl.lat)) {
					cl.lat[off] = now - sent + 1
				}
				return true
			})
			if !stopping.Load() {
				disconnects.Add(1)
				cl.err = err
			}
		}()
	}
	stopAll := func() {
		stopping.Store(true)
		connMu.Lock()
		for _, s := range conns {
			if s != nil {
				s.close()
			}
		}
		connMu.Unlock()
		wg.Wait()
	}
	deadline := time.Now().Add(30 * time.Second)
	for connected.Load()+failed.Load() < int64(c.clients) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Every client has seen a frame: the stream is live for all.
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, cl := range clients {
			if !cl.got.Load() {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.Connected = int(connected.Load())
	if len(errKinds) > 0 {
		r.ConnectErrors = errKinds
	}
	if r.Connected == 0 {
		stopAll()
		r.Error = "no client connected"
		return r
	}
	if len(watch) > 0 && len(clients) > 0 {
		var gen string
		if id := clients[0].chk.lastID; len(id) >= 26 {
			gen = string(id[:26])
		}
		var roles []string
		for _, le := range watch {
			roles = append(roles, le.name+"="+le.roleOf(gen))
		}
		r.Roles = strings.Join(roles, " ")
	}
	time.Sleep(c.warmup)

	first, err := e.up.head(topic)
	if err != nil {
		stopAll()
		r.Error = "generator /stats: " + err.Error()
		return r
	}
	h0.Store(first)
	cpu0 := e.cpuSample()
	busy0 := machineBusy()
	t0 := time.Now()
	time.Sleep(window)
	last, err := e.up.head(topic)
	took := time.Since(t0).Seconds()
	cpu1 := e.cpuSample()
	busy1 := machineBusy()
	time.Sleep(c.drain)
	stopAll()
	if err != nil {
		r.Error = "generator /stats: " + err.Error()
		return r
	}
	r.cpuSec = map[string]float64{}
	for k, v := range cpu1 {
		r.cpuSec[k] = v - cpu0[k]
	}
	r.busySec, r.tookSec = busy1-busy0, took
	r.Events = last - first
	for _, cl := range clients {
		if cl.chk.events == 0 && cl.chk.syncs == 0 {
			continue
		}
		r.Expected += r.Events
		for off := int64(1); off <= r.Events && off < int64(len(cl.lat)); off++ {
			if v := cl.lat[off]; v > 0 {
				r.hist.Record(v - 1)
				r.Delivered++
			}
		}
		r.Dups += cl.chk.dups
		r.Gaps += cl.chk.gaps
		r.IDRegressions += cl.chk.idRegressions
		r.Syncs += cl.chk.syncs
		r.Malformed += cl.chk.malformed
		r.NoID += cl.chk.noID
	}
	r.Disconnects = disconnects.Load()
	r.summarize()
	return r
}

// ResumeResult is one resume measurement.
type ResumeResult struct {
	Measurement string  `json:"measurement"` // "resume"
	Mode        string  `json:"mode"`        // memory, redis-other-replica, redis-other-replica-following
	Round       string  `json:"round"`       // "1/2", ... or "all"
	Read        string  `json:"read_on"`     // where the clients read before the cut
	Resume      string  `json:"resume_on"`   // where they reconnect
	Behind      int     `json:"behind"`      // K: frames missed
	Rate        int     `json:"rate"`
	Resumes     int     `json:"resumes"`
	Exact       int     `json:"exact"` // got exactly frames s+1..s+K in order, then stopped
	P50Ms       float64 `json:"p50_ms"`
	P90Ms       float64 `json:"p90_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	MinMs       float64 `json:"min_ms"`
	// From the resuming replica's /debug/stream-state, before and after.
	StreamsOpened uint64         `json:"streams_opened_on_resume_target"`
	ResumesSeen   uint64         `json:"resumes_counted_by_target"`
	Failures      []string       `json:"failures,omitempty"` // the first few
	Failed        int            `json:"failed"`
	FailKinds     map[string]int `json:"failed_by_kind,omitempty"`
	SlowCount     int            `json:"slow"` // resumes above slowResume
	Slow          []string       `json:"slow_sample,omitempty"`
	Error         string         `json:"error,omitempty"`

	lats []time.Duration
}

// summarize fills the quantiles from the latencies.
func (r *ResumeResult) summarize() {
	lats := r.lats
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	q := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		i := int(p*float64(len(lats))+0.999999) - 1
		return ms(int64(lats[min(max(i, 0), len(lats)-1)]))
	}
	r.Exact = len(lats)
	r.P50Ms, r.P90Ms, r.P99Ms = q(0.5), q(0.9), q(0.99)
	if len(lats) > 0 {
		r.MinMs, r.MaxMs = ms(int64(lats[0])), ms(int64(lats[len(lats)-1]))
	}
}

// mergeResume sums the rounds of one mode.
func mergeResume(rs []ResumeResult) ResumeResult {
	m := ResumeResult{Measurement: "resume", Round: "all"}
	for i, r := range rs {
		if i == 0 {
			m.Mode, m.Read, m.Resume, m.Behind, m.Rate = r.Mode, r.Read, r.Resume, r.Behind, r.Rate
		}
		if r.Error != "" {
			m.Error = strings.TrimPrefix(m.Error+"; ", "; ") + "round " + r.Round + ": " + r.Error
		}
		m.Resumes += r.Resumes
		m.StreamsOpened += r.StreamsOpened
		m.ResumesSeen += r.ResumesSeen
		m.Failed += r.Failed
		m.SlowCount += r.SlowCount
		for k, v := range r.FailKinds {
			if m.FailKinds == nil {
				m.FailKinds = map[string]int{}
			}
			m.FailKinds[k] += v
		}
		if len(m.Failures) < 5 {
			m.Failures = append(m.Failures, r.Failures[:min(len(r.Failures), 5-len(m.Failures))]...)
		}
		if len(m.Slow) < 5 {
			m.Slow = append(m.Slow, r.Slow[:min(len(r.Slow), 5-len(m.Slow))]...)
		}
		m.lats = append(m.lats, r.lats...)
	}
	m.summarize()
	return m
}

// watcher follows a stream on one proxy and publishes the newest sequence
// it has seen: once it saw s+K, that proxy (and, for an owner, Redis) has
// frame s+K.
type watcher struct {
	s    *sse
	mu   sync.Mutex
	cond *sync.Cond
	seq  int64
	at   int64 // when it saw seq (ns)
	done bool
}

func startWatcher(addr, path string) (*watcher, error) {
	s, err := dialSSE(addr, path, "", 10*time.Second)
	if err != nil {
		return nil, err
	}
	w := &watcher{s: s}
	w.cond = sync.NewCond(&w.mu)
	go func() {
		var chk check
		_ = s.run(time.Time{}, func(ev *load.Event, _ int64) bool {
			seq, _, ok := chk.see(ev)
			if ok {
				w.mu.Lock()
				if seq > w.seq {
					w.seq, w.at = seq, time.Now().UnixNano()
				}
				w.mu.Unlock()
				w.cond.Broadcast()
			}
			return true
		})
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
		w.cond.Broadcast()
	}()
	return w, nil
}

// wait blocks until the watcher saw seq (true, and when it saw its newest
// sequence), its stream ended or the timeout passed (false).
func (w *watcher) wait(seq int64, timeout time.Duration) (int64, bool) {
	expired := false // guarded by w.mu
	t := time.AfterFunc(timeout, func() {
		w.mu.Lock()
		expired = true
		w.mu.Unlock()
		w.cond.Broadcast()
	})
	defer t.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.seq < seq && !w.done && !expired {
		w.cond.Wait()
	}
	return w.at, w.seq >= seq
}

func (w *watcher) close() { w.s.close() }

// resume runs e.cfg.resumes resumes: a client reads one live frame on
// readOn, disconnects, and when K more frames went out (the watcher on
// readOn saw them) reconnects to resumeOn with Last-Event-ID; the time from
// writing that request to reading frame s+K is the resume latency.
func (e *env) resume(mode, topic string, readOn, resumeOn *lastevent, holder *lastevent) ResumeResult {
	c := e.cfg
	path := fmt.Sprintf("/broadcast?topic=%s&rate=%d&size=%d", topic, c.rate, c.size)
	n := c.resumes / c.rounds
	if e.roundIdx < c.resumes%c.rounds {
		n++
	}
	r := ResumeResult{Measurement: "resume", Mode: mode, Round: e.round, Read: readOn.name, Resume: resumeOn.name, Behind: c.behind, Rate: c.rate, Resumes: n}
	w, err := startWatcher(readOn.addr, path)
	if err != nil {
		r.Error = "watcher: " + err.Error()
		return r
	}
	defer w.close()
	if _, ok := w.wait(1, 10*time.Second); !ok {
		r.Error = "watcher got no frame"
		return r
	}
	if holder != nil {
		h, err := startWatcher(holder.addr, path)
		if err != nil {
			r.Error = "holder: " + err.Error()
			return r
		}
		defer h.close()
		if _, ok := h.wait(1, 10*time.Second); !ok {
			r.Error = "holder got no frame"
			return r
		}
	}
	before, _ := resumeOn.state()

	var mu sync.Mutex
	var lats []time.Duration
	var fails, slow []string
	kinds := map[string]int{}
	fail := func(s string) {
		mu.Lock()
		fails = append(fails, s)
		kinds[failKind(s)]++
		mu.Unlock()
	}
	cycle := time.Duration(float64(c.behind) / float64(c.rate) * float64(time.Second))
	par := min(c.resumePar, r.Resumes)
	var wg sync.WaitGroup
	for i := range par {
		n := r.Resumes / par
		if i < r.Resumes%par {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(cycle * time.Duration(i) / time.Duration(par)) // spread the resumes over a cycle
			for range n {
				lat, detail, err := e.resumeOnce(path, readOn, resumeOn, w)
				if err != nil {
					fail(err.Error())
					continue
				}
				mu.Lock()
				lats = append(lats, lat)
				if detail != "" {
					slow = append(slow, detail)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	after, _ := resumeOn.state()
	r.StreamsOpened = after.Totals.StreamsOpened - before.Totals.StreamsOpened
	r.ResumesSeen = after.Totals.Resumes - before.Totals.Resumes
	r.Failed = len(fails)
	if len(kinds) > 0 {
		r.FailKinds = kinds
	}
	if len(fails) > 5 {
		fails = fails[:5]
	}
	r.Failures = fails
	r.SlowCount = len(slow)
	if len(slow) > 5 {
		slow = slow[:5]
	}
	r.Slow = slow
	r.lats = lats
	r.summarize()
	return r
}

// resumeOnce is one cut and resume; it returns the time from the resume
// request to frame s+K, or why the resume was not exact.
func (e *env) resumeOnce(path string, readOn, resumeOn *lastevent, w *watcher) (time.Duration, string, error) {
	k := int64(e.cfg.behind)
	s, err := dialSSE(readOn.addr, path, "", 10*time.Second)
	if err != nil {
		return 0, "", fmt.Errorf("first connect to %s: %v", readOn.name, err)
	}
	var chk check
	var seq0 int64
	var id0 string
	err = s.run(time.Now().Add(10*time.Second), func(ev *load.Event, _ int64) bool {
		seq, _, ok := chk.see(ev)
		if ok && ev.HasID {
			seq0, id0 = seq, string(ev.ID)
			return false
		}
		return true
	})
	s.close()
	if seq0 == 0 {
		return 0, "", fmt.Errorf("no live frame on %s: %v", readOn.name, err)
	}
	sawAt, ok := w.wait(seq0+k, 10*time.Second+time.Duration(float64(k)/float64(e.cfg.rate)*float64(time.Second)))
	if !ok {
		return 0, "", fmt.Errorf("watcher on %s did not see seq %d", readOn.name, seq0+k)
	}
	s, err = dialSSE(resumeOn.addr, path, id0, 10*time.Second)
	if err != nil {
		return 0, "", fmt.Errorf("resume on %s: %v", resumeOn.name, err)
	}
	defer s.close()
	sentAt := s.sentAt.UnixNano()
	next := seq0 + 1
	lastID := id0
	var lat time.Duration
	var first, beforeLast, afterLast int64 // arrival of frames s+1, s+K-1, s+K+1, ns after the request
	var bad error
	err = s.run(time.Now().Add(10*time.Second), func(ev *load.Event, now int64) bool {
		if isSync(ev) {
			bad = fmt.Errorf("resume on %s after %s (seq %d): %s %s before seq %d", resumeOn.name, id0, seq0, ev.Type, ev.Data, next)
			return false
		}
		seq, _, ok := load.ParsePayload(ev.Data)
		if !ok {
			bad = fmt.Errorf("resume on %s: malformed data %q", resumeOn.name, ev.Data)
			return false
		}
		if !ev.HasID || string(ev.ID) <= lastID {
			bad = fmt.Errorf("resume on %s after %s: id %q not above %q", resumeOn.name, id0, ev.ID, lastID)
			return false
		}
		lastID = string(ev.ID)
		if seq != next {
			bad = fmt.Errorf("resume on %s after %s (seq %d): got seq %d, want %d", resumeOn.name, id0, seq0, seq, next)
			return false
		}
		switch seq {
		case seq0 + 1:
			first = now - sentAt
		case seq0 + k - 1:
			beforeLast = now - sentAt
		case seq0 + k:
			lat = time.Duration(now - sentAt)
			if lat < slowResume {
				return false
			}
		case seq0 + k + 1:
			// a slow resume: see whether frame s+K came alone
			afterLast = now - sentAt
			return false
		}
		next++
		return true
	})
	if bad != nil {
		return 0, "", bad
	}
	if lat == 0 {
		return 0, "", fmt.Errorf("resume on %s after %s (seq %d): stopped at seq %d of %d: %v", resumeOn.name, id0, seq0, next-1, seq0+k, err)
	}
	detail := ""
	if lat >= slowResume {
		detail = fmt.Sprintf("after seq %d: frame s+1 at %.2f ms, s+K-1 at %.2f ms, s+K at %.2f ms, s+K+1 at %.2f ms after the request; the watcher on %s saw s+K %.2f ms before the request",
			seq0, ms(first), ms(beforeLast), ms(int64(lat)), ms(afterLast), readOn.name, ms(sentAt-sawAt))
	}
	return lat, detail, nil
}

// failKind names what went wrong in a resume (see resumeOnce's errors).
func failKind(s string) string {
	for _, k := range []string{"system-sync", "sync-required", "got seq", "not above", "stopped at", "malformed", "watcher", "first connect", "no live frame"} {
		if strings.Contains(s, k) {
			return strings.TrimSuffix(k, " at")
		}
	}
	return "other"
}

// slowResume is the resume latency above which a resume's frame timings are
// reported.
const slowResume = 5 * time.Millisecond

func ms(ns int64) float64 { return float64(ns/1000) / 1000 }

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// machineBusy is the machine's non-idle CPU time so far, in seconds (all
// cores), from /proc/stat.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var total, idle float64
	for i, v := range f[1:] {
		var n float64
		fmt.Sscan(v, &n)
		if i < 8 { // user nice system idle iowait irq softirq steal
			total += n
		}
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return (total - idle) / 100
}
