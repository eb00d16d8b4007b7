package proxy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
)

// upIDOwner is an owner of a Redis log with what publish needs of its hub.
func upIDOwner(t *testing.T, capacity int) *stream {
	t.Helper()
	s, st := ownerWithRedisLog(t, capacity)
	h := s.hub
	h.cfg = &Config{MaxFrameBytes: 1 << 16, Redis: &RedisConfig{Lease: time.Minute, Retention: time.Minute, Timeout: time.Second}}
	h.metrics = newMetrics(h)
	h.reps = &replicas{}
	s.becomeOwner(st)
	return s
}

// The upstream id Redis records with a burst is that of the burst's newest
// frame, also when a client's request (relabelAbove) flushes the burst while
// the reader has already taken the next frame's id: Redis held frames up to
// u1 with the upstream id u2, so a successor with
// LASTEVENT_UPSTREAM_RESUMES=true asked the upstream for what follows u2 and
// put no marker in: u2's frame was lost silently. Found by review.
func TestRedisUpstreamIDMatchesItsFrames(t *testing.T) {
	s := upIDOwner(t, 100)
	s.upLastID = append(s.upLastID[:0], "u1"...) // what read does for frame u1
	s.lockWrite()
	seq := s.nextSeq()
	s.idText = s.id(seq).AppendText(s.idText[:0])
	s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, &frame.Frame{Data: []byte("x"), Retry: -1})
	s.publish(seq, "")
	s.unlockWrite()
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
	s := upIDOwner(t, 100000)
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
