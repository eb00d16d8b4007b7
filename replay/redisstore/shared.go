package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
)

// This file holds what replicas share beside a generation's log: attributes
// of a generation, aliases (a generation that names frames kept in another
// generation's log), the index from a stream key to its current generation,
// and the watch mark of a follower with clients. Each key is under its own
// hash tag, so every call touches one Redis Cluster slot.

// SetAttrs records attributes of the generation in its meta hash (fenced:
// only the owner writes them). Names must not be those the store uses (gen,
// oldest, newest, bytes, upstream, owner, token, alias, from). Meta returns
// them in Attrs.
func (s *Store) SetAttrs(ctx context.Context, attrs map[string]string) error {
	tok := s.token.Load()
	if tok == 0 {
		return fmt.Errorf("redisstore: set attrs %s: %w (no lease held)", s.metaKey, ErrFenced)
	}
	args := []any{strconv.FormatUint(tok, 10)}
	for k, v := range attrs {
		if reserved[k] {
			return fmt.Errorf("redisstore: set attrs %s: %q is a reserved field", s.metaKey, k)
		}
		args = append(args, k, v)
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	r, err := attrsScript.Run(ctx, s.c, []string{s.metaKey}, args...).Slice()
	if err != nil {
		return s.wrap(ctx, "set attrs", s.metaKey, err)
	}
	return s.writeResult("set attrs", tok, r)
}

var reserved = map[string]bool{"gen": true, "oldest": true, "newest": true, "bytes": true,
	"upstream": true, "owner": true, "token": true, "alias": true, "from": true}

// attrsScript sets fields of meta, fenced. KEYS[1] meta; ARGV[1] token,
// ARGV[2..] field, value pairs. Reply: {0} | {2, current token} | {3}.
var attrsScript = redis.NewScript(`
local t = redis.call('HGET', KEYS[1], 'token')
if not t then return {3} end
if t ~= ARGV[1] then return {2, t} end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
return {0}
`)

// Resolved is where the frames of a generation live.
type Resolved struct {
	// Log is the generation whose log holds the frames: gen itself, or the
	// target of an alias.
	Log replay.Gen
	// From is the first sequence issued under gen when it is an alias (the
	// ids of gen cover From-1 onwards); 0 otherwise.
	From uint64
	// Attrs are the attributes of Log (SetAttrs).
	Attrs map[string]string
}

// Resolve finds where the frames of gen live: its own log, or the log an
// alias points to (SetAlias). It costs one round trip, two for an alias.
// Errors: ErrUnknownGeneration when Redis holds neither, a timeout.
func Resolve(ctx context.Context, c redis.UniversalClient, gen replay.Gen, timeout time.Duration) (Resolved, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	meta, _, _ := Keys(gen)
	h, err := c.HGetAll(ctx, meta).Result()
	if err != nil {
		return Resolved{}, fmt.Errorf("redisstore: resolve %s: %w", meta, err)
	}
	if len(h) == 0 {
		return Resolved{}, fmt.Errorf("redisstore: resolve %s: %w", meta, ErrUnknownGeneration)
	}
	if a := h["alias"]; a != "" {
		target, err := parseGen(a)
		if err != nil {
			return Resolved{}, fmt.Errorf("redisstore: resolve %s: bad alias %q", meta, a)
		}
		from, _ := strconv.ParseUint(h["from"], 10, 64)
		tmeta, _, _ := Keys(target)
		th, err := c.HGetAll(ctx, tmeta).Result()
		if err != nil {
			return Resolved{}, fmt.Errorf("redisstore: resolve %s: %w", tmeta, err)
		}
		if len(th) == 0 {
			return Resolved{}, fmt.Errorf("redisstore: resolve %s (alias of %s): %w", tmeta, meta, ErrUnknownGeneration)
		}
		return Resolved{Log: target, From: from, Attrs: attrsOf(th)}, nil
	}
	return Resolved{Log: gen, Attrs: attrsOf(h)}, nil
}

func attrsOf(h map[string]string) map[string]string {
	a := make(map[string]string)
	for k, v := range h {
		if !reserved[k] {
			a[k] = v
		}
	}
	return a
}

func parseGen(text string) (replay.Gen, error) {
	id, err := replay.ParseID([]byte(text + "-0000000000000"))
	return id.Gen, err
}

// SetAlias records that the ids of generation label from sequence from-1 on
// name frames kept in this Store's log, so that any replica resolves them
// (Resolve). The alias lives for ttl; the owner refreshes it with
// RefreshAlias while it issues ids of label.
func (s *Store) SetAlias(ctx context.Context, label replay.Gen, from uint64, ttl time.Duration) error {
	meta, _, _ := Keys(label)
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, meta, "gen", genString(label), "alias", s.genText, "from", strconv.FormatUint(from, 10))
		p.PExpire(ctx, meta, ttl)
		return nil
	})
	if err != nil {
		return s.wrap(ctx, "set alias", meta, err)
	}
	return nil
}

// Refresh extends the life of extra keys that belong with this generation
// (an alias's meta, the index of its stream key) to ttl, in one round trip.
func (s *Store) Refresh(ctx context.Context, ttl time.Duration, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.PExpire(ctx, k, ttl)
		}
		return nil
	})
	if err != nil {
		return s.wrap(ctx, "refresh", keys[0], err)
	}
	return nil
}

// AliasKey is the key of label's alias record (its meta key).
func AliasKey(label replay.Gen) string {
	meta, _, _ := Keys(label)
	return meta
}

// IndexKey is the key that names the current generation of a stream key;
// keyHash is a digest of the key (never the key itself: it may hold
// credentials).
func IndexKey(keyHash string) string { return "{le:k:" + keyHash + "}" }

// Index returns the generation the index names for keyHash; ok is false when
// none is recorded.
func Index(ctx context.Context, c redis.UniversalClient, keyHash string, timeout time.Duration) (gen replay.Gen, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	key := IndexKey(keyHash)
	v, err := c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return replay.Gen{}, false, nil
	}
	if err != nil {
		return replay.Gen{}, false, fmt.Errorf("redisstore: index %s: %w", key, err)
	}
	gen, err = parseGen(v)
	if err != nil {
		return replay.Gen{}, false, fmt.Errorf("redisstore: index %s: bad value %q", key, v)
	}
	return gen, true, nil
}

// ClaimIndex points the index of keyHash at this Store's generation if it
// names old now (the zero old: if it names nothing), and reports whether it
// does afterwards. Two replicas opening the same key race here; exactly one
// wins, the other follows the winner.
func (s *Store) ClaimIndex(ctx context.Context, keyHash string, old replay.Gen, ttl time.Duration) (bool, error) {
	key := IndexKey(keyHash)
	want := ""
	if !old.IsZero() {
		want = genString(old)
	}
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	n, err := claimScript.Run(ctx, s.c, []string{key}, want, s.genText, ms(ttl)).Int()
	if err != nil {
		return false, s.wrap(ctx, "claim index", key, err)
	}
	return n == 1, nil
}

// claimScript: KEYS[1] index; ARGV[1] expected value ("" none), ARGV[2] new
// value, ARGV[3] ttl ms. Reply 1 when the index holds ARGV[2] afterwards.
var claimScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then redis.call('PEXPIRE', KEYS[1], ARGV[3]); return 1 end
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`)

// watchKey marks a generation followed by a replica with clients.
func (s *Store) watchKey() string { return "{le:" + s.genText + "}:watch" }

// Watch marks the generation as followed for ttl: a replica that follows it
// with clients calls it every third of ttl, and the owner keeps the upstream
// open while the mark lives, even with no clients of its own.
func (s *Store) Watch(ctx context.Context, ttl time.Duration) error {
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	if err := s.c.Set(ctx, s.watchKey(), s.node, ttl).Err(); err != nil {
		return s.wrap(ctx, "watch", s.watchKey(), err)
	}
	return nil
}

// Watched reports whether a follower's watch mark lives.
func (s *Store) Watched(ctx context.Context) (bool, error) {
	ctx, cancel := s.ctx(ctx, 0)
	defer cancel()
	n, err := s.c.Exists(ctx, s.watchKey()).Result()
	if err != nil {
		return false, s.wrap(ctx, "watched", s.watchKey(), err)
	}
	return n == 1, nil
}

// IDAt returns the id that the frame at seq of generation gen's log carries
// (its "id:" line), "" when the log holds no such frame. A replica checks a
// client's id against it before trusting an alias: the label must be the
// one the frame was sent with.
func IDAt(ctx context.Context, c redis.UniversalClient, gen replay.Gen, seq uint64, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, log, _ := Keys(gen)
	entry := strconv.FormatUint(seq, 10) + "-0"
	msgs, err := c.XRangeN(ctx, log, entry, entry, 1).Result()
	if err != nil {
		return "", fmt.Errorf("redisstore: id at %s %d: %w", log, seq, err)
	}
	if len(msgs) == 0 {
		return "", nil
	}
	f, _ := msgs[0].Values["f"].(string)
	if len(f) < 4+replay.TextLen || f[:4] != "id: " {
		return "", nil
	}
	return f[4 : 4+replay.TextLen], nil
}
