package test

// Resume on another replica (issue 6): an id issued by replica-0 presented
// to replica-1 replays exactly the frames after it, with the same ids, and
// then continues live; likewise from replica-1 to replica-2. No sync event,
// and no second upstream connection (the owner keeps reading; the others
// follow it through Redis).

import (
	"net/http"
	"testing"
	"time"
)

func TestReplicaResumeOnAnotherReplica(t *testing.T) {
	for _, mode := range []string{"shared", "session"} {
		t.Run(mode, func(t *testing.T) { runReplicaResume(t, mode) })
	}
}

// readTicks reads n events from c and fails unless they are ticks of tag
// first..first+n-1 with no sync event.
func readTicks(t *testing.T, who string, c *wireClient, tag string, first, n int) []event {
	t.Helper()
	var evs []event
	for len(evs) < n {
		ev, err := c.TryNext(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: waiting for event %d of %d (ticks n=%d..%d expected): %v; seen so far: %s", who, len(evs)+1, n, first, first+n-1, err, replicaHistory(evs))
		}
		evs = append(evs, ev)
	}
	checkReplicaHistory(t, who, evs, replicaRules{tag: tag, first: first, final: first + n - 1})
	if t.Failed() {
		t.FailNow()
	}
	return evs
}

func runReplicaResume(t *testing.T, mode string) {
	rs := startReplicaSet(t, replicaConfig{mode: mode})
	const path = "/feed/replica-resume"
	feed := rs.up.Feed(path)
	tag, hdr := "shared", []string(nil)
	if mode == "session" {
		tag, hdr = "solo", []string{"X-Fault-Client: solo"}
	}
	f := faultStartFeeder(feed, 0, func(*http.Request) string { return tag })
	defer f.Stop()
	send := func(upTo int) {
		for f.N() < upTo {
			f.Send()
		}
	}

	a := dialWire(t, rs.procs[0].URL(), path, hdr...)
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("replica-0 did not connect to the upstream")
	}
	if mode == "shared" {
		if o := rs.owner(path, nil, 5*time.Second); o != 0 {
			t.Fatalf("replica-%d owns the stream; replica-0 opened it", o)
		}
	}
	send(10)
	evsA := readTicks(t, "client on replica-0", a, tag, 1, 10)
	a.Close()
	idOf := map[int]string{}
	for i, ev := range evsA {
		idOf[i+1] = ev.ID
	}

	// Frames sent while no client is connected: the owner lingers and
	// keeps writing them to Redis.
	send(15)
	time.Sleep(300 * time.Millisecond)

	b := dialWire(t, rs.procs[1].URL(), path, append([]string{"Last-Event-ID: " + idOf[4]}, hdr...)...)
	if b.Status != 200 {
		t.Fatalf("resume on replica-1: status %d %q", b.Status, b.Body)
	}
	evsB := readTicks(t, "resume of n=4's id on replica-1", b, tag, 5, 11)
	for i, ev := range evsB[:6] {
		if n := 5 + i; ev.ID != idOf[n] {
			t.Errorf("replica-1 replayed n=%d with id %s; replica-0 had sent it with %s (not the same log)", n, ev.ID, idOf[n])
		}
	}
	for i, ev := range evsB {
		idOf[5+i] = ev.ID
	}
	send(18)
	evsB = append(evsB, readTicks(t, "replica-1, live after the replay", b, tag, 16, 3)...)
	for i, ev := range evsB {
		idOf[5+i] = ev.ID
	}

	c := dialWire(t, rs.procs[2].URL(), path, append([]string{"Last-Event-ID: " + idOf[12]}, hdr...)...)
	if c.Status != 200 {
		t.Fatalf("resume on replica-2: status %d %q", c.Status, c.Body)
	}
	evsC := readTicks(t, "resume of n=12's id on replica-2", c, tag, 13, 6)
	for i, ev := range evsC {
		if n := 13 + i; ev.ID != idOf[n] {
			t.Errorf("replica-2 replayed n=%d with id %s; replica-1 had sent it with %s", n, ev.ID, idOf[n])
		}
	}
	// Live on both followers: the same frame, the same id.
	send(19)
	b19 := readTicks(t, "replica-1, n=19", b, tag, 19, 1)[0]
	c19 := readTicks(t, "replica-2, n=19", c, tag, 19, 1)[0]
	if b19.ID != c19.ID {
		t.Errorf("n=19 came as %s from replica-1 and as %s from replica-2", b19.ID, c19.ID)
	}

	// The newest id, presented to replica-0 (the owner) again: nothing to
	// replay, then live.
	d := dialWire(t, rs.procs[0].URL(), path, append([]string{"Last-Event-ID: " + c19.ID}, hdr...)...)
	d.NoEvent(300 * time.Millisecond)
	send(20)
	readTicks(t, "replica-0 resuming at the head", d, tag, 20, 1)

	if got := feed.Total(); got != 1 {
		t.Errorf("%d upstream connections were opened for one stream, want 1 (the resumes on other replicas follow the owner through Redis)", got)
	}
	if t.Failed() {
		t.Logf("stream states:%s", rs.states())
	}
}
