package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
	"github.com/lastevent/lastevent/replay/storetest"
)

var gens = replay.NewGenerator()

const lease = 30 * time.Second

// owner opens a new generation on c and makes the store its owner.
func owner(tb testing.TB, c redis.UniversalClient, capacity int, node string, opts ...redisstore.Option) *redisstore.Store {
	tb.Helper()
	ctx := context.Background()
	s, err := redisstore.New(ctx, c, gens.Next(), capacity, node, opts...)
	if !errors.Is(err, redisstore.ErrUnknownGeneration) {
		tb.Fatalf("New(new generation) err = %v, want ErrUnknownGeneration", err)
	}
	if _, err := s.Create(ctx, lease); err != nil {
		tb.Fatalf("Create: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// open opens an existing generation on c as a node that does not own it.
func open(tb testing.TB, c redis.UniversalClient, gen replay.Gen, capacity int, node string, opts ...redisstore.Option) *redisstore.Store {
	tb.Helper()
	s, err := redisstore.New(context.Background(), c, gen, capacity, node, opts...)
	if err != nil {
		tb.Fatalf("New(%s): %v", node, err)
	}
	tb.Cleanup(s.Close)
	return s
}

func frame(seq uint64) []byte { return fmt.Appendf(nil, "id: %d\ndata: frame %d\n\n", seq, seq) }

func appendRange(tb testing.TB, s replay.Store, from, to uint64) {
	tb.Helper()
	for seq := from; seq <= to; seq++ {
		if err := s.Append(seq, frame(seq)); err != nil {
			tb.Fatalf("Append(%d): %v", seq, err)
		}
	}
}

func frames(from, to uint64) []byte {
	var b []byte
	for seq := from; seq <= to; seq++ {
		b = append(b, frame(seq)...)
	}
	return b
}

// The conformance suite every replay.Store passes. The Budget does not
// apply to frames kept in Redis; the suite only asks that the newest frame
// survive a full one and that Close return what was charged (nothing).
func TestStoreConformance(t *testing.T) {
	c := sharedServer(t).client(t)
	storetest.RunOptions(t, func(t *testing.T, capacity int, _ *replay.Budget) replay.Store {
		return owner(t, c, capacity, "node-a")
	}, storetest.Options{ConcurrentFrames: 3000})
}

func TestKeysShareOneHashTag(t *testing.T) {
	gen := gens.Next()
	meta, log, lease := redisstore.Keys(gen)
	tag := "{le:" + replay.ID{Gen: gen}.String()[:26] + "}"
	for _, k := range []string{meta, log, lease} {
		if !strings.HasPrefix(k, tag+":") {
			t.Errorf("key %q does not start with the hash tag %q", k, tag)
		}
	}
	if meta == log || log == lease || meta == lease {
		t.Errorf("keys collide: %q %q %q", meta, log, lease)
	}
}

// Redis keeps whole stream nodes with MAXLEN ~; the store still reports and
// serves exactly capacity frames, and counts their bytes exactly.
func TestExactWindowOverApproximateTrim(t *testing.T) {
	srv := sharedServer(t)
	c := srv.client(t)
	s := owner(t, c, 50, "node-a")
	appendRange(t, s, 1, 1000)
	oldest, newest := s.Bounds()
	if oldest != 951 || newest != 1000 {
		t.Fatalf("Bounds = %d, %d; want 951, 1000", oldest, newest)
	}
	_, logKey, _ := redisstore.Keys(s.Gen())
	n, err := c.XLen(context.Background(), logKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 50 || n > 1000 {
		t.Fatalf("XLEN = %d", n)
	}
	t.Logf("Redis holds %d entries for a capacity of 50", n)
	if _, _, err := s.Read(949, nil, 1<<20); !errors.Is(err, replay.ErrEvicted) {
		t.Fatalf("Read(949) err = %v, want ErrEvicted", err)
	}
	got, last, err := s.Read(950, nil, 1<<20)
	if err != nil || last != 1000 || !bytes.Equal(got, frames(951, 1000)) {
		t.Fatalf("Read(950) = %d bytes, %d, %v", len(got), last, err)
	}
	nframes, nbytes := s.Stats()
	if nframes != 50 || nbytes != int64(len(frames(951, 1000))) {
		t.Fatalf("Stats = %d, %d; want 50, %d", nframes, nbytes, len(frames(951, 1000)))
	}
}

// Sequences up to 2^53-1 go through the Lua scripts exactly; above, Append
// refuses and Read reports ErrAhead.
func TestLargeSequences(t *testing.T) {
	s := owner(t, sharedServer(t).client(t), 10, "node-a")
	const top = 1<<53 - 1
	appendRange(t, s, top-4, top)
	if oldest, newest := s.Bounds(); oldest != top-4 || newest != top {
		t.Fatalf("Bounds = %d, %d", oldest, newest)
	}
	got, last, err := s.Read(top-3, nil, 1<<20)
	if err != nil || last != top || !bytes.Equal(got, frames(top-2, top)) {
		t.Fatalf("Read = %q, %d, %v", got, last, err)
	}
	if err := s.Append(top+1, frame(top+1)); !errors.Is(err, replay.ErrOutOfOrder) {
		t.Fatalf("Append(2^53) err = %v, want ErrOutOfOrder", err)
	}
	for _, after := range []uint64{top + 1, 1 << 60, ^uint64(0)} {
		if _, _, err := s.Read(after, nil, 1<<20); !errors.Is(err, replay.ErrAhead) {
			t.Errorf("Read(%d) err = %v, want ErrAhead", after, err)
		}
	}
}

// A batch goes in one script call; more than 4096 frames come back through
// several.
func TestAppendBatchAndLongRead(t *testing.T) {
	s := owner(t, sharedServer(t).client(t), 10000, "node-a")
	ctx := context.Background()
	var batch [][]byte
	for seq := uint64(1); seq <= 9000; seq++ {
		batch = append(batch, frame(seq))
		if len(batch) == 1000 {
			if err := s.AppendContext(ctx, seq-999, batch, fmt.Sprint("u", seq)); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	got, last, err := s.Read(0, nil, 1<<30)
	if err != nil || last != 9000 || !bytes.Equal(got, frames(1, 9000)) {
		t.Fatalf("Read(0) = %d bytes, %d, %v; want %d bytes, 9000", len(got), last, err, len(frames(1, 9000)))
	}
	m, err := s.Meta(ctx)
	if err != nil || m.UpstreamID != "u9000" || m.Newest != 9000 {
		t.Fatalf("Meta = %+v, %v", m, err)
	}
	// A batch larger than the capacity keeps its newest frames.
	small := owner(t, sharedServer(t).client(t), 5, "node-a")
	if err := small.AppendContext(ctx, 1, batch[:0:0], ""); err != nil {
		t.Fatal(err)
	}
	var twelve [][]byte
	for seq := uint64(1); seq <= 12; seq++ {
		twelve = append(twelve, frame(seq))
	}
	if err := small.AppendContext(ctx, 1, twelve, "u12"); err != nil {
		t.Fatal(err)
	}
	if oldest, newest := small.Bounds(); oldest != 8 || newest != 12 {
		t.Fatalf("Bounds = %d, %d; want 8, 12", oldest, newest)
	}
	if _, b := small.Stats(); b != int64(len(frames(8, 12))) {
		t.Fatalf("Stats bytes = %d, want %d", b, len(frames(8, 12)))
	}
	got, _, err = small.Read(7, nil, 1<<20)
	if err != nil || !bytes.Equal(got, frames(8, 12)) {
		t.Fatalf("Read(7) = %q, %v", got, err)
	}
}

// An append whose reply was lost is retried by go-redis or by the caller;
// the retry must succeed without writing the frame twice.
func TestAppendRetryIsIdempotent(t *testing.T) {
	s := owner(t, sharedServer(t).client(t), 10, "node-a")
	ctx := context.Background()
	appendRange(t, s, 1, 3)
	if err := s.Append(3, frame(3)); err != nil {
		t.Fatalf("retried Append(3): %v", err)
	}
	batch := [][]byte{frame(4), frame(5)}
	for range 2 {
		if err := s.AppendContext(ctx, 4, batch, "u5"); err != nil {
			t.Fatalf("AppendContext(4..5): %v", err)
		}
	}
	if err := s.Append(3, []byte("different\n")); !errors.Is(err, replay.ErrOutOfOrder) {
		t.Fatalf("Append(3) with other bytes err = %v, want ErrOutOfOrder", err)
	}
	got, last, err := s.Read(0, nil, 1<<20)
	if err != nil || last != 5 || !bytes.Equal(got, frames(1, 5)) {
		t.Fatalf("Read(0) = %q, %d, %v", got, last, err)
	}
}

func TestNewChecksArguments(t *testing.T) {
	ctx := context.Background()
	srv := sharedServer(t)
	good := srv.client(t)
	plain := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer plain.Close()
	for _, tc := range []struct {
		name   string
		client redis.UniversalClient
		gen    replay.Gen
		node   string
		want   string
	}{
		{"nil client", nil, gens.Next(), "a", "nil client"},
		{"zero gen", good, replay.Gen{}, "a", "zero generation"},
		{"empty node", good, gens.Next(), "", "node id"},
		{"node with space", good, gens.Next(), "a b", "node id"},
		{"no context timeouts", plain, gens.Next(), "a", "ContextTimeoutEnabled"},
	} {
		_, err := redisstore.New(ctx, tc.client, tc.gen, 10, tc.node)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestUnreachableRedisIsAClearError(t *testing.T) {
	srv := ownServer(t)
	c := srv.client(t)
	srv.stop()
	start := time.Now()
	s, err := redisstore.New(context.Background(), c, gens.Next(), 10, "a", redisstore.WithTimeout(500*time.Millisecond))
	if err == nil || s != nil {
		t.Fatalf("New with Redis down = %v, %v; want an error", s, err)
	}
	if errors.Is(err, redisstore.ErrUnknownGeneration) || !strings.Contains(err.Error(), "{le:") {
		t.Fatalf("err = %v; want a connection error naming the key", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("New took %v with Redis down", d)
	}
	t.Logf("error: %v", err)
}
