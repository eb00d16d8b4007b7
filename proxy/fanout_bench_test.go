package proxy

import (
	"fmt"
	"testing"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
	"github.com/rs/zerolog"
)

// newBenchStream is a stream without an upstream: the benchmark plays the
// reader goroutine's part (encode once, append, wake) and the subscribers'
// (copy everything after the cursor into the write buffer).
func newBenchStream(subs int) (*stream, []*client) {
	cfg := &Config{BufferFrames: 1000, MaxMemory: 256 << 20}
	h := &Hub{cfg: cfg, log: zerolog.Nop(), gens: replay.NewGenerator(), budget: replay.NewBudget(cfg.MaxMemory)}
	h.metrics = newMetrics(h)
	s := &stream{hub: h, gen: h.gens.Next(), log: replay.NewRing(cfg.BufferFrames, h.budget)}
	clients := make([]*client, subs)
	for i := range clients {
		clients[i] = &client{s: s, wake: make(chan struct{}, 1), buf: make([]byte, 0, maxBatch)}
		s.subs = append(s.subs, clients[i])
	}
	s.wakeDirty.Store(true)
	return s, clients
}

var benchFrame = &frame.Frame{Data: []byte(`{"n":12345,"payload":"0123456789012345678901234567890123456789012345678901234567890123456789"}`), Retry: -1, Dispatch: true}

// publishOne is the reader goroutine's work for one upstream frame.
func publishOne(s *stream) {
	seq := s.seq.Load() + 1
	s.idText = s.id(seq).AppendText(s.idText[:0])
	s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, benchFrame)
	s.publish(seq, "")
}

// BenchmarkFanout: one frame to N subscribers; ns/op is per delivery.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			s, clients := newBenchStream(n)
			b.ReportAllocs()
			b.ResetTimer()
			delivered := 0
			for delivered < b.N {
				publishOne(s)
				for _, c := range clients {
					<-c.wake
					var err error
					c.buf, c.cursor, err = s.log.Read(c.cursor, c.buf[:0], maxBatch)
					if err != nil || len(c.buf) == 0 {
						b.Fatal("nothing read", err)
					}
					delivered++
				}
			}
		})
	}
}

// BenchmarkBatchRead: a subscriber 100 frames behind copies them in batches of
// whole frames (what a reconnecting client's first writes cost).
func BenchmarkBatchRead(b *testing.B) {
	s, _ := newBenchStream(0)
	for range 1000 {
		publishOne(s)
	}
	buf := make([]byte, 0, maxBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		cursor := s.seq.Load() - 100
		for cursor < s.seq.Load() {
			var err error
			buf, cursor, err = s.log.Read(cursor, buf[:0], maxBatch)
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
