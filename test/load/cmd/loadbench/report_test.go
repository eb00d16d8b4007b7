package main

import (
	"strings"
	"testing"
)

// A failed repeat must not vanish from the report: the merged result of
// -repeat 3 where one lastevent run exited carried no error, so docs/perf.md
// showed the two good runs as the whole story.
func TestMergeKeepsFailedRuns(t *testing.T) {
	ok := func() Result {
		return Result{Scenario: "S2", Target: "lastevent", Clients: 10, Established: 10, Delivered: 100, Expected: 100, DeliveredRatio: 1, Latency: &Latency{P50: 1}}
	}
	bad := ok()
	bad.Error = "lastevent exited during the run"
	m := mergeRepeats([]Result{ok(), bad, ok()})
	if len(m) != 1 {
		t.Fatalf("%d merged results", len(m))
	}
	if !strings.Contains(m[0].Error, "lastevent exited during the run") {
		t.Fatalf("merged error %q: the failed run is not reported", m[0].Error)
	}
	md := report(m, &env{})
	if !strings.Contains(md, "lastevent exited during the run") {
		t.Fatalf("the report does not list the failed run:\n%s", md)
	}
}

// The storm's target is an exact resume: a client that got sync-required
// skipped frames, however fast it "caught up".
func TestStormTargetNeedsNoSync(t *testing.T) {
	r := Result{Scenario: "S4", Target: "lastevent", Clients: 5, Established: 5, Syncs: 5,
		CatchUp: &CatchUp{Behind: 100, CaughtUp: 5, AllMs: 10}}
	for _, row := range targets([]Result{r}) {
		if row[0] == "S4" && row[3] != "**no**" {
			t.Fatalf("S4 target met with 5 syncs: %v", row)
		}
	}
}

// Every figure of a merged run is a median, the proxy's RSS (S3's table) too.
func TestMergeRSSIsMedian(t *testing.T) {
	rs := []Result{}
	for _, kib := range []int64{300, 100, 200} {
		rs = append(rs, Result{Scenario: "S3", Target: "lastevent", ProxyRSSKiB: ptr(kib), UpstreamRSSKiB: kib})
	}
	m := mergeRepeats(rs)[0]
	if *m.ProxyRSSKiB != 200 || m.UpstreamRSSKiB != 200 {
		t.Fatalf("proxy RSS %d, upstream RSS %d: want the medians, 200", *m.ProxyRSSKiB, m.UpstreamRSSKiB)
	}
}
