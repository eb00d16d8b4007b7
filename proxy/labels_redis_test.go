package proxy

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// testRedis starts a redis-server of the test's own on a loopback port and
// returns a client of it; it skips without redis-server, unless
// TEST_REQUIRE_REDIS=1 (CI) makes that a failure.
func testRedis(t *testing.T) *redis.Client {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("TEST_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found (TEST_REQUIRE_REDIS=1)")
		}
		t.Skip("redis-server not found")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer PING within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// An owner's Redis log keeps more frames than its local log (a takeover
// starts the local log at its point; LASTEVENT_MAX_MEMORY shrinks rings), and
// a resume reads those from Redis: their labels must stay past maxLabels, or
// a resume that Redis could serve is told system-sync.
func TestPruneLabelsKeepsLabelsOfFramesInRedis(t *testing.T) {
	ctx := context.Background()
	rc := testRedis(t)
	h := &Hub{gens: replay.NewGenerator(), byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream)}
	s := &stream{hub: h, gen: h.gens.Next(), rep: &repState{}, log: replay.NewRing(10, nil)}
	s.labels.Store(&[]label{{gen: s.gen}})
	st, err := redisstore.New(ctx, rc, s.gen, 1000, "test-node")
	if st == nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	s.rep.storeP.Store(st)
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
