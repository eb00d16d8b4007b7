package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/lastevent/lastevent/replay"
)

// failAppends makes the store's append script calls fail (as a Redis that
// does not answer) once allow runs out; allow < 0 lets all through.
type failAppends struct{ allow atomic.Int64 }

func (f *failAppends) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failAppends) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (f *failAppends) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if len(a) > 4 && (a[0] == "evalsha" || a[0] == "eval") && fmt.Sprint(a[2]) == "2" &&
			strings.HasSuffix(fmt.Sprint(a[4]), ":log") && f.allow.Load() >= 0 && f.allow.Add(-1) < 0 {
			err := errors.New("injected: no answer from Redis")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// A write-back that Redis cuts short after its first batch (Redis answers
// again but stalls on the next call) leaves Redis holding frames up to the
// end of that batch with the upstream id of the newest frame served alone.
// A replica that takes the stream over then (the lease runs out while the
// write-back retries) asks the upstream for what follows that id, and with
// LASTEVENT_UPSTREAM_RESUMES=true puts no marker in: the frames between the
// batch's end and that id are lost silently for every client reading Redis.
func TestWriteBackUpstreamIDMatchesItsFrames(t *testing.T) {
	s, rc := redisOwner(t, 100000)
	s.log = replay.NewRing(1000, nil)
	hook := &failAppends{}
	hook.allow.Store(-1)
	rc.AddHook(hook)
	s.rep.retrying = true // the test runs the write-back itself
	pub := func(i int) {
		up := fmt.Sprintf("u%d", i)
		ownerPublish(s, up, up)
		s.flushStage()
	}
	for i := 1; i <= 5; i++ {
		pub(i)
	}
	hook.allow.Store(0) // Redis stops answering: the owner goes on alone
	for i := 6; i <= 400; i++ {
		pub(i)
	}
	if !s.rep.degraded.Load() || s.seq.Load() != 400 {
		t.Fatalf("degraded %v, seq %d; want a degraded owner at 400", s.rep.degraded.Load(), s.seq.Load())
	}
	hook.allow.Store(1) // Redis answers one write-back batch, then stalls again
	s.rep.wmu.Lock()
	ok := s.writeBack()
	s.rep.wmu.Unlock()
	if ok {
		t.Fatal("the write-back succeeded although its second batch failed")
	}
	m, err := s.rep.st().Meta(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("u%d", m.Newest); m.UpstreamID != want && m.UpstreamID != "" {
		t.Fatalf("Redis holds frames up to %d with the upstream id %q, want %q (or none): a successor resumes the upstream past frames Redis never got", m.Newest, m.UpstreamID, want)
	}
}
