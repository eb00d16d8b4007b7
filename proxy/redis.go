package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// replicas is the hub's link to the shared store (LASTEVENT_STORE=redis):
// the Redis client and its health, which every stream's owner and follower
// loops report to. The frames themselves live in replay/redisstore logs, one
// per generation; this type only knows whether Redis answers.
type replicas struct {
	cfg *RedisConfig
	rdb redis.UniversalClient
	log zerolog.Logger

	up      atomic.Bool // the last call answered
	everUp  atomic.Bool // Redis answered at least once (readiness)
	lastErr atomic.Pointer[string]
	errs    atomic.Uint64
	// errCounter is errs on /metrics (set once by newMetrics).
	errCounter *vm.Counter
	stop       chan struct{}
	done       chan struct{}
}

func newReplicas(cfg *Config, log zerolog.Logger) (*replicas, error) {
	rc := cfg.Redis
	pool := cfg.UpstreamMaxConnections + 16 // one blocking read per followed stream, and the rest
	var rdb redis.UniversalClient
	if rc.Cluster {
		o, err := redis.ParseClusterURL(rc.URL)
		if err != nil {
			return nil, fmt.Errorf("LASTEVENT_REDIS_URL: %w", err)
		}
		if rc.Password != "" {
			o.Password = rc.Password
		}
		o.ContextTimeoutEnabled = true
		o.PoolSize, o.MinIdleConns = pool, 0
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = rc.Timeout, -1, rc.Timeout
		o.MaxRetries = -1
		rdb = redis.NewClusterClient(o)
	} else {
		o, err := redis.ParseURL(rc.URL)
		if err != nil {
			return nil, fmt.Errorf("LASTEVENT_REDIS_URL: %w", err)
		}
		if rc.Password != "" {
			o.Password = rc.Password
		}
		o.ContextTimeoutEnabled = true
		o.PoolSize, o.MinIdleConns = pool, 0
		// Reads are bounded by each call's context (the store's timeout,
		// plus the block time of a tail), never by a fixed socket timeout
		// that would cut a blocking XREAD.
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = rc.Timeout, -1, rc.Timeout
		// A call that failed is not retried inside go-redis: the caller
		// decides (an append is re-sent by the stream, a tail loops).
		o.MaxRetries = -1
		rdb = redis.NewClient(o)
	}
	redis.SetLogger(redisLogger{log}) // process-wide in go-redis; its lines would otherwise bypass zerolog
	r := &replicas{cfg: rc, rdb: rdb, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	msg := "not checked yet"
	r.lastErr.Store(&msg)
	return r, nil
}

// redisLogger sends go-redis's own messages (dial failures, mostly, which
// the replicas' state reports anyway) to zerolog at debug level.
type redisLogger struct{ l zerolog.Logger }

func (g redisLogger) Printf(_ context.Context, format string, v ...any) {
	g.l.Debug().Str("component", "go-redis").Msgf(format, v...)
}

// start checks Redis once and then watches it: while it does not answer,
// /readyz (before the first answer) and /debug/stream-state say why.
func (r *replicas) start() {
	if err := r.ping(); err != nil {
		r.log.Error().Err(err).Str("setting", "LASTEVENT_REDIS_URL").Str("redis_addr", r.cfg.Addr).
			Msg("Redis does not answer; streams run on this replica alone until it does (LASTEVENT_REDIS_URL)")
	} else {
		r.log.Info().Str("redis_addr", r.cfg.Addr).Str("node_id", r.cfg.NodeID).Msg("Redis store connected")
	}
	go r.watch()
}

func (r *replicas) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.Timeout)
	defer cancel()
	err := r.rdb.Ping(ctx).Err()
	r.report(err)
	return err
}

// watch pings Redis every second while it is down (streams report failures
// as they meet them; this brings the state back when none is calling).
func (r *replicas) watch() {
	defer close(r.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	wasUp := r.up.Load()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		if !r.up.Load() {
			_ = r.ping()
		}
		if up := r.up.Load(); up != wasUp {
			if up {
				r.log.Info().Str("redis_addr", r.cfg.Addr).Msg("Redis answers again")
			} else {
				r.log.Error().Str("redis_addr", r.cfg.Addr).Str("error", *r.lastErr.Load()).
					Msg("Redis does not answer (LASTEVENT_REDIS_URL); owners keep serving their own clients")
			}
			wasUp = up
		}
	}
}

// report records the outcome of a call to Redis. Refusals by the protocol
// (fenced, unknown generation, out of order) are answers: Redis is up.
func (r *replicas) report(err error) {
	if err == nil || errors.Is(err, redisstore.ErrFenced) || errors.Is(err, redisstore.ErrUnknownGeneration) ||
		errors.Is(err, redisstore.ErrLeaseHeld) || errors.Is(err, replay.ErrOutOfOrder) ||
		errors.Is(err, replay.ErrEvicted) || errors.Is(err, replay.ErrAhead) || errors.Is(err, redisstore.ErrGenerationExists) {
		r.up.Store(true)
		r.everUp.Store(true)
		return
	}
	r.errs.Add(1)
	if r.errCounter != nil {
		r.errCounter.Inc()
	}
	msg := err.Error()
	r.lastErr.Store(&msg)
	r.up.Store(false)
}

func (r *replicas) close() {
	close(r.stop)
	<-r.done
	_ = r.rdb.Close()
}

// storeOf opens the redisstore handle of a generation's log.
func (h *Hub) storeOf(ctx context.Context, gen replay.Gen) (*redisstore.Store, error) {
	rc := h.cfg.Redis
	st, err := redisstore.New(ctx, h.reps.rdb, gen, h.cfg.BufferFrames, rc.NodeID,
		redisstore.WithTimeout(rc.Timeout), redisstore.WithRetention(rc.Retention),
		redisstore.WithTailBlock(max(rc.Lease/3, 50*time.Millisecond)))
	h.reps.report(err)
	return st, err
}

// digest names a stream key or a session's target in Redis without writing
// it there: paths, queries and headers may carry credentials.
func digest(parts ...string) string {
	sum := sha256.New()
	for _, p := range parts {
		sum.Write([]byte(p))
		sum.Write([]byte{0})
	}
	return hex.EncodeToString(sum.Sum(nil))
}

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

	// wmu serialises the writer's publish (Redis append, local append) with
	// the write-back loop, and guards the fields below it.
	wmu         sync.Mutex
	pendingFrom uint64           // first sequence not yet in Redis (0: none); the owner is degraded
	retrying    bool             // the write-back loop runs
	upID        []byte           // the upstream's last event id as of the newest frame, for Redis
	lastLabel   [genTextLen]byte // a follower's last label seen in a frame (learnLabel)
	demote      atomic.Bool
	labelsMu    sync.Mutex
	stopRenew   chan struct{}
	renewDone   chan struct{}
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
	h := s.hub
	for _, l := range s.labelList() {
		h.gens.Observe(l.gen)
	}
	gen := h.gens.Next()
	s.addLabel(gen, seq)
	h.mu.Lock()
	h.byLabel[gen] = s
	h.mu.Unlock()
}

// runReplicated is run in Redis mode: it settles the stream's place in Redis
// (create a log, follow one, or take one over), then plays its role until
// the stream stops.
func (s *stream) runReplicated() {
	r := s.rep
	takeover := false
	if !r.follow.IsZero() {
		owner, err := s.setupFollow(r.follow)
		if err != nil {
			s.hub.log.Warn().Err(err).Str("stream", genText(s.gen)).Msg("cannot follow the stream in Redis; ending it")
			return
		}
		takeover = owner
	} else {
		s.setupCreate()
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
			r.wmu.Lock()
			s.stopRenewLoop()
			pending := r.pendingFrom != 0
			r.wmu.Unlock()
			if !r.demote.Load() {
				return
			}
			// Another replica owns the stream now: follow it from where
			// this one's log ends (every frame delivered here is in Redis).
			r.demote.Store(false)
			if pending {
				s.hub.log.Warn().Str("stream", genText(s.gen)).Msg("another replica took the stream over while Redis did not answer; ending it here (clients reconnect and get a sync event)")
				return
			}
			s.hub.log.Info().Str("stream", genText(s.gen)).Msg("another replica took the stream over; following it")
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
// first looks for the key's current stream, and follows it if it lives.
// When Redis does not answer the stream runs locally and is written back
// later.
func (s *stream) setupCreate() {
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
					_ = owner
					return
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
				return
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
				return
			}
			st.Close()
		}
	}
	// Redis did not answer: run here alone; the frames are written back
	// when it does.
	r.role.Store(roleLocal)
	r.wmu.Lock()
	r.pendingFrom = 1
	s.startWriteBack()
	r.wmu.Unlock()
}

// leased reports whether a replica holds the lease of the log gen: a stream
// that lives. (A log's keys outlive its last owner by the retention time.)
func (h *Hub) leased(ctx context.Context, gen replay.Gen) (bool, error) {
	st, err := h.storeOf(ctx, gen)
	if errors.Is(err, redisstore.ErrUnknownGeneration) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m, err := st.Meta(ctx)
	h.reps.report(err)
	if errors.Is(err, redisstore.ErrUnknownGeneration) {
		return false, nil
	}
	return m.Holder != "", err
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
	if res, err := redisstore.Resolve(ctx, h.reps.rdb, gen, h.cfg.Redis.Timeout); err == nil && s.header.Load() == nil {
		if hdr := res.Attrs["headers"]; hdr != "" {
			s.header.Store(parseSharedHeaders(hdr))
		}
	}
	r.storeP.Store(st)
	r.redisGen.Store(&gen)
	if gen != s.gen {
		s.addLabel(gen, 1)
		h.mu.Lock()
		h.byLabel[gen] = s
		h.mu.Unlock()
	}
	s.base.Store(m.Newest)
	s.seq.Store(m.Newest)
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
	for s.seq.Load() < m.Newest {
		if _, err := st.Tail(ctx, s.seq.Load(), s.appendFollowed); err != nil {
			h.reps.report(err)
			_ = st.Release(ctx)
			return false
		}
	}
	// Frames from here on carry a new label: the previous owner may have
	// gone on alone under a label of its own (cut off from Redis, see
	// commit), and this one is newer than it, so a client moving from that
	// owner to this stream still sees increasing ids (after a sync event).
	s.relabel(m.Newest + 1)
	ls := s.labelList()
	if err := st.SetAlias(ctx, ls[len(ls)-1].gen, m.Newest+1, h.cfg.Redis.Lease+h.cfg.Redis.Retention); err != nil {
		h.reps.report(err)
		_ = st.Release(ctx)
		return false
	}
	s.upLastID = append(s.upLastID[:0], m.UpstreamID...)
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
	s.addLabel(id.Gen, seq)
	s.hub.mu.Lock()
	s.hub.byLabel[id.Gen] = s
	s.hub.mu.Unlock()
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
		if s.tryAcquire(st) {
			return true, true
		}
	}
}

// commit writes a frame to Redis before it is delivered (owner), or notes it
// for writing back later (degraded). It reports whether to deliver it; the
// frame is in s.scratch, encoded with the id of seq. The caller holds wmu.
func (s *stream) commit(seq uint64, marker string) bool {
	r := s.rep
	h := s.hub
	r.upID = append(r.upID[:0], s.upLastID...)
	if r.pendingFrom != 0 {
		return true // degraded: the write-back loop puts it in Redis later
	}
	if r.st() == nil || r.role.Load() != roleOwner {
		return true
	}
	err := r.st().AppendContext(context.Background(), seq, [][]byte{s.scratch}, string(r.upID))
	h.reps.report(err)
	switch {
	case err == nil:
		return true
	case errors.Is(err, redisstore.ErrFenced):
		// Another replica owns the stream: it reads the upstream itself.
		r.demote.Store(true)
		return false
	}
	// Redis did not take it (or lost the log): go on alone under a new
	// label, so these ids cannot be mistaken for a new owner's.
	h.log.Warn().Err(err).Str("stream", genText(s.gen)).Uint64("seq", seq).Msg("Redis append failed; serving this replica's clients alone until it answers")
	old := s.id(seq)
	s.relabel(seq)
	s.reencode(seq, old, marker)
	r.pendingFrom = seq
	s.startWriteBack()
	return true
}

// startWriteBack starts the loop that writes a degraded owner's frames back
// once Redis answers, on its own goroutine, so that neither a quiet upstream
// delays it nor a Redis still down stalls delivery. The caller holds wmu.
func (s *stream) startWriteBack() {
	r := s.rep
	if r.retrying {
		return
	}
	r.retrying = true
	go func() {
		t := time.NewTicker(s.retryEvery())
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				r.wmu.Lock()
				r.retrying = false
				r.wmu.Unlock()
				return
			case <-t.C:
			}
			r.wmu.Lock()
			if r.pendingFrom == 0 || r.demote.Load() {
				r.retrying = false
				r.wmu.Unlock()
				return
			}
			s.writeBack()
			r.wmu.Unlock()
		}
	}()
}

// reencode rewrites the frame in s.scratch for the id of seq, after a
// relabel: a marker is encoded again; an event's id is the first line and
// has a fixed width, so it is overwritten in place.
func (s *stream) reencode(seq uint64, old replay.ID, marker string) {
	if marker != "" {
		s.scratch = appendSyncRequired(s.scratch[:0], s.id(seq), marker, false)
		return
	}
	if len(s.scratch) >= 4+replay.TextLen && string(s.scratch[:4]) == "id: " {
		s.id(seq).AppendText(s.scratch[4:4])
	}
}

// writeBack puts the frames this owner delivered while Redis did not answer
// into Redis, so they resume on any replica. It reports whether the stream
// is back to normal; on false it retries later (or the stream ends, when
// another replica took it over). The caller holds wmu.
func (s *stream) writeBack() bool {
	h, r := s.hub, s.rep
	ctx := context.Background()
	cur := s.labelList()[len(s.labelList())-1]
	if r.st() != nil {
		_, err := r.st().Renew(ctx)
		h.reps.report(err)
		switch {
		case err == nil:
		case errors.Is(err, redisstore.ErrFenced):
			r.demote.Store(true) // runReplicated ends the stream: pendingFrom is set
			s.closeBody()
			return false
		case errors.Is(err, redisstore.ErrUnknownGeneration):
			s.stopRenewLoop()
			r.st().Close()
			r.storeP.Store(nil)
		default:
			return false
		}
	}
	if r.st() == nil {
		// No log (Redis was down when the stream opened, or lost it): the
		// current label becomes a log of its own.
		st, err := h.storeOf(ctx, cur.gen)
		if err != nil && !errors.Is(err, redisstore.ErrUnknownGeneration) {
			return false
		}
		if _, err := st.Create(ctx, h.cfg.Redis.Lease); err != nil {
			h.reps.report(err)
			st.Close()
			if errors.Is(err, redisstore.ErrGenerationExists) {
				// A half-done earlier attempt left this label in Redis:
				// frames from here on get a fresh one (no id was issued
				// under it yet past this point's clients).
				s.relabel(s.seq.Load() + 1)
			}
			return false
		}
		if err := st.SetAttrs(ctx, map[string]string{"khash": r.khash}); err != nil {
			h.reps.report(err)
			st.Close()
			return false
		}
		if r.keyHash != "" {
			old, _, err := redisstore.Index(ctx, h.reps.rdb, r.keyHash, h.cfg.Redis.Timeout)
			h.reps.report(err)
			if err != nil {
				st.Close()
				return false
			}
			if !old.IsZero() {
				if alive, err := h.leased(ctx, old); err != nil || alive {
					if err != nil {
						st.Close()
						return false
					}
					// Another replica runs this key's stream now: two
					// writers must not share it. End this one.
					st.Close()
					r.demote.Store(true)
					s.closeBody()
					return false
				}
			}
			won, err := st.ClaimIndex(ctx, r.keyHash, old, h.cfg.Redis.Lease+h.cfg.Redis.Retention)
			h.reps.report(err)
			if err != nil {
				st.Close()
				return false
			}
			if !won {
				st.Close()
				r.demote.Store(true) // another replica opened the key meanwhile
				s.closeBody()
				return false
			}
		}
		s.becomeOwner(st)
		s.startRenew()
	} else if cur.gen != r.st().Gen() {
		if err := r.st().SetAlias(ctx, cur.gen, cur.from, h.cfg.Redis.Lease+h.cfg.Redis.Retention); err != nil {
			h.reps.report(err)
			return false
		}
	}
	// Append what Redis lacks, oldest first, in batches.
	m, err := r.st().Meta(ctx)
	h.reps.report(err)
	if err != nil {
		return false
	}
	next := max(r.pendingFrom, m.Newest+1)
	if m.Newest == 0 {
		next = r.pendingFrom
	}
	oldest, newest := s.log.Bounds()
	if next < oldest && next <= newest {
		if m.Newest > 0 {
			// The local log lost frames Redis never got: the Redis log
			// cannot continue without a hole. End the stream.
			h.log.Warn().Str("stream", genText(s.gen)).Msg("frames served while Redis was down are no longer buffered; ending the stream (clients reconnect and get a sync event)")
			r.demote.Store(true)
			s.closeBody()
			return false
		}
		next = oldest
	}
	var batch [][]byte
	var buf []byte
	first := next
	for seq := next; seq <= newest; seq++ {
		var last uint64
		b, last, err := s.log.Read(seq-1, buf[:0], 1)
		if err != nil || last != seq {
			return false
		}
		batch = append(batch, append([]byte(nil), b...))
		if len(batch) == 256 || seq == newest {
			if err := r.st().AppendContext(ctx, first, batch, string(r.upID)); err != nil {
				h.reps.report(err)
				return false
			}
			first, batch = seq+1, batch[:0]
		}
	}
	h.log.Info().Str("stream", genText(s.gen)).Uint64("from", next).Uint64("to", newest).Msg("Redis answers again; frames served meanwhile written back")
	r.pendingFrom = 0
	return true
}

// retryEvery is how often a degraded owner tries Redis again: often enough
// to renew its lease before a follower would take it over.
func (s *stream) retryEvery() time.Duration {
	return min(time.Second, s.hub.cfg.Redis.Lease/6)
}

// closeBody interrupts a blocked upstream read, so the run loop sees a
// demotion at once.
func (s *stream) closeBody() {
	if b, ok := s.body.Load().(interface{ CloseWithError(error) error }); ok {
		_ = b.CloseWithError(errStopped)
	}
}

// startRenew keeps the owner's lease alive: every third of its life, and the
// index entry and alias records with it.
func (s *stream) startRenew() {
	r := s.rep
	if r.st() == nil || r.stopRenew != nil {
		return
	}
	r.stopRenew, r.renewDone = make(chan struct{}), make(chan struct{})
	go s.renewLoop(r.st(), r.stopRenew, r.renewDone)
}

func (s *stream) stopRenewLoop() {
	r := s.rep
	if r.stopRenew == nil {
		return
	}
	close(r.stopRenew)
	<-r.renewDone
	r.stopRenew, r.renewDone = nil, nil
}

func (s *stream) renewLoop(st *redisstore.Store, stop, done chan struct{}) {
	defer close(done)
	h := s.hub
	lease := h.cfg.Redis.Lease
	t := time.NewTimer(lease / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.rep.st() != st {
			return // the stream moved to another log
		}
		_, err := st.Renew(context.Background())
		h.reps.report(err)
		switch {
		case err == nil:
			keys := []string{}
			if s.rep.keyHash != "" {
				keys = append(keys, redisstore.IndexKey(s.rep.keyHash))
			}
			for _, l := range s.labelList() {
				if l.gen != st.Gen() && l.from > 0 {
					keys = append(keys, redisstore.AliasKey(l.gen))
				}
			}
			h.reps.report(st.Refresh(context.Background(), lease+h.cfg.Redis.Retention, keys...))
			t.Reset(lease / 3)
		case errors.Is(err, redisstore.ErrFenced):
			h.log.Warn().Err(err).Str("stream", genText(s.gen)).Msg("lost the stream's lease")
			s.rep.demote.Store(true)
			s.closeBody()
			return
		default:
			// Unknown generation or no answer: the next append finds out
			// and the owner goes on alone; keep trying.
			t.Reset(lease / 6)
		}
	}
}

// resolveRemote runs before the hub decides, in Redis mode: a client's id
// from a generation this replica does not hold may be another replica's
// stream, to be followed from Redis. It opens that follower (registered
// under the generation), or does nothing and lets the usual decision answer
// with a sync event.
func (h *Hub) resolveRemote(r *request) {
	var id replay.ID
	hasID := len(r.lastID) > 0
	if hasID {
		var err error
		if id, err = replay.ParseID(r.lastID); err != nil {
			hasID = false
		}
	}
	key := ""
	if h.cfg.Mode == ModeShared {
		key = r.target + "\x00" + r.keyHdrs
	}
	h.mu.Lock()
	switch {
	case hasID && h.local(id.Gen) != nil:
		h.mu.Unlock()
		return
	case !hasID && (key == "" || h.byKey[key] != nil):
		h.mu.Unlock()
		return // a new session, or the key's stream is here: nothing to look up
	}
	h.mu.Unlock()
	if hasID {
		h.gens.Observe(id.Gen)
	}
	ctx := r.ctx
	timeout := h.cfg.Redis.Timeout
	var logGen replay.Gen
	var from uint64
	alias := false
	if hasID {
		res, err := redisstore.Resolve(ctx, h.reps.rdb, id.Gen, timeout)
		h.reps.report(err)
		if err != nil {
			if key == "" {
				return
			}
		} else {
			logGen, from, alias = res.Log, res.From, res.Log != id.Gen
			if key == "" && res.Attrs["khash"] != digest(r.target, r.keyHdrs) {
				return // another session's id: the decision says so
			}
		}
	}
	if key != "" {
		cur, ok, err := redisstore.Index(ctx, h.reps.rdb, digest(key), timeout)
		h.reps.report(err)
		if err == nil && !ok {
			// No stream for the key in Redis (it restarted empty): a local
			// follower follows a log that is gone, and its ids sort below
			// the ones its clients got since from the owner's new log. End
			// it; the decision opens a new stream, with a generation above
			// the client's id.
			h.mu.Lock()
			if k := h.byKey[key]; k != nil && k.rep != nil && k.rep.role.Load() == roleFollower {
				delete(h.byKey, key)
				go k.halt()
			}
			h.mu.Unlock()
		}
		if err != nil || !ok {
			return
		}
		if logGen != cur {
			logGen, alias = cur, false // the key's stream lives on elsewhere: follow it, the id gets a sync
		}
	}
	if logGen.IsZero() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.local(logGen)
	if s == nil {
		if key != "" {
			if k := h.byKey[key]; k != nil && !k.ending() {
				if !k.followsStale(logGen) {
					return // opened meanwhile
				}
				// This replica follows a log the key has left (Redis lost
				// it, or its owner went on under a new log): end it, so
				// that clients follow the key's current log, whose ids
				// sort after the old ones.
				delete(h.byKey, key)
				go k.halt()
			}
		}
		s = h.open(r, key, logGen)
	}
	if alias {
		s.addLabel(id.Gen, from)
		h.byLabel[id.Gen] = s
	}
}

// local returns the stream of this replica that issues ids of gen and still
// takes clients (one whose linger ran out is as good as gone: a resume must
// go to Redis rather than fail on it). The caller holds h.mu.
func (h *Hub) local(gen replay.Gen) *stream {
	s := h.byGen[gen]
	if s == nil {
		s = h.byLabel[gen]
	}
	if s == nil || s.ending() {
		return nil
	}
	return s
}

// followsStale reports whether s is a follower of a log other than current.
func (s *stream) followsStale(current replay.Gen) bool {
	if s.rep == nil || s.rep.role.Load() != roleFollower {
		return false
	}
	g := s.rep.redisGen.Load()
	return g != nil && *g != current
}

// subCount is the number of attached clients.
func (s *stream) subCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// readLog reads the frames after a cursor: from the local log, or, for a
// cursor older than it (a follower's local log starts where it began to
// follow), from the Redis log.
func (s *stream) readLog(after uint64, dst []byte, maxBytes int) ([]byte, uint64, error) {
	if s.rep == nil {
		return s.log.Read(after, dst, maxBytes)
	}
	st := s.rep.st()
	if after >= s.seq.Load() {
		// A client that resumed from Redis ahead of this follower's tail:
		// nothing until the tail catches up (it wakes the client).
		return dst, after, nil
	}
	oldest, newest := s.log.Bounds()
	if st == nil || after+1 >= oldest && newest >= oldest {
		b, last, err := s.log.Read(after, dst, maxBytes)
		if errors.Is(err, replay.ErrAhead) && newest < oldest {
			return dst, after, nil // an empty local log: nothing yet
		}
		if st == nil || !errors.Is(err, replay.ErrEvicted) {
			return b, last, err
		}
	}
	select {
	case <-s.done:
		return dst, after, replay.ErrEvicted
	default:
	}
	b, last, err := st.ReadContext(context.Background(), after, dst, maxBytes)
	s.hub.reps.report(err)
	switch {
	case err == nil:
		return b, last, nil
	case errors.Is(err, replay.ErrEvicted), errors.Is(err, redisstore.ErrUnknownGeneration):
		return dst, after, replay.ErrEvicted
	}
	// Redis does not answer: nothing to send yet; the client waits for the
	// next wake or heartbeat.
	return dst, after, nil
}

// redisState is the top-level "redis" object of /debug/stream-state.
type redisState struct {
	State  string `json:"state"`
	Addr   string `json:"addr,omitempty"`
	NodeID string `json:"node_id,omitempty"`
	Errors uint64 `json:"errors"`
	Error  string `json:"last_error,omitempty"`
}

func (h *Hub) redisState() redisState {
	if h.reps == nil {
		return redisState{State: "off"}
	}
	st := redisState{State: "ok", Addr: h.cfg.Redis.Addr, NodeID: h.cfg.Redis.NodeID, Errors: h.reps.errs.Load()}
	if !h.reps.up.Load() {
		st.State = "degraded"
		st.Error = *h.reps.lastErr.Load()
		if pw := h.cfg.Redis.Password; pw != "" {
			st.Error = strings.ReplaceAll(st.Error, pw, "***")
		}
	}
	return st
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

// redisLog is the stream's Redis log (nil in memory mode or when none).
func (s *stream) redisLog() *redisstore.Store {
	if s.rep == nil {
		return nil
	}
	return s.rep.st()
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
