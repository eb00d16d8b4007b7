package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Upstream states, as /debug/stream-state shows them.
const (
	stateConnecting   int32 = iota // first attempt in progress
	stateLive                      // reading frames
	stateReconnecting              // lost the upstream; retrying with backoff
	stateClosed
)

var stateNames = [...]string{"connecting", "live", "reconnecting", "closed"}

var (
	errCaptureTimeout = errors.New("lastevent: the upstream's answer did not end within LASTEVENT_UPSTREAM_TIMEOUT")
	errStopped        = errors.New("lastevent: stream stopped")
	errDemoted        = errors.New("lastevent: another replica owns the stream")
)

// demoted reports that another replica took the stream over, or that the
// key moved on to another stream (Redis mode): the reader stops.
func (s *stream) demoted() bool {
	return s.rep != nil && (s.rep.demote.Load() || s.rep.superseded.Load())
}

// stream is one upstream connection feeding one log. One goroutine (run)
// reads the upstream, parses frames, gives each an id, encodes it once into
// the log and wakes the subscribers, which copy from the log themselves.
type stream struct {
	hub     *Hub
	gen     replay.Gen
	key     string // the hub's key in shared mode; empty in session mode
	target  string // path and query sent upstream
	keyHdrs string // stream-key header values of the opening request
	log     *replay.Ring
	req     *fasthttp.Request // upstream request template; owned by run

	ready chan struct{}   // closed once the first upstream attempt is resolved
	pass  *passedResponse // non-nil (set before ready closes) when the first answer goes to the client as is
	stop  chan struct{}   // closed to end the stream
	done  chan struct{}   // closed when run has returned
	body  atomic.Value    // fasthttp.ReadCloserWithError of the current upstream body
	state atomic.Int32
	// header holds the headers of the first SSE answer from the upstream
	// (set once, then read-only), for the clients' responses.
	header atomic.Pointer[fasthttp.ResponseHeader]
	seq    atomic.Uint64 // newest sequence issued
	// base is where the log began: 0, or the Redis log's newest frame when
	// this replica started following it. A client that opened the stream
	// starts here.
	base atomic.Uint64

	// rep is the stream's part in Redis mode (nil in memory mode), labels
	// the generations its ids carry (Redis mode only).
	rep    *repState
	labels atomic.Pointer[[]label]

	connects, reconnects, upErrors atomic.Uint64

	mu   sync.Mutex
	subs []*client
	// wakeList is publish's copy of subs (owned by the run goroutine),
	// refreshed when wakeDirty says subs changed.
	wakeList  []*client
	wakeDirty atomic.Bool
	// sweep is the fan-out of a stream with more than inlineMax clients in
	// memory mode (see sweepAll); owned by the run goroutine.
	sweep     sweepSet
	finished  bool // run returned and the hub forgot the stream
	stopping  bool
	linger    *time.Timer
	lingerGen uint64 // the linger period a timer's callback belongs to; moves on at every attach and arm
	lastLeft  time.Time
	// The hub's list of lingering streams, oldest first (Hub.lmu).
	lingerPrev, lingerNext *stream
	inLinger               bool

	stopOnce sync.Once

	// Owned by run.
	upFrames     uint64 // frames the upstream sent that were delivered (not markers)
	upLastID     []byte // the upstream's own last event id, sent back on reconnect
	pendingRetry int64
	wakeDue      bool // memory mode: frames were published since the clients were last woken
	scratch      []byte
	idText       []byte
}

// passedResponse is an upstream answer handed to the client unchanged (a 4xx,
// a redirect, a non-SSE body, or a 5xx when LASTEVENT_UPSTREAM_PASS_5XX is set).
type passedResponse struct {
	status int
	header fasthttp.ResponseHeader
	body   []byte
}

// withoutCookies is p without the upstream's Set-Cookie, for the clients
// that joined the stream the answer was to.
func (p *passedResponse) withoutCookies() *passedResponse {
	q := &passedResponse{status: p.status, body: p.body}
	p.header.CopyTo(&q.header)
	q.header.DelAllCookies()
	return q
}

func (s *stream) id(seq uint64) replay.ID {
	if s.rep == nil {
		return replay.ID{Gen: s.gen, Seq: seq}
	}
	ls := s.labelList()
	for i := len(ls) - 1; i > 0; i-- {
		if seq+1 >= ls[i].from {
			return replay.ID{Gen: ls[i].gen, Seq: seq}
		}
	}
	return replay.ID{Gen: ls[0].gen, Seq: seq}
}

// head is the id of the newest frame in the log.
func (s *stream) head() replay.ID { return s.id(s.seq.Load()) }

func (s *stream) run() {
	defer s.finish()
	if s.rep != nil {
		s.runReplicated()
		return
	}
	s.runUpstream(false)
}

// runUpstream reads the upstream until the stream stops (or, in Redis mode,
// until another replica takes it over). takeover says the stream's frames
// came from another connection before (a replica took it over), so the
// first connection is already a reconnect.
func (s *stream) runUpstream(takeover bool) {
	cfg := s.hub.cfg
	p := frame.NewParser(nil, cfg.MaxFrameBytes)
	// The frames that one read brought go on together before the parser
	// reads again (which may wait): to Redis in one call, to each client in
	// one write.
	p.SetBeforeRead(s.flushStage)
	resp := &fasthttp.Response{}
	backoff := cfg.UpstreamBackoffMin
	connected := takeover
	s.pendingRetry = -1
	failed := 0 // attempts in a row that got no stream
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		if len(s.upLastID) > 0 {
			s.req.Header.SetBytesV("Last-Event-ID", s.upLastID)
		} else {
			s.req.Header.Del("Last-Event-ID") // an empty id: field resets it
		}
		s.connects.Add(1)
		s.hub.metrics.upstreamConnects.Inc()
		err := s.hub.streamClient.Do(s.req, resp)
		var retryable bool
		var small *fasthttp.ErrSmallBuffer
		switch {
		case errors.As(err, &small):
			// A head over upstreamReadBuffer cannot be read, however often
			// it is asked for (as nginx's "upstream sent too big header"):
			// 502, not a stream held with heartbeats and retried for good.
			s.hub.log.Error().Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Int("limit_bytes", upstreamReadBuffer).
				Msg("upstream response head too large; answering 502")
			s.badGateway(resp, "lastevent: upstream response head larger than 8 KiB\n")
			return
		case err == nil && isSSEType(resp) && !isIdentity(resp):
			// Compressed although lastevent asked for identity: its bytes
			// are not frames, and the stream never ends, so reading it as a
			// plain answer would only time out.
			s.hub.log.Error().Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Bytes("content_encoding", resp.Header.ContentEncoding()).
				Msg("upstream sent its event stream compressed although asked for Accept-Encoding: identity; answering 502")
			s.badGateway(resp, "lastevent: upstream sent the event stream compressed (Content-Encoding: "+string(resp.Header.ContentEncoding())+"); it must send it uncompressed\n")
			return
		case err != nil:
			retryable = true
			s.upError()
			failed++
			s.hub.log.WithLevel(retryLevel(failed)).Err(err).Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Int("attempt", failed).Msg("upstream connect failed")
		case isEventStream(resp):
			failed = 0
			if connected {
				s.reconnects.Add(1)
				s.hub.metrics.upstreamReconnects.Inc()
				// An upstream that resumes needs an id to resume from:
				// without one it was asked for nothing, so frames may be
				// missing here as with any other upstream.
				if !cfg.UpstreamResumes || len(s.upLastID) == 0 {
					s.appendMarker(ReasonUpstreamReconnect)
				}
			}
			connected = true
			s.hub.log.Info().Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Bool("resumed_with_id", len(s.upLastID) > 0).Msg("upstream connected")
			if s.header.Load() == nil {
				h := &fasthttp.ResponseHeader{}
				copyResponseHeaders(h, &resp.Header)
				s.header.Store(h)
				s.shareHeaders(h)
			}
			s.state.Store(stateLive)
			s.markReady(nil)
			before := s.upFrames
			err = s.read(p, resp)
			s.flushStage()
			if s.upFrames > before {
				// Only a connection that carried frames resets the backoff,
				// so an upstream that accepts and drops at once (or after a
				// frame too large, whose marker is not one of its frames)
				// is not hammered.
				backoff = cfg.UpstreamBackoffMin
			}
			if err == errStopped || err == errDemoted {
				resp.CloseBodyStream()
				return
			}
			s.upError()
			s.hub.log.Info().Err(err).Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Msg("upstream stream ended; reconnecting")
			retryable = true
		case resp.StatusCode() >= 500 && !cfg.UpstreamPass5xx:
			retryable = true
			s.upError()
			failed++
			s.hub.log.WithLevel(retryLevel(failed)).Int("status", resp.StatusCode()).Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Int("attempt", failed).Msg("upstream answered 5xx; retrying")
		}
		if !retryable {
			// 4xx, redirect, non-SSE answer: the request itself is wrong.
			pr := capture(resp, cfg.MaxBodyBytes, cfg.UpstreamTimeout, s.hub.bodies)
			if !s.markReady(pr) {
				s.hub.log.Warn().Int("status", pr.status).Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Msg("upstream refused a reconnect; ending the stream")
			}
			resp.CloseBodyStream()
			resp.Reset()
			return
		}
		resp.CloseBodyStream()
		resp.Reset()
		s.state.Store(stateReconnecting)
		s.markReady(nil)
		// Full jitter: spread the reconnects of many streams.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		backoff = min(backoff*2, cfg.UpstreamBackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
		if s.demoted() {
			return
		}
	}
}

// retryLevel is the level of the line about a stream's failed attempt n (1
// for the first in a row): warn for attempts 1, 2, 4, 8, ..., debug for the
// others, so that an upstream that stays down for a while (every session
// client's stream retrying at LASTEVENT_UPSTREAM_BACKOFF_MAX) does not flood
// the logs; lastevent_upstream_errors_total counts every attempt.
func retryLevel(n int) zerolog.Level {
	if n&(n-1) == 0 {
		return zerolog.WarnLevel
	}
	return zerolog.DebugLevel
}

// markReady resolves the first attempt; it reports whether this call did.
func (s *stream) markReady(pr *passedResponse) bool {
	select {
	case <-s.ready:
		return false
	default:
		s.pass = pr
		close(s.ready)
		return true
	}
}

func (s *stream) read(p *frame.Parser, resp *fasthttp.Response) error {
	body, _ := resp.BodyStream().(fasthttp.ReadCloserWithError)
	if body == nil {
		return errors.New("upstream body is not a stream")
	}
	s.body.Store(body)
	select {
	case <-s.stop: // stopped before the body was published
		return errStopped
	default:
	}
	p.Reset(body)
	for {
		f, err := p.Next()
		if err == frame.ErrFrameTooLarge {
			s.hub.metrics.framesTooLarge.Inc()
			s.appendMarker(ReasonFrameTooLarge)
			continue
		}
		if err != nil {
			select {
			case <-s.stop:
				return errStopped
			default:
			}
			if s.demoted() {
				return errDemoted
			}
			if err == io.EOF {
				return errors.New("upstream closed the stream")
			}
			return err
		}
		if f.HasID {
			s.upLastID = append(s.upLastID[:0], f.ID...)
		}
		if f.Retry >= 0 {
			s.pendingRetry = clampRetry(f.Retry)
		}
		if !f.Dispatch {
			continue
		}
		out := *f
		out.Retry, s.pendingRetry = s.pendingRetry, -1
		s.lockWrite()
		seq := s.nextSeq()
		s.idText = s.id(seq).AppendText(s.idText[:0])
		s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, &out)
		s.publish(seq, "")
		s.unlockWrite()
		s.upFrames++
		s.hub.metrics.framesIn.Inc() // the upstream's frames; lastevent's markers count as sync markers
		if s.demoted() {
			return errDemoted
		}
	}
}

// appendMarker puts a sync-required frame into the log: every client that
// reads past this point learns that frames may have been lost here.
func (s *stream) appendMarker(reason string) {
	s.lockWrite()
	defer s.unlockWrite()
	// Also right after another marker: a client reloads its state at the
	// first, so what is lost after that needs its own.
	seq := s.nextSeq()
	s.scratch = appendSyncRequired(s.scratch[:0], s.id(seq), reason, false)
	s.hub.metrics.syncMarkers.Inc()
	s.publish(seq, reason)
}

// lockWrite and unlockWrite bracket the encoding and publishing of one
// frame in Redis mode: its id's label, the Redis append and the local
// append are one step against the write-back loop (which reads the local
// log) and a relabel for a client (see relabelAbove). No-ops in memory mode.
func (s *stream) lockWrite() {
	if s.rep != nil {
		s.rep.wmu.Lock()
	}
}

func (s *stream) unlockWrite() {
	if s.rep != nil {
		s.rep.wmu.Unlock()
	}
}

// publish puts the frame in s.scratch into the log under seq and wakes the
// clients; marker is the reason when the frame is a sync-required marker. In
// Redis mode the frame goes to Redis first (stageFrame), and the caller
// holds lockWrite.
func (s *stream) publish(seq uint64, marker string) {
	if s.rep != nil {
		if s.stageFrame(seq, marker) {
			return // goes to Redis with the rest of its burst (flushStage)
		}
		s.rep.upID = append(s.rep.upID[:0], s.upLastID...) // for the write-back
	}
	if !s.deliver(seq, s.scratch) {
		return
	}
	if cap(s.scratch) > 64<<10 && len(s.scratch) < cap(s.scratch)/4 {
		s.scratch = nil // do not keep a giant frame's buffer
	}
	if s.rep == nil {
		s.wakeDue = true // flushStage wakes the clients before the next upstream read
		return
	}
	s.wakeAll()
}

// deliver puts frame into the local log under seq (the clients read it from
// there once woken); false once the log is closed (the stream is ending).
func (s *stream) deliver(seq uint64, frame []byte) bool {
	if err := s.log.Append(seq, frame); err != nil {
		return false
	}
	s.seq.Store(seq)
	return true
}

// nextSeq is the sequence of the next frame: after the delivered ones and,
// in Redis mode, the ones staged for Redis. The writer calls it under
// lockWrite.
func (s *stream) nextSeq() uint64 {
	n := s.seq.Load() + 1
	if s.rep != nil {
		n += uint64(len(s.rep.stage))
	}
	return n
}

// wakeAll wakes every client; only the stream's writer goroutine calls it.
// In memory mode a stream with few clients writes to those that wait caught
// up itself (offer), one with more has its sweepers do it (sweepAll); Redis
// mode always wakes (a client's read of the log may go to Redis).
func (s *stream) wakeAll() {
	// Wake from the run goroutine's own copy of the subscriber list, taken
	// again (under the lock) only after an attach or detach: no lock and no
	// allocation per frame. A client registered after the dirty check still
	// gets this frame: it reads the log after registering.
	if s.wakeDirty.Load() {
		s.refreshWakeList()
	}
	switch {
	case s.rep != nil:
		for _, c := range s.wakeList {
			c.notify()
		}
	case len(s.wakeList) <= inlineMax:
		for _, c := range s.wakeList {
			if !c.offer() {
				c.notify()
			}
		}
	default:
		s.sweepAll()
	}
}

// refreshWakeList copies subs into wakeList. A list for the sweepers (more
// than inlineMax clients) is a new one, never written to again, since they
// read it while the next one is made: an allocation per change of the
// subscribers, not per frame. Below that the list is reused, and no list
// keeps a client that left (its buffers, its connection).
func (s *stream) refreshWakeList() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakeDirty.Store(false)
	if s.rep == nil && len(s.subs) > inlineMax {
		s.wakeList = append([]*client(nil), s.subs...)
		s.sweep.use(s.wakeList)
		return
	}
	if s.rep == nil && len(s.wakeList) > inlineMax {
		s.wakeList = nil // the sweepers' last list: not to be written to
		s.sweep.use(nil)
	}
	s.wakeList = append(s.wakeList[:0], s.subs...)
	clear(s.wakeList[len(s.wakeList):cap(s.wakeList)])
}

func (s *stream) pathOnly() string {
	path, _, _ := strings.Cut(s.target, "?")
	return path
}

// ending reports whether the stream is closing: addSub would refuse.
func (s *stream) ending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping || s.finished
}

// addSub attaches c; false when the stream is ending (the caller then finds
// or opens another).
func (s *stream) addSub(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || s.finished {
		return false
	}
	if s.linger != nil {
		s.linger.Stop() // too late when the callback is on its way: lingerGen tells it
		s.linger = nil
	}
	s.lingerGen++
	s.hub.unlingered(s)
	s.subs = append(s.subs, c)
	s.wakeDirty.Store(true)
	s.hub.metrics.clients.Add(1)
	return true
}

func (s *stream) removeSub(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.subs {
		if x == c {
			last := len(s.subs) - 1
			s.subs[i] = s.subs[last]
			s.subs[last] = nil
			s.subs = s.subs[:last]
			s.wakeDirty.Store(true)
			s.hub.metrics.clients.Add(-1)
			break
		}
	}
	if len(s.subs) > 0 {
		return
	}
	s.lastLeft = time.Now()
	if s.finished {
		s.log.Close()
		return
	}
	if s.stopping {
		return
	}
	if d := s.hub.cfg.Linger; d > 0 {
		s.armLinger(d)
	} else {
		s.stopping = true
		go s.halt()
	}
}

// armLinger starts a linger period of d; the caller holds mu.
func (s *stream) armLinger(d time.Duration) {
	s.lingerGen++
	gen := s.lingerGen
	s.linger = time.AfterFunc(d, func() { s.lingerExpired(gen) })
	s.hub.lingering(s)
}

// lingerExpired ends the stream at the end of linger period gen, unless a
// client attached since (then gen is not the current period: the timer
// fired as the client arrived, and a later period may be running).
func (s *stream) lingerExpired(gen uint64) {
	if s.watched() {
		s.mu.Lock()
		if gen == s.lingerGen && len(s.subs) == 0 && !s.stopping && !s.finished {
			s.armLinger(s.hub.cfg.Linger)
		}
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	expire := gen == s.lingerGen && len(s.subs) == 0 && !s.stopping
	if expire {
		s.stopping = true
		s.hub.unlingered(s)
	}
	s.mu.Unlock()
	if expire {
		s.halt()
	}
}

// endLingering ends s early if it is lingering (no clients, not ending): the
// hub needs its room. The caller does not hold mu.
func (s *stream) endLingering() bool {
	s.mu.Lock()
	ok := s.inLinger && len(s.subs) == 0 && !s.stopping && !s.finished
	s.hub.unlingered(s)
	if ok {
		s.stopping = true
		s.lingerGen++ // a linger callback on its way does nothing
		if s.linger != nil {
			s.linger.Stop()
			s.linger = nil
		}
	}
	s.mu.Unlock()
	if ok {
		go s.halt()
	}
	return ok
}

// halt ends the stream: it stops the reader, interrupting a blocked upstream
// read. Clients still attached read what is left and end their responses.
func (s *stream) halt() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopping = true
		s.mu.Unlock()
		close(s.stop)
		if b, ok := s.body.Load().(fasthttp.ReadCloserWithError); ok {
			_ = b.CloseWithError(errStopped)
		}
	})
}

// finish runs when run returns: the hub forgets the stream, attached clients
// drain and end, and the log is freed once nobody reads it.
func (s *stream) finish() {
	s.state.Store(stateClosed)
	s.markReady(nil)
	s.hub.forget(s)
	s.mu.Lock()
	s.finished = true
	if s.linger != nil {
		s.linger.Stop()
	}
	s.hub.unlingered(s)
	if len(s.subs) == 0 {
		s.log.Close()
	}
	s.mu.Unlock()
	if s.rep != nil {
		if st := s.rep.st(); st != nil {
			st.Close() // gives the lease up at once, for a replica with clients to take over
		}
	}
	s.sweep.stop()
	close(s.done)
}

// badGateway answers an upstream answer that no attempt can make readable
// with a 502 (or, on a reconnect, ends the stream) and lets the answer go.
func (s *stream) badGateway(resp *fasthttp.Response, body string) {
	s.upError()
	if !s.markReady(&passedResponse{status: fasthttp.StatusBadGateway, body: []byte(body)}) {
		s.hub.log.Warn().Str("stream", genText(s.gen)).Str("path", s.pathOnly()).Msg("upstream answer unreadable on a reconnect; ending the stream")
	}
	resp.CloseBodyStream()
	resp.Reset()
}

// isEventStream: a 200 text/event-stream answer lastevent can parse (one
// compressed although lastevent asked for identity is not).
func isEventStream(resp *fasthttp.Response) bool {
	return isSSEType(resp) && isIdentity(resp)
}

func isSSEType(resp *fasthttp.Response) bool {
	if resp.StatusCode() != fasthttp.StatusOK {
		return false
	}
	mt, _, err := mime.ParseMediaType(string(resp.Header.ContentType()))
	return err == nil && mt == "text/event-stream"
}

func isIdentity(resp *fasthttp.Response) bool {
	ce := resp.Header.ContentEncoding()
	return len(ce) == 0 || strings.EqualFold(string(ce), "identity")
}

// capture reads a response that is passed to the client as is; its body is
// bounded by LASTEVENT_MAX_BODY_BYTES.
//
// The body is read into a buffer counted against LASTEVENT_MAX_BODY_MEMORY
// as it grows (503 when it does not fit); the count is given back once read:
// each client that is handed the answer counts it again while it is being
// written (Handler.Serve), so a stalled client holds its room, not an
// uncounted LASTEVENT_MAX_BODY_BYTES.
func capture(resp *fasthttp.Response, limit int, timeout time.Duration, budget *bodyBudget) *passedResponse {
	pr := &passedResponse{status: resp.StatusCode()}
	// An answer without a Content-Type gets none: fasthttp's view of the
	// header, and the copy written to the client, would add text/plain.
	resp.Header.SetNoDefaultContentType(true)
	pr.header.SetNoDefaultContentType(true)
	copyResponseHeaders(&pr.header, &resp.Header)
	if r := resp.BodyStream(); r != nil {
		// Within LASTEVENT_UPSTREAM_TIMEOUT: a body that stops halfway
		// becomes the 502 below instead of holding the client for good.
		if c, ok := r.(fasthttp.ReadCloserWithError); ok {
			t := time.AfterFunc(timeout, func() { _ = c.CloseWithError(errCaptureTimeout) })
			defer t.Stop()
		}
		b, err := readWhole(r, limit, budget)
		if err == errNoRoom {
			return noRoomAnswer
		}
		if err != nil {
			return &passedResponse{status: fasthttp.StatusBadGateway, body: []byte("lastevent: upstream response body unreadable or larger than LASTEVENT_MAX_BODY_BYTES\n")}
		}
		budget.release(held(b))
		pr.body = b
	} else {
		pr.body = append([]byte(nil), resp.Body()...)
	}
	pr.header.SetStatusCode(pr.status)
	return pr
}

func (s *stream) upError() {
	s.upErrors.Add(1)
	s.hub.metrics.upstreamErrors.Inc()
}

// noRoomAnswer answers an SSE client whose upstream answer (passed on as it
// is) found no room in LASTEVENT_MAX_BODY_MEMORY.
var noRoomAnswer = func() *passedResponse {
	p := &passedResponse{status: fasthttp.StatusServiceUnavailable, body: []byte("lastevent: too many answers being read at once (LASTEVENT_MAX_BODY_MEMORY)\n")}
	p.header.Set("Retry-After", "1")
	p.header.SetContentType("text/plain; charset=utf-8")
	return p
}()
