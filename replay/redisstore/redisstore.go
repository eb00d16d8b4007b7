package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
)

// Errors. Every error a Store returns is wrapped with the operation and the
// Redis key; test with errors.Is.
var (
	// ErrUnknownGeneration: Redis holds no meta for the generation. Either it
	// was never created, or Redis lost it (a restart without persistence,
	// eviction, expiry after the retention time). A client resuming an id of
	// that generation must get system-sync. Read wraps it together with
	// replay.ErrEvicted, so code that knows only replay.Store still
	// resynchronises.
	ErrUnknownGeneration = errors.New("redisstore: unknown generation")
	// ErrFenced: the caller is not the owner. Another Store took the lease
	// (and so a newer fencing token) since this one acquired it, or this
	// Store holds no lease at all. Nothing was written.
	ErrFenced = errors.New("redisstore: fenced: not the current owner")
	// ErrLeaseHeld: Acquire or Create found the lease held by another node;
	// try again after it expires (Meta reports its holder and time to live).
	ErrLeaseHeld = errors.New("redisstore: lease held by another node")
	// ErrGenerationExists: Create found the generation already in Redis.
	ErrGenerationExists = errors.New("redisstore: generation already exists")
	// ErrClosed: the Store was closed. Read wraps it with replay.ErrEvicted.
	ErrClosed = errors.New("redisstore: store closed")
)

// maxSeq is the largest sequence the store accepts: the Lua scripts handle
// sequences as doubles, exact up to 2^53. At a million frames a second that
// is 285 years of one generation.
const maxSeq = 1<<53 - 1

// readChunk bounds the entries one XRANGE of Read asks for, so a reader
// asking for a huge maxBytes does not hold Redis for long.
const readChunk = 512

// tailCount is the most entries one Tail call delivers.
const tailCount = 512

// Defaults of the options.
const (
	DefaultTimeout   = time.Second
	DefaultRetention = time.Hour
	DefaultTailBlock = 2 * time.Second
)

// Option configures a Store.
type Option func(*Store)

// WithTimeout bounds every call to Redis (default DefaultTimeout; d <= 0
// keeps the default). Calls that take a context use the earlier of its
// deadline and this one; Tail waits its block time on top.
func WithTimeout(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithRetention sets how long the generation's keys stay in Redis after the
// last lease renewal or release (default DefaultRetention; 0 keeps the
// default; a negative d means the keys never expire and the caller deletes
// them). While an owner renews its lease the keys never expire; once no owner
// is left, a client resuming within the retention time still resumes exactly,
// and after it gets system-sync.
func WithRetention(d time.Duration) Option {
	return func(s *Store) {
		if d != 0 {
			s.retention = d
		}
	}
}

// WithTailBlock sets how long one Tail call waits for new entries (default
// DefaultTailBlock; d <= 0 keeps the default). It is also how long a Tail
// whose context was cancelled may take to return, and how soon a tailer
// learns that its generation vanished.
func WithTailBlock(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.tailBlock = d
		}
	}
}

// Store is a replay.Store kept in Redis, shared by every replica: the log of
// one generation of one lastevent stream. See the package documentation for
// the key layout and the ownership protocol.
//
// Concurrency: a Store is safe for concurrent use; in particular Renew may
// run on a timer while Append and Read run elsewhere. As for any
// replay.Store, appends to one generation must come from one goroutine of the
// owner.
//
// Cost: Append is one round trip (a Lua script), Read one round trip (a
// MULTI of HMGET and XRANGE) plus the bytes copied; Bounds and Stats are one
// HMGET. The replay.Budget does not
// apply: the frames live in Redis, bounded by the capacity and by Redis's own
// maxmemory.
//
// Failure: every call is bounded by the store's timeout (WithTimeout). The
// replay.Store methods, which cannot return an error (Bounds, Stats), fall
// back to the last values Redis reported when it does not answer.
type Store struct {
	c        redis.UniversalClient
	gen      replay.Gen
	genText  string
	metaKey  string
	logKey   string
	leaseKey string
	capacity int
	node     string
	instance string // tells this Store's lease from another's on the same node

	timeout   time.Duration
	retention time.Duration
	tailBlock time.Duration

	leaseMu  sync.Mutex    // serialises Create, Acquire, Renew and Release
	token    atomic.Uint64 // fencing token held, 0 when none
	leaseTTL atomic.Int64  // nanoseconds, the life of the lease held
	expires  atomic.Int64  // unix nanoseconds, local estimate of the lease's end
	closed   atomic.Bool

	// The newest bounds Redis reported, for Bounds and Stats when it does not
	// answer (and after Close), and to size reads.
	last atomic.Pointer[bounds]
}

// bounds is a snapshot of meta's window.
type bounds struct {
	oldest, newest uint64
	bytes          int64
}

var _ replay.Store = (*Store)(nil)

// Keys returns the Redis keys of generation gen: the hash tag
// "{le:<generation text>}" followed by ":meta", ":log" and ":lease".
func Keys(gen replay.Gen) (meta, log, lease string) {
	tag := "{le:" + genString(gen) + "}"
	return tag + ":meta", tag + ":log", tag + ":lease"
}

func genString(gen replay.Gen) string {
	return replay.ID{Gen: gen}.String()[:replay.TextLen-14]
}

// New returns the Store of generation gen, keeping at most capacity frames
// (capacity < 1 means 1), for the node nodeID (the pod name: it names the
// lease holder). It reads the generation's meta once, which also checks that
// Redis answers.
//
// When Redis holds no meta for gen, New returns the Store and an error
// wrapping ErrUnknownGeneration: a node creating gen expects it and goes on
// to Create; a node resuming a client's id of gen answers system-sync. Any
// other error comes with a nil Store.
//
// client must be created with ContextTimeoutEnabled, or go-redis ignores the
// store's timeouts at the socket (a paused Redis would then hold a call for
// the client's ReadTimeout, or forever); New refuses a *redis.Client or
// *redis.ClusterClient without it. Its pool must be larger than the number of
// concurrent Tail calls, each of which holds a connection while it blocks.
// All nodes sharing a generation must use the same capacity.
func New(ctx context.Context, client redis.UniversalClient, gen replay.Gen, capacity int, nodeID string, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	if gen.IsZero() {
		return nil, errors.New("redisstore: zero generation")
	}
	if err := checkNodeID(nodeID); err != nil {
		return nil, err
	}
	if err := checkClient(client); err != nil {
		return nil, err
	}
	var inst [8]byte
	_, _ = rand.Read(inst[:]) // crypto/rand does not fail
	s := &Store{
		c:         client,
		gen:       gen,
		genText:   genString(gen),
		capacity:  max(capacity, 1),
		node:      nodeID,
		instance:  hex.EncodeToString(inst[:]),
		timeout:   DefaultTimeout,
		retention: DefaultRetention,
		tailBlock: DefaultTailBlock,
	}
	s.metaKey, s.logKey, s.leaseKey = Keys(gen)
	s.last.Store(&bounds{oldest: 1})
	for _, o := range opts {
		o(s)
	}
	m, err := s.Meta(ctx)
	if errors.Is(err, ErrUnknownGeneration) {
		return s, err
	}
	if err != nil {
		return nil, err
	}
	if m.Gen != gen {
		return nil, fmt.Errorf("redisstore: open %s: meta names generation %s", s.metaKey, genString(m.Gen))
	}
	return s, nil
}

func checkNodeID(id string) error {
	if id == "" || len(id) > 255 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("redisstore: node id %q: want 1 to 255 bytes without spaces or control characters", id)
	}
	return nil
}

func checkClient(c redis.UniversalClient) error {
	var enabled bool
	switch c := c.(type) {
	case *redis.Client:
		enabled = c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		enabled = c.Options().ContextTimeoutEnabled
	default:
		return nil // cannot tell; documented
	}
	if !enabled {
		return errors.New("redisstore: the Redis client needs ContextTimeoutEnabled: true, " +
			"or the store's timeouts do not reach the socket")
	}
	return nil
}

// Gen returns the store's generation.
func (s *Store) Gen() replay.Gen { return s.gen }

// Meta is what Redis holds about a generation, for a node taking over a
// stream or deciding whether to.
type Meta struct {
	Gen replay.Gen
	// Oldest and Newest are the log's bounds as in replay.Store.Bounds:
	// oldest == newest+1 on an empty log. A new owner appends Newest+1.
	Oldest, Newest uint64
	// Bytes is the size of the frames between Oldest and Newest.
	Bytes int64
	// UpstreamID is the upstream's own last event id as of frame Newest (as
	// written by AppendContext or SetUpstreamID): the Last-Event-ID a new
	// owner sends when it reconnects to the upstream. "" if none.
	UpstreamID string
	// Owner is the node that took the newest fencing token, Token.
	Owner string
	Token uint64
	// Holder is the node holding the lease now and LeaseTTL its remaining
	// life; "" and 0 when the lease is free (expired or released).
	Holder   string
	LeaseTTL time.Duration
	// Attrs are the generation's attributes (SetAttrs).
	Attrs map[string]string
}

// Meta reads the generation's meta and lease in one round trip (a MULTI).
// Errors: ErrUnknownGeneration when Redis holds no meta for it.
func (s *Store) Meta(ctx context.Context) (Meta, error) {
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	var (
		all  *redis.MapStringStringCmd
		get  *redis.StringCmd
		pttl *redis.DurationCmd
	)
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, s.metaKey)
		get = p.Get(ctx, s.leaseKey)
		pttl = p.PTTL(ctx, s.leaseKey)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return Meta{}, s.wrap(ctx, "meta", s.metaKey, err)
	}
	h := all.Val()
	if len(h) == 0 {
		return Meta{}, fmt.Errorf("redisstore: meta %s: %w", s.metaKey, ErrUnknownGeneration)
	}
	var m Meta
	id, perr := replay.ParseID([]byte(h["gen"] + "-0000000000000"))
	if perr != nil {
		return Meta{}, fmt.Errorf("redisstore: meta %s: bad gen %q", s.metaKey, h["gen"])
	}
	m.Gen = id.Gen
	m.Oldest, _ = strconv.ParseUint(h["oldest"], 10, 64)
	m.Newest, _ = strconv.ParseUint(h["newest"], 10, 64)
	m.Bytes, _ = strconv.ParseInt(h["bytes"], 10, 64)
	m.Token, _ = strconv.ParseUint(h["token"], 10, 64)
	m.UpstreamID = h["upstream"]
	m.Attrs = attrsOf(h)
	m.Owner = h["owner"]
	if v := get.Val(); v != "" {
		if _, rest, ok := strings.Cut(v, " "); ok {
			if _, node, ok := strings.Cut(rest, " "); ok {
				m.Holder = node
			}
		}
		m.LeaseTTL = max(pttl.Val(), 0)
	}
	s.remember(m.Oldest, m.Newest, m.Bytes)
	return m, nil
}

// Lease is a lease on a generation, held by one Store.
type Lease struct {
	// Token is the fencing token every Append carries; a newer lease taken
	// by another Store makes this one's appends fail with ErrFenced.
	Token uint64
	// TTL is the life the lease was taken or renewed with.
	TTL time.Duration
	// Expires is a local, conservative estimate of its end: the time the
	// call was sent plus TTL.
	Expires time.Time
}

// RenewAt returns when to renew: a third into the lease's life.
func (l Lease) RenewAt() time.Time { return l.Expires.Add(-l.TTL * 2 / 3) }

// Lease returns the lease this Store holds (the zero Lease when none).
func (s *Store) Lease() Lease {
	tok := s.token.Load()
	if tok == 0 {
		return Lease{}
	}
	return Lease{Token: tok, TTL: time.Duration(s.leaseTTL.Load()), Expires: time.Unix(0, s.expires.Load())}
}

// Create creates the generation in Redis (it must be new: see New) and takes
// its lease for ttl, making this Store the owner. Errors: ErrGenerationExists,
// ErrLeaseHeld.
func (s *Store) Create(ctx context.Context, ttl time.Duration) (Lease, error) {
	return s.acquire(ctx, "create", ttl)
}

// Acquire takes the lease of an existing generation for ttl with a new
// fencing token, making this Store the owner: from then on an Append by the
// previous owner fails with ErrFenced. A new owner reads Meta for where to
// continue (Newest+1) and the upstream's last event id. Errors: ErrLeaseHeld
// while another node's lease lives, ErrUnknownGeneration.
//
// The owner must call Renew every third of ttl (Lease.RenewAt), and Release
// when it stops owning the stream.
func (s *Store) Acquire(ctx context.Context, ttl time.Duration) (Lease, error) {
	return s.acquire(ctx, "take", ttl)
}

func (s *Store) acquire(ctx context.Context, mode string, ttl time.Duration) (Lease, error) {
	op := "acquire"
	if mode == "create" {
		op = "create"
	}
	if ttl < time.Millisecond {
		return Lease{}, fmt.Errorf("redisstore: %s %s: lease ttl %v below 1ms", op, s.leaseKey, ttl)
	}
	if s.closed.Load() {
		return Lease{}, fmt.Errorf("redisstore: %s %s: %w", op, s.leaseKey, ErrClosed)
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	start := time.Now()
	r, err := acquireScript.Run(ctx, s.c, []string{s.metaKey, s.leaseKey, s.logKey},
		mode, ms(ttl), s.instance, s.node, s.genText, s.keepMillis(ttl)).Slice()
	if err != nil {
		return Lease{}, s.wrap(ctx, op, s.leaseKey, err)
	}
	switch code(r) {
	case codeOK:
		tok := uintAt(r, 1)
		s.leaseTTL.Store(int64(ttl))
		s.expires.Store(start.Add(ttl).UnixNano())
		s.token.Store(tok)
		return s.Lease(), nil
	case codeFenced:
		return Lease{}, fmt.Errorf("redisstore: %s %s: %w: node %q, token %s", op, s.leaseKey, ErrLeaseHeld, strAt(r, 2), strAt(r, 1))
	case codeUnknown:
		return Lease{}, fmt.Errorf("redisstore: %s %s: %w", op, s.metaKey, ErrUnknownGeneration)
	case codeExists:
		return Lease{}, fmt.Errorf("redisstore: %s %s: %w", op, s.metaKey, ErrGenerationExists)
	}
	return Lease{}, s.badReply(op, s.leaseKey, r)
}

// Renew extends the lease for the ttl it was taken with, and the keys'
// expiry with it. A lease that expired with no other node taking it since is
// taken again under the same token. Errors: ErrFenced (another node took it:
// stop appending and reading the upstream, and follow the stream with Tail),
// ErrUnknownGeneration (Redis lost the generation: start a new one).
func (s *Store) Renew(ctx context.Context) (Lease, error) {
	// Serialised with Release, or a renewal racing a release could take the
	// lease again right after it was given up.
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	tok := s.token.Load()
	if tok == 0 {
		return Lease{}, fmt.Errorf("redisstore: renew %s: %w (no lease held)", s.leaseKey, ErrFenced)
	}
	ttl := time.Duration(s.leaseTTL.Load())
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	start := time.Now()
	r, err := renewScript.Run(ctx, s.c, []string{s.metaKey, s.leaseKey, s.logKey},
		strconv.FormatUint(tok, 10), ms(ttl), s.instance, s.node, s.keepMillis(ttl)).Slice()
	if err != nil {
		return Lease{}, s.wrap(ctx, "renew", s.leaseKey, err)
	}
	switch code(r) {
	case codeOK:
		s.expires.Store(start.Add(ttl).UnixNano())
		return Lease{Token: tok, TTL: ttl, Expires: start.Add(ttl)}, nil
	case codeFenced:
		s.token.CompareAndSwap(tok, 0)
		return Lease{}, fmt.Errorf("redisstore: renew %s: %w: token %d superseded by %s (node %q)",
			s.leaseKey, ErrFenced, tok, strAt(r, 1), strAt(r, 2))
	case codeUnknown:
		return Lease{}, fmt.Errorf("redisstore: renew %s: %w", s.metaKey, ErrUnknownGeneration)
	}
	return Lease{}, s.badReply("renew", s.leaseKey, r)
}

// Release gives the lease up (if it is still this Store's), so another node
// can take over at once rather than after the lease expires, and starts the
// retention time of the keys. The Store holds no lease afterwards. Releasing
// without a lease does nothing.
func (s *Store) Release(ctx context.Context) error {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	tok := s.token.Swap(0)
	if tok == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	ret := "0"
	if s.retention > 0 {
		ret = ms(s.retention)
	}
	if err := releaseScript.Run(ctx, s.c, []string{s.metaKey, s.leaseKey, s.logKey},
		strconv.FormatUint(tok, 10), ret).Err(); err != nil {
		return s.wrap(ctx, "release", s.leaseKey, err)
	}
	return nil
}

// SetUpstreamID records the upstream's own last event id without a frame
// (AppendContext records it with one). Errors: ErrFenced, ErrUnknownGeneration.
func (s *Store) SetUpstreamID(ctx context.Context, id string) error {
	tok := s.token.Load()
	if tok == 0 {
		return fmt.Errorf("redisstore: set upstream id %s: %w (no lease held)", s.metaKey, ErrFenced)
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	r, err := upstreamScript.Run(ctx, s.c, []string{s.metaKey}, strconv.FormatUint(tok, 10), id).Slice()
	if err != nil {
		return s.wrap(ctx, "set upstream id", s.metaKey, err)
	}
	return s.writeResult("set upstream id", tok, r)
}

// Append implements replay.Store: it appends one frame under the store's
// timeout, leaving the upstream id in meta as it is. See AppendContext.
func (s *Store) Append(seq uint64, frame []byte) error {
	return s.appendFrames(context.Background(), seq, [][]byte{frame}, "", false)
}

// AppendContext appends frames[0] under first, frames[1] under first+1, and
// so on, and records upstreamID as the upstream's last event id, all in one
// atomic script call: one round trip for the whole batch (pipelining a burst
// this way is several times faster than appending frame by frame). first
// must be newest+1, or any sequence >= 1 on an empty log.
//
// The script checks this Store's fencing token first. Errors: ErrFenced (this
// Store is not the owner; nothing was written), replay.ErrOutOfOrder,
// ErrUnknownGeneration, a timeout. After a timeout the batch may or may not
// have been written: calling again with the same arguments is safe, it
// succeeds without writing twice.
func (s *Store) AppendContext(ctx context.Context, first uint64, frames [][]byte, upstreamID string) error {
	return s.appendFrames(ctx, first, frames, upstreamID, true)
}

func (s *Store) appendFrames(ctx context.Context, first uint64, frames [][]byte, upstreamID string, setUpstream bool) error {
	if s.closed.Load() {
		return fmt.Errorf("redisstore: append %s: %w", s.logKey, ErrClosed)
	}
	if len(frames) == 0 {
		return nil
	}
	if first == 0 || first > maxSeq || uint64(len(frames)-1) > maxSeq-first {
		return fmt.Errorf("redisstore: append %s: seq %d: %w (sequences run from 1 to 2^53-1)", s.logKey, first, replay.ErrOutOfOrder)
	}
	tok := s.token.Load()
	if tok == 0 {
		return fmt.Errorf("redisstore: append %s: %w (no lease held)", s.logKey, ErrFenced)
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	flag := "0"
	if setUpstream {
		flag = "1"
	}
	args := make([]any, 0, 5+len(frames))
	args = append(args, strconv.FormatUint(tok, 10), s.capacity, strconv.FormatUint(first, 10), flag, upstreamID)
	for _, f := range frames {
		args = append(args, f)
	}
	r, err := appendScript.Run(ctx, s.c, []string{s.metaKey, s.logKey}, args...).Slice()
	if err != nil {
		return s.wrap(ctx, "append", s.logKey, err)
	}
	switch code(r) {
	case codeOK:
		s.remember(uintAt(r, 1), uintAt(r, 2), intAt(r, 3))
		return nil
	case codeOutOfOrder:
		return fmt.Errorf("redisstore: append %s: seq %d after newest %d: %w", s.logKey, first, uintAt(r, 1), replay.ErrOutOfOrder)
	}
	return s.writeResult("append", tok, r)
}

// writeResult maps the replies shared by the fenced scripts.
func (s *Store) writeResult(op string, tok uint64, r []any) error {
	switch code(r) {
	case codeOK:
		return nil
	case codeFenced:
		s.token.CompareAndSwap(tok, 0)
		return fmt.Errorf("redisstore: %s %s: %w: token %d superseded by %s", op, s.metaKey, ErrFenced, tok, strAt(r, 1))
	case codeUnknown:
		return fmt.Errorf("redisstore: %s %s: %w", op, s.metaKey, ErrUnknownGeneration)
	}
	return s.badReply(op, s.metaKey, r)
}

// Read implements replay.Store under the store's timeout. See ReadContext.
func (s *Store) Read(after uint64, dst []byte, maxBytes int) ([]byte, uint64, error) {
	return s.ReadContext(context.Background(), after, dst, maxBytes)
}

// ReadContext appends to dst the frames after `after`, as replay.Store.Read
// does (maxBytes <= 0 reads exactly one frame). Any node can read; no lease
// is needed.
//
// Cost: one round trip, a MULTI of HMGET meta and one XRANGE from after+1
// (O(log n) to find it), asking for as many entries as maxBytes holds at the
// mean frame size (at most 512); a read that needs more entries takes one
// more XRANGE per 512. The read is deliberately not a Lua script: copying
// the entries into Lua costs Redis about five times the CPU of the XRANGE
// reply itself.
//
// Errors: replay.ErrEvicted, replay.ErrAhead, ErrUnknownGeneration (wrapped
// with replay.ErrEvicted), ErrClosed (likewise), a timeout. Frames read
// before an error in a later round trip are returned without the error.
func (s *Store) ReadContext(ctx context.Context, after uint64, dst []byte, maxBytes int) ([]byte, uint64, error) {
	if s.closed.Load() {
		return dst, after, fmt.Errorf("redisstore: read %s: %w: %w", s.logKey, ErrClosed, replay.ErrEvicted)
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	count := int64(1)
	if maxBytes > 0 {
		count = int64(min(maxBytes/s.avgFrame()+1, readChunk))
	}
	var (
		hm *redis.SliceCmd
		xr *redis.XMessageSliceCmd
	)
	// "<after>-1" starts right after entry "<after>-0" and is valid for
	// every uint64, unlike after+1.
	start := strconv.FormatUint(after, 10) + "-1"
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		hm = p.HMGet(ctx, s.metaKey, "oldest", "newest", "bytes")
		xr = p.XRangeN(ctx, s.logKey, start, "+", count)
		return nil
	})
	if err != nil {
		return dst, after, s.wrap(ctx, "read", s.logKey, err)
	}
	v := hm.Val()
	if len(v) != 3 || v[1] == nil {
		return dst, after, fmt.Errorf("redisstore: read %s: %w: %w", s.metaKey, ErrUnknownGeneration, replay.ErrEvicted)
	}
	b := s.remember(parseField(v[0]), parseField(v[1]), int64(parseField(v[2])))
	switch {
	case after > b.newest:
		return dst, after, fmt.Errorf("redisstore: read %s: after %d, newest %d: %w", s.logKey, after, b.newest, replay.ErrAhead)
	case after == b.newest:
		return dst, after, nil
	case after+1 < b.oldest:
		return dst, after, fmt.Errorf("redisstore: read %s: after %d, oldest %d: %w", s.logKey, after, b.oldest, replay.ErrEvicted)
	}
	msgs := xr.Val()
	if len(msgs) == 0 || msgs[0].ID != strconv.FormatUint(after+1, 10)+"-0" {
		// Meta says the frame is kept but the log lacks it: the log key was
		// lost (evicted, deleted).
		return dst, after, fmt.Errorf("redisstore: read %s: frame %d missing: %w", s.logKey, after+1, replay.ErrEvicted)
	}
	// Size dst once for what this round brought (or maxBytes, if less).
	need := 0
	for _, m := range msgs {
		f, _ := m.Values["f"].(string)
		if need > 0 && need+len(f) > maxBytes {
			break
		}
		need += len(f)
	}
	dst = slices.Grow(dst, need)
	total, last := 0, after
	for {
		full := false
		for _, m := range msgs {
			seq, ok := parseEntryID(m.ID)
			if !ok || seq != last+1 {
				return dst, last, nil // a gap: the next Read reports it
			}
			f, _ := m.Values["f"].(string)
			if total+len(f) > maxBytes && last > after {
				full = true
				break
			}
			dst = append(dst, f...)
			total += len(f)
			last = seq
		}
		if full || total >= maxBytes || last >= b.newest || int64(len(msgs)) < count {
			return dst, last, nil
		}
		// maxBytes holds more: fetch on. Entries appended meanwhile are as
		// good as the ones meta announced.
		count = readChunk
		msgs, err = s.c.XRangeN(ctx, s.logKey, strconv.FormatUint(last, 10)+"-1", "+", count).Result()
		if err != nil || len(msgs) == 0 {
			return dst, last, nil
		}
	}
}

func parseField(v any) uint64 {
	str, _ := v.(string)
	n, _ := strconv.ParseUint(str, 10, 64)
	return n
}

// avgFrame is the mean frame size last reported, to size the first XRANGE of
// a read (at least 1).
func (s *Store) avgFrame() int {
	b := s.last.Load()
	if b.newest < b.oldest || b.bytes <= 0 {
		return 128
	}
	return max(1, int(b.bytes/int64(b.newest-b.oldest+1)))
}

// Bounds implements replay.Store: one round trip for the current bounds;
// when Redis does not answer within the timeout, the newest bounds it
// reported before. After Close, an empty log.
func (s *Store) Bounds() (oldest, newest uint64) {
	if s.closed.Load() {
		b := s.last.Load()
		return b.newest + 1, b.newest
	}
	b := s.current()
	return b.oldest, b.newest
}

// KnownBounds returns the bounds Redis last reported to this Store (at an
// append, a read, Meta or Bounds), with no round trip: the log's oldest can
// only have moved on since. Before any report, an empty log.
func (s *Store) KnownBounds() (oldest, newest uint64) {
	b := s.last.Load()
	return b.oldest, b.newest
}

// Stats implements replay.Store: the frames between the bounds and their
// bytes (not Redis's memory, which is about 25% more, plus up to one stream
// node of older entries MAXLEN ~ keeps), with the same fallback as Bounds.
func (s *Store) Stats() (frames int, bytes int64) {
	if s.closed.Load() {
		return 0, 0
	}
	b := s.current()
	if b.newest < b.oldest {
		return 0, 0
	}
	return int(b.newest - b.oldest + 1), b.bytes
}

// current reads the bounds from meta, or returns the last known ones.
func (s *Store) current() bounds {
	ctx, cancel := s.ctx(context.Background(), 0)
	defer cancel()
	v, err := s.c.HMGet(ctx, s.metaKey, "oldest", "newest", "bytes").Result()
	if err != nil || len(v) != 3 || v[1] == nil {
		return *s.last.Load()
	}
	return s.remember(parseField(v[0]), parseField(v[1]), int64(parseField(v[2])))
}

// remember records bounds Redis reported, unless a concurrent call already
// recorded newer ones (the log only grows), and returns them.
func (s *Store) remember(oldest, newest uint64, nbytes int64) bounds {
	if oldest == 0 {
		oldest = newest + 1
	}
	b := &bounds{oldest: oldest, newest: newest, bytes: nbytes}
	for {
		cur := s.last.Load()
		if cur.newest > newest || (cur.newest == newest && cur.oldest > oldest) {
			return *b
		}
		if s.last.CompareAndSwap(cur, b) {
			return *b
		}
	}
}

// Close implements replay.Store. It releases the lease if this Store holds
// one (best effort, under the timeout) and makes later calls fail; the
// frames stay in Redis for the other nodes until the retention time runs out.
// Close is idempotent.
func (s *Store) Close() {
	if s.closed.Swap(true) {
		return
	}
	_ = s.Release(context.Background())
}

// Tail waits for the frames after `after`, as a node that does not own the
// stream follows it into its local ring: one XREAD BLOCK (at most the tail
// block time, WithTailBlock, and at most 512 entries), then fn for each
// frame in order. It returns the sequence of the last frame fn accepted
// (after itself when none came in time) and the error fn returned, if any.
// fn must not keep frame.
//
// Errors: replay.ErrEvicted when frame after+1 is no longer in Redis (the
// follower fell too far behind: its clients behind that point need
// sync-required, and it continues from Bounds); ErrUnknownGeneration when
// nothing came and the generation is gone (checked only when the wait ends
// empty, so it costs an idle stream one more round trip per block time); a
// timeout. Tail does not notice a cancelled ctx while Redis blocks; it
// returns at the end of the block time.
func (s *Store) Tail(ctx context.Context, after uint64, fn func(seq uint64, frame []byte) error) (uint64, error) {
	if s.closed.Load() {
		return after, fmt.Errorf("redisstore: tail %s: %w", s.logKey, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return after, err
	}
	// Block no longer than the caller's deadline allows, so that an empty
	// wait ends as one, not as a timeout: the answer gets the store's
	// timeout, or half the time left if that is shorter, after the block.
	block, limit := s.tailBlock, s.timeout+s.tailBlock
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		block = max(min(block, left-min(s.timeout, left/2)), time.Millisecond) // BLOCK 0 would wait forever
		limit = min(s.timeout+block, left)
	}
	ctx, cancel := s.ctx(ctx, block)
	defer cancel()
	streams, err := s.c.XRead(ctx, &redis.XReadArgs{
		Streams: []string{s.logKey, strconv.FormatUint(after, 10) + "-0"},
		Count:   tailCount,
		Block:   block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		n, err := s.c.Exists(ctx, s.metaKey).Result()
		if err != nil {
			return after, s.wrap(ctx, "tail", s.metaKey, err)
		}
		if n == 0 {
			return after, fmt.Errorf("redisstore: tail %s: %w", s.metaKey, ErrUnknownGeneration)
		}
		return after, nil
	}
	if err != nil {
		return after, s.wrapWithin(ctx, "tail", s.logKey, limit, err)
	}
	last := after
	for _, st := range streams {
		for _, msg := range st.Messages {
			seq, ok := parseEntryID(msg.ID)
			if !ok {
				return last, fmt.Errorf("redisstore: tail %s: entry id %q is not ours", s.logKey, msg.ID)
			}
			if seq != last+1 {
				if last == after {
					return last, fmt.Errorf("redisstore: tail %s: after %d the next entry is %d: %w", s.logKey, after, seq, replay.ErrEvicted)
				}
				return last, nil // the next call reports the gap
			}
			f, _ := msg.Values["f"].(string)
			if err := fn(seq, []byte(f)); err != nil {
				return last, err
			}
			last = seq
		}
	}
	return last, nil
}

func parseEntryID(id string) (uint64, bool) {
	ms, rest, ok := strings.Cut(id, "-")
	if !ok || rest != "0" {
		return 0, false
	}
	seq, err := strconv.ParseUint(ms, 10, 64)
	return seq, err == nil
}

// ctx bounds a call: the store's timeout plus extra (a blocking wait).
func (s *Store) ctx(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout+extra)
}

// keepMillis is how long the keys live after a lease of ttl is taken or
// renewed: the lease plus the retention ("0": forever).
func (s *Store) keepMillis(ttl time.Duration) string {
	if s.retention < 0 {
		return "0"
	}
	return ms(ttl + s.retention)
}

// wrap names the operation and key, and says plainly when Redis did not
// answer in time: errors.Is(err, context.DeadlineExceeded) holds then,
// whether the context ran out or the socket deadline taken from it fired
// first.
func (s *Store) wrap(ctx context.Context, op, key string, err error) error {
	return s.wrapWithin(ctx, op, key, s.timeout, err)
}

// wrapWithin is wrap for a call bounded by d rather than the store's timeout.
func (s *Store) wrapWithin(ctx context.Context, op, key string, d time.Duration, err error) error {
	cerr := ctx.Err()
	var nerr net.Error
	timedOut := errors.Is(cerr, context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &nerr) && nerr.Timeout())
	switch {
	case timedOut && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("redisstore: %s %s: no answer from Redis within the %v timeout: %w", op, key, d, err)
	case timedOut:
		return fmt.Errorf("redisstore: %s %s: no answer from Redis within the %v timeout: %w (%w)", op, key, d, context.DeadlineExceeded, err)
	case cerr != nil && !errors.Is(err, cerr):
		return fmt.Errorf("redisstore: %s %s: %w (%w)", op, key, cerr, err)
	}
	return fmt.Errorf("redisstore: %s %s: %w", op, key, err)
}

func (s *Store) badReply(op, key string, r []any) error {
	return fmt.Errorf("redisstore: %s %s: unexpected script reply %v", op, key, r)
}

func ms(d time.Duration) string {
	return strconv.FormatInt(max(int64((d+time.Millisecond-1)/time.Millisecond), 1), 10)
}

func code(r []any) int64 { return intAt(r, 0) }

func intAt(r []any, i int) int64 {
	if i >= len(r) {
		return -1
	}
	switch v := r[i].(type) {
	case int64:
		return v
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
	return -1
}

func uintAt(r []any, i int) uint64 {
	if n := intAt(r, i); n > 0 {
		return uint64(n)
	}
	return 0
}

func strAt(r []any, i int) string {
	if i >= len(r) {
		return ""
	}
	switch v := r[i].(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}
