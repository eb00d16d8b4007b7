package redisstore_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/lastevent/lastevent/replay"
)

// The benchmarks run the memory Ring and the Redis store side by side, with
// 100-byte frames, against the test's own redis-server on loopback. Run:
//
//	go test -run '^$' -bench . -benchmem ./replay/redisstore/

const benchFrame = 100

// filled returns a store of each kind holding n frames (seqs 1..n) at
// capacity n.
func filled(b *testing.B, kind string, n int) replay.Store {
	b.Helper()
	f := bytes.Repeat([]byte{'x'}, benchFrame)
	if kind == "memory" {
		r := replay.NewRing(n, nil)
		for seq := uint64(1); seq <= uint64(n); seq++ {
			if err := r.Append(seq, f); err != nil {
				b.Fatal(err)
			}
		}
		return r
	}
	s := owner(b, sharedServer(b).client(b), n, "bench")
	batch := make([][]byte, 0, 1000)
	for seq := uint64(1); seq <= uint64(n); seq++ {
		batch = append(batch, f)
		if len(batch) == cap(batch) || seq == uint64(n) {
			if err := s.AppendContext(context.Background(), seq-uint64(len(batch))+1, batch, ""); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return s
}

// BenchmarkAppend appends one frame to a full log (one eviction per op): for
// Redis, one script call, one round trip.
func BenchmarkAppend(b *testing.B) {
	for _, kind := range []string{"memory", "redis"} {
		b.Run(kind, func(b *testing.B) {
			const n = 10_000
			s := filled(b, kind, n)
			f := bytes.Repeat([]byte{'y'}, benchFrame)
			seq := uint64(n)
			b.SetBytes(benchFrame)
			b.ReportAllocs()
			for b.Loop() {
				seq++
				if err := s.Append(seq, f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAppendBatch16 is the owner under a burst: 16 frames per script
// call. ns/op is per batch; MB/s counts the frames.
func BenchmarkAppendBatch16(b *testing.B) {
	const n = 10_000
	s := filled(b, "redis", n).(interface {
		AppendContext(context.Context, uint64, [][]byte, string) error
	})
	batch := make([][]byte, 16)
	for i := range batch {
		batch[i] = bytes.Repeat([]byte{'z'}, benchFrame)
	}
	seq := uint64(n)
	b.SetBytes(16 * benchFrame)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.AppendContext(context.Background(), seq+1, batch, "up"); err != nil {
			b.Fatal(err)
		}
		seq += 16
	}
}

// BenchmarkReadResume100 is a resume: read the 100 frames after a cursor,
// with cursors spread over the whole log.
func BenchmarkReadResume100(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		for _, kind := range []string{"memory", "redis"} {
			b.Run(fmt.Sprintf("%s/frames=%d", kind, n), func(b *testing.B) {
				s := filled(b, kind, n)
				dst := make([]byte, 0, 100*benchFrame)
				i := uint64(0)
				span := uint64(n - 100)
				b.SetBytes(100 * benchFrame)
				b.ReportAllocs()
				for b.Loop() {
					i = (i + 7919) % span
					out, last, err := s.Read(i, dst[:0], 100*benchFrame)
					if err != nil || last != i+100 || len(out) != 100*benchFrame {
						b.Fatalf("Read(%d) = %d bytes, %d, %v", i, len(out), last, err)
					}
				}
			})
		}
	}
}

// BenchmarkPing is the floor under every Redis figure: one loopback round
// trip through go-redis on this machine.
func BenchmarkPing(b *testing.B) {
	c := sharedServer(b).client(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
