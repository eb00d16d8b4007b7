package proxy

import (
	"bytes"
	"strings"
	"sync"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Hub finds or opens the stream for each request. Streams are indexed by
// generation (every mode: that is how a Last-Event-ID is resolved) and, in
// shared mode, by stream key.
type Hub struct {
	cfg          *Config
	log          zerolog.Logger
	gens         *replay.Generator
	budget       *replay.Budget
	streamClient *fasthttp.Client
	upConns      *connSet // streamClient's connections
	metrics      *metrics
	// bodies bounds the bodies held whole at once (LASTEVENT_MAX_BODY_MEMORY):
	// request bodies, and the upstream answers passed to SSE clients.
	bodies *bodyBudget

	// reps is the shared store (LASTEVENT_STORE=redis); nil in memory mode.
	reps *replicas

	mu    sync.Mutex
	byGen map[replay.Gen]*stream
	// byLabel indexes the other generations a stream's ids carry (Redis
	// mode: see label).
	byLabel map[replay.Gen]*stream
	byKey   map[string]*stream
	wg      sync.WaitGroup

	// The streams lingering (no clients, kept for LASTEVENT_LINGER), oldest
	// first: when LASTEVENT_UPSTREAM_MAX_CONNECTIONS streams are open, a new
	// one ends the oldest of them (see open). lmu nests inside a stream's mu.
	lmu                    sync.Mutex
	lingerHead, lingerTail *stream
}

// NewHub returns a hub for cfg.
func NewHub(cfg *Config, log zerolog.Logger) *Hub {
	gens := replay.NewGenerator()
	if off := cfg.ClockOffset; off != 0 {
		gens = replay.NewGeneratorClock(func() time.Time { return time.Now().Add(off) })
	}
	upConns := newConnSet()
	h := &Hub{
		upConns:      upConns,
		cfg:          cfg,
		log:          log,
		gens:         gens,
		budget:       replay.NewBudget(cfg.MaxMemory),
		streamClient: newStreamClient(cfg, upConns),
		byGen:        make(map[replay.Gen]*stream),
		byLabel:      make(map[replay.Gen]*stream),
		byKey:        make(map[string]*stream),
		bodies:       newBodyBudget(cfg.MaxBodyMemory, cfg.MaxBodyBytes),
	}
	if cfg.Redis != nil {
		reps, err := newReplicas(cfg, log)
		if err != nil {
			// Parse checked the URL with the same parser.
			panic("lastevent: " + err.Error())
		}
		h.reps = reps
	}
	h.metrics = newMetrics(h)
	return h
}

// streamCount is the number of open streams.
func (h *Hub) streamCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byGen)
}

// request is what the hub needs to know of a client request.
type request struct {
	target  string // path and query forwarded upstream
	keyHdrs string // stream-key header values
	lastID  []byte // Last-Event-ID or the query parameter; nil when absent
	ctx     *fasthttp.RequestCtx
}

// attachment is the hub's answer: a stream and where the client starts in
// it, or an upstream response to pass on.
type attachment struct {
	c      *client
	pass   *passedResponse
	opener bool // the client opened the stream: it gets the upstream's Set-Cookie
}

// open starts a new stream for r; in Redis mode, a non-zero follow makes it
// follow that existing log rather than create one.
func (h *Hub) open(r *request, key string, follow replay.Gen) *stream {
	gen := follow
	if gen.IsZero() {
		gen = h.gens.Next()
	}
	if len(h.byGen) >= h.cfg.UpstreamMaxConnections {
		h.endOldestLingering()
	}
	s := &stream{
		hub:     h,
		gen:     gen,
		key:     key,
		target:  r.target,
		keyHdrs: r.keyHdrs,
		log:     replay.NewRing(h.cfg.BufferFrames, h.budget),
		req:     &fasthttp.Request{},
		ready:   make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.req.SetRequestURI(h.cfg.Upstream.String() + r.target)
	copyRequestHeaders(s.req, r.ctx)
	s.req.Header.SetHost(h.cfg.Upstream.Host)
	s.req.Header.Set("Accept", "text/event-stream")
	s.req.Header.Set("Cache-Control", "no-cache")
	// lastevent reads the frames: the stream must come uncompressed (a
	// browser's EventSource sends Accept-Encoding: gzip, deflate, br, which
	// compression middleware honours for text/event-stream too).
	s.req.Header.Set("Accept-Encoding", "identity")
	if h.reps != nil {
		s.rep = &repState{follow: follow, khash: digest(r.target, r.keyHdrs)}
		if key != "" {
			s.rep.keyHash = digest(key)
		}
		s.labels.Store(&[]label{{gen: s.gen}})
	}
	h.byGen[s.gen] = s
	if key != "" {
		h.byKey[key] = s
	}
	h.metrics.streamsOpened.Inc()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s.run()
	}()
	return s
}

// endOldestLingering ends the stream that has lingered longest, if any: a
// stream nobody reads gives its upstream connection and buffer to one a
// client asked for. Without it, short visits (reloads, a reconnect storm, or
// someone doing it on purpose) left up to one lingering stream each for
// LASTEVENT_LINGER, and once they filled the upstream connections every new
// client got heartbeats and no frame. A later resume of the ended stream's
// ids gets system-sync, as after its linger. The caller holds h.mu.
func (h *Hub) endOldestLingering() {
	for range 8 { // a candidate can get a client meanwhile: take the next
		h.lmu.Lock()
		s := h.lingerHead
		h.lmu.Unlock()
		if s == nil {
			return
		}
		if s.endLingering() {
			h.metrics.streamsEndedEarly.Inc()
			h.log.Debug().Str("path", s.pathOnly()).Msg("lingering stream ended early: LASTEVENT_UPSTREAM_MAX_CONNECTIONS streams are open")
			return
		}
	}
}

// lingering puts s at the end of the lingering list (s.mu held).
func (h *Hub) lingering(s *stream) {
	h.lmu.Lock()
	defer h.lmu.Unlock()
	h.unlinger(s)
	s.inLinger = true
	s.lingerPrev = h.lingerTail
	if h.lingerTail != nil {
		h.lingerTail.lingerNext = s
	} else {
		h.lingerHead = s
	}
	h.lingerTail = s
}

// unlingered takes s off the lingering list, if it is on it (s.mu held).
func (h *Hub) unlingered(s *stream) {
	h.lmu.Lock()
	defer h.lmu.Unlock()
	h.unlinger(s)
}

func (h *Hub) unlinger(s *stream) {
	if !s.inLinger {
		return
	}
	if s.lingerPrev != nil {
		s.lingerPrev.lingerNext = s.lingerNext
	} else {
		h.lingerHead = s.lingerNext
	}
	if s.lingerNext != nil {
		s.lingerNext.lingerPrev = s.lingerPrev
	} else {
		h.lingerTail = s.lingerPrev
	}
	s.lingerPrev, s.lingerNext, s.inLinger = nil, nil, false
}

// forget removes s from the indexes (it has ended).
func (h *Hub) forget(s *stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byGen[s.gen] == s {
		delete(h.byGen, s.gen)
	}
	if s.key != "" && h.byKey[s.key] == s {
		delete(h.byKey, s.key)
	}
	for _, l := range s.labelList() {
		if h.byLabel[l.gen] == s {
			delete(h.byLabel, l.gen)
		}
	}
}

// decision says where a client starts.
type decision struct {
	s      *stream
	opener bool       // the client opened s: it starts at the beginning
	resume uint64     // resume after this sequence (when resuming)
	idGen  replay.Gen // the generation of the client's id (when resuming)
	resum  bool       // resume holds a sequence to resume after
	sync   string     // non-empty: sync-required with this reason
	system bool       // system-sync
}

// decide resolves r to a stream. Malformed or foreign ids never fail the
// request: they turn into a sync event on a stream the client may read.
func (h *Hub) decide(r *request) decision {
	var id replay.ID
	var idErr error
	hasID := r.lastID != nil && len(r.lastID) > 0
	if hasID {
		id, idErr = replay.ParseID(r.lastID)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var known *stream
	if hasID && idErr == nil {
		known = h.byGen[id.Gen]
		if known == nil {
			known = h.byLabel[id.Gen]
		}
	}
	// A stream that is closing (its linger ran out, its reader has not
	// returned yet) takes no new client: its generation is as good as gone,
	// and in shared mode its key gets a new stream. In Redis mode its log
	// lives on: a follower of it takes its place, and the client resumes.
	var old *stream
	var successor replay.Gen
	if known != nil && known.ending() {
		old, known = known, nil
		if st := old.redisLog(); st != nil {
			successor = st.Gen()
		}
	}
	if h.cfg.Mode == ModeSession {
		switch {
		case known == nil && !successor.IsZero() && old.target == r.target && old.keyHdrs == r.keyHdrs:
			return decision{s: h.open(r, "", successor), resume: id.Seq, idGen: id.Gen, resum: true}
		case !hasID:
			return decision{s: h.open(r, "", replay.Gen{}), opener: true}
		case idErr != nil:
			return decision{s: h.open(r, "", replay.Gen{}), opener: true, sync: ReasonMalformed}
		case known == nil:
			return decision{s: h.open(r, "", replay.Gen{}), opener: true, system: true}
		case known.target != r.target:
			return decision{s: h.open(r, "", replay.Gen{}), opener: true, sync: ReasonOtherStream}
		case known.keyHdrs != r.keyHdrs:
			return decision{s: h.open(r, "", replay.Gen{}), opener: true, sync: ReasonKeyMismatch}
		}
		return decision{s: known, resume: id.Seq, idGen: id.Gen, resum: true}
	}
	key := r.target + "\x00" + r.keyHdrs
	s := h.byKey[key]
	opener := false
	// s == known was found not ending just above; looking again could see it
	// end in between and split one stream into two answers.
	if s == nil || (s != known && s.ending()) {
		if !successor.IsZero() && old.key == key {
			s = h.open(r, key, successor)
			known = s
		} else {
			s, opener = h.open(r, key, replay.Gen{}), true
		}
	}
	switch {
	case !hasID:
		return decision{s: s, opener: opener}
	case idErr != nil:
		return decision{s: s, opener: opener, sync: ReasonMalformed}
	case known == s:
		return decision{s: s, resume: id.Seq, idGen: id.Gen, resum: true}
	case known == nil:
		return decision{s: s, opener: opener, system: true}
	case known.target == r.target:
		return decision{s: s, opener: opener, sync: ReasonKeyMismatch}
	}
	return decision{s: s, opener: opener, sync: ReasonOtherStream}
}

// attach finds the stream for r, waits for its first upstream answer if it
// is new, and registers the client's cursor before reading the log, so that
// frames appended meanwhile are neither lost nor sent twice.
func (h *Hub) attach(r *request) attachment {
	for tries := 0; ; tries++ {
		if h.reps != nil {
			h.resolveRemote(r)
		}
		d := h.decide(r)
		s := d.s
		select {
		case <-s.ready:
		case <-r.ctx.Done():
			return attachment{pass: shuttingDown}
		}
		if s.pass != nil {
			if !d.opener {
				// The upstream's cookies are for the client whose request
				// it answered, as on a stream (handler.go).
				return attachment{pass: s.pass.withoutCookies()}
			}
			return attachment{pass: s.pass}
		}
		c := &client{
			s:        s,
			wake:     make(chan struct{}, 1),
			conn:     r.ctx.Conn(),
			shutdown: r.ctx.Done(),
			attached: time.Now(),
		}
		if !s.addSub(c) {
			if tries < 3 {
				continue // it ended meanwhile; the next decision sees that
			}
			return attachment{pass: shuttingDown}
		}
		retryMs := h.cfg.Retry.Milliseconds()
		if s.rep != nil && (d.system || d.sync != "") {
			// The sync event and the frames after it must sort above the
			// id the client had, which may come from a generation this
			// stream's ids sort below (another replica's).
			if id, err := replay.ParseID(r.lastID); err == nil {
				s.relabelAbove(id)
			}
		}
		head := s.head()
		if d.opener {
			head = s.id(s.base.Load()) // frames may already have arrived: they are this client's
		}
		switch {
		case d.system:
			h.metrics.systemSync.Inc()
			c.start = "system-sync"
			c.cursor = head.Seq
			c.first = appendSystemSync(nil, head, h.cfg.SystemSyncData)
		case d.sync != "":
			h.metrics.syncRequired(d.sync)
			c.start = d.sync
			c.cursor = head.Seq
			c.first = appendSyncRequired(nil, head, d.sync, true)
		case d.resum:
			oldest, newest := s.log.Bounds()
			if st := s.redisLog(); st != nil {
				// A follower's local log starts where it began to follow,
				// and its tail may lag behind Redis: older and newer frames
				// than it holds are read from Redis (one round trip).
				if oldest > newest {
					oldest = s.seq.Load() + 1 // empty: it holds nothing yet
				}
				newest = s.seq.Load()
				if (d.resume+1 < oldest || d.resume > newest) && !s.rep.degraded.Load() {
					if o, n := st.Bounds(); o <= n {
						oldest, newest = min(oldest, o), max(newest, n)
					}
					if _, _, known := s.labelRange(d.idGen); known && d.resume > newest && !h.reps.up.Load() &&
						s.rep.role.Load() == roleFollower {
						// Redis does not answer, so a follower's bounds are
						// old: an id of this stream ahead of them is one the
						// owner issued since. Resume there; the client waits
						// for the tail rather than getting its frames again.
						// (An owner's own sequence is the truth: an id ahead
						// of it was never issued.)
						newest = d.resume
					}
				}
			}
			reason := ""
			lo, hi, ok := s.labelRange(d.idGen)
			if st := s.redisLog(); st != nil && (!ok || d.resume < lo || d.resume > hi) &&
				s.rep.role.Load() == roleFollower && d.resume <= newest &&
				h.idInLog(r.ctx, st.Gen(), replay.ID{Gen: d.idGen, Seq: d.resume}) {
				// A follower learns labels from the frames it tails, so it
				// may not know where an older label began: the frame in
				// Redis says whether the id is one the owner issued.
				lo, hi, ok = d.resume, d.resume, true
			}
			if d.resume > newest || !ok || d.resume < lo || d.resume > hi {
				reason = ReasonUnknown
			} else if d.resume+1 < oldest {
				reason = ReasonEvicted
			}
			if reason != "" {
				h.metrics.syncRequired(reason)
				c.start = reason
				c.cursor = newest
				c.first = appendSyncRequired(nil, s.id(newest), reason, true)
			} else {
				h.metrics.resumes.Inc()
				c.start = "resume"
				c.cursor = d.resume
				c.replayUntil = newest
				c.first = appendPreamble(nil, retryMs)
			}
		default:
			c.start = "live"
			if d.opener {
				c.start = "new"
			}
			c.cursor = head.Seq
			c.first = appendPreamble(nil, retryMs)
		}
		return attachment{c: c, opener: d.opener}
	}
}

// shuttingDown answers an SSE request that arrives while lastevent drains:
// a 200 with an ended stream, so EventSource reconnects (to another replica,
// or to the restarted process) after a short retry instead of giving up as
// it would on a 503.
var shuttingDown = func() *passedResponse {
	p := &passedResponse{status: fasthttp.StatusOK, body: appendPreamble(nil, syncRetry)}
	p.header.SetContentType("text/event-stream; charset=utf-8")
	p.header.Set("Cache-Control", "no-cache")
	return p
}()

// keyHeaders renders the stream-key headers of a request, in configuration
// order, for equality checks: every line of each, as the upstream gets them
// (the walk copyRequestHeaders does; the cookies of several Cookie lines
// joined into one). With only the first line of each, a request with the
// lines "Cookie: x=1" and "Cookie: session=A" had the key of one with
// "Cookie: x=1" alone, which then shared the stream the upstream opened for
// session=A. A line renders as "Name:value\n"; a header that is absent (or
// empty) as "Name:\n".
func (h *Hub) keyHeaders(ctx *fasthttp.RequestCtx) string {
	if len(h.cfg.StreamKeyHeaders) == 0 {
		return ""
	}
	var b bytes.Buffer
	cookies := cookieLine(&ctx.Request.Header) // as forwarded (copyRequestHeaders)
	for _, name := range h.cfg.StreamKeyHeaders {
		lines := 0
		add := func(v []byte) {
			b.WriteString(name)
			b.WriteByte(':')
			b.Write(v)
			b.WriteByte('\n')
			lines++
		}
		if cookies != nil && strings.EqualFold(name, "Cookie") {
			add(cookies)
		} else {
			for k, v := range ctx.Request.Header.All() {
				if len(v) > 0 && strings.EqualFold(string(k), name) {
					add(v)
				}
			}
		}
		if lines == 0 {
			b.WriteString(name)
			b.WriteString(":\n")
		}
	}
	return b.String()
}

// Close stops every stream and waits for their readers.
func (h *Hub) Close() {
	h.mu.Lock()
	all := make([]*stream, 0, len(h.byGen))
	for _, s := range h.byGen {
		all = append(all, s)
	}
	h.mu.Unlock()
	for _, s := range all {
		s.halt()
	}
	// A stream still waiting for an answer's head has no body for halt to
	// close: closing its connection ends the wait.
	h.upConns.closeAll()
	h.wg.Wait()
	if h.reps != nil {
		h.reps.close()
	}
}
