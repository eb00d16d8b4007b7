package test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lastevent/lastevent/replay"
)

// TestFaultChecker: the delivery checker that every fault and soak test
// relies on accepts the histories the promise allows and rejects each kind
// of broken one.
func TestFaultChecker(t *testing.T) {
	g1 := replay.NewGenerator().Next()
	g2 := g1
	g2[0]++ // a later generation
	id := func(g replay.Gen, seq uint64) string { return replay.ID{Gen: g, Seq: seq}.String() }
	tick := func(g replay.Gen, seq uint64, tag string, n int) event {
		return event{ID: id(g, seq), Type: "tick", Data: faultTickData(tag, n)}
	}
	syncReq := func(g replay.Gen, seq uint64, reason string) event {
		return event{ID: id(g, seq), Type: "sync-required", Data: fmt.Sprintf(`{"reason":%q,"id":%q}`, reason, id(g, seq))}
	}
	sysSync := func(g replay.Gen, seq uint64) event { return event{ID: id(g, seq), Type: "system-sync", Data: "{}"} }
	run := func(n0, n1 int, g replay.Gen, seq0 uint64) []event {
		var out []event
		for n := n0; n <= n1; n++ {
			out = append(out, tick(g, seq0+uint64(n-n0), "a", n))
		}
		return out
	}
	cat := func(parts ...[]event) []event {
		var out []event
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	one := func(e event) []event { return []event{e} }
	reconnect := []string{"upstream-reconnect"}
	restart := []string{"system-sync"}
	corrupt := tick(g1, 4, "a", 4)
	corrupt.Data = corrupt.Data[:len(corrupt.Data)-1]
	dupID := run(1, 3, g1, 1)
	dupID[2].ID = dupID[1].ID

	for _, tc := range []struct {
		name  string
		evs   []event
		r     deliveryRules
		fault string // "" when the history is fine; else a word of the report
	}{
		{"exact", run(5, 20, g1, 1), deliveryRules{tag: "a", final: 20}, ""},
		{"marker at the gap", cat(run(1, 5, g1, 1), one(syncReq(g1, 6, "upstream-reconnect")), run(9, 12, g1, 7)), deliveryRules{tag: "a", final: 12, syncs: reconnect}, ""},
		{"marker without a gap", cat(run(1, 5, g1, 1), one(syncReq(g1, 6, "upstream-reconnect")), run(6, 8, g1, 7)), deliveryRules{tag: "a", final: 8, syncs: reconnect}, ""},
		{"restart", cat(run(1, 5, g1, 1), one(sysSync(g2, 0)), run(9, 10, g2, 1)), deliveryRules{tag: "a", final: 10, syncs: restart}, ""},
		{"silent gap", cat(run(1, 5, g1, 1), run(7, 9, g1, 6)), deliveryRules{tag: "a", final: 9}, "silent gap"},
		{"gap behind a marker of another kind", cat(run(1, 5, g1, 1), one(syncReq(g1, 6, "slow-client")), run(9, 9, g1, 7)), deliveryRules{tag: "a", final: 9, syncs: reconnect}, "unexpected sync-required"},
		{"duplicate", cat(run(1, 5, g1, 1), run(5, 6, g1, 6)), deliveryRules{tag: "a", final: 6}, "duplicate"},
		{"reordered", cat(run(1, 5, g1, 1), one(syncReq(g1, 6, "upstream-reconnect")), run(3, 3, g1, 7)), deliveryRules{tag: "a", syncs: reconnect}, "reordered"},
		{"another stream's frame", cat(run(1, 2, g1, 1), one(tick(g1, 3, "b", 3))), deliveryRules{tag: "a"}, "another stream"},
		{"corrupt data", cat(run(1, 3, g1, 1), one(corrupt)), deliveryRules{tag: "a"}, "corrupt"},
		{"log frame skipped", cat(run(1, 3, g1, 1), one(tick(g1, 5, "a", 4))), deliveryRules{tag: "a"}, "skipped"},
		{"new generation without sync", cat(run(1, 3, g1, 1), run(4, 5, g2, 1)), deliveryRules{tag: "a"}, "new generation"},
		{"id repeats", dupID, deliveryRules{tag: "a"}, "does not increase"},
		{"not an id", one(event{ID: "7", Type: "tick", Data: faultTickData("a", 1)}), deliveryRules{tag: "a"}, "not a lastevent id"},
		{"does not reach the end", run(1, 5, g1, 1), deliveryRules{tag: "a", final: 6}, "not with n=6"},
		{"ends on a sync", cat(run(1, 5, g1, 1), one(syncReq(g1, 6, "upstream-reconnect"))), deliveryRules{tag: "a", final: 5, syncs: reconnect}, "ends with"},
		{"sync payload id differs", cat(run(1, 2, g1, 1), one(event{ID: id(g1, 3), Type: "sync-required", Data: `{"reason":"upstream-reconnect","id":"x"}`})), deliveryRules{tag: "a", syncs: reconnect}, "payload"},
		{"other event type", one(event{ID: id(g1, 1), Type: "message", Data: "x"}), deliveryRules{tag: "a"}, "unexpected event type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := deliveryViolation(tc.evs, tc.r)
			switch {
			case tc.fault == "" && msg != "":
				t.Fatalf("rejected a good history: %s\n%s", msg, faultHistory(tc.evs))
			case tc.fault != "" && !strings.Contains(msg, tc.fault):
				t.Fatalf("want a report about %q, got %q\n%s", tc.fault, msg, faultHistory(tc.evs))
			}
		})
	}
	want := "a:n1-5(g1:1..g1:5) [sync-required g1:6"
	if got := faultHistory(cat(run(1, 5, g1, 1), one(syncReq(g1, 6, "upstream-reconnect")))); !strings.HasPrefix(got, want) {
		t.Fatalf("rendering: %s, want it to start with %s", got, want)
	}
}
