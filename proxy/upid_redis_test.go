package proxy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
	"github.com/lastevent/lastevent/replay/redisstore"
)

// redisOwner is the owner of a new Redis log keeping about capacity frames,
// with a local log of 10 and what publish needs of its hub, and a client of
// that Redis.
func redisOwner(t *testing.T, capacity int) (*stream, *redis.Client) {
	t.Helper()
	rc := testRedis(t)
	h := &Hub{gens: replay.NewGenerator(), byLabel: make(map[replay.Gen]*stream), byGen: make(map[replay.Gen]*stream),
		cfg:  &Config{MaxFrameBytes: 1 << 16, Redis: &RedisConfig{Lease: time.Minute, Retention: time.Minute, Timeout: time.Second}},
		reps: &replicas{}}
	h.metrics = newMetrics(h)
	s := &stream{hub: h, gen: h.gens.Next(), rep: &repState{}, log: replay.NewRing(10, nil)}
	s.labels.Store(&[]label{{gen: s.gen}})
	st, err := redisstore.New(context.Background(), rc, s.gen, capacity, "test-node")
	if st == nil {
		t.Fatal(err)
	}
	if _, err := st.Create(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	s.becomeOwner(st)
	return s, rc
}

// ownerPublish is what read does for one frame with the upstream id upID
// ("" keeps the last one) and the data data, up to its flush.
func ownerPublish(s *stream, upID, data string) {
	if upID != "" {
		s.upLastID = append(s.upLastID[:0], upID...)
	}
	s.lockWrite()
	seq := s.nextSeq()
	s.idText = s.id(seq).AppendText(s.idText[:0])
	s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, &frame.Frame{Data: []byte(data), Retry: -1})
	s.publish(seq, "")
	s.unlockWrite()
}

// takeOver is replica b taking the log of s over (the lease of s ran out).
func takeOver(t *testing.T, s *stream, rc *redis.Client) *redisstore.Store {
	t.Helper()
	ctx := context.Background()
	_, _, lease := redisstore.Keys(s.gen)
	if err := rc.Del(ctx, lease).Err(); err != nil {
		t.Fatal(err)
	}
	b, err := redisstore.New(ctx, rc, s.gen, 1000, "b")
	if b == nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	return b
}

// The upstream id Redis records with a burst is that of the burst's newest
// frame, also when a client's request (relabelAbove) flushes the burst while
// the reader has already taken the next frame's id: Redis held frames up to
// u1 with the upstream id u2, so a successor with
// LASTEVENT_UPSTREAM_RESUMES=true asked the upstream for what follows u2 and
// put no marker in: u2's frame was lost silently. Found by review.
func TestRedisUpstreamIDMatchesItsFrames(t *testing.T) {
	s, _ := redisOwner(t, 100)
	ownerPublish(s, "u1", "x")
	// read parsed frame u2 and waits for wmu, which a client's attach holds.
	s.upLastID = append(s.upLastID[:0], "u2"...)
	s.relabelAbove(replay.ID{Gen: s.hub.gens.Next(), Seq: 1})
	m, err := s.rep.st().Meta(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m.Newest != 1 || m.UpstreamID != "u1" {
		t.Fatalf("Redis holds frames up to %d with the upstream id %q, want 1 and u1", m.Newest, m.UpstreamID)
	}
}

type pipeBody struct{ *io.PipeReader }

func (p pipeBody) CloseWithError(err error) error { return p.PipeReader.CloseWithError(err) }

// The same with the real reader against clients' relabels; -race finds the
// reader's upLastID read by the flush when it is shared.
func TestRedisUpstreamIDNoRace(t *testing.T) {
	s, _ := redisOwner(t, 100000)
	s.stop = make(chan struct{})
	pr, pw := io.Pipe()
	resp := &fasthttp.Response{}
	resp.SetBodyStream(pipeBody{pr}, -1)
	p := frame.NewParser(nil, 1<<16)
	p.SetBeforeRead(s.flushStage)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = s.read(p, resp)
	}()
	go func() {
		defer wg.Done()
		for range 200 {
			s.relabelAbove(replay.ID{Gen: s.hub.gens.Next(), Seq: 1})
		}
	}()
	var b strings.Builder
	for i := 1; i <= 2000; i++ {
		fmt.Fprintf(&b, "id: upstream-%d\ndata: x\n\n", i)
	}
	_, _ = pw.Write([]byte(b.String()))
	pw.Close()
	wg.Wait()
	m, err := s.rep.st().Meta(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("upstream-%d", m.Newest); m.UpstreamID != want {
		t.Fatalf("Redis holds frames up to %d with the upstream id %q, want %q", m.Newest, m.UpstreamID, want)
	}
}
