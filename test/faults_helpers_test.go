package test

// Helpers of the fault, dead-client and soak tests: the seed, the numbered
// upstream frames, the one delivery checker every such test uses, a client
// that reconnects with its last id by itself, a faultFeeder, and process figures.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/test/upstream"
)

// faultSeed is the seed of a randomized test: LASTEVENT_TEST_SEED, else the
// clock. It is logged with the line that reruns the test with it.
func faultSeed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LASTEVENT_TEST_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LASTEVENT_TEST_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (rerun: LASTEVENT_TEST_SEED=%d go test ./test -run '^%s$')", seed, seed, strings.Split(t.Name(), "/")[0])
	return seed
}

// faultRand is a seeded generator shared by goroutines.
type faultRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newFaultRand(seed, stream uint64) *faultRand {
	return &faultRand{r: rand.New(rand.NewPCG(seed, stream))}
}

func (l *faultRand) IntN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}

// between returns a duration in [lo, hi).
func (l *faultRand) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(l.IntN(int(hi-lo)))
}

// faultPick returns short under -short and full otherwise.
func faultPick[T any](short, full T) T {
	if testing.Short() {
		return short
	}
	return full
}

// The upstream sequence: frame n of a tag is a two-line event of type tick
// whose size varies with n (a few are several KiB), so cuts at random byte
// offsets land inside frames, inside lines and across TCP segments.

// faultTickPad is the second data line of frame n; tags starting with "big" get
// frames 8 times larger (a replay larger than kernel buffers).
func faultTickPad(tag string, n int) string {
	size := (n * 37) % 400
	if n%23 == 0 {
		size = 3000 + (n*131)%3000
	}
	if strings.HasPrefix(tag, "big") {
		size = 8*size + 1000
	}
	return strings.Repeat(string(rune('a'+n%26)), size)
}

// faultTickData is what a client must see as the data of frame n of tag.
func faultTickData(tag string, n int) string {
	return fmt.Sprintf("{\"tag\":%q,\"n\":%d}\n%s", tag, n, faultTickPad(tag, n))
}

// faultTickFrame is frame n of tag as the upstream sends it (no id: a legacy
// upstream).
func faultTickFrame(tag string, n int) string {
	return fmt.Sprintf("event: tick\ndata: {\"tag\":%q,\"n\":%d}\ndata: %s\n\n", tag, n, faultTickPad(tag, n))
}

func faultParseTick(data string) (tag string, n int, ok bool) {
	first, _, _ := strings.Cut(data, "\n")
	var v struct {
		Tag string `json:"tag"`
		N   *int   `json:"n"`
	}
	if json.Unmarshal([]byte(first), &v) != nil || v.N == nil {
		return "", 0, false
	}
	return v.Tag, *v.N, true
}

// deliveryRules is what checkDelivery holds a client's history to.
type deliveryRules struct {
	seed  uint64
	tag   string   // the only tag whose frames this client may see
	final int      // > 0: the history must end with frame final
	syncs []string // sync-required reasons (and "system-sync") allowed; none: no sync at all
}

// checkDelivery is THE check of the promise, for one client's whole
// history across all its connections: every event is a tick of the client's
// own stream or an allowed sync event; ids are lastevent ids and strictly
// increase (also across a restart, into a new generation); within a
// generation a tick directly follows the previous event (sequence + 1), and
// a new generation starts only after a sync event; tick numbers strictly
// increase (no duplicate, no reordering); wherever numbers skip, a sync event
// stands between them (never a silent gap); and the history ends with frame
// final. It reports the first violation with the seed and a compact rendering
// of what was expected and what was seen.
func checkDelivery(t testing.TB, who string, evs []event, r deliveryRules) bool {
	t.Helper()
	if msg := deliveryViolation(evs, r); msg != "" {
		t.Errorf("%s (seed %d): %s\n  expected: frames of %q, consecutive (a sync event allowed only where frames are missing; allowed: %v), ending with n=%d\n  seen (%d events): %s",
			who, r.seed, msg, r.tag, r.syncs, r.final, len(evs), faultHistory(evs))
		return false
	}
	return true
}

func deliveryViolation(evs []event, r deliveryRules) string {
	var prev replay.ID
	prevText := ""
	prevN := 0
	syncSince := false
	for i, ev := range evs {
		at := fmt.Sprintf("event %d %s", i, ev)
		id, err := replay.ParseID([]byte(ev.ID))
		if err != nil {
			return at + ": its id is not a lastevent id"
		}
		if i > 0 && !(ev.ID > prevText) {
			return fmt.Sprintf("%s: id does not increase (previous %s)", at, prevText)
		}
		switch ev.Type {
		case "tick":
			tag, n, ok := faultParseTick(ev.Data)
			if !ok || ev.Data != faultTickData(tag, n) {
				return at + ": corrupt data"
			}
			if tag != r.tag {
				return fmt.Sprintf("%s: a frame of another stream (tag %q)", at, tag)
			}
			if i > 0 && id.Gen != prev.Gen {
				return at + ": new generation without a sync event"
			}
			if i > 0 && id.Seq != prev.Seq+1 {
				return fmt.Sprintf("%s: sequence %d follows %d: a frame of the log was skipped", at, id.Seq, prev.Seq)
			}
			if prevN > 0 {
				switch {
				case n == prevN:
					return fmt.Sprintf("%s: duplicate of n=%d", at, n)
				case n < prevN:
					return fmt.Sprintf("%s: n=%d after n=%d (reordered)", at, n, prevN)
				case n != prevN+1 && !syncSince:
					return fmt.Sprintf("%s: silent gap: n=%d..%d missing with no sync event", at, prevN+1, n-1)
				}
			}
			prevN, syncSince = n, false
		case "sync-required", "system-sync":
			reason := "system-sync"
			if ev.Type == "sync-required" {
				var p struct{ Reason, ID string }
				if json.Unmarshal([]byte(ev.Data), &p) != nil || p.ID != ev.ID {
					return at + ": malformed sync-required payload (or its id differs from the event's)"
				}
				reason = p.Reason
			}
			if !slices.Contains(r.syncs, reason) {
				return fmt.Sprintf("%s: unexpected %s (%s)", at, ev.Type, reason)
			}
			syncSince = true
		default:
			return at + ": unexpected event type"
		}
		prev, prevText = id, ev.ID
	}
	if r.final > 0 {
		if len(evs) == 0 {
			return "no event at all"
		}
		if last := evs[len(evs)-1]; last.Type != "tick" || prevN != r.final {
			return fmt.Sprintf("the history ends with %s (n=%d), not with n=%d", last, prevN, r.final)
		}
	}
	return ""
}

// faultHistory shows a history compactly: runs of consecutive ticks as
// "n5-40 g1:12-47", sync events in brackets; generations are numbered in
// order of appearance.
func faultHistory(evs []event) string {
	gens := map[replay.Gen]int{}
	faultGen := func(ev event) string {
		id, err := replay.ParseID([]byte(ev.ID))
		if err != nil {
			return fmt.Sprintf("bad-id(%q)", ev.ID)
		}
		g, ok := gens[id.Gen]
		if !ok {
			g = len(gens) + 1
			gens[id.Gen] = g
		}
		return fmt.Sprintf("g%d:%d", g, id.Seq)
	}
	var b strings.Builder
	for i := 0; i < len(evs); {
		ev := evs[i]
		if ev.Type != "tick" {
			fmt.Fprintf(&b, " [%s %s %.80s]", ev.Type, faultGen(ev), ev.Data)
			i++
			continue
		}
		tag, n, ok := faultParseTick(ev.Data)
		if !ok || ev.Data != faultTickData(tag, n) {
			fmt.Fprintf(&b, " CORRUPT(%s %.60q)", faultGen(ev), ev.Data)
			i++
			continue
		}
		j := i + 1
		for j < len(evs) && evs[j].Type == "tick" {
			t2, n2, ok := faultParseTick(evs[j].Data)
			if !ok || t2 != tag || n2 != n+(j-i) || evs[j].Data != faultTickData(t2, n2) {
				break
			}
			j++
		}
		if j-i == 1 {
			fmt.Fprintf(&b, " %s:n%d(%s)", tag, n, faultGen(ev))
		} else {
			fmt.Fprintf(&b, " %s:n%d-%d(%s..%s)", tag, n, n+j-i-1, faultGen(ev), faultGen(evs[j-1]))
		}
		i = j
	}
	return strings.TrimSpace(b.String())
}

// faultClient is an SSE client that, like EventSource, reconnects by itself
// with the last id it saw, whatever happened to its connection; it also
// gives up on a connection that stays silent (no byte, not even a heartbeat)
// for silence, as a watchdog in a page would.
type faultClient struct {
	name    string
	path    string
	headers []string
	addr    func() string
	silence time.Duration
	rng     *faultRand

	mu      sync.Mutex
	evs     []event
	lastID  string
	lastN   int
	conns   int
	ends    map[string]int // how connections ended, counted
	endLog  []string       // how the first connections ended, in order
	answers []string       // answers that were not a 200 event stream
	cur     net.Conn
}

func newFaultClient(name, path string, addr func() string, rng *faultRand, headers ...string) *faultClient {
	return &faultClient{name: name, path: path, addr: addr, headers: headers, silence: 2 * time.Second, rng: rng, ends: map[string]int{}}
}

// run connects again and again until stop is closed.
func (c *faultClient) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		end := c.once(stop)
		c.mu.Lock()
		c.ends[end]++
		if len(c.endLog) < 50 {
			c.endLog = append(c.endLog, end)
		}
		c.mu.Unlock()
		select {
		case <-stop:
			return
		case <-time.After(c.rng.between(10*time.Millisecond, 60*time.Millisecond)):
		}
	}
}

// silenceConn gives up on a read after the client's silence.
type silenceConn struct {
	net.Conn
	d time.Duration
}

func (s silenceConn) Read(b []byte) (int, error) {
	_ = s.Conn.SetReadDeadline(time.Now().Add(s.d))
	return s.Conn.Read(b)
}

// once runs one connection and says how it ended.
func (c *faultClient) once(stop <-chan struct{}) string {
	conn, err := net.DialTimeout("tcp", c.addr(), 3*time.Second)
	if err != nil {
		return "dial-error"
	}
	c.mu.Lock()
	c.conns++
	c.cur = conn
	lastID := c.lastID
	c.mu.Unlock()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-stop:
			conn.Close()
		case <-done:
		}
	}()
	defer conn.Close()
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", c.path, conn.RemoteAddr())
	if lastID != "" {
		req.WriteString("Last-Event-ID: " + lastID + "\r\n")
	}
	for _, h := range c.headers {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	_ = conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return "write-error"
	}
	resp, err := http.ReadResponse(bufio.NewReader(silenceConn{conn, c.silence}), nil)
	if err != nil {
		return classifyEnd(err)
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != 200 || mt != "text/event-stream" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		c.mu.Lock()
		c.answers = append(c.answers, fmt.Sprintf("%d %s %q", resp.StatusCode, mt, b))
		c.mu.Unlock()
		return "non-200"
	}
	p := frame.NewParser(resp.Body, 8<<20)
	for {
		f, err := p.Next()
		if err != nil {
			return classifyEnd(err)
		}
		c.mu.Lock()
		if f.HasID {
			c.lastID = string(f.ID)
		}
		if f.Dispatch {
			typ := string(f.Event)
			if typ == "" {
				typ = "message"
			}
			ev := event{ID: c.lastID, Type: typ, Data: string(f.Data), Retry: -1}
			c.evs = append(c.evs, ev)
			if typ == "tick" {
				if _, n, ok := faultParseTick(ev.Data); ok {
					c.lastN = n
				}
			}
		}
		c.mu.Unlock()
	}
}

func classifyEnd(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout():
		return "silence"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "cut"
	case strings.Contains(err.Error(), "reset"):
		return "reset"
	case strings.Contains(err.Error(), "use of closed"):
		return "closed"
	}
	return "error"
}

// Drop closes the current connection (the client reconnects).
func (c *faultClient) Drop() {
	c.mu.Lock()
	if c.cur != nil {
		c.cur.Close()
	}
	c.mu.Unlock()
}

func (c *faultClient) events() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.evs...)
}

func (c *faultClient) LastN() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastN
}

func (c *faultClient) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%s: %d events, %d connections, ends %v, lastN %d, non-200 %v", c.name, len(c.evs), c.conns, c.ends, c.lastN, c.answers)
}

// faultClients runs a set of clients.
type faultClients struct {
	all  []*faultClient
	stop chan struct{}
	wg   sync.WaitGroup
}

func startFaultClients(cs []*faultClient) *faultClients {
	fc := &faultClients{all: cs, stop: make(chan struct{})}
	for _, c := range cs {
		fc.wg.Add(1)
		go func() { defer fc.wg.Done(); c.run(fc.stop) }()
	}
	return fc
}

func (fc *faultClients) Stop() {
	select {
	case <-fc.stop:
	default:
		close(fc.stop)
	}
	fc.wg.Wait()
}

// waitAll waits until every client has seen frame n or later; on timeout it
// reports the clients that have not.
func (fc *faultClients) waitAll(t testing.TB, n int, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var behind []string
		for _, c := range fc.all {
			if c.LastN() < n {
				behind = append(behind, c.summary())
			}
		}
		if len(behind) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d clients did not reach n=%d within %v:\n  %s", len(behind), len(fc.all), n, timeout, strings.Join(behind, "\n  "))
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// faultFeeder sends tick frames to every connection of a feed at a steady pace;
// tagOf names the tag of each upstream connection (its request).
type faultFeeder struct {
	feed  *upstream.Feed
	tagOf func(*http.Request) string
	mu    sync.Mutex
	n     int
	stop  chan struct{}
	done  chan struct{}
}

// faultStartFeeder starts a feeder; every <= 0 sends only on Send.
func faultStartFeeder(feed *upstream.Feed, every time.Duration, tagOf func(*http.Request) string) *faultFeeder {
	f := &faultFeeder{feed: feed, tagOf: tagOf, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		if every <= 0 {
			<-f.stop
			return
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
				f.Send()
			}
		}
	}()
	return f
}

// Send sends the next frame now.
func (f *faultFeeder) Send() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	n := f.n
	f.feed.SendEach(func(r *http.Request) string { return faultTickFrame(f.tagOf(r), n) })
	return n
}

// N is the last frame number sent.
func (f *faultFeeder) N() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// Stop stops the pace and returns the last frame number sent.
func (f *faultFeeder) Stop() int {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
	return f.N()
}

// faultClientTag tags each upstream connection of a session-mode stream with the
// client that opened it.
func faultClientTag(r *http.Request) string { return r.Header.Get("X-Fault-Client") }

// faultProcFigures are what the soak tests read of a process.
type faultProcFigures struct {
	RSS     int64 // VmRSS, bytes
	Threads int
	FDs     int
}

func readFaultProcFigures(pid int) (faultProcFigures, error) {
	var f faultProcFigures
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return f, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			kb, _ := strconv.ParseInt(fields[0], 10, 64)
			f.RSS = kb << 10
		case "Threads":
			f.Threads, _ = strconv.Atoi(fields[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return f, err
	}
	f.FDs = len(fds)
	return f, nil
}

func (p *proc) faultFigures(t testing.TB) faultProcFigures {
	t.Helper()
	f, err := readFaultProcFigures(p.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("reading /proc of lastevent: %v", err)
	}
	return f
}

// metrics reads /metrics into sample -> value, the sample being the name
// with its labels as written (lastevent_x_total{reason="y"}).
func (p *proc) faultMetrics(t testing.TB) map[string]float64 {
	t.Helper()
	code, b := p.adminGet(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, v := line[:i], line[i+1:]
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[name] = f
		}
	}
	return m
}

// goroutines returns lastevent's goroutine count, from a lastevent_goroutines
// gauge in /metrics or else from /debug/pprof/goroutine (LASTEVENT_PPROF);
// ok is false when neither is there.
func (p *proc) faultGoroutines(t testing.TB) (n int, ok bool) {
	t.Helper()
	if v, ok := p.faultMetrics(t)["lastevent_goroutines"]; ok {
		return int(v), true
	}
	code, b := p.adminGet(t, "/debug/pprof/goroutine?debug=1")
	if code != 200 {
		return 0, false
	}
	var total int
	if _, err := fmt.Sscanf(string(b), "goroutine profile: total %d", &total); err != nil {
		return 0, false
	}
	return total, true
}

func faultMiB(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// faultCountTypes counts the events of each type and sync reason in a history.
func faultCountTypes(evs []event) map[string]int {
	m := map[string]int{}
	for _, ev := range evs {
		k := ev.Type
		if ev.Type == "sync-required" {
			var p struct{ Reason string }
			_ = json.Unmarshal([]byte(ev.Data), &p)
			k += ":" + p.Reason
		}
		m[k]++
	}
	return m
}
