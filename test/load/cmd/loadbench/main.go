// Command loadbench runs lastevent's performance scenarios (S1..S5 of the
// "fast at scale" issue) against the upstream directly, nginx with
// proxy_buffering off, and lastevent, in one run on this machine, prints one
// JSON line per run and writes a Markdown table (docs/perf.md):
//
//	go run ./test/load/cmd/loadbench            # full scenarios, ~6 minutes
//	go run ./test/load/cmd/loadbench -quick     # scaled down, 1-2 minutes
//	go run ./test/load/cmd/loadbench -only S2 -targets lastevent -profile /tmp/prof
//
// It builds lastevent with go build, starts it, the generator and nginx as
// its own child processes (127.0.0.1 only), and stops them by PID. Two
// subcommands are its own children: "upstream" (the generator) and
// "rawwrite" (the S5 bound).
package main

import (
	"context"
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
	quick                           bool
	only, targets                   string
	s1Clients, s1Rate               int
	s2Clients, s2Rate, s2xRate      int
	repeat                          int
	s3Clients                       int
	s4Clients, s4Rate, s4Behind     int
	s5Conns                         int
	size                            int
	window, warmup, drain, settle   time.Duration
	s5Dur                           time.Duration
	ramp                            float64
	sources                         string
	out, jsonOut, profile, nginxBin string
	installNginx, keep              bool
	lasteventEnv                    string
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "upstream":
			os.Exit(runUpstream(os.Args[2:]))
		case "rawwrite":
			os.Exit(runRawWrite(os.Args[2:]))
		}
	}
	os.Exit(run())
}

func run() int {
	var c config
	fs := flag.NewFlagSet("loadbench", flag.ExitOnError)
	fs.BoolVar(&c.quick, "quick", false, "scaled-down counts and durations: the whole set in 1-2 minutes")
	fs.StringVar(&c.only, "only", "S1,S2,S3,S4,S5,S2X", "scenarios to run (S2X: S2 at saturation, for the S5 comparison)")
	fs.StringVar(&c.targets, "targets", "direct,nginx,lastevent", "targets to run each scenario against")
	fs.IntVar(&c.s1Clients, "s1-clients", 1000, "S1: clients, each with its own upstream stream (session mode)")
	fs.IntVar(&c.s1Rate, "s1-rate", 10, "S1: events per second per stream")
	fs.IntVar(&c.s2Clients, "s2-clients", 5000, "S2: subscribers of one upstream stream (shared mode)")
	fs.IntVar(&c.s2Rate, "s2-rate", 50, "S2: events per second")
	fs.IntVar(&c.s2xRate, "s2x-rate", 200, "S2X (S2 at saturation, an extra): events per second to the S2 subscribers")
	fs.IntVar(&c.repeat, "repeat", 1, "runs of each scenario and target, interleaved; the report shows medians")
	fs.IntVar(&c.s3Clients, "s3-clients", 10000, "S3: idle clients (shared mode)")
	fs.IntVar(&c.s4Clients, "s4-clients", 5000, "S4: clients of the reconnect storm (shared mode)")
	fs.IntVar(&c.s4Rate, "s4-rate", 50, "S4: events per second")
	fs.IntVar(&c.s4Behind, "s4-behind", 100, "S4: frames each client misses before reconnecting")
	fs.IntVar(&c.s5Conns, "s5-conns", 1000, "S5: raw loopback connections")
	fs.IntVar(&c.size, "size", 100, "event payload bytes (data value)")
	fs.DurationVar(&c.window, "window", 20*time.Second, "S1/S2 measurement window")
	fs.DurationVar(&c.warmup, "warmup", 3*time.Second, "S1/S2 time between the last connect and the window")
	fs.DurationVar(&c.drain, "drain", 2*time.Second, "S1/S2 time after the window for late events")
	fs.DurationVar(&c.settle, "settle", 3*time.Second, "S3 time after the last connect before RSS is read")
	fs.DurationVar(&c.s5Dur, "s5-duration", 10*time.Second, "S5 write time")
	fs.Float64Var(&c.ramp, "ramp", 2000, "new connections per second while connecting")
	fs.StringVar(&c.sources, "sources", "127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4", "client source addresses (loopback), round robin; empty: kernel's choice")
	fs.StringVar(&c.out, "out", "docs/perf.md", "Markdown report, relative to the module root; empty: none (a -quick, -only, -targets or -profile run writes none unless -out is given)")
	fs.StringVar(&c.jsonOut, "json", "", "also append the JSON lines to this file")
	fs.StringVar(&c.profile, "profile", "", "directory: profile lastevent (CPU, heap, allocs, mutex) during S1 and S2, its heap in S3, and write pprof -top there")
	fs.StringVar(&c.nginxBin, "nginx", "", "nginx binary (default: nginx in PATH or /usr/sbin/nginx)")
	fs.BoolVar(&c.installNginx, "install-nginx", true, "apt-get install nginx-light when nginx is missing (root only)")
	fs.BoolVar(&c.keep, "keep", false, "keep the work directory (logs, configs)")
	fs.StringVar(&c.lasteventEnv, "lastevent-env", "", "extra environment for lastevent, comma-separated KEY=VALUE (an experiment, e.g. GOMAXPROCS=1); a partial run, so no report unless -out is given")
	_ = fs.Parse(os.Args[1:])
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		quick := map[string]func(){
			"s1-clients":  func() { c.s1Clients = 300 },
			"s2-clients":  func() { c.s2Clients = 1000 },
			"s3-clients":  func() { c.s3Clients = 2000 },
			"s4-clients":  func() { c.s4Clients = 1000 },
			"window":      func() { c.window = 5 * time.Second },
			"warmup":      func() { c.warmup = time.Second },
			"drain":       func() { c.drain = 1500 * time.Millisecond },
			"settle":      func() { c.settle = 2 * time.Second },
			"s5-duration": func() { c.s5Dur = 3 * time.Second },
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	// A quick or partial run does not overwrite the report unless asked to.
	if (c.quick || set["only"] || set["targets"] || c.profile != "" || c.lasteventEnv != "") && !set["out"] {
		c.out = ""
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

	if err := raiseNofile(1 << 20); err != nil {
		logf("warning: %v", err)
	}
	root, err := moduleRoot()
	if err != nil {
		logf("%v", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "loadbench-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	if c.keep {
		logf("work directory %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	e := &env{cfg: c, dir: dir, root: root}
	for _, s := range strings.Split(c.sources, ",") {
		if s = strings.TrimSpace(s); s != "" {
			ip := net.ParseIP(s)
			if ip == nil || !ip.IsLoopback() {
				logf("-sources: %q is not a loopback address", s)
				return 2
			}
			e.sources = append(e.sources, ip)
		}
	}
	for _, t := range strings.Split(c.targets, ",") {
		e.targets = append(e.targets, strings.TrimSpace(t))
	}
	if err := e.prepare(); err != nil {
		logf("%v", err)
		return 1
	}
	e.meta = machineMeta(e)
	started := time.Now()
	var results []Result
	emit := func(r Result) {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		if c.jsonOut != "" {
			if f, err := os.OpenFile(c.jsonOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
				f.Write(append(b, '\n'))
				f.Close()
			}
		}
		results = append(results, r)
	}
	for _, sc := range strings.Split(c.only, ",") {
		sc = strings.ToUpper(strings.TrimSpace(sc))
		switch sc {
		case "S1", "S2", "S3", "S4", "S2X":
			for rep := range max(c.repeat, 1) {
				for _, t := range e.targets {
					if t == "nginx" && e.nginxBin == "" {
						continue
					}
					logf("== %s against %s (run %d)", sc, t, rep+1)
					emit(e.runScenario(sc, t))
				}
			}
		case "S5":
			for rep := range max(c.repeat, 1) {
				logf("== S5 raw loopback writes (run %d)", rep+1)
				emit(e.runS5())
			}
		default:
			logf("unknown scenario %q", sc)
			return 2
		}
	}
	e.meta.elapsed = time.Since(started)
	e.meta.loadEnd = loadavg()
	md := report(mergeRepeats(results), e)
	fmt.Fprintln(os.Stderr)
	fmt.Fprint(os.Stderr, md)
	if c.out != "" {
		path := c.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(root, path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			err = os.WriteFile(path, []byte(md), 0o644)
		}
		if err != nil {
			logf("writing %s: %v", path, err)
			return 1
		}
		logf("wrote %s", path)
	}
	if c.profile != "" {
		e.profileReport()
	}
	return 0
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// raiseNofile raises RLIMIT_NOFILE (soft and hard) for this process and so
// for its children, which inherit it; as non-root only the soft limit rises,
// to the hard one.
func raiseNofile(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err2 != nil {
			return fmt.Errorf("cannot raise RLIMIT_NOFILE: %v", err2)
		}
		return fmt.Errorf("RLIMIT_NOFILE raised to %d only (%v)", lim.Max, err)
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
			return "", fmt.Errorf("run loadbench inside the lastevent module")
		}
		dir = parent
	}
}

// env is one loadbench run: the built binaries, the work directory, the
// settings.
type env struct {
	cfg          config
	dir, root    string
	sources      []net.IP
	targets      []string
	lasteventBin string
	pprofBin     string // the profiling variant (-profile)
	nginxBin     string
	nginxVersion string
	meta         meta
}

func (e *env) prepare() error {
	e.lasteventBin = filepath.Join(e.dir, "lastevent")
	logf("building lastevent")
	build := exec.Command("go", "build", "-o", e.lasteventBin, ".")
	build.Dir = e.root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	if e.cfg.profile != "" {
		if err := os.MkdirAll(e.cfg.profile, 0o755); err != nil {
			return err
		}
		// The variant rather than LASTEVENT_PPROF: it also turns on mutex
		// and block profiling.
		e.pprofBin = filepath.Join(e.dir, "lastevent-pprof")
		logf("building the profiling variant (test/load/cmd/lastevent-pprof)")
		b := exec.Command("go", "build", "-o", e.pprofBin, "./test/load/cmd/lastevent-pprof")
		b.Dir = e.root
		b.Stdout, b.Stderr = os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			return fmt.Errorf("go build lastevent-pprof: %w", err)
		}
	}
	if !contains(e.targets, "nginx") {
		return nil
	}
	e.nginxBin = e.cfg.nginxBin
	if e.nginxBin == "" {
		e.nginxBin = findNginx()
	}
	if e.nginxBin == "" && e.cfg.installNginx && os.Geteuid() == 0 {
		if _, err := exec.LookPath("apt-get"); err == nil {
			logf("installing nginx-light (apt-get)")
			inst := exec.Command("sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light")
			inst.Stdout, inst.Stderr = os.Stderr, os.Stderr
			if err := inst.Run(); err != nil {
				logf("warning: apt-get install nginx-light: %v", err)
			}
			e.nginxBin = findNginx()
		}
	}
	if e.nginxBin == "" {
		logf("warning: nginx not found (apt-get install nginx-light): the nginx runs are skipped")
		return nil
	}
	v, _ := exec.Command(e.nginxBin, "-v").CombinedOutput()
	e.nginxVersion = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(v)), "nginx version: "))
	return nil
}

func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
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

// runRawWrite is the S5 subcommand: it prints "listening <addr>", accepts
// -conns connections, writes for -duration and prints a JSON result line.
func runRawWrite(args []string) int {
	fs := flag.NewFlagSet("rawwrite", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	conns := fs.Int("conns", 1000, "connections to accept")
	size := fs.Int("size", 100, "bytes per write")
	dur := fs.Duration("duration", 10*time.Second, "write time")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	// This process measures itself: it exits right after its report.
	// (Accepting the connections costs next to nothing.)
	before := sampleSelf()
	writes, took, err := load.RawWrite(ln, *conns, *size, *dur)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	after := sampleSelf()
	b, _ := json.Marshal(map[string]any{"writes": writes, "seconds": took.Seconds(),
		"cpu_seconds": after.CPUSeconds - before.CPUSeconds, "syscw": after.SyscW - before.SyscW})
	fmt.Println(string(b))
	return 0
}

// sampleSelf reads this process (the swarm) from /proc.
func sampleSelf() load.ProcSample {
	s, _ := load.Sample(os.Getpid())
	return s
}

var _ = runtime.NumCPU
var _ = context.Background
