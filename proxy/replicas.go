package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

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
	pool := max(cfg.UpstreamMaxConnections, cfg.MaxConnections) + 16 // one blocking read per followed stream (at most one stream per client), and the rest
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
	// An owner knows its own labels; anyone else trusts an alias only for
	// an id that its log's frame really carries (an alias is written before
	// the frames it names, and those may never have made it: a new owner's
	// frames then hold these sequences).
	alias = alias && h.idInLog(ctx, logGen, id)
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
	if alias && s.rep.role.Load() != roleOwner {
		s.addLabel(id.Gen, from)
		h.byLabel[id.Gen] = s
	}
}

// idInLog reports whether the frame of log gen at id's sequence carries
// exactly id (one Redis round trip).
func (h *Hub) idInLog(ctx context.Context, gen replay.Gen, id replay.ID) bool {
	text, err := redisstore.IDAt(ctx, h.reps.rdb, gen, id.Seq, h.cfg.Redis.Timeout)
	h.reps.report(err)
	return err == nil && text == id.String()
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
	if s.rep.degraded.Load() {
		// This owner went on alone from pendingFrom; past it, the Redis log
		// may hold another replica's frames (see degraded): a sync rather
		// than a splice of two upstream connections.
		return dst, after, replay.ErrEvicted
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

// redisLog is the stream's Redis log (nil in memory mode or when none).
func (s *stream) redisLog() *redisstore.Store {
	if s.rep == nil {
		return nil
	}
	return s.rep.st()
}
