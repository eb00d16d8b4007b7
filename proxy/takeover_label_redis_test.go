package proxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// redisFollowerHub is another replica's hub on the Redis of rc, as much of it
// as setupFollow and tryAcquire need.
func redisFollowerHub(rc *redis.Client, node string) *Hub {
	h := &Hub{gens: replay.NewGenerator(), byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream),
		byKey: make(map[string]*stream), log: zerolog.Nop(),
		cfg: &Config{MaxFrameBytes: 1 << 16, BufferFrames: 1000,
			Redis: &RedisConfig{Lease: time.Minute, Retention: time.Minute, Timeout: time.Second, NodeID: node}},
		reps: &replicas{rdb: rc}}
	h.metrics = newMetrics(h)
	return h
}

// redisFrameID is the id the frame at seq of log gen carries in Redis.
func redisFrameID(t *testing.T, rc *redis.Client, gen replay.Gen, seq uint64) replay.ID {
	t.Helper()
	text, err := redisstore.IDAt(context.Background(), rc, gen, seq, time.Second)
	if err != nil || text == "" {
		t.Fatalf("frame %d of the log: %q, %v", seq, text, err)
	}
	id, err := replay.ParseID([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A replica that takes a stream over labels its frames with a generation of
// its own clock, above the labels it knows. It knew only those of the frames
// it tailed: one that began to follow after the owner's newest label came in
// (a quiet stream) did not know it, and when that label sorts above its
// clock (the owner relabelled above the id of a client from a replica whose
// clock runs ahead, or its own clock runs ahead) its first frame carried an
// id below the frame before it: every client that had that frame (the old
// owner's, the other followers') saw its ids go down, with no sync event.
// Found by review.
func TestTakeoverLabelAboveNewestFrame(t *testing.T) {
	ctx := context.Background()
	a, rc := redisOwner(t, 1000)
	pub := func(s *stream, data string) {
		ownerPublish(s, "", data)
		s.flushStage()
	}
	pub(a, "A1")
	pub(a, "A2")
	// A client comes to A with the id of a replica whose clock runs 10
	// minutes ahead: A's ids from here on sort above it.
	ahead := replay.NewGeneratorClock(func() time.Time { return time.Now().Add(10 * time.Minute) })
	if !a.relabelAbove(replay.ID{Gen: ahead.Next(), Seq: 7}) {
		t.Fatal("relabelAbove refused")
	}
	pub(a, "A3")
	last := redisFrameID(t, rc, a.gen, 3)

	// Replica F follows the stream from now on (a client of it arrived);
	// nothing more comes from the upstream.
	hf := redisFollowerHub(rc, "f")
	f := &stream{hub: hf, gen: a.gen, rep: &repState{}, log: replay.NewRing(1000, nil)}
	f.labels.Store(&[]label{{gen: a.gen}})
	if owner, err := f.setupFollow(a.gen); err != nil || owner {
		t.Fatalf("setupFollow: owner %v, %v", owner, err)
	}
	// A dies; F takes the stream over and the upstream sends a frame.
	_, _, lease := redisstore.Keys(a.gen)
	if err := rc.Del(ctx, lease).Err(); err != nil {
		t.Fatal(err)
	}
	if !f.tryAcquire(f.rep.st()) {
		t.Fatal("F did not take the stream over")
	}
	pub(f, "F4")
	next := redisFrameID(t, rc, a.gen, 4)
	if next.String() <= last.String() {
		t.Fatalf("frame 3 carries %s, the new owner's frame 4 %s: ids went down", last, next)
	}
	if h := f.head(); h.String() <= last.String() {
		t.Fatalf("the new owner's head %s sorts below frame 3's id %s", h, last)
	}
}

// A follower that had tailed frames Redis then lost (a failover to a Redis
// replica that lagged behind) and takes the stream over does not resume the
// upstream from the id Redis holds, that of frames before its own head: with
// LASTEVENT_UPSTREAM_RESUMES=true the upstream sent those events again, as
// new frames after the ones clients already had, with no sync event. It asks
// for none (its reconnect then puts a marker in), and its label starts after
// its own head. Found by review.
func TestTakeoverPastRedisNewest(t *testing.T) {
	ctx := context.Background()
	a, rc := redisOwner(t, 1000)
	for i := 1; i <= 10; i++ {
		ownerPublish(a, fmt.Sprintf("u%d", i), "x")
		a.flushStage()
	}
	hf := redisFollowerHub(rc, "f")
	f := &stream{hub: hf, gen: a.gen, rep: &repState{}, log: replay.NewRing(1000, nil)}
	f.labels.Store(&[]label{{gen: a.gen}})
	if owner, err := f.setupFollow(a.gen); err != nil || owner || f.seq.Load() != 10 {
		t.Fatalf("setupFollow: owner %v, %v, at %d", owner, err, f.seq.Load())
	}
	// The failover loses frames 6..10 and what came with them; A dies.
	meta, log, lease := redisstore.Keys(a.gen)
	if err := rc.XTrimMinID(ctx, log, "0").Err(); err != nil {
		t.Fatal(err)
	}
	for seq := 6; seq <= 10; seq++ {
		if err := rc.XDel(ctx, log, fmt.Sprintf("%d-0", seq)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.HSet(ctx, meta, "newest", "5", "upstream", "u5").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Del(ctx, lease).Err(); err != nil {
		t.Fatal(err)
	}
	if !f.tryAcquire(f.rep.st()) {
		t.Fatal("F did not take the stream over")
	}
	if len(f.upLastID) != 0 {
		t.Fatalf("the new owner resumes the upstream from %q, the id of frame 5, with frames up to 10 delivered", f.upLastID)
	}
	if got := f.id(11); got.Gen == a.gen {
		t.Fatalf("frame 11 carries the old owner's label: %s", got)
	}
}
