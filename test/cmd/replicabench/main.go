// Command replicabench measures what Redis mode (LASTEVENT_STORE=redis)
// costs beside memory mode, in one run on 127.0.0.1 (about 100 s):
//
//	go run ./test/cmd/replicabench                 # Markdown report to stdout
//	go run ./test/cmd/replicabench -out /tmp/r.md  # ... to a file
//
// It builds lastevent (or takes -bin), starts test/load's generator (this
// command run as "replicabench upstream"), a private redis-server (a free
// port, no persistence) and three proxies in shared mode: M (memory mode)
// and replicas A and B (Redis mode, distinct node ids). Then:
//
//   - fan-out: -clients clients on one stream at -rate events/s for
//     -window, on M, on B (a follower: the stream is opened first on A, so
//     frames go upstream -> A -> Redis -> B -> client) and on A (the owner:
//     frames go to Redis before delivery). Delivery latency is receive time
//     minus the generator's send time; every client's sequences and ids are
//     checked (dups, gaps, ids not increasing).
//   - resume: -resumes times, a client reads one live frame, disconnects,
//     and once -behind more frames went out reconnects with Last-Event-ID:
//     to M again, and in Redis mode to the other replica (B, which has no
//     stream there, so it reads Redis; then again with B already following
//     the stream). Latency is the time from writing the request to reading
//     the K-th missed frame; the K frames must come exactly, in order.
//
// Every proxy runs with LASTEVENT_LINGER=0 (a stream closes when its last
// client leaves), so that a resume on B really finds no stream there; the
// streams a measurement needs are held open by a holder client.
//
// One JSON line per measurement goes to stdout, progress to stderr; the
// Markdown report goes to -out, or to stdout after the JSON lines. Anything
// that breaks the promise (a dup, a gap, ids not increasing, a sync event,
// an inexact resume, a warn/error log line) is listed as an anomaly, and the
// work directory with the proxies' logs is kept. Children are stopped by
// their PID; redis-server must be on PATH (or -redis-server).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/test/load"
)

type config struct {
	bin, redisBin, out, jsonOut string
	clients, rate, size         int
	window, warmup, drain       time.Duration
	ramp                        float64
	resumes, behind, resumePar  int
	rounds                      int
	following, keep, skipFanout bool
	skipResume                  bool
	timeout                     time.Duration
	argsForReport               string
}

type env struct {
	cfg        config
	dir, root  string
	up         *upstream
	rds        *redisServer
	m, a, b    *lastevent
	redisVer   string
	anomalies  []string
	jsonOutput *os.File
	round      string // "i/n" of the measurement running
	roundIdx   int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		os.Exit(runUpstream(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	var c config
	fs := flag.NewFlagSet("replicabench", flag.ExitOnError)
	fs.StringVar(&c.bin, "bin", "", "lastevent binary (default: go build the module's root package into a temp dir)")
	fs.StringVar(&c.redisBin, "redis-server", "", "redis-server binary (default: redis-server on PATH)")
	fs.StringVar(&c.out, "out", "", "write the Markdown report to this file (default: stdout, after the JSON lines)")
	fs.StringVar(&c.jsonOut, "json", "", "also append the JSON lines to this file")
	fs.IntVar(&c.clients, "clients", 500, "fan-out: clients on the stream")
	fs.IntVar(&c.rate, "rate", 50, "events per second of every stream")
	fs.IntVar(&c.size, "size", 100, "event data bytes")
	fs.DurationVar(&c.window, "window", 10*time.Second, "fan-out: measurement window of each mode (split over -rounds)")
	fs.DurationVar(&c.warmup, "warmup", 1500*time.Millisecond, "fan-out: time between the last client's first frame and the window")
	fs.DurationVar(&c.drain, "drain", 1500*time.Millisecond, "fan-out: time after the window for late frames")
	fs.Float64Var(&c.ramp, "ramp", 1000, "fan-out: new connections per second")
	fs.IntVar(&c.resumes, "resumes", 200, "resume: resumes of each mode (split over -rounds)")
	fs.IntVar(&c.behind, "behind", 100, "resume: K, frames missed before each reconnect")
	fs.IntVar(&c.resumePar, "resume-par", 40, "resume: clients cutting and resuming at once, spread over a cut's duration (K/rate)")
	fs.IntVar(&c.rounds, "rounds", 2, "split every measurement into this many rounds, the modes interleaved (round 2 in the reverse order), so that the other load on the machine falls on all of them alike")
	fs.BoolVar(&c.following, "following", true, "resume: also measure resumes on a replica that already follows the stream")
	fs.BoolVar(&c.skipFanout, "skip-fanout", false, "leave the fan-out measurements out")
	fs.BoolVar(&c.skipResume, "skip-resume", false, "leave the resume measurements out")
	fs.DurationVar(&c.timeout, "timeout", 4*time.Minute, "abort the run after this long")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory (logs); it is also kept when an anomaly is seen")
	_ = fs.Parse(os.Args[1:])
	c.argsForReport = strings.TrimSpace("go run ./test/cmd/replicabench " + strings.Join(os.Args[1:], " "))
	if c.rate <= 0 || c.clients <= 0 || c.behind <= 0 || c.resumes <= 0 || c.resumePar <= 0 || c.rounds <= 0 {
		logf("-rate, -clients, -behind, -resumes, -resume-par and -rounds must be positive")
		return 2
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		logf("interrupted: stopping children")
		load.StopChildren()
		os.Exit(130)
	}()
	defer load.StopChildren()
	time.AfterFunc(c.timeout, func() {
		logf("the run took longer than -timeout %s: stopping children", c.timeout)
		load.StopChildren()
		os.Exit(1)
	})

	if err := raiseNofile(c.clients*3 + 4096); err != nil {
		logf("warning: %v", err)
	}
	e := &env{cfg: c}
	var err error
	if e.root, err = moduleRoot(); err != nil && c.bin == "" {
		logf("%v", err)
		return 1
	}
	if e.dir, err = os.MkdirTemp("", "replicabench-"); err != nil {
		logf("%v", err)
		return 1
	}
	defer func() {
		if c.keep || len(e.anomalies) > 0 {
			logf("logs kept in %s", e.dir)
		} else {
			os.RemoveAll(e.dir)
		}
	}()
	if c.jsonOut != "" {
		if e.jsonOutput, err = os.OpenFile(c.jsonOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			logf("%v", err)
			return 1
		}
		defer e.jsonOutput.Close()
	}
	if err := e.setup(); err != nil {
		logf("%v", err)
		return 1
	}
	started := time.Now()
	load0 := loadavg()
	run := time.Now().Unix() % 100000 // topic names unique to the run
	fanModes := []func(topic string) FanoutResult{
		func(t string) FanoutResult {
			logf("== fan-out %s: %d clients on M (memory mode)", e.round, c.clients)
			return e.fanout("memory", e.m, t, []*lastevent{e.m})
		},
		func(t string) FanoutResult {
			logf("== fan-out %s: %d clients on B (Redis follower; the stream opened first on A)", e.round, c.clients)
			return e.fanoutFollower(t)
		},
		func(t string) FanoutResult {
			logf("== fan-out %s: %d clients on A (Redis owner)", e.round, c.clients)
			return e.fanout("redis-owner", e.a, t, []*lastevent{e.a, e.b})
		},
	}
	resModes := []func(topic string) ResumeResult{
		func(t string) ResumeResult {
			logf("== resume %s: %d frames behind, on M again (memory mode)", e.round, c.behind)
			return e.resume("memory", t, e.m, e.m, nil)
		},
		func(t string) ResumeResult {
			logf("== resume %s: read on A, resume on B with no stream there (reads Redis)", e.round)
			return e.resume("redis-other-replica", t, e.a, e.b, nil)
		},
	}
	if c.following {
		resModes = append(resModes, func(t string) ResumeResult {
			logf("== resume %s: read on A, resume on B which follows the stream (a holder client on B)", e.round)
			return e.resume("redis-other-replica-following", t, e.a, e.b, e.b)
		})
	}
	// order is 0, 1, 2 in odd rounds and 2, 1, 0 in even ones.
	order := func(round, n int) []int {
		var o []int
		for i := range n {
			if round%2 == 0 {
				o = append(o, i)
			} else {
				o = append(o, n-1-i)
			}
		}
		return o
	}
	fanRounds := make([][]FanoutResult, len(fanModes))
	resRounds := make([][]ResumeResult, len(resModes))
	if !c.skipFanout {
		for round := range c.rounds {
			e.roundIdx, e.round = round, fmt.Sprintf("%d/%d", round+1, c.rounds)
			for _, i := range order(round, len(fanModes)) {
				r := fanModes[i](fmt.Sprintf("fan%d-%d-%d", i, round, run))
				e.emit(r)
				fanRounds[i] = append(fanRounds[i], r)
			}
		}
	}
	if !c.skipResume {
		for round := range c.rounds {
			e.roundIdx, e.round = round, fmt.Sprintf("%d/%d", round+1, c.rounds)
			for _, i := range order(round, len(resModes)) {
				r := resModes[i](fmt.Sprintf("res%d-%d-%d", i, round, run))
				e.emit(r)
				resRounds[i] = append(resRounds[i], r)
			}
		}
	}
	var fan []FanoutResult
	var res []ResumeResult
	for _, rs := range fanRounds {
		if len(rs) > 0 {
			fan = append(fan, e.checkFan(mergeFanout(rs)))
		}
	}
	for _, rs := range resRounds {
		if len(rs) > 0 {
			res = append(res, e.checkRes(mergeResume(rs)))
		}
	}
	for _, le := range []*lastevent{e.m, e.a, e.b} {
		if le.Exited() {
			e.anomaly(fmt.Sprintf("%s exited during the run:\n%s", le.Name, le.LogTail()))
		}
		if n := countLogLevel(le.Log.Name(), "warn", "error"); n > 0 {
			e.anomaly(fmt.Sprintf("%s logged %d warn/error lines (see %s)", le.Name, n, le.Log.Name()))
		}
	}
	md := e.report(fan, res, started, load0)
	if c.out == "" {
		fmt.Print("\n" + md)
	} else if err := os.WriteFile(c.out, []byte(md), 0o644); err != nil {
		logf("writing %s: %v", c.out, err)
		return 1
	} else {
		logf("wrote %s", c.out)
	}
	logf("done in %.0f s", time.Since(started).Seconds())
	for _, a := range e.anomalies {
		logf("ANOMALY: %s", a)
	}
	return 0
}

// fanoutFollower measures clients on B while A owns the stream: a holder
// client on A opens it first.
func (e *env) fanoutFollower(topic string) FanoutResult {
	c := e.cfg
	path := fmt.Sprintf("/broadcast?topic=%s&rate=%d&size=%d", topic, c.rate, c.size)
	h, err := startWatcher(e.a.addr, path)
	if err != nil {
		return FanoutResult{Measurement: "fanout", Mode: "redis-follower", Round: e.round, Target: e.b.name, Error: "holder on A: " + err.Error()}
	}
	defer h.close()
	if _, ok := h.wait(1, 10*time.Second); !ok {
		return FanoutResult{Measurement: "fanout", Mode: "redis-follower", Round: e.round, Target: e.b.name, Error: "holder on A got no frame"}
	}
	return e.fanout("redis-follower", e.b, topic, []*lastevent{e.a, e.b})
}

// checkFan emits the merged result and notes its anomalies.
func (e *env) checkFan(r FanoutResult) FanoutResult {
	e.emit(r)
	switch {
	case r.Error != "":
		e.anomaly(fmt.Sprintf("fan-out %s: %s", r.Mode, r.Error))
	case r.Dups+r.Gaps+r.IDRegressions+r.Syncs+r.Malformed+r.NoID > 0 || r.Disconnects > 0 || r.Connected < r.Clients:
		e.anomaly(fmt.Sprintf("fan-out %s: dups %d, gaps %d, id regressions %d, syncs %d, malformed %d, without id %d, disconnects %d, connected %d/%d",
			r.Mode, r.Dups, r.Gaps, r.IDRegressions, r.Syncs, r.Malformed, r.NoID, r.Disconnects, r.Connected, r.Clients))
	case r.DeliveredPct < 100:
		e.anomaly(fmt.Sprintf("fan-out %s: delivered %.2f %% of the window's frames", r.Mode, r.DeliveredPct))
	}
	want := map[string]string{"redis-follower": "A=owner B=follower", "redis-owner": "A=owner B="}
	if w, ok := want[r.Mode]; ok && r.Error == "" && r.Roles != w && r.Roles != w+" | "+w {
		e.anomaly(fmt.Sprintf("fan-out %s: roles %q, want %q", r.Mode, r.Roles, w))
	}
	return r
}

// checkRes emits the merged result and notes its anomalies.
func (e *env) checkRes(r ResumeResult) ResumeResult {
	e.emit(r)
	if r.Error != "" || r.Failed > 0 {
		e.anomaly(fmt.Sprintf("resume %s: %d of %d not exact %v %s", r.Mode, r.Failed, r.Resumes, r.Failures, r.Error))
	}
	return r
}

func (e *env) emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
	if e.jsonOutput != nil {
		_, _ = e.jsonOutput.Write(append(b, '\n'))
	}
}

func (e *env) anomaly(s string) {
	e.anomalies = append(e.anomalies, s)
}

func (e *env) setup() error {
	c := e.cfg
	bin := c.bin
	if bin == "" {
		bin = filepath.Join(e.dir, "lastevent")
		logf("building lastevent")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Dir = e.root
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	var err error
	if e.rds, err = startRedis(c.redisBin, e.dir); err != nil {
		return err
	}
	logf("redis-server %s on %s (pid %d)", e.rds.version, e.rds.addr, e.rds.PID())
	if e.up, err = startUpstream(e.dir); err != nil {
		return err
	}
	logf("generator on %s (pid %d)", e.up.addr, e.up.PID())
	if e.m, err = startLastevent(bin, e.dir, "M", e.up, c.clients); err != nil {
		return err
	}
	url := "LASTEVENT_REDIS_URL=redis://" + e.rds.addr + "/0"
	if e.a, err = startLastevent(bin, e.dir, "A", e.up, c.clients, "LASTEVENT_STORE=redis", url, "LASTEVENT_NODE_ID=replicabench-a"); err != nil {
		return err
	}
	if e.b, err = startLastevent(bin, e.dir, "B", e.up, c.clients, "LASTEVENT_STORE=redis", url, "LASTEVENT_NODE_ID=replicabench-b"); err != nil {
		return err
	}
	for _, le := range []*lastevent{e.m, e.a, e.b} {
		logf("lastevent %s on %s, admin %s (pid %d)", le.Name, le.addr, le.admin, le.PID())
	}
	return nil
}

// cpuSample is the CPU seconds so far of every process of the run.
func (e *env) cpuSample() map[string]float64 {
	m := map[string]float64{
		"M": cpuOf(e.m.PID()), "A": cpuOf(e.a.PID()), "B": cpuOf(e.b.PID()),
		"redis": cpuOf(e.rds.PID()), "generator": cpuOf(e.up.PID()), "clients": cpuOf(os.Getpid()),
	}
	return m
}

func countLogLevel(path string, levels ...string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		var m struct{ Level string }
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		for _, l := range levels {
			if m.Level == l {
				n++
			}
		}
	}
	return n
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// raiseNofile raises RLIMIT_NOFILE's soft limit (children inherit it).
func raiseNofile(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= uint64(n) {
		return nil
	}
	want := syscall.Rlimit{Cur: min(uint64(n), lim.Max), Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("cannot raise RLIMIT_NOFILE: %v", err)
	}
	if want.Cur < uint64(n) {
		return fmt.Errorf("RLIMIT_NOFILE raised to %d only (hard limit)", want.Cur)
	}
	return nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/lastevent/lastevent\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run replicabench inside the lastevent module, or pass -bin")
		}
		dir = parent
	}
}

// runUpstream is the generator subcommand: it prints "listening <addr>" and
// serves until killed.
func runUpstream(args []string) int {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: load.NewGenerator(), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func nproc() string {
	if b, err := exec.Command("nproc").Output(); err == nil {
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprint(runtime.NumCPU())
}
