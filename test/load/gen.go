package load

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Generator is the upstream of the load runs: an SSE server (net/http) that
// emits events at a set rate and payload size, each carrying its sequence
// number and send time (see AppendPayload).
//
//	GET /stream?rate=10&size=100            a stream of its own per connection (a legacy
//	                                        service with per-connection state); seq from 1
//	GET /broadcast?topic=t&rate=50&size=100 one stream shared by every connection: the
//	                                        first request fixes rate and size; rate=0 is
//	                                        idle. ids=1 adds "id: <seq>" and honours
//	                                        Last-Event-ID from its history (the direct and
//	                                        nginx runs of the reconnect storm need it)
//	GET /stats                              {"conns":n,"topics":{"t":seq}}
//	GET /sent?from=ns&to=ns                 events sent with a send time in [from, to),
//	                                        10 ms granularity: {"stream":n,"broadcast":n}
//
// A broadcast counts once per event in /sent, not once per connection.
type Generator struct {
	mu     sync.Mutex
	topics map[string]*topic
	conns  atomic.Int64
	stream sentLog
	bcast  sentLog
}

// NewGenerator returns an empty generator.
func NewGenerator() *Generator { return &Generator{topics: make(map[string]*topic)} }

// sentLog counts events by 10 ms of send time, over a window of 43 minutes
// (a generator lives for one run).
type sentLog struct{ slots [1 << 18]atomic.Int64 }

const sentGranularity = int64(10 * time.Millisecond)

func (l *sentLog) add(ns int64) { l.slots[(ns/sentGranularity)%int64(len(l.slots))].Add(1) }

func (l *sentLog) count(from, to int64) int64 {
	var n int64
	for i := from / sentGranularity; i < to/sentGranularity; i++ {
		n += l.slots[i%int64(len(l.slots))].Load()
	}
	return n
}

func (g *Generator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/stream":
		g.serveStream(w, r)
	case "/broadcast":
		g.serveBroadcast(w, r)
	case "/stats":
		g.mu.Lock()
		seqs := make(map[string]int64, len(g.topics))
		for k, t := range g.topics {
			seqs[k] = t.head()
		}
		g.mu.Unlock()
		writeJSON(w, map[string]any{"conns": g.conns.Load(), "topics": seqs})
	case "/sent":
		from, _ := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
		to, _ := strconv.ParseInt(r.URL.Query().Get("to"), 10, 64)
		writeJSON(w, map[string]int64{"stream": g.stream.count(from, to), "broadcast": g.bcast.count(from, to)})
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func queryInt(r *http.Request, name string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func startSSE(w http.ResponseWriter) *http.ResponseController {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the head goes out at once: proxies wait for it
	return rc
}

// serveStream is one connection's own stream.
func (g *Generator) serveStream(w http.ResponseWriter, r *http.Request) {
	rate, size := queryInt(r, "rate", 10), queryInt(r, "size", 100)
	g.conns.Add(1)
	defer g.conns.Add(-1)
	rc := startSSE(w)
	if rate == 0 {
		<-r.Context().Done()
		return
	}
	period := time.Second / time.Duration(rate)
	// A random phase spreads the connections' events over the period.
	p := newPacer(period, rand.N(period))
	defer p.stop()
	var buf []byte
	for seq := int64(1); ; seq++ {
		if !p.wait(r.Context().Done()) {
			return
		}
		now := time.Now().UnixNano()
		buf = append(buf[:0], "data: "...)
		buf = AppendPayload(buf, seq, now, size)
		buf = append(buf, "\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		g.stream.add(now)
	}
}

// pacer releases event n at start+phase+n*period. Unlike a time.Ticker it
// drops nothing when the process is late (the machine is shared): late
// events go out at once, so the rate holds; each is stamped when it is
// actually written.
type pacer struct {
	next   time.Time
	period time.Duration
	t      *time.Timer
}

func newPacer(period, phase time.Duration) *pacer {
	return &pacer{next: time.Now().Add(phase), period: period, t: time.NewTimer(time.Hour)}
}

func (p *pacer) wait(done <-chan struct{}) bool {
	if d := time.Until(p.next); d > 0 {
		p.t.Reset(d)
		select {
		case <-p.t.C:
		case <-done:
			return false
		}
	}
	p.next = p.next.Add(p.period)
	return true
}

func (p *pacer) stop() { p.t.Stop() }

// topic is a broadcast stream: a producer appends encoded events to a
// history ring and wakes the subscribers, each of which writes everything
// after its cursor in one write (a plain Go broadcast server).
type topic struct {
	withID bool
	size   int

	mu      sync.Mutex
	seq     int64    // newest sequence
	hist    [][]byte // event seq at hist[seq%len]
	changed chan struct{}
}

const topicHistory = 4096

func (g *Generator) topic(r *http.Request) *topic {
	name := r.URL.Query().Get("topic")
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := g.topics[name]; t != nil {
		return t
	}
	t := &topic{
		withID:  r.URL.Query().Get("ids") == "1",
		size:    queryInt(r, "size", 100),
		hist:    make([][]byte, topicHistory),
		changed: make(chan struct{}),
	}
	g.topics[name] = t
	if rate := queryInt(r, "rate", 50); rate > 0 {
		go t.produce(time.Second/time.Duration(rate), &g.bcast)
	}
	return t
}

func (t *topic) head() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq
}

// produce runs for the generator's life (one run).
func (t *topic) produce(period time.Duration, sent *sentLog) {
	p := newPacer(period, period)
	for p.wait(nil) {
		now := time.Now().UnixNano()
		t.mu.Lock()
		t.seq++
		i := t.seq % topicHistory
		b := t.hist[i][:0]
		if t.withID {
			b = append(b, "id: "...)
			b = strconv.AppendInt(b, t.seq, 10)
			b = append(b, '\n')
		}
		b = append(b, "data: "...)
		b = AppendPayload(b, t.seq, now, t.size)
		b = append(b, "\n\n"...)
		t.hist[i] = b
		close(t.changed)
		t.changed = make(chan struct{})
		t.mu.Unlock()
		sent.add(now)
	}
}

// since appends the events after cursor (at most the history) to dst.
func (t *topic) since(cursor int64, dst []byte) ([]byte, int64, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cursor = max(cursor, t.seq-topicHistory+1)
	for s := cursor + 1; s <= t.seq; s++ {
		dst = append(dst, t.hist[s%topicHistory]...)
	}
	return dst, t.seq, t.changed
}

func (g *Generator) serveBroadcast(w http.ResponseWriter, r *http.Request) {
	t := g.topic(r)
	g.conns.Add(1)
	defer g.conns.Add(-1)
	cursor := t.head()
	if t.withID {
		if v, err := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && v >= 0 && v <= cursor {
			cursor = v
		}
	}
	rc := startSSE(w)
	var buf []byte
	for {
		var changed <-chan struct{}
		buf, cursor, changed = t.since(cursor, buf[:0])
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}
