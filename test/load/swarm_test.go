package load

import (
	"fmt"
	"testing"
)

// A duplicate is not a delivery: it must not count as delivered in the
// window (nor give a latency), or a run that lost events and repeated as many
// shows 100 % delivered (S1's table shows no dups column at all).
func TestDuplicateIsNotDelivered(t *testing.T) {
	sw := NewSwarm(SwarmConfig{Clients: 1})
	sw.SetWindow(0, 1<<62)
	c := sw.clients[0]
	for _, seq := range []int64{1, 2, 2, 4} { // 2 twice, 3 missing
		data := AppendPayload(nil, seq, 1000, 100)
		c.onEvent(&Event{Data: data, ID: []byte(fmt.Sprint(seq)), HasID: true}, 2000)
	}
	tot := sw.Totals()
	if tot.Dups != 1 || tot.Gaps != 1 {
		t.Fatalf("dups %d gaps %d, want 1 and 1", tot.Dups, tot.Gaps)
	}
	if tot.InWindow != 3 || tot.Hist.Count() != 3 {
		t.Fatalf("in window %d, latencies %d: want 3 (events 1, 2, 4), the duplicate not counted", tot.InWindow, tot.Hist.Count())
	}
}

// After a sync event the sequence may jump: what follows is delivered.
func TestAfterSyncDelivered(t *testing.T) {
	sw := NewSwarm(SwarmConfig{Clients: 1})
	sw.SetWindow(0, 1<<62)
	c := sw.clients[0]
	c.onEvent(&Event{Data: AppendPayload(nil, 5, 1000, 100)}, 2000)
	c.onEvent(&Event{Type: []byte("sync-required"), Data: []byte("{}")}, 2000)
	c.onEvent(&Event{Data: AppendPayload(nil, 9, 1000, 100)}, 2000)
	if tot := sw.Totals(); tot.InWindow != 2 || tot.Gaps != 0 || tot.Syncs != 1 {
		t.Fatalf("in window %d gaps %d syncs %d, want 2 0 1", tot.InWindow, tot.Gaps, tot.Syncs)
	}
}
