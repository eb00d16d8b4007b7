package proxy

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// Redis loses the newest frames it had acknowledged, but not the log (a
// failover to a replica that lagged behind, as Sentinel or Cluster do with
// asynchronous replication). The owner's next append is refused as out of
// order; it goes on alone, and its write-back is refused the same way every
// time, for good: the owner keeps renewing its lease (so no follower takes
// over), the followers' clients get nothing more, ever, and the stream never
// ends so that they could reconnect. The write-back must either put the
// frames back or end the stream (as it does when the local log lost frames
// Redis never got).
func TestWriteBackAfterRedisLostAckedFrames(t *testing.T) {
	ctx := context.Background()
	s, rc := redisOwner(t, 1000)
	s.log = replay.NewRing(100, nil)
	s.rep.retrying = true // the test runs the write-back itself
	pub := func(i int) {
		ownerPublish(s, fmt.Sprintf("u%d", i), "x")
		s.flushStage()
	}
	for i := 1; i <= 10; i++ {
		pub(i)
	}
	// The failover: Redis now holds frames 1..5 only.
	meta, log, _ := redisstore.Keys(s.gen)
	kept, err := rc.XRangeN(ctx, log, "-", "5-0", 100).Result()
	if err != nil || len(kept) != 5 {
		t.Fatal(kept, err)
	}
	if err := rc.Del(ctx, log).Err(); err != nil {
		t.Fatal(err)
	}
	for _, e := range kept {
		if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: log, ID: e.ID, Values: e.Values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.HSet(ctx, meta, "newest", "5").Err(); err != nil {
		t.Fatal(err)
	}
	pub(11)
	if !s.rep.degraded.Load() {
		t.Fatal("the refused append did not make the owner go on alone")
	}
	for range 3 {
		s.rep.wmu.Lock()
		ok := s.writeBack()
		s.rep.wmu.Unlock()
		if s.demoted() {
			return // ends: clients reconnect and get a sync event
		}
		if ok {
			if m, err := s.rep.st().Meta(ctx); err != nil || m.Newest != 11 {
				t.Fatalf("written back, but Redis's newest is %d (%v), want 11", m.Newest, err)
			}
			return
		}
	}
	m, _ := s.rep.st().Meta(ctx)
	t.Fatalf("after 3 write-backs the owner is still degraded (pending from %d, Redis newest %d) and not ending: followers starve for good", s.rep.pendingFrom, m.Newest)
}
