package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/test/load"
)

// Result is one run: one scenario against one target. It is printed as one
// JSON line.
type Result struct {
	Scenario string  `json:"scenario"`
	Runs     int     `json:"runs,omitempty"` // in the report: medians of this many runs
	Target   string  `json:"target"`         // direct, nginx, lastevent, raw
	Mode     string  `json:"mode,omitempty"`
	Clients  int     `json:"clients"`
	Rate     int     `json:"rate,omitempty"`
	Size     int     `json:"size,omitempty"`
	WindowS  float64 `json:"window_s,omitempty"`

	Established   int64          `json:"established"`
	ConnectErrors int64          `json:"connect_errors"`
	ErrorKinds    map[string]int `json:"connect_error_kinds,omitempty"`
	Disconnects   int64          `json:"disconnects"`

	Expected       int64    `json:"expected,omitempty"`
	Delivered      int64    `json:"delivered"`
	DeliveredRatio float64  `json:"delivered_ratio,omitempty"`
	EventsPerS     float64  `json:"events_per_s,omitempty"`
	Latency        *Latency `json:"latency_ms,omitempty"`
	Dups           int64    `json:"dups"`
	Gaps           int64    `json:"gaps"`
	Syncs          int64    `json:"syncs"`

	// The process under test (lastevent, or nginx master and workers); for
	// direct these stay empty and the upstream's figures stand alone.
	ProxyCPUPct *float64 `json:"proxy_cpu_pct,omitempty"` // % of one core over the window
	// The user-space part of ProxyCPUPct (utime); the rest is the kernel's
	// (stime: system calls, and the TCP work they do).
	ProxyUserCPUPct *float64 `json:"proxy_user_cpu_pct,omitempty"`
	ProxyRSSKiB     *int64   `json:"proxy_rss_kib,omitempty"`
	ProxyHWMKiB     *int64   `json:"proxy_peak_rss_kib,omitempty"`
	RSSPerConnKiB   *float64 `json:"rss_per_conn_kib,omitempty"`
	ProxyProcs      int      `json:"proxy_procs,omitempty"`
	// System calls of the process under test over the window (/proc/<pid>/io).
	ProxyReadsPerS  *float64 `json:"proxy_read_syscalls_per_s,omitempty"`
	ProxyWritesPerS *float64 `json:"proxy_write_syscalls_per_s,omitempty"`
	// TCP segments the whole machine sent per second over the window
	// (/proc/net/snmp OutSegs: every process, ACKs included).
	TCPSegsPerS float64 `json:"tcp_segments_per_s,omitempty"`

	UpstreamCPUPct        float64  `json:"upstream_cpu_pct"`
	UpstreamWritesPerS    float64  `json:"upstream_write_syscalls_per_s,omitempty"`
	UpstreamRSSKiB        int64    `json:"upstream_rss_kib,omitempty"`
	UpstreamRSSPerConnKiB *float64 `json:"upstream_rss_per_conn_kib,omitempty"`
	SwarmCPUPct           float64  `json:"swarm_cpu_pct"`

	CatchUp *CatchUp `json:"catch_up,omitempty"`

	Writes     int64   `json:"writes,omitempty"`
	WritesPerS float64 `json:"writes_per_s,omitempty"`

	Error string `json:"error,omitempty"`
}

// Latency is in milliseconds.
type Latency struct {
	P50, P90, P99, P999, Max, Mean float64
	Negative                       uint64 `json:",omitempty"`
}

// CatchUp is the reconnect storm's outcome.
type CatchUp struct {
	Behind    int64   `json:"behind"` // frames the upstream sent while the clients were away
	CaughtUp  int     `json:"caught_up"`
	AllMs     float64 `json:"all_ms"` // release to the last client caught up; -1 if some never did
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	ProxyCPUS float64 `json:"proxy_cpu_s,omitempty"`
}

func latencyOf(h *load.Histogram) *Latency {
	if h.Count() == 0 {
		return nil
	}
	ms := func(ns int64) float64 { return math.Round(float64(ns)/1e3) / 1e3 }
	return &Latency{
		P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(int64(h.Mean())), Negative: h.Negative(),
	}
}

func ptr[T any](v T) *T { return &v }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// scenario says what a run of S1..S4 connects to.
type scenario struct {
	name, mode, topic string
	clients, rate     int
	broadcast         bool
}

func (e *env) scenario(name string) scenario {
	c := e.cfg
	switch name {
	case "S1":
		return scenario{name: "S1", mode: "session", clients: c.s1Clients, rate: c.s1Rate}
	case "S2":
		return scenario{name: "S2", mode: "shared", clients: c.s2Clients, rate: c.s2Rate, broadcast: true, topic: "s2"}
	case "S2X":
		return scenario{name: "S2X", mode: "shared", clients: c.s2Clients, rate: c.s2xRate, broadcast: true, topic: "s2x"}
	case "S3":
		return scenario{name: "S3", mode: "shared", clients: c.s3Clients, rate: 0, broadcast: true, topic: "idle"}
	default:
		return scenario{name: "S4", mode: "shared", clients: c.s4Clients, rate: c.s4Rate, broadcast: true, topic: "s4"}
	}
}

func (sc scenario) path(kind string) string {
	if !sc.broadcast {
		return fmt.Sprintf("/stream?rate=%d&size=%%d", sc.rate)
	}
	p := fmt.Sprintf("/broadcast?topic=%s&rate=%d&size=%%d", sc.topic, sc.rate)
	if kind != "lastevent" {
		// Without lastevent, only an upstream that issues ids and honours
		// Last-Event-ID can resume; lastevent's upstream stays a legacy one.
		p += "&ids=1"
	}
	return p
}

// runScenario runs S1..S4 against one target, with a fresh upstream and a
// fresh proxy.
func (e *env) runScenario(name, kind string) (r Result) {
	sc := e.scenario(name)
	r = Result{Scenario: name, Target: kind, Clients: sc.clients, Rate: sc.rate, Size: e.cfg.size}
	if kind == "lastevent" {
		r.Mode = sc.mode
	}
	tag := strings.ToLower(name) + "-" + kind
	up, err := startUpstream(e.dir, tag)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer up.Stop(syscall.SIGKILL, time.Second)
	t, err := e.startTarget(tag, kind, sc, up)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer t.stop()
	switch name {
	case "S1", "S2", "S2X":
		e.runSteady(&r, sc, kind, up, t)
	case "S3":
		e.runIdle(&r, sc, kind, up, t)
	case "S4":
		e.runStorm(&r, sc, kind, up, t)
	}
	if t.p != nil && t.p.Exited() {
		r.Error = strings.TrimSpace(r.Error + " " + kind + " exited during the run")
	}
	return r
}

func (e *env) startTarget(tag, kind string, sc scenario, up *upstream) (*target, error) {
	switch kind {
	case "direct":
		return &target{kind: "direct", addr: up.addr}, nil
	case "nginx":
		return startNginx(e.nginxBin, e.dir, tag, up)
	case "lastevent":
		o := lasteventOpts{bin: e.lasteventBin, mode: sc.mode, clients: sc.clients}
		if e.cfg.lasteventEnv != "" {
			o.extraEnv = strings.Split(e.cfg.lasteventEnv, ",")
		}
		if e.cfg.profile != "" && (sc.name == "S1" || sc.name == "S2" || sc.name == "S3") {
			o.bin, o.pprofVar = e.pprofBin, true
		}
		return startLastevent(e.dir, tag, up, o)
	}
	return nil, fmt.Errorf("unknown target %q", kind)
}

func (e *env) swarm(sc scenario, kind string, t *target) *load.Swarm {
	return load.NewSwarm(load.SwarmConfig{
		Addr:    t.addr,
		Path:    fmt.Sprintf(sc.path(kind), e.cfg.size),
		Clients: sc.clients,
		Ramp:    e.cfg.ramp,
		Sources: e.sources,
	})
}

// procSampler reads the target, the upstream and the swarm together.
type samples struct {
	proxy, up, self load.ProcSample
	segs            int64 // TCP segments the machine sent so far
	at              time.Time
}

func sampleAll(t *target, up *upstream) samples {
	s := samples{at: time.Now(), self: sampleSelf()}
	s.segs, _ = load.TCPOutSegs()
	if t.p != nil {
		s.proxy, _ = load.SampleTree(t.p.PID())
	}
	s.up, _ = load.Sample(up.PID())
	return s
}

func (e *env) fillCPU(r *Result, t *target, a, b samples) {
	secs := b.at.Sub(a.at).Seconds()
	if t.p != nil {
		r.ProxyCPUPct = ptr(round(100*(b.proxy.CPUSeconds-a.proxy.CPUSeconds)/secs, 1))
		r.ProxyUserCPUPct = ptr(round(100*(b.proxy.UserSeconds-a.proxy.UserSeconds)/secs, 1))
		r.ProxyRSSKiB = ptr(b.proxy.RSSKiB)
		r.ProxyHWMKiB = ptr(b.proxy.HWMKiB)
		r.ProxyProcs = b.proxy.Procs
		r.ProxyReadsPerS = ptr(round(float64(b.proxy.SyscR-a.proxy.SyscR)/secs, 0))
		r.ProxyWritesPerS = ptr(round(float64(b.proxy.SyscW-a.proxy.SyscW)/secs, 0))
	}
	r.UpstreamCPUPct = round(100*(b.up.CPUSeconds-a.up.CPUSeconds)/secs, 1)
	r.UpstreamRSSKiB = b.up.RSSKiB
	r.UpstreamWritesPerS = round(float64(b.up.SyscW-a.up.SyscW)/secs, 0)
	r.SwarmCPUPct = round(100*(b.self.CPUSeconds-a.self.CPUSeconds)/secs, 1)
	r.TCPSegsPerS = segsPerS(a.segs, b.segs, secs)
}

// segsPerS is the rate of TCP segments between two OutSegs readings (0 when
// either could not be read).
func segsPerS(from, to int64, secs float64) float64 {
	if from <= 0 || to <= from {
		return 0
	}
	return round(float64(to-from)/secs, 0)
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// runSteady is S1 and S2: connect, warm up, measure a window of send times,
// let late events arrive, count.
func (e *env) runSteady(r *Result, sc scenario, kind string, up *upstream, t *target) {
	base := sampleAll(t, up)
	sw := e.swarm(sc, kind, t)
	defer sw.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(float64(sc.clients)/e.cfg.ramp*float64(time.Second))+30*time.Second)
	defer cancel()
	// The window is aligned to the generator's 10 ms accounting.
	gran := 10 * time.Millisecond
	sw.SetWindow(math.MaxInt64, math.MaxInt64)
	sw.Connect(ctx)
	from := time.Now().Add(e.cfg.warmup).Truncate(gran).Add(gran)
	to := from.Add(e.cfg.window)
	sw.SetWindow(from.UnixNano(), to.UnixNano())
	sleepUntil(from)
	a := sampleAll(t, up)
	var prof chan string
	if e.cfg.profile != "" && kind == "lastevent" {
		prof = e.startCPUProfile(sc.name, t, e.cfg.window)
	}
	sleepUntil(to)
	b := sampleAll(t, up)
	time.Sleep(e.cfg.drain)
	tot := sw.Totals()
	if prof != nil {
		<-prof
		e.saveProfiles(sc.name, t)
	}

	r.WindowS = e.cfg.window.Seconds()
	r.Established, r.ConnectErrors, r.ErrorKinds, r.Disconnects = tot.Established, tot.ConnectErrors, sw.ErrorKinds(), tot.Disconnects
	r.Delivered, r.Dups, r.Gaps, r.Syncs = tot.InWindow, tot.Dups, tot.Gaps, tot.Syncs
	r.Latency = latencyOf(tot.Hist)
	r.EventsPerS = round(float64(tot.InWindow)/e.cfg.window.Seconds(), 0)
	stream, bcast, err := up.sent(from.UnixNano(), to.UnixNano())
	if err != nil {
		r.Error = "upstream /sent: " + err.Error()
	}
	if sc.broadcast {
		r.Expected = bcast * int64(sc.clients) // a client that failed to connect counts as missing
	} else {
		r.Expected = stream
	}
	if r.Expected > 0 {
		r.DeliveredRatio = round(float64(r.Delivered)/float64(r.Expected), 6)
	}
	e.fillCPU(r, t, a, b)
	if t.p != nil && tot.Established > 0 {
		r.RSSPerConnKiB = ptr(round(float64(b.proxy.RSSKiB-base.proxy.RSSKiB)/float64(tot.Established), 2))
	}
}

// runIdle is S3: many idle clients; the memory they cost.
func (e *env) runIdle(r *Result, sc scenario, kind string, up *upstream, t *target) {
	time.Sleep(300 * time.Millisecond) // let the process settle after its start
	base := sampleAll(t, up)
	sw := e.swarm(sc, kind, t)
	defer sw.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(float64(sc.clients)/e.cfg.ramp*float64(time.Second))+30*time.Second)
	defer cancel()
	sw.Connect(ctx)
	a := sampleAll(t, up)
	time.Sleep(e.cfg.settle)
	b := sampleAll(t, up)
	tot := sw.Totals()
	if e.cfg.profile != "" && kind == "lastevent" {
		e.saveProfiles(sc.name, t) // heap: where the idle connections' memory is
	}
	r.Established, r.ConnectErrors, r.ErrorKinds, r.Disconnects = tot.Established, tot.ConnectErrors, sw.ErrorKinds(), tot.Disconnects
	r.WindowS = e.cfg.settle.Seconds()
	e.fillCPU(r, t, a, b)
	if tot.Established > 0 {
		if t.p != nil {
			r.RSSPerConnKiB = ptr(round(float64(b.proxy.RSSKiB-base.proxy.RSSKiB)/float64(tot.Established), 2))
		}
		r.UpstreamRSSPerConnKiB = ptr(round(float64(b.up.RSSKiB-base.up.RSSKiB)/float64(tot.Established), 2))
	}
}

// runStorm is S4: everyone connected and receiving, all drop at once, the
// upstream goes on for s4-behind frames, all reconnect at the same instant
// with their Last-Event-ID; how long until every client has the frame that
// was the upstream's newest at the reconnect, and whether any frame came
// twice or not at all.
func (e *env) runStorm(r *Result, sc scenario, kind string, up *upstream, t *target) {
	sw := e.swarm(sc, kind, t)
	defer sw.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(float64(sc.clients)/e.cfg.ramp*float64(time.Second))+60*time.Second)
	defer cancel()
	sw.Connect(ctx)
	first := sw.Totals()
	if !sw.WaitAllReceived(ctx) {
		r.Error = "not every client received an event before the drop"
	}
	time.Sleep(time.Second)
	sw.DropAll()
	h0, err := up.head(sc.topic)
	if err != nil {
		r.Error = err.Error()
		return
	}
	for {
		h, err := up.head(sc.topic)
		if err != nil || h >= h0+int64(e.cfg.s4Behind) || ctx.Err() != nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	sw.ResetCounters()
	headAt, _ := up.head(sc.topic)
	a := sampleAll(t, up)
	release := sw.Storm(ctx, headAt)
	waitCtx, waitCancel := context.WithTimeout(ctx, 20*time.Second)
	all := sw.WaitCaughtUp(waitCtx, int(first.Established))
	waitCancel()
	b := sampleAll(t, up)
	time.Sleep(time.Second) // the live frames after the catch-up are checked too
	tot := sw.Totals()
	times := sw.CatchUpTimes(release)

	r.Established, r.ConnectErrors, r.ErrorKinds, r.Disconnects = tot.Established, tot.ConnectErrors, sw.ErrorKinds(), tot.Disconnects
	r.Dups, r.Gaps, r.Syncs = tot.Dups, tot.Gaps, tot.Syncs
	cu := &CatchUp{Behind: headAt - h0, CaughtUp: len(times), AllMs: -1}
	ms := func(d time.Duration) float64 { return round(float64(d)/1e6, 1) }
	if n := len(times); n > 0 {
		cu.P50Ms = ms(times[n/2])
		cu.P99Ms = ms(times[min(n-1, n*99/100)])
		if all {
			cu.AllMs = ms(times[n-1])
		}
	}
	if t.p != nil {
		cu.ProxyCPUS = round(b.proxy.CPUSeconds-a.proxy.CPUSeconds, 2)
	}
	r.CatchUp = cu
	e.fillCPU(r, t, a, b)
}

// runS5 is the raw bound: a plain Go program writing 100-byte messages to
// 1000 loopback connections as fast as it can, read by this process.
func (e *env) runS5() (r Result) {
	c := e.cfg
	r = Result{Scenario: "S5", Target: "raw", Clients: c.s5Conns, Size: c.size, WindowS: c.s5Dur.Seconds()}
	self, err := os.Executable()
	if err != nil {
		r.Error = err.Error()
		return r
	}
	p, out, err := load.StartChild("rawwrite", self, []string{"rawwrite", "-listen", "127.0.0.1:0",
		"-conns", fmt.Sprint(c.s5Conns), "-size", fmt.Sprint(c.size), "-duration", c.s5Dur.String()},
		load.BaseEnv(), filepath.Join(e.dir, "s5-rawwrite.log"), "stdout")
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer p.Stop(syscall.SIGKILL, time.Second)
	br := bufio.NewReader(out)
	line, err := load.ReadLine(br, 10*time.Second)
	if err != nil || !strings.HasPrefix(line, "listening ") {
		r.Error = fmt.Sprintf("rawwrite did not start: %q %v", line, err)
		return r
	}
	started := make(chan struct{})
	type readRes struct {
		n   int64
		err error
	}
	done := make(chan readRes, 1)
	go func() {
		n, err := load.RawRead(strings.TrimPrefix(line, "listening "), c.s5Conns, e.sources, started)
		done <- readRes{n, err}
	}()
	select {
	case <-started:
	case rr := <-done:
		r.Error = fmt.Sprint("raw read: ", rr.err)
		return r
	}
	s0 := sampleSelf()
	segs0, _ := load.TCPOutSegs()
	t0 := time.Now()
	line, err = load.ReadLine(br, c.s5Dur+30*time.Second)
	secs := time.Since(t0).Seconds()
	s1 := sampleSelf()
	segs1, _ := load.TCPOutSegs()
	r.TCPSegsPerS = segsPerS(segs0, segs1, secs)
	rr := <-done
	var res struct {
		Writes     int64
		Seconds    float64
		CPUSeconds float64 `json:"cpu_seconds"`
		SyscW      int64   `json:"syscw"`
	}
	if err != nil || json.Unmarshal([]byte(line), &res) != nil {
		r.Error = fmt.Sprintf("rawwrite result: %q %v", line, err)
		return r
	}
	r.Established = int64(c.s5Conns)
	r.Writes = res.Writes
	r.WritesPerS = round(float64(res.Writes)/res.Seconds, 0)
	r.Delivered = rr.n / int64(c.size)
	r.UpstreamCPUPct = round(100*res.CPUSeconds/res.Seconds, 1)
	r.UpstreamWritesPerS = round(float64(res.SyscW)/res.Seconds, 0)
	r.SwarmCPUPct = round(100*(s1.CPUSeconds-s0.CPUSeconds)/secs, 1)
	if rr.err != nil {
		r.Error = rr.err.Error()
	}
	return r
}

// Profiling (-profile): a CPU profile of lastevent over the S1/S2 window,
// then heap, allocs and mutex profiles (S3: heap only, with every client
// connected), and pprof -top of each.

func (e *env) pprofURL(t *target, name string) string {
	return "http://" + t.admin + "/debug/pprof/" + name
}

func (e *env) startCPUProfile(scen string, t *target, d time.Duration) chan string {
	ch := make(chan string, 1)
	go func() {
		path := filepath.Join(e.cfg.profile, scen+"-cpu.pprof")
		if err := fetch(fmt.Sprintf("%s?seconds=%d", e.pprofURL(t, "profile"), int(d.Seconds())), path); err != nil {
			logf("cpu profile: %v", err)
		}
		ch <- path
	}()
	return ch
}

func (e *env) saveProfiles(scen string, t *target) {
	for _, name := range []string{"heap", "allocs", "mutex", "goroutine"} {
		if err := fetch(e.pprofURL(t, name), filepath.Join(e.cfg.profile, scen+"-"+name+".pprof")); err != nil {
			logf("%s profile: %v", name, err)
		}
	}
	// The text form ends with runtime.MemStats: stacks (StackInuse) are not
	// in the heap profile, and with one goroutine per connection they count.
	if err := fetch(e.pprofURL(t, "heap")+"?debug=1", filepath.Join(e.cfg.profile, scen+"-memstats.txt")); err != nil {
		logf("memstats: %v", err)
	}
	// Keep the binary beside its profiles: pprof needs it for symbols of
	// stripped or moved builds.
	if b, err := os.ReadFile(e.pprofBin); err == nil {
		_ = os.WriteFile(filepath.Join(e.cfg.profile, "lastevent.bin"), b, 0o755)
	}
}

func fetch(url, path string) error {
	resp, err := httpc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

func (e *env) profileReport() {
	bin := filepath.Join(e.cfg.profile, "lastevent.bin")
	for _, scen := range []string{"S1", "S2", "S3"} {
		for _, kind := range []struct{ name, args string }{
			{"cpu", "-top -nodecount=45"},
			{"cpu", "-top -cum -nodecount=45"},
			{"allocs", "-top -sample_index=alloc_space -nodecount=30"},
			{"heap", "-top -sample_index=inuse_space -nodecount=30"},
			{"mutex", "-top -nodecount=20"},
		} {
			prof := filepath.Join(e.cfg.profile, scen+"-"+kind.name+".pprof")
			if _, err := os.Stat(prof); err != nil {
				continue
			}
			args := append([]string{"tool", "pprof"}, strings.Fields(kind.args)...)
			args = append(args, bin, prof)
			out, err := exec.Command("go", args...).CombinedOutput()
			name := scen + "-" + kind.name
			if strings.Contains(kind.args, "-cum") {
				name += "-cum"
			}
			txt := filepath.Join(e.cfg.profile, name+".txt")
			_ = os.WriteFile(txt, out, 0o644)
			if err != nil {
				logf("pprof %s: %v", name, err)
			} else {
				logf("wrote %s", txt)
			}
		}
	}
}
