package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

type meta struct {
	date, command, machine, goVersion, revision string
	loadStart, loadEnd                          string
	elapsed                                     time.Duration
}

func machineMeta(e *env) meta {
	m := meta{
		date:      time.Now().Format("2006-01-02 15:04 MST"),
		command:   "go run ./test/load/cmd/loadbench " + strings.Join(os.Args[1:], " "),
		goVersion: runtime.Version(),
		loadStart: loadavg(),
	}
	m.command = strings.TrimSpace(m.command)
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	m.machine = fmt.Sprintf("%d × %s%s, Linux %s", runtime.NumCPU(), model, mem, strings.TrimSpace(string(kernel)))
	rev, err := exec.Command("git", "-C", e.root, "rev-parse", "--short", "HEAD").Output()
	if err == nil {
		m.revision = strings.TrimSpace(string(rev))
		if st, _ := exec.Command("git", "-C", e.root, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
			m.revision += " + uncommitted changes"
		}
	}
	return m
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func find(rs []Result, scen, target string) *Result {
	for i := range rs {
		if rs[i].Scenario == scen && rs[i].Target == target && rs[i].Error == "" {
			return &rs[i]
		}
	}
	return nil
}

func fms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

func fpct(p *float64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f %%", *p)
}

// cpuSplit is the proxy's CPU with its user-space part (utime; the rest is
// the kernel's: system calls and the TCP work they do).
func cpuSplit(r *Result) string {
	if r.ProxyCPUPct == nil || r.ProxyUserCPUPct == nil {
		return fpct(r.ProxyCPUPct)
	}
	return fmt.Sprintf("%.1f %% (%.1f %%)", *r.ProxyCPUPct, *r.ProxyUserCPUPct)
}

func fkib(p *float64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f KiB", *p)
}

func fmib(p *int64) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", float64(*p)/1024)
}

func fcount(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fk", n/1e3)
	default:
		return fmt.Sprintf("%.0f", n)
	}
}

func conns(r *Result) string {
	s := fmt.Sprintf("%d/%d", r.Established, r.Clients)
	if r.ConnectErrors > 0 {
		var kinds []string
		for k, v := range r.ErrorKinds {
			kinds = append(kinds, fmt.Sprintf("%d %s", v, k))
		}
		s += " (" + strings.Join(kinds, ", ") + ")"
	}
	return s
}

func targetName(r *Result) string {
	if r.Mode != "" {
		return r.Target + " (" + r.Mode + ")"
	}
	return r.Target
}

// report renders the run as Markdown.
func report(rs []Result, e *env) string {
	var b strings.Builder
	m := e.meta
	c := e.cfg
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# lastevent performance\n\n")
	w("Measured %s with\n\n```sh\n%s\n```\n\n", m.date, m.command)
	w("- machine: %s; load average %s at the start, %s at the end (other work shares these cores)\n", m.machine, m.loadStart, m.loadEnd)
	w("- lastevent %s built with %s; nginx %s (Debian, `proxy_buffering off`, HTTP/1.1 upstream, 1 h read timeout, `worker_processes auto`)\n", m.revision, m.goVersion, orDash(e.nginxVersion))
	w("- the upstream generator (its own process) and the client swarm (this process, raw TCP) run on the same cores as the proxy: compare rows within this run, not across machines\n")
	w("- whole run: %s%s\n\n", m.elapsed.Round(time.Second), map[bool]string{true: " (`-quick`: scaled-down counts and durations)", false: ""}[c.quick])
	w("Latency is receive time minus the send time the upstream put in the event (same clock). CPU is utime+stime from /proc/<pid>/stat over the window, in %% of one core (nginx: master and workers), with utime alone (user space; the rest is the kernel's) in brackets where shown; RSS from /proc/<pid>/status (VmRSS, peak VmHWM); RSS per client is the growth from before the first connect, divided by the clients connected. \"direct\" is the swarm connected to the upstream itself: no proxy.\n\n")

	var errs []string
	for _, r := range rs {
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("%s %s: %s", r.Scenario, r.Target, r.Error))
		}
	}

	if s1 := pick(rs, "S1"); len(s1) > 0 {
		r0 := s1[0]
		w("## S1 session pass-through: %d clients, each its own upstream stream, %d ev/s, %d B\n\n", r0.Clients, r0.Rate, r0.Size)
		w("Window %.0f s%s. Added latency is this row's percentile minus direct's. lastevent's RSS per client includes its replay buffer, which grows with every frame up to LASTEVENT_BUFFER_FRAMES per stream (here about %.0f frames per stream when RSS was read); nginx keeps nothing.\n\n",
			r0.WindowS, runsNote(r0), float64(r0.Rate)*(c.warmup+c.window).Seconds())
		w("| target | connected | delivered | events/s | p50 | p90 | p99 | p99.9 | max | added p50 / p99 | proxy CPU (of it user space) | proxy write syscalls/s | RSS per client | peak RSS | upstream CPU | swarm CPU |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		direct := find(rs, "S1", "direct")
		for _, r := range s1 {
			if r.Latency == nil {
				continue
			}
			added := "–"
			if direct != nil && direct.Latency != nil && r.Target != "direct" {
				added = fmt.Sprintf("%+.2f / %+.2f ms", r.Latency.P50-direct.Latency.P50, r.Latency.P99-direct.Latency.P99)
			}
			w("| %s | %s | %.2f %% | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f %% | %.1f %% |\n",
				targetName(&r), conns(&r), 100*r.DeliveredRatio, fcount(r.EventsPerS), fms(r.Latency.P50), fms(r.Latency.P90), fms(r.Latency.P99), fms(r.Latency.P999), fms(r.Latency.Max),
				added, cpuSplit(&r), syscalls(&r), fkib(r.RSSPerConnKiB), fmib(r.ProxyHWMKiB), r.UpstreamCPUPct, r.SwarmCPUPct)
		}
		w("\n")
	}
	fanout := func(scen string) {
		s2 := pick(rs, scen)
		if len(s2) == 0 {
			return
		}
		r0 := s2[0]
		if scen == "S2" {
			w("## S2 shared fan-out: 1 upstream stream, %d subscribers, %d ev/s, %d B (%s deliveries/s offered)\n\n", r0.Clients, r0.Rate, r0.Size, fcount(float64(r0.Clients*r0.Rate)))
		} else {
			w("## S2X (extra) S2 at saturation: %d subscribers, %d ev/s (%s deliveries/s offered)\n\n", r0.Clients, r0.Rate, fcount(float64(r0.Clients*r0.Rate)))
			w("More than this machine can deliver: deliveries/s is the throughput reached, compared with S5 below. A subscriber that falls more than LASTEVENT_BUFFER_FRAMES behind gets `sync-required` (syncs) and continues from the head.\n\n")
		}
		w("Window %.0f s%s; delivered: events sent in the window and received by %s after it (later ones count as missing). Direct and nginx: the upstream itself fans out (nginx opens one upstream connection per subscriber); lastevent: one upstream connection. Write syscalls from /proc/<pid>/io (direct: the upstream's); a subscriber that is behind gets several frames in one write. TCP segments/s: all the machine sent (/proc/net/snmp OutSegs, ACKs included).\n\n", r0.WindowS, runsNote(r0), c.drain)
		w("| target | connected | delivered | deliveries/s | p50 | p90 | p99 | p99.9 | max | proxy CPU | CPU per 100k deliveries/s | write syscalls/s (deliveries per write) | TCP segments/s | peak RSS | gaps / dups / syncs | upstream CPU | swarm CPU |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range s2 {
			if r.Latency == nil {
				continue
			}
			per100k := "–"
			if r.ProxyCPUPct != nil && r.EventsPerS > 0 {
				per100k = fmt.Sprintf("%.1f %%", *r.ProxyCPUPct/(r.EventsPerS/1e5))
			}
			writes := r.UpstreamWritesPerS // direct: the upstream writes to the subscribers
			if r.ProxyWritesPerS != nil {
				writes = *r.ProxyWritesPerS
			}
			wr := "–"
			if writes > 0 {
				wr = fmt.Sprintf("%s (%.1f)", fcount(writes), r.EventsPerS/writes)
			}
			w("| %s | %s | %.3f %% | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d / %d | %.1f %% | %.1f %% |\n",
				targetName(&r), conns(&r), 100*r.DeliveredRatio, fcount(r.EventsPerS), fms(r.Latency.P50), fms(r.Latency.P90), fms(r.Latency.P99), fms(r.Latency.P999), fms(r.Latency.Max),
				fpct(r.ProxyCPUPct), per100k, wr, fsegs(r.TCPSegsPerS), fmib(r.ProxyHWMKiB), r.Gaps, r.Dups, r.Syncs, r.UpstreamCPUPct, r.SwarmCPUPct)
		}
		w("\n")
	}
	fanout("S2")
	if s3 := pick(rs, "S3"); len(s3) > 0 {
		w("## S3 idle: %d idle clients (lastevent in shared mode: one upstream stream)\n\n", s3[0].Clients)
		w("Direct: the upstream's own memory per connection (net/http). nginx holds a second connection to the upstream per client.\n\n")
		w("| target | connected | RSS per connection | proxy RSS | peak RSS | upstream RSS per connection |\n|---|---|---|---|---|---|\n")
		for _, r := range s3 {
			w("| %s | %s | %s | %s | %s | %s |\n", targetName(&r), conns(&r), fkib(r.RSSPerConnKiB), fmib(r.ProxyRSSKiB), fmib(r.ProxyHWMKiB), fkib(r.UpstreamRSSPerConnKiB))
		}
		w("\n")
	}
	if s4 := pick(rs, "S4"); len(s4) > 0 {
		r0 := s4[0]
		w("## S4 reconnect storm: %d clients drop at once, miss %d frames (%d ev/s), reconnect at the same instant with Last-Event-ID\n\n", r0.Clients, c.s4Behind, r0.Rate)
		w("All caught up: from the instant every client reconnects (dial included) until the last one has the frame that was the upstream's newest at that instant. Direct and nginx need an upstream that issues ids and replays (the generator's `ids=1`); lastevent's upstream is a legacy one without ids.\n\n")
		w("| target | reconnected | caught up | all caught up | p50 | p99 | dups | gaps | syncs | frames behind | proxy CPU during the storm |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range s4 {
			cu := r.CatchUp
			if cu == nil {
				continue
			}
			all := "not all (20 s)"
			if cu.AllMs >= 0 {
				all = fms(cu.AllMs)
			}
			cpu := "–"
			if r.ProxyCPUPct != nil {
				cpu = fmt.Sprintf("%.2f s", cu.ProxyCPUS)
			}
			w("| %s | %s | %d | %s | %s | %s | %d | %d | %d | %d | %s |\n", targetName(&r), conns(&r), cu.CaughtUp, all, fms(cu.P50Ms), fms(cu.P99Ms), r.Dups, r.Gaps, r.Syncs, cu.Behind, cpu)
		}
		w("\n")
	}
	if s5 := find(rs, "S5", "raw"); s5 != nil {
		w("## S5 raw bound: a plain Go program writing %d-byte messages to %d loopback connections\n\n", s5.Size, s5.Clients)
		w("One goroutine per connection, one write per message, for %.0f s; this process reads. A socket written in a tight loop still has unsent data at the next write, and the kernel joins such writes into one segment (TCP autocorking): compare the TCP segments/s (the whole machine's, /proc/net/snmp OutSegs, ACKs included) with S2's, where each write to a subscriber finds an idle socket and becomes its own segment.\n\n", s5.WindowS)
		w("| connections | writes/s | write syscalls/s (/proc) | TCP segments/s | MB/s | writer CPU | CPU per 100k writes/s | reader CPU |\n|---|---|---|---|---|---|---|---|\n")
		w("| %d | %s | %s | %s | %.0f | %.1f %% | %.1f %% | %.1f %% |\n\n", s5.Clients, fcount(s5.WritesPerS), fcount(s5.UpstreamWritesPerS), fsegs(s5.TCPSegsPerS), s5.WritesPerS*float64(s5.Size)/1e6, s5.UpstreamCPUPct, s5.UpstreamCPUPct/(s5.WritesPerS/1e5), s5.SwarmCPUPct)
	}

	fanout("S2X")

	w("## Targets (issue 5)\n\n| scenario | target | measured | met |\n|---|---|---|---|\n")
	for _, t := range targets(rs) {
		w("| %s | %s | %s | %s |\n", t[0], t[1], t[2], t[3])
	}
	if len(errs) > 0 {
		w("\n## Errors\n\n")
		for _, s := range errs {
			w("- %s\n", strings.ReplaceAll(s, "\n", " "))
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "(not run)"
	}
	return s
}

func pick(rs []Result, scen string) []Result {
	var out []Result
	for _, r := range rs {
		if r.Scenario == scen {
			out = append(out, r)
		}
	}
	return out
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// targets checks the targets against the results.
func targets(rs []Result) [][4]string {
	var out [][4]string
	add := func(s, t, m, ok string) { out = append(out, [4]string{s, t, m, ok}) }
	notMeasured := "not measured"

	le, ng, di := find(rs, "S1", "lastevent"), find(rs, "S1", "nginx"), find(rs, "S1", "direct")
	if le != nil && ng != nil && di != nil && le.Latency != nil && ng.Latency != nil && di.Latency != nil {
		lp50, np50 := le.Latency.P50-di.Latency.P50, ng.Latency.P50-di.Latency.P50
		lp99, np99 := le.Latency.P99-di.Latency.P99, ng.Latency.P99-di.Latency.P99
		add("S1", "added p50 below nginx's", fmt.Sprintf("lastevent %+.2f ms, nginx %+.2f ms", lp50, np50), yes(lp50 < np50))
		add("S1", "added p99 below nginx's", fmt.Sprintf("lastevent %+.2f ms, nginx %+.2f ms", lp99, np99), yes(lp99 < np99))
		if le.ProxyCPUPct != nil && ng.ProxyCPUPct != nil {
			add("S1", "CPU ≤ nginx's", fmt.Sprintf("lastevent %.1f %%, nginx %.1f %% of a core", *le.ProxyCPUPct, *ng.ProxyCPUPct), yes(*le.ProxyCPUPct <= *ng.ProxyCPUPct))
		}
		if le.RSSPerConnKiB != nil {
			add("S1", "RSS per client (reported)", fmt.Sprintf("lastevent %.1f KiB, nginx %s", *le.RSSPerConnKiB, fkib(ng.RSSPerConnKiB)), "–")
		}
	} else {
		add("S1", "added latency and CPU vs nginx", notMeasured, "–")
	}
	if le := find(rs, "S2", "lastevent"); le != nil && le.Latency != nil {
		add("S2", "100 % delivered", fmt.Sprintf("%.3f %% (%d of %d)", 100*le.DeliveredRatio, le.Delivered, le.Expected), yes(le.Delivered >= le.Expected && le.Expected > 0))
		add("S2", "p99 < 50 ms", fms(le.Latency.P99), yes(le.Latency.P99 < 50))
		if le.ProxyCPUPct != nil && le.EventsPerS > 0 {
			add("S2", "CPU per 100k deliveries/s (reported)", fmt.Sprintf("%.1f %% of a core", *le.ProxyCPUPct/(le.EventsPerS/1e5)), "–")
		}
	} else {
		add("S2", "delivery and p99", notMeasured, "–")
	}
	if le := find(rs, "S3", "lastevent"); le != nil && le.RSSPerConnKiB != nil {
		add("S3", "RSS per connection ≤ 16 KiB", fmt.Sprintf("%.1f KiB (%d connections)", *le.RSSPerConnKiB, le.Established), yes(*le.RSSPerConnKiB <= 16 && le.Established == int64(le.Clients)))
	} else {
		add("S3", "RSS per connection", notMeasured, "–")
	}
	if le := find(rs, "S4", "lastevent"); le != nil && le.CatchUp != nil {
		cu := le.CatchUp
		all := "not all caught up"
		if cu.AllMs >= 0 {
			all = fms(cu.AllMs)
		}
		add("S4", "all caught up ≤ 2 s, 0 dup, 0 gap, 0 sync", fmt.Sprintf("%s, %d caught up of %d, %d dups, %d gaps, %d syncs", all, cu.CaughtUp, le.Clients, le.Dups, le.Gaps, le.Syncs),
			yes(cu.AllMs >= 0 && cu.AllMs <= 2000 && le.Dups == 0 && le.Gaps == 0 && le.Syncs == 0 && cu.CaughtUp == le.Clients))
	} else {
		add("S4", "storm", notMeasured, "–")
	}
	s5, s2, s2x := find(rs, "S5", "raw"), find(rs, "S2", "lastevent"), find(rs, "S2X", "lastevent")
	if s5 != nil && s2 != nil && s5.WritesPerS > 0 {
		ratio := s2.EventsPerS / s5.WritesPerS
		m := fmt.Sprintf("S2 %s deliveries/s = %.0f %% of %s writes/s (S2 offers only %s/s)", fcount(s2.EventsPerS), 100*ratio, fcount(s5.WritesPerS), fcount(float64(s2.Clients*s2.Rate)))
		if s2x != nil {
			m += fmt.Sprintf("; at saturation (S2X) lastevent delivers %s/s = %.0f %% (whole frames coalesced per write, so not one write per delivery)", fcount(s2x.EventsPerS), 100*s2x.EventsPerS/s5.WritesPerS)
		}
		add("S5", "S2 ≥ 50 % of the raw bound", m, yes(ratio >= 0.5))
		if s2.ProxyWritesPerS != nil && *s2.ProxyWritesPerS > 0 {
			add("S5", "(reported) lastevent's write syscalls in S2 vs the raw bound", fmt.Sprintf("%s writes/s = %.0f %% of the raw bound, %.1f deliveries per write", fcount(*s2.ProxyWritesPerS), 100**s2.ProxyWritesPerS/s5.WritesPerS, s2.EventsPerS / *s2.ProxyWritesPerS), "–")
		}
	} else {
		add("S5", "S2 vs raw bound", notMeasured, "–")
	}
	return out
}

func runsNote(r Result) string {
	if r.Runs > 1 {
		return fmt.Sprintf(", medians of %d runs", r.Runs)
	}
	return ""
}

// syscalls shows write syscalls only: /proc/<pid>/io counts read(2) and
// write(2)/writev(2) but not recv(2), which nginx reads with, so read
// counts do not compare.
func syscalls(r *Result) string {
	if r.ProxyWritesPerS == nil {
		return "–"
	}
	return fcount(*r.ProxyWritesPerS)
}

// fsegs formats a TCP segment rate, "–" when it was not read.
func fsegs(v float64) string {
	if v <= 0 {
		return "–"
	}
	return fcount(v)
}
