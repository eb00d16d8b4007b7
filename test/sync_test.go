package test

// Points 6 and 7 of the wire behaviour: a Last-Event-ID that cannot be
// resumed is never an error status. It is answered with 200 and a
// sync-required (or system-sync) event at the head of the stream the client
// lands on, and the stream then continues live, carrying only its own frames.

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/upstream"
)

// tagged sends frame n on feed: each upstream connection gets data naming
// its own path and Authorization, so a client can tell whose frame it got.
func tagged(feed *upstream.Feed, n int) {
	feed.SendEach(func(r *http.Request) string {
		return fmt.Sprintf("data: %s|%s|%d\n\n", r.URL.Path, r.Header.Get("Authorization"), n)
	})
}

func tagOf(path, auth string, n int) string { return fmt.Sprintf("%s|%s|%d", path, auth, n) }

// resumePath returns the request path and headers that present id, by the
// Last-Event-ID header or by the ?lastEventId= query parameter.
func resumePath(path, via, id string, headers ...string) (string, []string) {
	if via == "query" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		return path + sep + "lastEventId=" + url.QueryEscape(id), headers
	}
	return path, append(headers, "Last-Event-ID: "+id)
}

// firstBlock returns the fields of the first block of the body, in order.
func firstBlock(t testing.TB, c *wireClient) []string {
	t.Helper()
	var body []byte
	for _, ch := range c.Chunks() {
		body = append(body, ch...)
	}
	block, _, ok := strings.Cut(string(body), "\n\n")
	if !ok {
		t.Fatalf("no complete first block in %q", body)
	}
	return strings.Split(block, "\n")
}

// checkNoLeakedID: the client's id (header or query parameter) is
// lastevent's, never the upstream's business.
func checkNoLeakedID(t testing.TB, up *upstream.Server, paths ...string) {
	t.Helper()
	for _, path := range paths {
		for _, r := range requestsTo(up.Requests(), path) {
			if r.URL.Query().Has("lastEventId") {
				t.Errorf("upstream request %s carries the lastEventId query parameter", r.URL)
			}
			if v := r.Header.Get("Last-Event-ID"); v != "" {
				t.Errorf("upstream request %s carries Last-Event-ID %q, but the upstream never sent an id", r.URL, v)
			}
		}
	}
}

type syncCase struct {
	name   string
	reason string
	// present returns the id to resume with, the path to resume on and the
	// Authorization of the resuming client, from the fixture.
	present func(t testing.TB, fx *syncFixture) (id, path, auth string)
	// sameStream: the client lands on A's stream (so its head is A's last id).
	sameStream func(mode string) bool
}

type syncFixture struct {
	pathA, pathB string
	idsA, idsB   []string
}

const (
	authAlice = "Bearer alice"
	authBob   = "Bearer bob"
)

var syncCases = []syncCase{
	{
		name: "evicted", reason: "evicted",
		present:    func(t testing.TB, fx *syncFixture) (string, string, string) { return fx.idsA[1], fx.pathA, authAlice },
		sameStream: func(string) bool { return true },
	},
	{
		name: "unknown", reason: "unknown-id",
		present: func(t testing.TB, fx *syncFixture) (string, string, string) {
			gen, seq := splitID(t, fx.idsA[len(fx.idsA)-1])
			return makeID(gen, seq+1000), fx.pathA, authAlice
		},
		sameStream: func(string) bool { return true },
	},
	{
		name: "malformed", reason: "malformed-id",
		present: func(t testing.TB, fx *syncFixture) (string, string, string) {
			return "not an id!<>", fx.pathA, authAlice
		},
		sameStream: func(mode string) bool { return mode == "shared" },
	},
	{
		name: "long8k", reason: "malformed-id",
		present: func(t testing.TB, fx *syncFixture) (string, string, string) {
			id := fx.idsA[len(fx.idsA)-1]
			return id + strings.Repeat("0", 8<<10-len(id)), fx.pathA, authAlice
		},
		sameStream: func(mode string) bool { return mode == "shared" },
	},
	{
		name: "other-stream", reason: "other-stream",
		present: func(t testing.TB, fx *syncFixture) (string, string, string) {
			return fx.idsB[len(fx.idsB)-1], fx.pathA, authAlice
		},
		sameStream: func(mode string) bool { return mode == "shared" },
	},
	{
		name: "key-mismatch", reason: "stream-key-mismatch",
		present: func(t testing.TB, fx *syncFixture) (string, string, string) {
			return fx.idsA[len(fx.idsA)-1], fx.pathA, authBob
		},
		sameStream: func(string) bool { return false },
	},
}

func TestSyncRequired(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"session", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t)
			p := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode, "LASTEVENT_BUFFER_FRAMES=4", "LASTEVENT_LINGER=30s")
			for _, tc := range syncCases {
				for _, via := range []string{"header", "query"} {
					t.Run(tc.name+"/"+via, func(t *testing.T) {
						t.Parallel()
						runSyncCase(t, up, p, mode, via, tc)
					})
				}
			}
		})
	}
}

func runSyncCase(t *testing.T, up *upstream.Server, p *proc, mode, via string, tc syncCase) {
	fx := &syncFixture{
		pathA: fmt.Sprintf("/feed/sync-%s-%s-a", tc.name, via),
		pathB: fmt.Sprintf("/feed/sync-%s-%s-b", tc.name, via),
	}
	feedA, feedB := up.Feed(fx.pathA), up.Feed(fx.pathB)
	// With the query parameter, the stream's URL has a query of its own:
	// removing lastEventId must leave it as it was.
	query := ""
	if via == "query" {
		query = "?room=7"
	}
	// A and B are the streams that exist before the bad resume.
	a := dialWire(t, p.URL(), fx.pathA+query, "Authorization: "+authAlice)
	b := dialWire(t, p.URL(), fx.pathB+query, "Authorization: "+authAlice)
	// One at a time: with a 4-frame buffer a burst would leave A behind.
	for n := 1; n <= 12; n++ {
		tagged(feedA, n)
		ev := a.Next(5 * time.Second)
		if ev.Data != tagOf(fx.pathA, authAlice, n) {
			t.Fatalf("client A: want frame %d, got %v", n, ev)
		}
		fx.idsA = append(fx.idsA, ev.ID)
	}
	for n := 1; n <= 3; n++ {
		tagged(feedB, n)
		fx.idsB = append(fx.idsB, b.Next(5*time.Second).ID)
	}

	id, path, auth := tc.present(t, fx)
	reqPath, hdrs := resumePath(path+query, via, id, "Authorization: "+auth)
	c := dialWire(t, p.URL(), reqPath, hdrs...)
	if c.Status != 200 {
		t.Fatalf("resume with a %s id: status %d %q, want 200", tc.name, c.Status, c.Body)
	}
	if ct := c.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	ev := c.Next(5 * time.Second)
	if ev.Type != "sync-required" {
		t.Fatalf("first event is %v, want sync-required", ev)
	}
	if got := syncPayload(t, ev)["reason"]; got != tc.reason {
		t.Fatalf("sync-required reason %v, want %q (data %s)", got, tc.reason, ev.Data)
	}
	// The sync event is the very first block: retry 1000, the head id, the event.
	fields := firstBlock(t, c)
	for _, want := range []string{"retry: 1000", "id: " + ev.ID, "event: sync-required", "data: " + ev.Data} {
		if !hasField(fields, want) {
			t.Fatalf("first block %q lacks %q", fields, want)
		}
	}
	gen, seq := splitID(t, ev.ID)
	if tc.sameStream(mode) && ev.ID != fx.idsA[len(fx.idsA)-1] {
		t.Fatalf("sync id %s is not the head of stream A (%s)", ev.ID, fx.idsA[len(fx.idsA)-1])
	}
	st := p.state(t)
	if i, ok := st.byGen(gen); !ok {
		t.Fatalf("sync id %s names no stream in %+v", ev.ID, st.Streams)
	} else if st.Streams[i].LastID != ev.ID || st.Streams[i].Path != fx.pathA {
		t.Fatalf("sync id %s is not the head of its stream %+v", ev.ID, st.Streams[i])
	}

	// Live from there, own frames only, even while B and A keep sending.
	tagged(feedB, 4)
	tagged(feedA, 13)
	tagged(feedB, 5)
	tagged(feedA, 14)
	for i, n := range []int{13, 14} {
		ev := c.Next(5 * time.Second)
		if ev.Data != tagOf(fx.pathA, auth, n) {
			t.Fatalf("after sync-required: want own frame %d (%s), got %v", n, tagOf(fx.pathA, auth, n), ev)
		}
		if want := makeID(gen, seq+1+uint64(i)); ev.ID != want {
			t.Fatalf("after sync id %s: frame id %s, want %s", makeID(gen, seq), ev.ID, want)
		}
	}
	c.NoEvent(200 * time.Millisecond)
	checkNoLeakedID(t, up, fx.pathA, fx.pathB)
	for _, r := range append(requestsTo(up.Requests(), fx.pathA), requestsTo(up.Requests(), fx.pathB)...) {
		if r.URL.RawQuery != strings.TrimPrefix(query, "?") {
			t.Errorf("upstream request query %q, want %q", r.URL.RawQuery, strings.TrimPrefix(query, "?"))
		}
	}
}

func hasField(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSystemSync: an id of a generation the proxy does not have (never
// issued, or issued by a proxy that has since restarted) gets system-sync
// with the configured snapshot payload, and the new ids sort after the old.
func TestSystemSync(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("random generations from seed %d", seed)
	for _, mode := range []string{"session", "shared"} {
		for _, via := range []string{"header", "query"} {
			t.Run(mode+"/unknown-generation/"+via, func(t *testing.T) {
				t.Parallel()
				up := startUpstream(t)
				p := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode)
				path := "/feed/sysync-" + via
				feed := up.Feed(path)
				a := dialWire(t, p.URL(), path, "Authorization: "+authAlice)
				tagged(feed, 1)
				old := a.Next(5 * time.Second)
				rng := rand.New(rand.NewPCG(seed, uint64(len(mode+via))))
				stranger := makeID(randomOldGen(rng), 5)
				reqPath, hdrs := resumePath(path, via, stranger, "Authorization: "+authAlice)
				c := dialWire(t, p.URL(), reqPath, hdrs...)
				ev := checkSystemSync(t, p, c, feed, path, "{}", stranger, 2)
				if mode == "shared" && ev.ID != old.ID {
					// It joins the live shared stream at its head.
					t.Fatalf("shared mode: system-sync id %s is not the head %s of the stream", ev.ID, old.ID)
				}
				if mode == "session" && ev.ID == old.ID {
					t.Fatalf("session mode: the stranger was attached to another session's stream")
				}
				checkNoLeakedID(t, up, path)
			})
		}
		t.Run(mode+"/restart", func(t *testing.T) {
			t.Parallel()
			up := startUpstream(t)
			path := "/feed/restart"
			feed := up.Feed(path)
			p1 := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode)
			a := dialWire(t, p1.URL(), path, "Authorization: "+authAlice)
			for n := 1; n <= 5; n++ {
				tagged(feed, n)
			}
			var last event
			for n := 1; n <= 5; n++ {
				last = a.Next(5 * time.Second)
			}
			p1.Kill()
			const snapshot = `{"snapshot":"/api/state"}`
			p2 := startProxy(t, up.URL(), "LASTEVENT_MODE="+mode, "LASTEVENT_SYSTEM_SYNC_DATA="+snapshot)
			for _, via := range []string{"header", "query"} {
				reqPath, hdrs := resumePath(path, via, last.ID, "Authorization: "+authAlice)
				c := dialWire(t, p2.URL(), reqPath, hdrs...)
				n := 6
				if via == "query" {
					n = 7
				}
				checkSystemSync(t, p2, c, feed, path, snapshot, last.ID, n)
				c.Close()
			}
			checkNoLeakedID(t, up, path)
		})
	}
}

// checkSystemSync reads the system-sync event and then live frame n.
func checkSystemSync(t *testing.T, p *proc, c *wireClient, feed *upstream.Feed, path, data, oldID string, n int) event {
	t.Helper()
	if c.Status != 200 {
		t.Fatalf("resume with a foreign generation: status %d %q, want 200", c.Status, c.Body)
	}
	ev := c.Next(5 * time.Second)
	if ev.Type != "system-sync" || ev.Data != data {
		t.Fatalf("first event %v, want system-sync with data %s", ev, data)
	}
	if !(ev.ID > oldID) {
		t.Fatalf("new id %s does not sort after the old %s", ev.ID, oldID)
	}
	gen, seq := splitID(t, ev.ID)
	oldGen, _ := splitID(t, oldID)
	if gen <= oldGen {
		t.Fatalf("new generation %s does not sort after the old %s", gen, oldGen)
	}
	st := p.state(t)
	if i, ok := st.byGen(gen); !ok || st.Streams[i].LastID != ev.ID {
		t.Fatalf("system-sync id %s is not the head of a stream: %+v", ev.ID, st.Streams)
	}
	tagged(feed, n)
	live := c.Next(5 * time.Second)
	if live.Data != tagOf(path, authAlice, n) || live.ID != makeID(gen, seq+1) {
		t.Fatalf("after system-sync %s: got %v, want frame %d with id %s", ev.ID, live, n, makeID(gen, seq+1))
	}
	return ev
}
