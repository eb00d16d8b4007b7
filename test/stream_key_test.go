package test

// Who shares a stream and who gets the upstream's Set-Cookie: the stream key
// is every line of the stream-key headers, as the upstream gets them, and a
// Set-Cookie goes to the client whose request opened the stream, also when
// it opened it with a sync event, and to no one who joined it.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSharedKeyTakesEveryCookieLine: a request with its cookies on two
// Cookie lines (HTTP/2 cookie crumbs an intermediary did not join, or any
// non-browser client) reaches the upstream as "x=1; session=A". A client
// that presents only "Cookie: x=1" must not share that stream: the stream
// key used to take the first line alone. Found by a review.
func TestSharedKeyTakesEveryCookieLine(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared")
	path := "/feed/split-cookie"
	feed := up.Feed(path)

	split := dialWire(t, p.URL(), path, "Cookie: x=1", "Cookie: session=A")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("the upstream never saw the first client's connection")
	}
	other := dialWire(t, p.URL(), path, "Cookie: x=1")
	if !feed.WaitConns(2, 5*time.Second) {
		t.Fatalf("a client with other cookies shares the stream: %d upstream connections", feed.Conns())
	}
	same := dialWire(t, p.URL(), path, "Cookie: x=1; session=A") // the same cookies on one line
	waitFor(t, 5*time.Second, "three clients attached", func() bool { return p.state(t).Totals.Connections == 3 })
	if n := feed.Total(); n != 2 {
		t.Fatalf("%d upstream connections, want 2 (the same cookies on one line share the split client's stream)", n)
	}
	// Each upstream connection says which cookies it was opened with.
	feed.SendEach(func(r *http.Request) string {
		return fmt.Sprintf("data: %s\n\n", strings.Join(r.Header.Values("Cookie"), "|"))
	})
	for _, tc := range []struct {
		name string
		c    *wireClient
		want string
	}{{"split", split, "x=1; session=A"}, {"other", other, "x=1"}, {"same", same, "x=1; session=A"}} {
		if ev := tc.c.Next(5 * time.Second); ev.Data != tc.want {
			t.Errorf("client %s got the frame of the stream opened with cookies %q, want %q", tc.name, ev.Data, tc.want)
		}
	}
}

// TestSetCookieGoesToTheOpener: the upstream answers every stream's request
// with a Set-Cookie (a session refreshed per connection). The client whose
// request opened a stream gets it: a fresh one, and one that arrives with
// an id lastevent cannot use (malformed, or from before a restart) and opens
// a new stream with a sync event, which used to lose it. A client that
// joins an existing stream (shared mode) or resumes one (session mode) does
// not: the cookie was the opener's.
func TestSetCookieGoesToTheOpener(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	const cookie = "sess=opener; Path=/"
	q := "?set-cookie=" + strings.ReplaceAll(strings.ReplaceAll(cookie, "=", "%3D"), "; ", "%3B%20")
	check := func(what string, c *wireClient, want bool) {
		t.Helper()
		if got := c.Header.Get("Set-Cookie"); (got == cookie) != want || (!want && got != "") {
			t.Errorf("%s: Set-Cookie %q, want it: %v", what, got, want)
		}
	}
	t.Run("session", func(t *testing.T) {
		p := startProxy(t, up.URL(), "LASTEVENT_MODE=session", "LASTEVENT_LINGER=1m")
		path := "/feed/cookie-session" + q
		up.Feed("/feed/cookie-session")
		fresh := dialWire(t, p.URL(), path)
		check("a fresh client", fresh, true)
		malformed := dialWire(t, p.URL(), path, "Last-Event-ID: not-an-id")
		if ev := malformed.Next(5 * time.Second); ev.Type != "sync-required" {
			t.Fatalf("a malformed id: first event %v, want sync-required", ev)
		}
		check("a client with a malformed id (it opened a new stream)", malformed, true)
		unknown := dialWire(t, p.URL(), path, "Last-Event-ID: 01M907XD3F9WPAX7FYED2X33T5-0000000000001")
		if ev := unknown.Next(5 * time.Second); ev.Type != "system-sync" {
			t.Fatalf("an id of an unknown generation: first event %v, want system-sync", ev)
		}
		check("a client with an id from before a restart (it opened a new stream)", unknown, true)
		// Resume the fresh client's stream: it exists, so no cookie.
		waitFor(t, 5*time.Second, "three streams", func() bool { return len(p.state(t).Streams) == 3 })
		up.Feed("/feed/cookie-session").Send("data: one\n\n")
		ev := fresh.Next(5 * time.Second)
		fresh.Close()
		resumed := dialWire(t, p.URL(), path, "Last-Event-ID: "+ev.ID)
		check("a client resuming a lingering stream", resumed, false)
	})
	t.Run("shared", func(t *testing.T) {
		p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared")
		path := "/feed/cookie-shared" + q
		feed := up.Feed("/feed/cookie-shared")
		first := dialWire(t, p.URL(), path)
		check("the client that opened the stream", first, true)
		if !feed.WaitConns(1, 5*time.Second) {
			t.Fatal("no upstream connection")
		}
		joiner := dialWire(t, p.URL(), path)
		check("a client that joined it", joiner, false)
		if n := feed.Total(); n != 1 {
			t.Fatalf("%d upstream connections, want 1", n)
		}
	})
}

// TestQuotedCookiesKeptAndKeyed: a cookie whose value holds quotes and
// backslashes (Python's SimpleCookie writes Django's and Flask's messages
// so) reaches the upstream byte for byte, on a plain request and on a
// stream's, and tells two users' streams apart. fasthttp's parsed view of
// the Cookie line dropped such a cookie: the upstream never got it, and two
// users who differed only in it shared one stream in shared mode.
func TestQuotedCookiesKeptAndKeyed(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared")
	const alice = `session="a\"1\\x"; theme=dark`
	const bob = `session="b\"2\\y"; theme=dark`

	path := "/feed/quoted-cookie"
	feed := up.Feed(path)
	a := dialWire(t, p.URL(), path, "Cookie: "+alice)
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("the upstream never saw the first client's connection")
	}
	b := dialWire(t, p.URL(), path, "Cookie: "+bob)
	if !feed.WaitConns(2, 5*time.Second) {
		t.Fatalf("two users whose quoted session cookies differ share one stream: %d upstream connections", feed.Conns())
	}
	feed.SendEach(func(r *http.Request) string {
		return fmt.Sprintf("data: %s\n\n", strings.Join(r.Header.Values("Cookie"), "|"))
	})
	for _, tc := range []struct {
		name string
		c    *wireClient
		want string
	}{{"alice", a, alice}, {"bob", b, bob}} {
		if ev := tc.c.Next(5 * time.Second); ev.Data != tc.want {
			t.Errorf("%s's stream was opened with cookies %q, want %q", tc.name, ev.Data, tc.want)
		}
	}

	pr := startPRUpstream(t, func(head string, body []byte) string { return prOK("ok") })
	pp := startProxy(t, pr.URL())
	prExchange(t, pp.Addr, "GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\nCookie: "+alice+"\r\nCookie: more=1\r\n\r\n", time.Second)
	heads := pr.Heads()
	if len(heads) != 1 {
		t.Fatalf("the upstream got %d requests", len(heads))
	}
	if got := prHeaderValues(heads[0], "Cookie"); len(got) != 1 || got[0] != alice+"; more=1" {
		t.Fatalf("plain request: the client sent Cookie lines %q and %q, the upstream got %q", alice, "more=1", got)
	}
}
