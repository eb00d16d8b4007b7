package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// report is the Markdown table of a run: memory mode beside Redis mode,
// with the Redis / memory ratios of this run (the machine is shared: compare
// within a run).
func (e *env) report(fan []FanoutResult, res []ResumeResult, started time.Time, load0 string) string {
	c := e.cfg
	var b strings.Builder
	rev := ""
	if out, err := exec.Command("git", "-C", e.root, "rev-parse", "--short", "HEAD").Output(); err == nil && e.root != "" {
		rev = strings.TrimSpace(string(out))
		if st, _ := exec.Command("git", "-C", e.root, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
			rev += " + uncommitted changes"
		}
	}
	fmt.Fprintf(&b, "Measured %s (UTC) on %s × %s (nproc %s), redis-server %s, %s, lastevent %s; load average %s at the start, %s at the end; %.0f s.\n",
		started.UTC().Format("2006-01-02 15:04"), fmt.Sprint(runtime.NumCPU()), cpuModel(), nproc(), e.rds.version, runtime.Version(), rev, load0, loadavg(), time.Since(started).Seconds())
	fmt.Fprintf(&b, "Command: `%s`. Everything on 127.0.0.1: generator, redis-server, proxies and clients share the cores; each mode measured in %d rounds, the modes interleaved.\n\n", c.argsForReport, c.rounds)

	byMode := func(m string) *FanoutResult {
		for i := range fan {
			if fan[i].Mode == m && fan[i].Error == "" {
				return &fan[i]
			}
		}
		return nil
	}
	if len(fan) > 0 {
		mem, fol, own := byMode("memory"), byMode("redis-follower"), byMode("redis-owner")
		fmt.Fprintf(&b, "| fan-out: %d clients on one stream, %d ev/s × %d B, %.0f s | memory (M) | Redis, follower B (upstream → A → Redis → B) | Redis, owner A (Redis before delivery) |\n|---|---|---|---|\n",
			c.clients, c.rate, c.size, c.window.Seconds())
		row := func(name string, f func(r *FanoutResult) string) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, cell(mem, f), cell(fol, f), cell(own, f))
		}
		row("delivery latency p50 / p99 / max", func(r *FanoutResult) string {
			s := fmt.Sprintf("%s / %s / %s", fms(r.P50Ms), fms(r.P99Ms), fms(r.MaxMs))
			if mem != nil && r != mem {
				s += fmt.Sprintf(" (×%s / ×%s)", ratio(r.P50Ms, mem.P50Ms), ratio(r.P99Ms, mem.P99Ms))
			}
			return s
		})
		row("delivered; dups / gaps / ids not increasing / sync events", func(r *FanoutResult) string {
			return fmt.Sprintf("%s %%; %d / %d / %d / %d", pct(r.DeliveredPct), r.Dups, r.Gaps, r.IDRegressions, r.Syncs)
		})
		row("CPU, % of one core", func(r *FanoutResult) string {
			switch r.Mode {
			case "memory":
				return fmt.Sprintf("M %.0f", r.CPUPct["M"])
			case "redis-follower":
				return fmt.Sprintf("A %.0f + B %.0f + redis %.0f", r.CPUPct["A"], r.CPUPct["B"], r.CPUPct["redis"])
			default:
				return fmt.Sprintf("A %.0f + redis %.0f", r.CPUPct["A"], r.CPUPct["redis"])
			}
		})
		row("CPU of the clients / of other processes on the machine (not this run's), % of one core", func(r *FanoutResult) string {
			ours := 0.0
			for _, v := range r.CPUPct {
				ours += v
			}
			return fmt.Sprintf("%.0f / %.0f", r.CPUPct["clients"], max(r.MachineBusy-ours, 0))
		})
		b.WriteString("\n")
	}
	resBy := func(m string) *ResumeResult {
		for i := range res {
			if res[i].Mode == m && res[i].Error == "" {
				return &res[i]
			}
		}
		return nil
	}
	if len(res) > 0 {
		mem, cold, fol := resBy("memory"), resBy("redis-other-replica"), resBy("redis-other-replica-following")
		fmt.Fprintf(&b, "| resume: %d frames behind (%d ev/s), %d resumes, request → %d-th missed frame | memory, same proxy | Redis, other replica without the stream (reads Redis) | Redis, other replica following the stream |\n|---|---|---|---|\n",
			c.behind, c.rate, c.resumes, c.behind)
		row := func(name string, f func(r *ResumeResult) string) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, rcell(mem, f), rcell(cold, f), rcell(fol, f))
		}
		row("p50 / p99 / max", func(r *ResumeResult) string {
			s := fmt.Sprintf("%s / %s / %s", fms(r.P50Ms), fms(r.P99Ms), fms(r.MaxMs))
			if mem != nil && r != mem {
				s += fmt.Sprintf(" (×%s / ×%s)", ratio(r.P50Ms, mem.P50Ms), ratio(r.P99Ms, mem.P99Ms))
			}
			return s
		})
		row("exact (the K frames, in order, ids increasing)", func(r *ResumeResult) string {
			s := fmt.Sprintf("%d / %d", r.Exact, r.Resumes)
			if len(r.FailKinds) > 0 {
				var ks []string
				for k, n := range r.FailKinds {
					ks = append(ks, fmt.Sprintf("%d %s", n, k))
				}
				sort.Strings(ks)
				s += " (" + strings.Join(ks, ", ") + ")"
			}
			return s
		})
		row("streams opened on the resuming proxy", func(r *ResumeResult) string {
			return fmt.Sprint(r.StreamsOpened)
		})
		b.WriteString("\n")
	}
	if len(e.anomalies) > 0 {
		b.WriteString("Anomalies:\n\n")
		for _, a := range e.anomalies {
			first, _, _ := strings.Cut(a, "\n")
			fmt.Fprintf(&b, "- %s\n", first)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func cell(r *FanoutResult, f func(*FanoutResult) string) string {
	if r == nil {
		return "–"
	}
	return f(r)
}

func rcell(r *ResumeResult, f func(*ResumeResult) string) string {
	if r == nil {
		return "–"
	}
	return f(r)
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", a/b)
}

func pct(v float64) string {
	if v == 100 {
		return "100"
	}
	return fmt.Sprintf("%.2f", v)
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
