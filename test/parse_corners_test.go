package test

import (
	"strings"
	"testing"
	"time"
)

// cornerEnd is sent after every case: it ends whatever block the case left
// open and marks the end of the case's events.
const cornerEnd = "\n\n\ndata: __END__\n\n"

// parseCorners are upstream byte streams covering the corners of the event
// stream format. Each is a list of segments, sent with a pause in between so
// that they reach lastevent in separate reads.
var parseCorners = []struct {
	name string
	segs []string
}{
	{"bom", []string{"\xEF\xBB\xBFdata: after bom\n\n"}},
	{"bom-split", []string{"\xEF\xBB", "\xBFdata: split bom\n\n"}},
	{"bom-twice", []string{"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"}},
	{"bom-later", []string{"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: c\n\n"}},
	{"lf", []string{"data: a\ndata: b\n\ndata: c\n\n"}},
	{"cr", []string{"data: a\rdata: b\r\rdata: c\r\r"}},
	{"crlf", []string{"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"}},
	{"mixed-endings", []string{"data: a\r\n\ndata: b\n\r\ndata: c\r\r\ndata: d\n\r"}},
	{"cr-at-segment-end", []string{"data: a\r", "\ndata: b\r\n\r\n"}},
	{"cr-blank-at-segment-end", []string{"data: a\r\n\r", "\ndata: b\r\n\r\n"}},
	{"cr-cr-across-segments", []string{"data: a\r", "\r", "\ndata: b\r", "\r"}},
	{"lf-after-cr-only-segment", []string{"data: a", "\r", "\n", "\r\n"}},
	{"split-mid-name", []string{"da", "ta: x\n", "\n"}},
	{"split-mid-value", []string{"data: hel", "lo wor", "ld\n\n"}},
	{"field-without-colon", []string{"data\n\ndata\ndata\n\nevent\ndata: x\n\nid\ndata: y\n\n"}},
	{"space-handling", []string{"data:x\n\ndata: x\n\ndata:  x\n\ndata:\tx\n\ndata: x \n\n"}},
	{"colon-in-value", []string{"data: a: b\n\ndata::x\n\ndata: http://example.com/?q=1\n\n"}},
	{"multi-line-data", []string{"data: a\ndata: b\ndata: c\n\ndata: a\ndata:\ndata: b\n\n"}},
	{"empty-data", []string{"data:\n\ndata: \n\ndata\n\n"}},
	{"trailing-empty-data-line", []string{"data: a\ndata:\n\n"}},
	{"comments", []string{": hello\n\n:\ndata: a\n: between\ndata: b\n\n:only comment\n\n"}},
	{"unknown-fields", []string{"foo: bar\ndata: a\nDATA: b\nData: c\nevents: d\n\nfoo\n\nx: y\n\n"}},
	{"event-types", []string{"event: add\ndata: 1\n\nevent: remove\ndata: 2\n\nevent:\ndata: 3\n\nevent: a\nevent: b\ndata: 4\n\nevent: orphan\n\ndata: 5\n\nevent:  spaced\ndata: 6\n\n"}},
	{"event-after-data", []string{"data: 1\nevent: late\n\n"}},
	{"id-with-nul", []string{"id: a\x00b\ndata: x\n\nid: \x00\ndata: y\n\n"}},
	{"upstream-ids", []string{"id: 7\ndata: x\n\nid: 8\n\nid\ndata: y\n\nid: \ndata: z\n\nid: 9\ndata: w\n\n"}},
	{"retry-fields", []string{"retry: 1500\ndata: a\n\nretry: abc\ndata: b\n\nretry: 1500x\ndata: c\n\nretry\ndata: d\n\nretry: 2000\n\ndata: e\n\n"}},
	{"nul-and-invalid-utf8-in-data", []string{"data: a\x00b\n\ndata: \xff\xfe\xc3\n\ndata: héllo ✓\n\n"}},
	{"blank-lines-only", []string{"\n\n\n\n", "\r\r", "\r\n\r\n", "data: a\n\n\n\n"}},
	{"long-line-in-pieces", []string{"data: " + strings.Repeat("x", 20000), strings.Repeat("y", 20000), "\ndata: tail\n\n"}},
	{"many-small-events", []string{strings.Repeat("data: e\n\n", 200)}},
}

// TestParseCorners: for every corner of the format, the (type, data)
// sequence a client parses from lastevent's output is the one the same
// upstream bytes give when parsed directly; every event carries a proxy id,
// the ids strictly increase as strings, have one length and are printable
// ASCII; the output never holds a CR.
func TestParseCorners(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())
	for _, tc := range parseCorners {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := "/feed/corner/" + tc.name
			feed := up.Feed(path)
			c := rawGet(t, p.Addr, path)
			if c.Status != 200 {
				t.Fatalf("status %d", c.Status)
			}
			if !feed.WaitConns(1, 5*time.Second) {
				t.Fatal("upstream never saw the connection")
			}
			all := ""
			for i, s := range append(append([]string{}, tc.segs...), cornerEnd) {
				if i > 0 {
					time.Sleep(30 * time.Millisecond)
				}
				feed.Send(s)
				all += s
			}
			ref, err := parseAll([]byte(all), 1<<20)
			if err != nil {
				t.Fatalf("reference parse: %v", err)
			}
			var want []rawFrame
			for _, f := range ref {
				if f.Dispatch {
					want = append(want, f)
				}
			}
			got := c.eventsUntil("__END__", 10*time.Second)
			if len(got) != len(want) {
				t.Fatalf("got %d events, want %d\ngot  %v\nwant %v", len(got), len(want), got, want)
			}
			for i := range want {
				if got[i].Type() != want[i].Type() || got[i].Data != want[i].Data {
					t.Fatalf("event %d: got (%q, %q), want (%q, %q)", i, got[i].Type(), got[i].Data, want[i].Type(), want[i].Data)
				}
			}
			checkProxyIDs(t, got)
			for _, f := range got {
				for _, r := range ref {
					if r.HasID && r.ID != "" && r.ID == f.ID {
						t.Fatalf("the upstream's id %q reached the client", r.ID)
					}
				}
			}
			for i, ch := range c.Chunks() {
				if strings.IndexByte(string(ch), '\r') >= 0 {
					t.Fatalf("chunk %d holds a CR: %q", i, ch)
				}
			}
		})
	}
}

// checkProxyIDs: every event has an id, the ids strictly increase as
// strings, all have the same length, and are printable ASCII.
func checkProxyIDs(t testing.TB, evs []rawFrame) {
	t.Helper()
	for i, ev := range evs {
		if !ev.HasID || ev.ID == "" {
			t.Fatalf("event %d has no id: %v", i, ev)
		}
		for j := 0; j < len(ev.ID); j++ {
			if c := ev.ID[j]; c < 0x21 || c > 0x7e {
				t.Fatalf("event %d: id %q holds byte %#x", i, ev.ID, c)
			}
		}
		if i == 0 {
			continue
		}
		prev := evs[i-1].ID
		if len(ev.ID) != len(prev) {
			t.Fatalf("ids of different lengths: %q, %q", prev, ev.ID)
		}
		if !(ev.ID > prev) {
			t.Fatalf("id %q does not follow %q", ev.ID, prev)
		}
	}
}

// TestParseRetryClamped: an upstream retry passes on, clamped to a sane
// range (Chromium takes retry: 99999999999 as "never reconnect"), and the
// response's own retry comes first.
func TestParseRetryClamped(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_RETRY=3s")
	feed := up.Feed("/feed/retry")
	c := rawGet(t, p.Addr, "/feed/retry")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("retry: 99999999999\ndata: huge\n\n")
	feed.Send("retry: 5\ndata: tiny\n\n")
	feed.Send("retry: 99999999999999999999999999\ndata: overflow\n\n")
	feed.Send("retry: 0\ndata: zero\n\n")
	feed.Send("retry: 2500\ndata: normal\n\n")
	feed.Send("data: none\n\n")
	feed.Send("retry: 999999999\n\ndata: deferred\n\n") // a retry-only block
	feed.Send("data: end\n\n")

	first, err := c.NextFrame(5 * time.Second)
	if err != nil || first.Retry != 3000 {
		t.Fatalf("first frame %v (%v), want retry 3000", first, err)
	}
	// The retry in effect for each event: from its own frame or from a
	// retry-only frame since the previous event (either way is fine).
	want := map[string]int64{"huge": 300000, "tiny": 100, "overflow": 300000, "zero": 100, "normal": 2500, "none": -1, "deferred": 300000, "end": -1}
	pending := int64(-1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := c.NextFrame(time.Until(deadline))
		if err != nil {
			t.Fatal(err)
		}
		if f.Retry >= 0 {
			if f.Retry > 300000 || f.Retry < 100 {
				t.Fatalf("retry %d reached the client: %v", f.Retry, f)
			}
			pending = f.Retry
		}
		if !f.Dispatch {
			continue
		}
		w, ok := want[f.Data]
		if !ok {
			t.Fatalf("unexpected event %v", f)
		}
		if pending != w {
			t.Fatalf("event %q has retry %d in effect, want %d", f.Data, pending, w)
		}
		pending = -1
		delete(want, f.Data)
		if f.Data == "end" {
			break
		}
	}
	if len(want) != 0 {
		t.Fatalf("events missing: %v", want)
	}
}
