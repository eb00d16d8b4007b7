package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// mergeRepeats folds the runs of each scenario and target (-repeat) into
// one Result: the median of every figure, the worst delivery, the sums of
// errors, duplicates and gaps.
func mergeRepeats(rs []Result) []Result {
	type key struct{ s, t string }
	var order []key
	groups := map[key][]Result{}
	for _, r := range rs {
		k := key{r.Scenario, r.Target}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	out := make([]Result, 0, len(order))
	for _, k := range order {
		out = append(out, merge(groups[k]))
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	sort.Float64s(xs)
	if n := len(xs); n%2 == 1 {
		return xs[n/2]
	} else {
		return (xs[n/2-1] + xs[n/2]) / 2
	}
}

func med(rs []Result, f func(*Result) float64) float64 {
	var xs []float64
	for i := range rs {
		xs = append(xs, f(&rs[i]))
	}
	return median(xs)
}

func medPtr(rs []Result, f func(*Result) *float64) *float64 {
	var xs []float64
	for i := range rs {
		if p := f(&rs[i]); p != nil {
			xs = append(xs, *p)
		}
	}
	if len(xs) == 0 {
		return nil
	}
	return ptr(median(xs))
}

func merge(rs []Result) Result {
	var ok []Result
	var failed []Result
	for _, r := range rs {
		if r.Error == "" {
			ok = append(ok, r)
		} else {
			failed = append(failed, r)
		}
	}
	if len(ok) == 0 {
		return rs[0]
	}
	if len(ok) == 1 && len(failed) == 0 {
		return ok[0]
	}
	m := ok[0]
	m.Runs = len(ok)
	m.Established, m.ConnectErrors, m.Disconnects = ok[0].Established, 0, 0
	m.Delivered, m.Expected, m.Dups, m.Gaps, m.Syncs, m.Writes = 0, 0, 0, 0, 0, 0
	m.ErrorKinds = map[string]int{}
	for _, r := range ok {
		m.Established = min(m.Established, r.Established)
		m.ConnectErrors += r.ConnectErrors
		m.Disconnects += r.Disconnects
		m.Delivered += r.Delivered
		m.Expected += r.Expected
		m.Dups += r.Dups
		m.Gaps += r.Gaps
		m.Syncs += r.Syncs
		m.Writes += r.Writes
		m.DeliveredRatio = min(m.DeliveredRatio, r.DeliveredRatio)
		for k, v := range r.ErrorKinds {
			m.ErrorKinds[k] += v
		}
	}
	m.EventsPerS = med(ok, func(r *Result) float64 { return r.EventsPerS })
	m.WritesPerS = med(ok, func(r *Result) float64 { return r.WritesPerS })
	m.UpstreamCPUPct = med(ok, func(r *Result) float64 { return r.UpstreamCPUPct })
	m.SwarmCPUPct = med(ok, func(r *Result) float64 { return r.SwarmCPUPct })
	m.ProxyCPUPct = medPtr(ok, func(r *Result) *float64 { return r.ProxyCPUPct })
	m.ProxyUserCPUPct = medPtr(ok, func(r *Result) *float64 { return r.ProxyUserCPUPct })
	m.ProxyReadsPerS = medPtr(ok, func(r *Result) *float64 { return r.ProxyReadsPerS })
	m.ProxyWritesPerS = medPtr(ok, func(r *Result) *float64 { return r.ProxyWritesPerS })
	m.UpstreamWritesPerS = med(ok, func(r *Result) float64 { return r.UpstreamWritesPerS })
	m.TCPSegsPerS = med(ok, func(r *Result) float64 { return r.TCPSegsPerS })
	m.RSSPerConnKiB = medPtr(ok, func(r *Result) *float64 { return r.RSSPerConnKiB })
	if p := medPtr(ok, func(r *Result) *float64 {
		if r.ProxyRSSKiB == nil {
			return nil
		}
		return ptr(float64(*r.ProxyRSSKiB))
	}); p != nil {
		m.ProxyRSSKiB = ptr(int64(*p))
	}
	m.UpstreamRSSKiB = int64(med(ok, func(r *Result) float64 { return float64(r.UpstreamRSSKiB) }))
	m.UpstreamRSSPerConnKiB = medPtr(ok, func(r *Result) *float64 { return r.UpstreamRSSPerConnKiB })
	for _, r := range ok {
		if r.ProxyHWMKiB != nil && (m.ProxyHWMKiB == nil || *r.ProxyHWMKiB > *m.ProxyHWMKiB) {
			m.ProxyHWMKiB = r.ProxyHWMKiB
		}
	}
	if m.Latency != nil {
		l := func(f func(*Latency) float64) float64 {
			return med(ok, func(r *Result) float64 {
				if r.Latency == nil {
					return 0
				}
				return f(r.Latency)
			})
		}
		m.Latency = &Latency{
			P50: l(func(x *Latency) float64 { return x.P50 }), P90: l(func(x *Latency) float64 { return x.P90 }),
			P99: l(func(x *Latency) float64 { return x.P99 }), P999: l(func(x *Latency) float64 { return x.P999 }),
			Max: l(func(x *Latency) float64 { return x.Max }), Mean: l(func(x *Latency) float64 { return x.Mean }),
		}
	}
	if m.CatchUp != nil {
		cu := *m.CatchUp
		c := func(f func(*CatchUp) float64) float64 {
			return med(ok, func(r *Result) float64 {
				if r.CatchUp == nil {
					return 0
				}
				return f(r.CatchUp)
			})
		}
		cu.P50Ms = c(func(x *CatchUp) float64 { return x.P50Ms })
		cu.P99Ms = c(func(x *CatchUp) float64 { return x.P99Ms })
		cu.ProxyCPUS = c(func(x *CatchUp) float64 { return x.ProxyCPUS })
		cu.AllMs = c(func(x *CatchUp) float64 { return x.AllMs })
		for _, r := range ok {
			if r.CatchUp != nil {
				cu.CaughtUp = min(cu.CaughtUp, r.CatchUp.CaughtUp)
				if r.CatchUp.AllMs < 0 {
					cu.AllMs = -1 // one run where not everyone caught up is a failure
				}
			}
		}
		m.CatchUp = &cu
	}
	if len(failed) > 0 {
		// The failed runs are not in the figures above, but they must not
		// vanish from the report: it lists every merged result's error.
		var errs []string
		for _, r := range failed {
			errs = append(errs, r.Error)
		}
		m.Error = fmt.Sprintf("%d of %d runs failed (the figures are the other runs'): %s", len(failed), len(rs), strings.Join(errs, "; "))
	}
	return m
}
