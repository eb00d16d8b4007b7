package test

// A burst from the upstream in Redis mode (issue 6: "pipeline under
// bursts"): the owner appends what one read brought in one Redis call, so a
// burst costs a few round trips, not one per frame, and every client, on the
// owner and on a follower, still gets every frame once, in order.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestReplicaBurstIsBatched(t *testing.T) {
	r := startRedis(t)
	up := startUpstream(t)
	const path = "/feed/replica-burst"
	feed := up.Feed(path)
	env := []string{"LASTEVENT_STORE=redis", "LASTEVENT_REDIS_URL=" + r.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_BUFFER_FRAMES=10000"}
	owner := startProxy(t, up.URL(), append(env, "LASTEVENT_NODE_ID=burst-owner")...)
	onOwner := dial(t, owner.URL(), path)
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream not connected")
	}
	follower := startProxy(t, up.URL(), append(env, "LASTEVENT_NODE_ID=burst-follower")...)
	onFollower := dial(t, follower.URL(), path)
	time.Sleep(300 * time.Millisecond) // the follower's tail is running

	const n = 3000
	var burst strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&burst, "data: b%d\n\n", i)
	}
	feed.Send(burst.String())
	for name, c := range map[string]*sseClient{"owner": onOwner, "follower": onFollower} {
		prev := ""
		for i := 1; i <= n; i++ {
			ev := c.Next(10 * time.Second)
			if ev.Data != "b"+strconv.Itoa(i) || ev.ID <= prev {
				t.Fatalf("%s: event %d = %v after id %s", name, i, ev, prev)
			}
			prev = ev.ID
		}
	}
	_, body := owner.adminGet(t, "/metrics")
	m := regexp.MustCompile(`(?m)^lastevent_redis_appends_total (\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no lastevent_redis_appends_total in /metrics")
	}
	calls, _ := strconv.Atoi(string(m[1]))
	t.Logf("%d frames in %d Redis append calls", n, calls)
	if calls < n/64 || calls > n/4 {
		t.Errorf("%d Redis append calls for a burst of %d frames: want batches (at most 64 frames each, and more than 4 per call on average)", calls, n)
	}
}
