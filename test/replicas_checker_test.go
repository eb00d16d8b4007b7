package test

import (
	"fmt"
	"strings"
	"testing"
)

// TestReplicaChecker: the checker of the multi-replica tests accepts the
// histories the promise allows (whatever the id layout, as long as ids
// increase as strings) and rejects each kind of broken one.
func TestReplicaChecker(t *testing.T) {
	id := func(k int) string { return fmt.Sprintf("H%020d", k) }
	tick := func(k, n int) event { return event{ID: id(k), Type: "tick", Data: faultTickData("a", n)} }
	syncReq := func(k int, reason string) event {
		return event{ID: id(k), Type: "sync-required", Data: fmt.Sprintf(`{"reason":%q,"id":%q}`, reason, id(k))}
	}
	sysSync := func(k int) event { return event{ID: id(k), Type: "system-sync", Data: "{}"} }
	// run returns ticks n0..n1 with ids from k0 in steps of 7 (not consecutive).
	run := func(k0, n0, n1 int) []event {
		var out []event
		for n := n0; n <= n1; n++ {
			out = append(out, tick(k0+7*(n-n0), n))
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
	wrongPayload := syncReq(200, "upstream-reconnect")
	wrongPayload.Data = `{"reason":"upstream-reconnect","id":"x"}`
	other := tick(300, 6)
	other.Data = faultTickData("b", 6)
	corrupt := tick(300, 6)
	corrupt.Data += "x"

	for _, tc := range []struct {
		name  string
		evs   []event
		r     replicaRules
		fault string
	}{
		{"exact", run(1, 1, 20), replicaRules{tag: "a", first: 1, final: 20}, ""},
		{"marker at the gap", cat(run(1, 1, 5), one(syncReq(100, "upstream-reconnect")), run(200, 9, 12)), replicaRules{tag: "a", first: 1, final: 12, syncs: reconnect}, ""},
		{"marker without a gap", cat(run(1, 1, 5), one(syncReq(100, "upstream-reconnect")), run(200, 6, 8)), replicaRules{tag: "a", final: 8, syncs: reconnect}, ""},
		{"system-sync then on", cat(run(1, 1, 5), one(sysSync(100)), run(200, 9, 10)), replicaRules{tag: "a", final: 10, syncs: []string{"system-sync"}}, ""},
		{"any reason", cat(run(1, 1, 5), one(syncReq(100, "redis-gap")), run(200, 9, 10)), replicaRules{tag: "a", final: 10, syncs: []string{"*"}}, ""},
		{"wildcard is not system-sync", cat(run(1, 1, 5), one(sysSync(100)), run(200, 9, 10)), replicaRules{tag: "a", syncs: []string{"*"}}, "unexpected system-sync"},
		{"silent gap", cat(run(1, 1, 5), run(100, 7, 9)), replicaRules{tag: "a"}, "silent gap"},
		{"first frames missing", run(1, 3, 9), replicaRules{tag: "a", first: 1}, "first frame is n=3"},
		{"first frames missing after a sync", cat(one(sysSync(1)), run(2, 3, 9)), replicaRules{tag: "a", first: 1, syncs: []string{"system-sync"}}, ""},
		{"duplicate", cat(run(1, 1, 5), run(100, 5, 6)), replicaRules{tag: "a"}, "duplicate"},
		{"duplicate behind a sync", cat(run(1, 1, 5), one(sysSync(100)), run(200, 5, 6)), replicaRules{tag: "a", syncs: []string{"system-sync"}}, "duplicate"},
		{"reordered", cat(run(1, 1, 5), one(syncReq(100, "upstream-reconnect")), run(200, 3, 3)), replicaRules{tag: "a", syncs: reconnect}, "reordered"},
		{"unexpected sync", cat(run(1, 1, 5), one(syncReq(100, "slow-client")), run(200, 6, 6)), replicaRules{tag: "a", syncs: reconnect}, "unexpected sync-required"},
		{"no sync allowed", cat(run(1, 1, 5), one(syncReq(100, "upstream-reconnect")), run(200, 6, 6)), replicaRules{tag: "a"}, "unexpected sync-required"},
		{"too many syncs", cat(run(1, 1, 2), one(syncReq(100, "upstream-reconnect")), run(200, 4, 4), one(syncReq(300, "upstream-reconnect")), run(400, 6, 6)), replicaRules{tag: "a", syncs: reconnect, maxSyncs: 1}, "at most 1"},
		{"id repeats", cat(run(1, 1, 3), one(tick(15, 4))), replicaRules{tag: "a"}, "does not increase"},
		{"id goes back across a sync", cat(run(100, 1, 3), one(sysSync(50)), run(200, 9, 9)), replicaRules{tag: "a", syncs: []string{"system-sync"}}, "does not increase"},
		{"no id", one(event{Type: "tick", Data: faultTickData("a", 1)}), replicaRules{tag: "a"}, "no id"},
		{"another stream", cat(run(1, 1, 5), one(other)), replicaRules{tag: "a"}, "another stream"},
		{"corrupt", cat(run(1, 1, 5), one(corrupt)), replicaRules{tag: "a"}, "corrupt"},
		{"sync payload id differs", cat(run(1, 1, 2), one(wrongPayload)), replicaRules{tag: "a", syncs: reconnect}, "payload"},
		{"does not reach the end", run(1, 1, 5), replicaRules{tag: "a", final: 6}, "not with n=6"},
		{"ends on a sync", cat(run(1, 1, 5), one(syncReq(100, "upstream-reconnect"))), replicaRules{tag: "a", final: 5, syncs: reconnect}, "ends with"},
		{"other event type", one(event{ID: id(1), Type: "message", Data: "x"}), replicaRules{tag: "a"}, "unexpected event type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := replicaViolation(tc.evs, tc.r)
			switch {
			case tc.fault == "" && msg != "":
				t.Fatalf("rejected a good history: %s\n%s", msg, replicaHistory(tc.evs))
			case tc.fault != "" && !strings.Contains(msg, tc.fault):
				t.Fatalf("want a report about %q, got %q\n%s", tc.fault, msg, replicaHistory(tc.evs))
			}
		})
	}
	if got, want := replicaHistory(cat(run(1, 1, 3), one(sysSync(100)))), "a:n1-3("+id(1)+".."+id(15)+") [system-sync id="+id(100)+" {}]"; got != want {
		t.Fatalf("rendering: %s, want %s", got, want)
	}

	var s sameIDs
	s.add("x", run(1, 1, 3))
	s.add("y", run(1, 2, 4))
	if len(s.bad) == 0 {
		t.Fatal("sameIDs did not notice n=2 with two ids")
	}
}
