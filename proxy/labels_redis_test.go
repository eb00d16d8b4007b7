package proxy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// testRedis starts a redis-server of the test's own, on a Unix socket in
// the test's directory (no port to race for), and returns a client of it; it
// skips without redis-server, unless TEST_REQUIRE_REDIS=1 (CI) makes that a
// failure.
func testRedis(t *testing.T) *redis.Client {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("TEST_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found (TEST_REQUIRE_REDIS=1)")
		}
		t.Skip("redis-server not found")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	var out bytes.Buffer
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; {
		select {
		case <-exited:
			t.Fatalf("redis-server exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer PING within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// ownerWithRedisLog is a stream that owns a new Redis log keeping about
// capacity frames, with a local log of 10.
func ownerWithRedisLog(t *testing.T, capacity int) (*stream, *redisstore.Store) {
	t.Helper()
	ctx := context.Background()
	h := &Hub{gens: replay.NewGenerator(), byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream)}
	s := &stream{hub: h, gen: h.gens.Next(), rep: &repState{}, log: replay.NewRing(10, nil)}
	s.labels.Store(&[]label{{gen: s.gen}})
	st, err := redisstore.New(ctx, testRedis(t), s.gen, capacity, "test-node")
	if st == nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	s.rep.storeP.Store(st)
	return s, st
}

// An owner's Redis log keeps more frames than its local log (a takeover
// starts the local log at its point; LASTEVENT_MAX_MEMORY shrinks rings), and
// a resume reads those from Redis: their labels must stay past maxLabels, or
// a resume that Redis could serve is told system-sync.
func TestPruneLabelsKeepsLabelsOfFramesInRedis(t *testing.T) {
	ctx := context.Background()
	s, st := ownerWithRedisLog(t, 1000)
	h := s.hub
	f := []byte("data: x\n\n")
	const n = 3 * maxLabels
	for seq := uint64(1); seq <= n; seq++ {
		s.relabel(seq)
		if err := st.AppendContext(ctx, seq, [][]byte{f}, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.log.Append(seq, f); err != nil {
			t.Fatal(err)
		}
	}
	if o, nw := st.KnownBounds(); o != 1 || nw != n {
		t.Fatalf("Redis's known bounds %d..%d, want 1..%d", o, nw, n)
	}
	// One more relabel: Redis still holds every frame, so every label stays.
	s.relabel(n + 1)
	if got := len(s.labelList()); got != n+2 {
		t.Fatalf("%d labels, want %d: every frame is still in Redis", got, n+2)
	}
	for _, l := range s.labelList()[1:] {
		if h.byLabel[l.gen] != s {
			t.Fatalf("label %v not indexed", l.gen)
		}
	}
}

// A takeover that cannot announce its new label in Redis (SetAlias fails,
// here refused by an ACL that lets this replica reach only the log's own
// keys) gives the lease back and leaves no label behind: the follower's sync
// events would otherwise carry a generation no frame has and no other replica
// can resolve.
func TestFailedTakeoverLeavesNoLabel(t *testing.T) {
	ctx := context.Background()
	admin := testRedis(t)
	gens := replay.NewGenerator()
	gen := gens.Next()
	// The previous owner: a log of 3 frames, lease released.
	old, err := redisstore.New(ctx, admin, gen, 100, "old-owner")
	if old == nil {
		t.Fatal(err)
	}
	if _, err := old.Create(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	f := []byte("data: x\n\n")
	if err := old.AppendContext(ctx, 1, [][]byte{f, f, f}, "up-3"); err != nil {
		t.Fatal(err)
	}
	if err := old.Release(ctx); err != nil {
		t.Fatal(err)
	}
	meta, _, _ := redisstore.Keys(gen)
	tag := meta[:len(meta)-len(":meta")]
	if err := admin.Do(ctx, "ACL", "SETUSER", "follower", "on", ">pw", "~"+tag+"*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	opts := *admin.Options()
	opts.Username, opts.Password = "follower", "pw"
	rc := redis.NewClient(&opts)
	defer rc.Close()
	st, err := redisstore.New(ctx, rc, gen, 100, "follower")
	if st == nil {
		t.Fatal(err)
	}

	h := &Hub{gens: gens, byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream),
		cfg: &Config{Redis: &RedisConfig{Lease: time.Minute, Retention: time.Minute}}, reps: &replicas{}}
	h.metrics = newMetrics(h)
	s := &stream{hub: h, gen: gen, rep: &repState{}, log: replay.NewRing(10, nil)}
	s.labels.Store(&[]label{{gen: gen}})
	s.rep.storeP.Store(st)
	if s.tryAcquire(st) {
		t.Fatal("took the stream over, though its label could not be announced")
	}
	if s.seq.Load() != 3 {
		t.Fatalf("caught up to %d, want 3 (the attempt got as far as the alias)", s.seq.Load())
	}
	if ls := s.labelList(); len(ls) != 1 || len(h.byLabel) != 0 {
		t.Fatalf("after the failed takeover: labels %v, %d indexed; want only the stream's own", ls, len(h.byLabel))
	}
	if id := s.id(3); id.Gen != gen {
		t.Fatalf("the follower's sync events would carry %v, want the log's %v", id, gen)
	}
	if m, err := old.Meta(ctx); err != nil || m.Holder != "" {
		t.Fatalf("lease after the failed takeover: holder %q (%v), want given back", m.Holder, err)
	}
}

// With a Redis log that keeps only its last frames, labels are still
// pruned past maxLabels: only those of frames in the local log or in Redis
// stay resolvable.
func TestPruneLabelsWithShortRedisLog(t *testing.T) {
	ctx := context.Background()
	s, st := ownerWithRedisLog(t, 20)
	f := []byte("data: x\n\n")
	for seq := uint64(1); seq <= 4*maxLabels; seq++ {
		s.relabel(seq)
		if err := st.AppendContext(ctx, seq, [][]byte{f}, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.log.Append(seq, f); err != nil {
			t.Fatal(err)
		}
	}
	ls := s.labelList()
	if len(ls) > maxLabels+1 {
		t.Fatalf("%d labels after %d relabels with a Redis log of ~20 frames, want at most %d", len(ls), 4*maxLabels, maxLabels+1)
	}
	oldest, newest := st.KnownBounds()
	for q := oldest; q <= newest; q++ {
		if id := s.id(q); id.Gen == s.gen {
			t.Fatalf("frame %d (in Redis) names the stream's first label: its own was dropped", q)
		}
	}
}

// A follower learns the owner's labels from the frames it follows, and
// prunes them as an owner does: an owner that relabelled for every frame (a
// Redis that failed now and then) left it with a label per frame for the
// stream's life.
func TestFollowerPrunesLearntLabels(t *testing.T) {
	h := &Hub{gens: replay.NewGenerator(), byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream),
		cfg: &Config{Redis: &RedisConfig{Lease: time.Minute}}, reps: &replicas{}}
	h.metrics = newMetrics(h)
	s := &stream{hub: h, gen: h.gens.Next(), rep: &repState{}, log: replay.NewRing(10, nil)}
	s.labels.Store(&[]label{{gen: s.gen}})
	owner := replay.NewGenerator()
	var last replay.ID
	for seq := uint64(1); seq <= 4*maxLabels; seq++ {
		last = replay.ID{Gen: owner.Next(), Seq: seq}
		if err := s.appendFollowed(seq, []byte("id: "+last.String()+"\ndata: x\n\n")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.labelList()); n > maxLabels+1 {
		t.Fatalf("the follower has %d labels after %d owner labels, want at most %d", n, 4*maxLabels, maxLabels+1)
	}
	if got := s.id(last.Seq); got != last {
		t.Fatalf("the newest frame's id on the follower: %v, want the owner's %v", got, last)
	}
}
