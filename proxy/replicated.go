package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// Stream roles in Redis mode, as /debug/stream-state shows them.
const (
	roleLocal    int32 = iota // not (yet) in Redis: memory mode, or Redis was down when it opened
	roleOwner                 // holds the lease, reads the upstream, appends to Redis
	roleFollower              // tails another replica's log from Redis
)

var roleNames = [...]string{"local", "owner", "follower"}

// label names the ids of a stream from a sequence on. A stream's ids change
// generation when its frames can no longer be told apart from another
// writer's (Redis lost the log, or the owner went on alone while Redis did
// not answer); the sequence never jumps, so the local log and every cursor
// stay as they are. Ids of gen name sequences from-1 on.
type label struct {
	gen  replay.Gen
	from uint64
}

// repState is a stream's part in Redis mode. The fields without a lock are
// owned by the stream's run goroutine, the only writer.
type repState struct {
	storeP   atomic.Pointer[redisstore.Store] // the Redis log the stream's frames go to or come from; nil: none
	follow   replay.Gen                       // set at open: follow this existing log instead of creating one
	keyHash  string                           // shared mode: the index entry of the stream key
	khash    string                           // digest of target and stream-key headers, kept in meta
	role     atomic.Int32
	redisGen atomic.Pointer[replay.Gen] // the Redis log's generation, for /debug/stream-state

	lastLabel [genTextLen]byte // a follower's last label seen in a frame (learnLabel); the run goroutine's
	labelsMu  sync.Mutex       // serialises addLabel (labels: the stream's atomic copy-on-write list)

	demote     atomic.Bool // another replica owns the stream: stop reading the upstream
	superseded atomic.Bool // the key's index moved to a newer generation: end the stream

	// wmu serialises the writer's publish (staging, Redis append, local
	// append) with the write-back loop and relabelAbove, and guards the
	// fields below it.
	wmu         sync.Mutex
	pendingFrom uint64 // first sequence not yet in Redis (0: none); the owner is degraded (setPending)
	retrying    bool   // the write-back loop runs
	closed      bool   // runReplicated returned: no write-back or renewal any more
	upID        []byte // the upstream's last event id as of the newest frame, for Redis
	// degraded is pendingFrom != 0, for readers without wmu: while it
	// holds, the Redis log past pendingFrom may be another replica's (one
	// that took the stream over meanwhile), so clients read none of it.
	degraded atomic.Bool
	// A burst of frames held back for one Redis append (stageFrame), and
	// the upstream's last event id as of its newest frame: the reader sets
	// its own (upLastID) for the next frame before it takes wmu, while
	// relabelAbove or lostLog may flush the burst.
	stageUpID  []byte
	stage      [][]byte
	stageMark  []string // marker reason per staged frame, "" for an event
	stageFirst uint64
	stageSize  int
	stopRenew  chan struct{} // the renew loop of the owned log
	renewDone  chan struct{}
}

// setPending sets pendingFrom (0: Redis has every frame); the caller holds
// wmu.
func (r *repState) setPending(from uint64) {
	r.pendingFrom = from
	r.degraded.Store(from != 0)
}

// st is the stream's Redis log, nil when it has none.
func (r *repState) st() *redisstore.Store { return r.storeP.Load() }

// labels returns the stream's labels, oldest first (nil in memory mode).
func (s *stream) labelList() []label {
	if p := s.labels.Load(); p != nil {
		return *p
	}
	return nil
}

// maxLabels bounds the labels of one stream (each costs an alias record in
// Redis): relabels for clients stop there; their sync events may then carry
// lower ids than the client's.
const maxLabels = 64

// addLabel records that ids of gen name sequences from-1 on.
func (s *stream) addLabel(gen replay.Gen, from uint64) {
	r := s.rep
	r.labelsMu.Lock()
	defer r.labelsMu.Unlock()
	old := s.labelList()
	for _, l := range old {
		if l.gen == gen {
			return
		}
	}
	ls := make([]label, 0, len(old)+1)
	ls = append(ls, old...)
	ls = append(ls, label{gen: gen, from: from})
	for i := len(ls) - 1; i > 0 && ls[i].from < ls[i-1].from; i-- {
		ls[i], ls[i-1] = ls[i-1], ls[i]
	}
	s.labels.Store(&ls)
}

// labelRange returns the sequences the ids of gen may name in s.
func (s *stream) labelRange(gen replay.Gen) (lo, hi uint64, ok bool) {
	if s.rep == nil {
		return 0, ^uint64(0), gen == s.gen
	}
	ls := s.labelList()
	for i, l := range ls {
		if l.gen != gen {
			continue
		}
		lo, hi = 0, ^uint64(0)
		if l.from > 0 {
			lo = l.from - 1
		}
		if i+1 < len(ls) {
			hi = ls[i+1].from - 1
		}
		return lo, hi, true
	}
	return 0, 0, false
}

// relabel starts a new label at seq: this owner goes on without Redis, so
// its ids must differ from any a new owner could issue for the same
// sequences.
func (s *stream) relabel(seq uint64) {
	s.useLabel(s.nextLabel(), seq)
}

// nextLabel is a generation above every label of the stream.
func (s *stream) nextLabel() replay.Gen {
	h := s.hub
	for _, l := range s.labelList() {
		h.gens.Observe(l.gen)
	}
	return h.gens.Next()
}

// useLabel makes gen the label of the ids from seq on.
func (s *stream) useLabel(gen replay.Gen, seq uint64) {
	h := s.hub
	s.addLabel(gen, seq)
	h.mu.Lock()
	h.byLabel[gen] = s
	h.mu.Unlock()
	s.pruneLabels()
}

// pruneLabels drops the oldest labels past maxLabels whose frames have all
// left the local log and the stream's Redis log (a resume reads older
// frames from there too): a resume of any of their ids could only be told
// evicted, and is now told system-sync. Without it every failed Redis append
// (a Redis that stalls now and then) added a label, with an alias record
// refreshed in Redis, for the life of the stream. The first label, the
// stream's own generation, stays. Redis's bounds are the ones it last
// reported (no round trip: this runs when Redis fails), whose oldest is never
// newer than the real one, so a label is never dropped too early.
func (s *stream) pruneLabels() {
	r, h := s.rep, s.hub
	oldest, newest := s.log.Bounds()
	if st := s.redisLog(); st != nil {
		if o, n := st.KnownBounds(); o <= n {
			if oldest > newest {
				oldest, newest = o, n
			} else {
				oldest, newest = min(oldest, o), max(newest, n)
			}
		}
	}
	if oldest > newest {
		return // empty: nothing says which frames are gone
	}
	r.labelsMu.Lock()
	ls := s.labelList()
	drop := 0
	for len(ls)-drop > maxLabels && 2+drop < len(ls) && ls[2+drop].from < oldest {
		drop++
	}
	if drop == 0 {
		r.labelsMu.Unlock()
		return
	}
	gone := append([]label(nil), ls[1:1+drop]...)
	kept := append(append(make([]label, 0, len(ls)-drop), ls[0]), ls[1+drop:]...)
	s.labels.Store(&kept)
	r.labelsMu.Unlock()
	h.mu.Lock()
	for _, l := range gone {
		if h.byLabel[l.gen] == s {
			delete(h.byLabel, l.gen)
		}
	}
	h.mu.Unlock()
}

// relabelAbove makes the ids this owner issues from now on sort above id: a
// client presented id (from another replica's generation, or one this
// replica had not observed) and gets a sync event on this stream, whose ids
// must not go below what it had. The new label is announced in Redis (an
// alias) before any frame carries it. It reports whether s's ids now sort
// above id; a follower cannot relabel (its owner's labels are its ids).
func (s *stream) relabelAbove(id replay.ID) bool {
	r := s.rep
	if r == nil {
		return false
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	s.flushLocked() // staged frames carry the current label: deliver them first
	head := s.seq.Load()
	if s.id(head).String() > id.String() {
		return true
	}
	if r.role.Load() == roleFollower {
		return false
	}
	h := s.hub
	if !h.gens.Observe(id.Gen) || len(s.labelList()) >= maxLabels {
		return false // a forged id, or a stream relabelled too often already
	}
	gen := h.gens.Next()
	if st := r.st(); st != nil && r.role.Load() == roleOwner && r.pendingFrom == 0 {
		// SetAlias is not fenced: renew first, so that an owner another
		// replica took over (unknown to it yet) mints no label above the
		// new owner's, whose frames it is about to follow. After a renewal
		// nobody else can take the lease for a lease's time.
		if _, err := st.Renew(context.Background()); err != nil {
			h.reps.report(err)
			if errors.Is(err, redisstore.ErrFenced) {
				r.demote.Store(true)
				s.closeBody()
			}
			return false
		}
		if err := st.SetAlias(context.Background(), gen, head+1, h.cfg.Redis.Lease+h.cfg.Redis.Retention); err != nil {
			h.reps.report(err)
			return false
		}
	}
	s.useLabel(gen, head+1)
	return true
}

// runReplicated is run in Redis mode: it settles the stream's place in Redis
// (create a log, follow one, or take one over), then plays its role until
// the stream stops.
func (s *stream) runReplicated() {
	r := s.rep
	defer func() {
		// The loops that write back and renew must not outlive the
		// stream: they would hold a lease (and a key) for nobody.
		r.wmu.Lock()
		r.closed = true
		s.stopRenewLoop()
		r.wmu.Unlock()
	}()
	takeover := false
	if !r.follow.IsZero() {
		owner, err := s.setupFollow(r.follow)
		if err != nil {
			s.hub.log.Warn().Err(err).Str("stream", genText(s.gen)).Msg("cannot follow the stream in Redis; ending it")
			return
		}
		takeover = owner
	} else {
		takeover = s.setupCreate()
	}
	s.markReadyFollower()
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		switch r.role.Load() {
		case roleFollower:
			acquired, ok := s.followLoop()
			if !ok {
				return
			}
			takeover = acquired
		default:
			r.wmu.Lock()
			s.startRenew()
			r.wmu.Unlock()
			s.runUpstream(takeover)
			if r.superseded.Load() {
				return
			}
			r.wmu.Lock()
			s.stopRenewLoop()
			pending := r.pendingFrom != 0
			r.wmu.Unlock()
			if !r.demote.Load() {
				return
			}
			// Another replica owns the stream now: follow it from where
			// this one's log ends (every frame delivered here is in Redis).
			if pending {
				s.hub.log.Warn().Str("stream", genText(s.gen)).Msg("another replica took the stream over while Redis did not answer; ending it here (clients reconnect and get a sync event)")
				return
			}
			s.hub.log.Info().Str("stream", genText(s.gen)).Msg("another replica took the stream over; following it")
			r.demote.Store(false)
			r.role.Store(roleFollower)
			takeover = false
		}
	}
}

// markReadyFollower resolves ready for a follower, which has no upstream
// answer of its own; an owner's ready is resolved by its first upstream
// attempt.
func (s *stream) markReadyFollower() {
	if s.rep.role.Load() == roleFollower {
		s.state.Store(stateLive)
		s.markReady(nil)
	}
}

// setupCreate makes a new log in Redis for a new stream. In shared mode it
// first looks for the key's current stream, and follows it if it lives (or
// takes it over if nobody owns it: then it reports takeover, and the first
// upstream connection is a reconnect). When Redis does not answer the stream
// runs locally and is written back later.
func (s *stream) setupCreate() (takeover bool) {
	h, r := s.hub, s.rep
	ctx := context.Background()
	if r.keyHash != "" {
		for range 3 {
			cur, ok, err := redisstore.Index(ctx, h.reps.rdb, r.keyHash, h.cfg.Redis.Timeout)
			h.reps.report(err)
			if err != nil {
				break
			}
			if ok {
				if owner, err := s.setupFollow(cur); err == nil {
					return owner
				}
			}
			st, err := h.storeOf(ctx, s.gen)
			if err != nil && !errors.Is(err, redisstore.ErrUnknownGeneration) {
				break
			}
			if _, err := st.Create(ctx, h.cfg.Redis.Lease); err != nil {
				h.reps.report(err)
				break
			}
			won, err := st.ClaimIndex(ctx, r.keyHash, cur, h.cfg.Redis.Lease+h.cfg.Redis.Retention)
			h.reps.report(err)
			if err == nil && won {
				s.becomeOwner(st)
				return false
			}
			// Another replica opened the key first: follow it.
			st.Close()
			if err != nil {
				break
			}
		}
	} else {
		st, err := h.storeOf(ctx, s.gen)
		if err == nil || errors.Is(err, redisstore.ErrUnknownGeneration) {
			_, err = st.Create(ctx, h.cfg.Redis.Lease)
			h.reps.report(err)
			if err == nil {
				err = st.SetAttrs(ctx, map[string]string{"khash": r.khash})
				h.reps.report(err)
			}
			if err == nil {
				s.becomeOwner(st)
				return false
			}
			st.Close()
		}
	}
	// Redis did not answer: run here alone; the frames are written back
	// when it does.
	r.role.Store(roleLocal)
	r.wmu.Lock()
	r.setPending(1)
	s.startWriteBack()
	r.wmu.Unlock()
	return false
}

func (s *stream) becomeOwner(st *redisstore.Store) {
	r := s.rep
	r.storeP.Store(st)
	g := st.Gen()
	r.redisGen.Store(&g)
	r.role.Store(roleOwner)
}

// setupFollow attaches the stream to the existing log gen: it starts its
// local log at the log's newest frame (older frames are read from Redis
// when a client asks for them) and takes the lease over if nobody holds it.
// It reports whether this replica is now the owner.
func (s *stream) setupFollow(gen replay.Gen) (owner bool, err error) {
	h, r := s.hub, s.rep
	ctx := context.Background()
	st, err := h.storeOf(ctx, gen)
	if err != nil {
		return false, err
	}
	m, err := st.Meta(ctx)
	h.reps.report(err)
	if err != nil {
		return false, err
	}
	h.gens.Observe(gen)
	if hdr := m.Attrs["headers"]; hdr != "" && s.header.Load() == nil {
		s.header.Store(parseSharedHeaders(hdr))
	}
	r.storeP.Store(st)
	r.redisGen.Store(&gen)
	if gen != s.gen {
		s.useLabel(gen, 1)
	}
	s.base.Store(m.Newest)
	s.seq.Store(m.Newest)
	if m.Newest > 0 {
		// The newest frame's id carries the owner's current label, which
		// no frame this replica tails may carry again (a quiet stream): a
		// takeover's label must sort above it (tryAcquire, nextLabel), and
		// this follower's sync events at its head carry it.
		if f, last, err := st.ReadContext(ctx, m.Newest-1, nil, 0); err == nil && last == m.Newest {
			s.learnLabel(m.Newest, f)
		} else {
			h.reps.report(err)
		}
	}
	r.role.Store(roleFollower)
	if m.Holder == "" {
		if ok := s.tryAcquire(st); ok {
			return true, nil
		}
	}
	return false, nil
}

// tryAcquire takes the lease of a log nobody owns, catches up with it, and
// makes this replica the owner; the upstream is then read from the
// upstream's last id that the previous owner recorded.
func (s *stream) tryAcquire(st *redisstore.Store) bool {
	h, r := s.hub, s.rep
	ctx := context.Background()
	if _, err := st.Acquire(ctx, h.cfg.Redis.Lease); err != nil {
		h.reps.report(err)
		return false
	}
	m, err := st.Meta(ctx)
	h.reps.report(err)
	if err != nil {
		_ = st.Release(ctx)
		return false
	}
	// Catch up: every frame up to the log's newest is delivered before this
	// replica appends its first.
	for stalls := 0; s.seq.Load() < m.Newest; {
		before := s.seq.Load()
		if _, err := st.Tail(ctx, before, s.appendFollowed); err != nil {
			h.reps.report(err)
			_ = st.Release(ctx)
			return false
		}
		if s.seq.Load() == before {
			// Meta names frames the log does not hold (its key was lost):
			// do not wait for them forever.
			if stalls++; stalls == 2 {
				_ = st.Release(ctx)
				return false
			}
		}
	}
	// Frames from here on carry a new label: the previous owner may have
	// gone on alone under a label of its own (cut off from Redis, see
	// flushLocked), and this one is newer than it, so a client moving from that
	// owner to this stream still sees increasing ids (after a sync event).
	// The label is announced in Redis before it is used: a takeover that
	// fails there leaves no label behind (sync events of this follower
	// carried its generation, which no frame has).
	//
	// This replica may be past the log's newest: Redis lost frames it had
	// acknowledged (a failover to a replica that lagged behind) after this
	// one had tailed them. Its frames go on after its own head, and the
	// upstream id Redis holds is that of frames before them: resumed from
	// it, the upstream would send those events again, as new frames, with
	// no sync event. The reconnect asks for none then, and gets a marker.
	from := max(m.Newest, s.seq.Load()) + 1
	gen := s.nextLabel()
	if err := st.SetAlias(ctx, gen, from, h.cfg.Redis.Lease+h.cfg.Redis.Retention); err != nil {
		h.reps.report(err)
		_ = st.Release(ctx)
		return false
	}
	s.useLabel(gen, from)
	s.upLastID = s.upLastID[:0]
	if s.seq.Load() <= m.Newest {
		s.upLastID = append(s.upLastID, m.UpstreamID...)
	}
	r.role.Store(roleOwner)
	h.log.Info().Str("stream", genText(s.gen)).Uint64("seq", m.Newest).Msg("took the stream over")
	return true
}

// appendFollowed puts a frame tailed from Redis into the local log and wakes
// the clients.
func (s *stream) appendFollowed(seq uint64, f []byte) error {
	s.learnLabel(seq, f)
	if s.log.Append(seq, f) != nil {
		return errStopped
	}
	s.seq.Store(seq)
	s.hub.metrics.framesIn.Inc()
	s.wakeAll()
	return nil
}

// genTextLen is the length of a generation in an id's text form.
const genTextLen = replay.TextLen - 14

// learnLabel notes the generation of the id a followed frame carries (the
// owner's label, which changes at a takeover or after Redis was down), so
// that the sync events this replica writes carry the same, current label.
// Frames start with their id line ("id: <id>"); comparing its generation
// with the last one seen costs no allocation.
func (s *stream) learnLabel(seq uint64, f []byte) {
	if len(f) < 4+replay.TextLen || string(f[:4]) != "id: " {
		return
	}
	text := f[4 : 4+replay.TextLen]
	r := s.rep
	if string(text[:genTextLen]) == string(r.lastLabel[:]) {
		return
	}
	id, err := replay.ParseID(text)
	if err != nil || id.Seq != seq {
		return
	}
	copy(r.lastLabel[:], text[:genTextLen])
	if _, _, known := s.labelRange(id.Gen); known {
		return
	}
	s.hub.gens.Observe(id.Gen)
	s.useLabel(id.Gen, seq)
}

// followLoop tails the log until the stream stops (ok false), the log is
// gone (ok false: the stream ends, its clients reconnect and resynchronise),
// or this replica takes the stream over (acquired).
func (s *stream) followLoop() (acquired, ok bool) {
	h, r := s.hub, s.rep
	st := r.st()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	lease := h.cfg.Redis.Lease
	nextCheck := time.Now().Add(lease / 3)
	backoff := 50 * time.Millisecond
	freeSeen := false
	for {
		if ctx.Err() != nil {
			return false, false
		}
		_, err := st.Tail(ctx, s.seq.Load(), s.appendFollowed)
		switch {
		case err == nil:
			h.reps.report(nil)
			backoff = 50 * time.Millisecond
		case ctx.Err() != nil:
			return false, false
		case errors.Is(err, redisstore.ErrUnknownGeneration), errors.Is(err, replay.ErrEvicted):
			h.reps.report(err)
			h.log.Warn().Err(err).Str("stream", genText(s.gen)).Msg("the followed log is gone or moved past this replica; ending the stream here (clients reconnect and resynchronise)")
			return false, false
		default:
			h.reps.report(err)
			t := time.NewTimer(backoff)
			select {
			case <-s.stop:
				t.Stop()
				return false, false
			case <-t.C:
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		if time.Now().Before(nextCheck) {
			continue
		}
		nextCheck = time.Now().Add(lease / 3)
		if s.subCount() > 0 {
			h.reps.report(st.Watch(ctx, lease))
		}
		m, err := st.Meta(ctx)
		h.reps.report(err)
		if err != nil || m.Holder != "" || s.subCount() == 0 {
			// Nobody here needs it: let a replica with clients take it.
			freeSeen = false
			continue
		}
		if !freeSeen {
			// Take over only on the second look: right after Redis comes
			// back, the owner (which went on alone) gets the first chance
			// to renew and write its frames back.
			freeSeen = true
			continue
		}
		if r.keyHash != "" {
			cur, ok, err := redisstore.Index(ctx, h.reps.rdb, r.keyHash, h.cfg.Redis.Timeout)
			h.reps.report(err)
			if err != nil {
				continue
			}
			if !ok || cur != st.Gen() {
				// The key moved on to another stream: this log ended for
				// good. End here too; the clients reconnect and follow
				// the key's current stream.
				h.log.Info().Str("stream", genText(s.gen)).Msg("the followed stream was superseded; ending it here")
				return false, false
			}
		}
		if s.tryAcquire(st) {
			return true, true
		}
	}
}

// subCount is the number of attached clients.
func (s *stream) subCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// watched reports whether a follower elsewhere has clients on this owner's
// stream, so that its linger starts over instead of ending it.
func (s *stream) watched() bool {
	if s.rep == nil || s.rep.role.Load() != roleOwner {
		return false
	}
	st := s.rep.st()
	if st == nil {
		return false
	}
	w, err := st.Watched(context.Background())
	s.hub.reps.report(err)
	return err == nil && w
}

// shareHeaders records the upstream's response headers in Redis, so that
// clients of followers get them too (CORS above all). Set-Cookie is left out:
// it goes only to the client that opened the stream, and it is a credential.
func (s *stream) shareHeaders(h *fasthttp.ResponseHeader) {
	st := s.redisLog()
	if st == nil || s.rep.role.Load() != roleOwner {
		return
	}
	var b strings.Builder
	for k, v := range h.All() {
		if strings.EqualFold(string(k), "Set-Cookie") {
			continue
		}
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
		b.WriteByte('\n')
	}
	s.hub.reps.report(st.SetAttrs(context.Background(), map[string]string{"headers": b.String()}))
}

func parseSharedHeaders(text string) *fasthttp.ResponseHeader {
	h := &fasthttp.ResponseHeader{}
	for line := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			h.Add(k, v)
		}
	}
	return h
}
