package proxy_test

// FuzzLastEventID drives real in-process lastevent servers (session and
// shared mode, on 127.0.0.1) with fuzzed Last-Event-ID headers, lastEventId
// query parameters, other query bytes, paths and stream-key headers, and
// holds every answer to the resume rules: always 200 and an event stream;
// then exactly the sync event the id calls for (malformed-id, other-stream,
// stream-key-mismatch, unknown-id, evicted, system-sync) or an exact replay
// of the frames after the id, then the frames of the stream the request
// belongs to; never a frame of another stream, never a panic.
//
// Two streams, A (/a, "Authorization: Bearer a") and B (/b, "Bearer b"),
// are held open by clients of the test and got 24 frames; the buffer keeps
// 16, so ids of A and B at sequence 1..7 are evicted, 8..24 resumable, 25+
// unknown. Any other request opens a stream whose upstream connection sends
// 12 frames at once. Frames carry the number of their upstream connection
// ("c3-7"), so a frame of another stream cannot pass unnoticed. In an input,
// "@A" and "@B" stand for the generations of A and B of the server at hand
// (random per run), so seeds can hold real ids.
//
//	go test ./proxy -run '^$' -fuzz FuzzLastEventID -fuzztime 20s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/proxy"
	"github.com/lastevent/lastevent/replay"
)

const (
	fuzzFreshFrames  = 12 // frames a new stream gets at once
	fuzzHolderFrames = 24 // frames of the held streams A and B
	fuzzBuffer       = 16 // so A and B keep 9..24: resumable after 8..24
)

// fuzzUpstream answers every request with frames "c<conn>-<i>" and holds
// the stream open: 12 at once, or, for the test's holders (X-Hold), 24
// one by one.
type fuzzUpstream struct {
	ln    net.Listener
	conns atomic.Int64
}

func (u *fuzzUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k := u.conns.Add(1)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fl := w.(http.Flusher)
	if r.Header.Get("X-Hold") != "" {
		fl.Flush()
		time.Sleep(50 * time.Millisecond) // the holder attaches first
		for i := 1; i <= fuzzHolderFrames; i++ {
			fmt.Fprintf(w, "data: c%d-%d\n\n", k, i)
			fl.Flush()
			time.Sleep(time.Millisecond)
		}
	} else {
		for i := 1; i <= fuzzFreshFrames; i++ {
			fmt.Fprintf(w, "data: c%d-%d\n\n", k, i)
		}
		fl.Flush()
	}
	<-r.Context().Done()
}

// fuzzHolder is a stream the test holds open.
type fuzzHolder struct {
	path, auth string
	gen        string // generation text
	tag        string // "c<conn>" of its upstream connection
	conn       net.Conn
}

type fuzzServer struct {
	mode   string
	addr   string
	a, b   *fuzzHolder
	target map[string]*fuzzHolder // "/a" -> A
}

var (
	fuzzOnce    sync.Once
	fuzzServers map[string]*fuzzServer
	fuzzErr     error
)

func fuzzSetup() (map[string]*fuzzServer, error) {
	fuzzOnce.Do(func() { fuzzServers, fuzzErr = startFuzzServers() })
	return fuzzServers, fuzzErr
}

func startFuzzServers() (map[string]*fuzzServer, error) {
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	up := &fuzzUpstream{ln: uln}
	go func() { _ = http.Serve(uln, up) }()
	out := map[string]*fuzzServer{}
	for _, mode := range []string{"session", "shared"} {
		cfg, _, err := proxy.LoadConfig([]string{
			"LASTEVENT_UPSTREAM_URL=http://" + uln.Addr().String(),
			"LASTEVENT_MODE=" + mode,
			fmt.Sprintf("LASTEVENT_BUFFER_FRAMES=%d", fuzzBuffer),
			"LASTEVENT_LINGER=0",
			"LASTEVENT_HEARTBEAT=50ms", // finds closed fuzz clients soon
			"LASTEVENT_LOG_LEVEL=disabled",
		})
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := proxy.NewServer(&cfg, proxy.NewLogger(io.Discard, "disabled", "json"), "fuzz")
		go func() { _ = srv.Serve(ln, aln) }()
		fs := &fuzzServer{mode: mode, addr: ln.Addr().String(), target: map[string]*fuzzHolder{}}
		for _, h := range []*fuzzHolder{{path: "/a", auth: "Bearer a"}, {path: "/b", auth: "Bearer b"}} {
			conn, evs, err := fuzzGet(fs.addr, h.path, []string{"Authorization: " + h.auth, "X-Hold: 1"}, fuzzHolderFrames, 5*time.Second, 20*time.Millisecond)
			if err != nil {
				return nil, fmt.Errorf("%s holder %s: %v", mode, h.path, err)
			}
			if len(evs) != fuzzHolderFrames {
				return nil, fmt.Errorf("%s holder %s: %d frames", mode, h.path, len(evs))
			}
			h.conn = conn
			h.gen = evs[0].id[:26]
			h.tag, _, _ = strings.Cut(evs[0].data, "-")
			fs.target[h.path] = h
		}
		fs.a, fs.b = fs.target["/a"], fs.target["/b"]
		out[mode] = fs
	}
	return out, nil
}

type fuzzEvent struct{ id, typ, data string }

func (e fuzzEvent) String() string {
	return fmt.Sprintf("{id=%s type=%s data=%q}", e.id, e.typ, e.data)
}

var errFuzzStatus = errors.New("not a 200 event stream")

// fuzzGet sends one SSE request (raw, so any header bytes go out as given)
// and reads n events, waiting up to wait for each, then up to extra for one
// more (which it also returns); it returns the open connection.
func fuzzGet(addr, target string, headers []string, n int, wait, extra time.Duration) (net.Conn, []fuzzEvent, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	var req bytes.Buffer
	req.WriteString("GET " + target + " HTTP/1.1\r\nHost: lastevent\r\nAccept: text/event-stream\r\n")
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(req.Bytes()); err != nil {
		conn.Close()
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		conn.Close()
		return nil, nil, fmt.Errorf("%w: %d %q %q", errFuzzStatus, resp.StatusCode, ct, b)
	}
	p := frame.NewParser(resp.Body, 1<<20)
	lastID := ""
	var evs []fuzzEvent
	for len(evs) <= n {
		d := wait
		if len(evs) == n {
			d = extra
		}
		_ = conn.SetReadDeadline(time.Now().Add(d))
		f, err := p.Next()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			conn.Close()
			return nil, evs, err
		}
		if f.HasID {
			lastID = string(f.ID)
		}
		if f.Dispatch {
			typ := string(f.Event)
			if typ == "" {
				typ = "message"
			}
			evs = append(evs, fuzzEvent{id: lastID, typ: typ, data: string(f.Data)})
		}
	}
	return conn, evs, nil
}

// fuzzEscapeQuery makes fuzz bytes a valid query: every byte outside the
// unreserved set, '&', '=', '+' and well-formed %XX escapes is percent-encoded.
func fuzzEscapeQuery(q []byte) string {
	const hex = "0123456789ABCDEF"
	isHex := func(c byte) bool { return strings.IndexByte("0123456789abcdefABCDEF", c) >= 0 }
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("-._~&=+", c) >= 0:
			b.WriteByte(c)
		case c == '%' && i+2 < len(q) && isHex(q[i+1]) && isHex(q[i+2]):
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// fuzzHeaderValue is what may stand in a header line: what a browser sends
// as Last-Event-ID (no CR, LF or NUL; no surrounding whitespace), less the
// other control bytes, which fasthttp refuses before lastevent sees the
// request (TestLastEventIDControlBytes pins that; the query parameter still
// carries them, percent-encoded).
func fuzzHeaderValue(v []byte) string {
	out := make([]byte, 0, len(v))
	for _, c := range v {
		if c < 0x20 && c != '\t' || c == 0x7f {
			continue
		}
		out = append(out, c)
	}
	return string(bytes.Trim(out, " \t"))
}

// TestLastEventIDControlBytes: a Last-Event-ID with a control byte is
// malformed like any other bad id, and a browser may send one (Fetch forbids
// only NUL, CR and LF in a header value; an EventSource sends back whatever
// id an earlier server gave it). It must get 200 and sync-required
// (malformed-id), not an error status that makes EventSource give up.
func TestLastEventIDControlBytes(t *testing.T) {
	servers, err := fuzzSetup()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"\x01abc", "abc\x7f", "a\x1bb", "\x08"} {
		conn, evs, err := fuzzGet(servers["session"].addr, "/a", []string{"Last-Event-ID: " + id}, 1+fuzzFreshFrames, 2*time.Second, 10*time.Millisecond)
		if err != nil {
			t.Errorf("Last-Event-ID %q: %v", id, err)
			continue
		}
		conn.Close()
		if len(evs) == 0 || evs[0].typ != "sync-required" || !strings.Contains(evs[0].data, `"malformed-id"`) {
			t.Errorf("Last-Event-ID %q: got %v, want sync-required (malformed-id) first", id, evs)
		}
	}
}

// fuzzStrip removes the lastEventId pairs of a raw query, keeping the others
// byte for byte, and returns the first one's decoded value (nil if none):
// the parameter is lastevent's, not the upstream's.
func fuzzStrip(raw string) (string, []byte) {
	if raw == "" {
		return "", nil
	}
	var kept []string
	var value []byte
	for _, pair := range strings.Split(raw, "&") {
		name, v, _ := strings.Cut(pair, "=")
		if n, err := url.QueryUnescape(name); err == nil && n == "lastEventId" {
			if value == nil {
				dv, err := url.QueryUnescape(v)
				if err != nil {
					dv = v
				}
				value = []byte(dv)
			}
			continue
		}
		kept = append(kept, pair)
	}
	return strings.Join(kept, "&"), value
}

// fuzzWant is what a request must get.
type fuzzWant struct {
	first  string      // "" or "sync-required:<reason>" or "system-sync"
	fresh  bool        // then frames 1..12 of a new upstream connection, in a new generation
	resume *fuzzHolder // then frames after seq of this stream
	seq    uint64
	headOf *fuzzHolder // the sync event's id is this stream's head (seq 12)
}

func (w fuzzWant) String() string {
	s := fmt.Sprintf("first=%q fresh=%v", w.first, w.fresh)
	if w.resume != nil {
		s += fmt.Sprintf(" replay of %s after %d", w.resume.path, w.seq)
	}
	if w.headOf != nil {
		s += " sync at the head of " + w.headOf.path
	}
	return s
}

func FuzzLastEventID(f *testing.F) {
	for _, s := range []struct {
		id, query string
		flags     uint8
	}{
		{"", "", 0},
		{"@A-0000000000004", "", 0},                         // session: resume A after 4
		{"@A-0000000000007", "", 0 | 1},                     // shared: resume A after 7
		{"@A-000000000000C", "", 0},                         // at the head: nothing to replay
		{"@A-0000000000002", "", 0},                         // evicted
		{"@A-000000000000D", "", 1},                         // unknown-id (13 > 12)
		{"@B-0000000000005", "", 0},                         // other stream
		{"@A-0000000000005", "", 8},                         // key mismatch (auth b)
		{"@A-0000000000005", "", 24},                        // key mismatch (extra Cookie)
		{"@A-0000000000005", "x=1", 0},                      // other stream: the query differs
		{"@A-0000000000005", "", 32},                        // in the query parameter
		{"@A-0000000000005", "x=1", 33},                     // in the query, with another pair
		{"@A-0000000000005", "", 64},                        // header and query: the header wins
		{"01ARZ3NDEKTSV4RRFFQ69G5FAV-0000000000001", "", 0}, // an unknown generation
		{"not-an-id", "", 1},
		{strings.Repeat("A", 8192), "", 0},
		{"@A-0000000000005", "lastEventId=&lastEvent%49d=x", 32},
		{"@a-0000000000005", "", 0},
		{"\x01@A-0000000000005\x7f", "", 0},
		{"@A-000000000000G", "", 0},
		{"@A-FZZZZZZZZZZZZ", "", 1},
		{"@A-0000000000005", "", 2},        // path /b with A's id
		{"", "", 4 | 1},                    // shared, /c: a new stream
		{"@A-0000000000005", "a=%ZZ&b", 5}, // shared, /c, odd query
	} {
		f.Add([]byte(s.id), []byte(s.query), s.flags)
	}
	servers, err := fuzzSetup()
	if err != nil {
		f.Fatal(err)
	}
	var unique atomic.Int64
	f.Fuzz(func(t *testing.T, rawID, rawQuery []byte, flags uint8) {
		if len(rawID) > 12<<10 || len(rawQuery) > 4<<10 {
			return // beyond LASTEVENT_MAX_HEADER_BYTES: a 431, not a resume
		}
		mode := []string{"session", "shared"}[flags&1]
		fs := servers[mode]
		path := []string{"/a", "/b", "/c", "/a/"}[flags>>1&3]
		auth := [][]string{{"Authorization: Bearer a"}, {"Authorization: Bearer b"}, nil, {"Authorization: Bearer a", "Cookie: x"}}[flags>>3&3]
		placement := flags >> 5 & 3
		id := bytes.ReplaceAll(bytes.ReplaceAll(rawID, []byte("@A"), []byte(fs.a.gen)), []byte("@B"), []byte(fs.b.gen))

		query := fuzzEscapeQuery(rawQuery)
		headers := append([]string(nil), auth...)
		header := ""
		switch placement {
		case 0, 2:
			header = fuzzHeaderValue(id)
			headers = append(headers, "Last-Event-ID: "+header)
		}
		switch placement {
		case 1, 2:
			v := string(id)
			if placement == 2 {
				v = "not-this-one" // the header wins
			}
			query = joinQuery(query, "lastEventId="+url.QueryEscape(v))
		}
		// The oracle: the effective id, the target, the key headers.
		keyAuth := strings.Join(auth, "\n")
		oracle := func() ([]byte, string, *fuzzHolder) {
			rest, fromQuery := fuzzStrip(query)
			eff := []byte(header)
			if len(eff) == 0 {
				eff = fromQuery
			}
			target := path
			if rest != "" {
				target += "?" + rest
			}
			holder := fs.target[target]
			if holder != nil && keyAuth != "Authorization: "+holder.auth {
				holder = nil
			}
			return eff, target, holder
		}
		eff, target, holder := oracle()
		if mode == "shared" && holder == nil {
			// Any other key opens a stream of its own: make it unique, so
			// that no stream of an earlier input (still closing) is found.
			query = joinQuery(query, fmt.Sprintf("u%d=", unique.Add(1)))
			eff, target, holder = oracle()
		}
		want := fuzzDecide(fs, eff, target, keyAuth, holder)
		reqTarget := path
		if query != "" {
			reqTarget += "?" + query
		}

		conn, evs, err := fuzzGet(fs.addr, reqTarget, headers, want.events(), 2*time.Second, 3*time.Millisecond)
		if conn != nil {
			defer conn.Close()
		}
		report := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s mode, GET %q with headers %q\n  effective id %q, target %q\n  want %s\n  got %v\n  %s",
				mode, reqTarget, headers, eff, target, want, evs, fmt.Sprintf(format, args...))
		}
		if err != nil {
			report("request failed: %v", err)
		}
		if len(evs) != want.events() {
			report("%d events, want %d", len(evs), want.events())
		}
		i := 0
		var newGen string
		if want.first != "" {
			if len(evs) == 0 {
				report("no event, want %s first", want.first)
			}
			ev := evs[0]
			got := ev.typ
			if ev.typ == "sync-required" {
				var p struct{ Reason, ID string }
				if json.Unmarshal([]byte(ev.data), &p) != nil || p.ID != ev.id {
					report("malformed sync-required payload")
				}
				got += ":" + p.Reason
			}
			if got != want.first {
				report("first event %s, want %s", got, want.first)
			}
			if want.headOf != nil {
				if ev.id != want.headOf.gen+"-"+seqText(fuzzHolderFrames) {
					report("sync id %s, want %s at its head", ev.id, want.headOf.path)
				}
			} else {
				newGen = ev.id[:min(26, len(ev.id))]
				if newGen == fs.a.gen || newGen == fs.b.gen || !(newGen > fs.a.gen && newGen > fs.b.gen) || !strings.HasSuffix(ev.id, "-0000000000000") {
					report("sync event %s: want a new generation, after the old ones, at sequence 0", ev.id)
				}
			}
			i = 1
		}
		switch {
		case want.fresh:
			tag, _, _ := strings.Cut(evs[i].data, "-")
			if tag == fs.a.tag || tag == fs.b.tag {
				report("frames of a held stream (%s) on a new stream", tag)
			}
			for k, ev := range evs[i:] {
				gen := ev.id[:min(26, len(ev.id))]
				if newGen == "" {
					newGen = gen
				}
				wantID := fmt.Sprintf("%s-%s", newGen, seqText(uint64(k+1)))
				if ev.typ != "message" || ev.data != fmt.Sprintf("%s-%d", tag, k+1) || ev.id != wantID {
					report("frame %d of the new stream: %s, want data %s-%d id %s", k+1, ev, tag, k+1, wantID)
				}
			}
			if newGen == fs.a.gen || newGen == fs.b.gen {
				report("a new stream reuses a held stream's generation")
			}
		case want.resume != nil:
			h := want.resume
			for k, ev := range evs[i:] {
				seq := want.seq + uint64(k) + 1
				wantID := h.gen + "-" + seqText(seq)
				if ev.typ != "message" || ev.data != fmt.Sprintf("%s-%d", h.tag, seq) || ev.id != wantID {
					report("replayed frame %d: %s, want data %s-%d id %s", seq, ev, h.tag, seq, wantID)
				}
			}
		}
	})
}

func joinQuery(q, pair string) string {
	if q == "" {
		return pair
	}
	return q + "&" + pair
}

// events is the number of events the request must get.
func (w fuzzWant) events() int {
	n := 0
	if w.first != "" {
		n++
	}
	switch {
	case w.fresh:
		n += fuzzFreshFrames
	case w.resume != nil:
		n += fuzzHolderFrames - int(w.seq)
	}
	return n
}

// seqText is the sequence part of an id's text form.
func seqText(seq uint64) string {
	s := replay.ID{Seq: seq}.String()
	return s[27:]
}

// fuzzDecide is the oracle: what the resume rules (README, "What clients
// see", and Modes) say the request must get.
func fuzzDecide(fs *fuzzServer, eff []byte, target, keyAuth string, holder *fuzzHolder) fuzzWant {
	hasID := len(eff) > 0
	id, idErr := replay.ParseID(eff)
	var known *fuzzHolder
	if hasID && idErr == nil {
		gen := replay.ID{Gen: id.Gen}.String()[:26]
		for _, h := range []*fuzzHolder{fs.a, fs.b} {
			if gen == h.gen {
				known = h
			}
		}
	}
	resumeOrSync := func(h *fuzzHolder) fuzzWant {
		switch {
		case id.Seq > fuzzHolderFrames:
			return fuzzWant{first: "sync-required:unknown-id", headOf: h}
		case id.Seq+1 < fuzzHolderFrames-fuzzBuffer+1:
			return fuzzWant{first: "sync-required:evicted", headOf: h}
		}
		return fuzzWant{resume: h, seq: id.Seq}
	}
	sameKey := func(h *fuzzHolder) bool { return keyAuth == "Authorization: "+h.auth }
	if fs.mode == "session" {
		switch {
		case !hasID:
			return fuzzWant{fresh: true}
		case idErr != nil:
			return fuzzWant{first: "sync-required:malformed-id", fresh: true}
		case known == nil:
			return fuzzWant{first: "system-sync", fresh: true}
		case known.path != target:
			return fuzzWant{first: "sync-required:other-stream", fresh: true}
		case !sameKey(known):
			return fuzzWant{first: "sync-required:stream-key-mismatch", fresh: true}
		}
		return resumeOrSync(known)
	}
	// Shared: the request's key names a stream (a held one, or a new one).
	if holder == nil {
		switch {
		case !hasID:
			return fuzzWant{fresh: true}
		case idErr != nil:
			return fuzzWant{first: "sync-required:malformed-id", fresh: true}
		case known == nil:
			return fuzzWant{first: "system-sync", fresh: true}
		case known.path == target:
			return fuzzWant{first: "sync-required:stream-key-mismatch", fresh: true}
		}
		return fuzzWant{first: "sync-required:other-stream", fresh: true}
	}
	switch {
	case !hasID:
		return fuzzWant{} // live at the head: nothing yet
	case idErr != nil:
		return fuzzWant{first: "sync-required:malformed-id", headOf: holder}
	case known == holder:
		return resumeOrSync(holder)
	case known == nil:
		return fuzzWant{first: "system-sync", headOf: holder}
	case known.path == target:
		return fuzzWant{first: "sync-required:stream-key-mismatch", headOf: holder}
	}
	return fuzzWant{first: "sync-required:other-stream", headOf: holder}
}
