package replay

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

var benchSizes = []int{1_000, 100_000, 1_000_000}

// fullRing returns a ring of n frames of 100 bytes, seqs 1..n, at capacity.
func fullRing(b *testing.B, n int) *Ring {
	r := NewRing(n, nil)
	frame := bytes.Repeat([]byte{'x'}, 100)
	for seq := uint64(1); seq <= uint64(n); seq++ {
		if err := r.Append(seq, frame); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// BenchmarkRingAppend appends to a full, warm ring: one count eviction and a
// copy into the arena where the evicted frame was per op.
func BenchmarkRingAppend(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("frames=%d", n), func(b *testing.B) {
			r := fullRing(b, n)
			frame := bytes.Repeat([]byte{'y'}, 100)
			seq := uint64(n)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				seq++
				if err := r.Append(seq, frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRingReadResume is the resume lookup: read the one frame after a
// cursor. "spread" walks cursors over the whole ring, oldest frames included,
// so at 100k and 1M frames each op misses the CPU caches (the slot header and
// the frame buffer); "hot" repeats one cursor and shows the lookup itself.
func BenchmarkRingReadResume(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("frames=%d", n), func(b *testing.B) {
			benchReadResume(b, fullRing(b, n), n)
		})
	}
}

func benchReadResume(b *testing.B, r *Ring, n int) {
	runtime.GC() // settle the heap of the fill
	for _, pattern := range []string{"hot", "spread"} {
		b.Run(pattern, func(b *testing.B) {
			dst := make([]byte, 0, 4096)
			i := uint64(n / 3)
			b.SetBytes(100)
			b.ReportAllocs()
			for b.Loop() {
				if pattern == "spread" {
					// A stride coprime to n walks every cursor in 0..n-1.
					i = (i + 7919) % uint64(n)
				}
				out, last, err := r.Read(i, dst[:0], 1)
				if err != nil || last != i+1 || len(out) != 100 {
					b.Fatalf("Read(%d) = %d bytes, %d, %v", i, len(out), last, err)
				}
			}
		})
	}
}

// BenchmarkRingReadBatch reads 64 KiB of frames for a subscriber behind.
func BenchmarkRingReadBatch(b *testing.B) {
	r := fullRing(b, 100_000)
	dst := make([]byte, 0, 64<<10)
	b.SetBytes(64 << 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Read(50_000, dst[:0], 64<<10); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseID(b *testing.B) {
	text := []byte(ID{Gen: NewGenerator().Next(), Seq: 123456789}.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseID(text); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseIDReject8KiB(b *testing.B) {
	text := bytes.Repeat([]byte{'0'}, 8<<10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseID(text); err == nil {
			b.Fatal("parsed")
		}
	}
}

func BenchmarkAppendText(b *testing.B) {
	id := ID{Gen: NewGenerator().Next(), Seq: 123456789}
	dst := make([]byte, 0, TextLen)
	b.ReportAllocs()
	for b.Loop() {
		dst = id.AppendText(dst[:0])
	}
}

func BenchmarkGeneratorNext(b *testing.B) {
	g := NewGenerator()
	b.ReportAllocs()
	for b.Loop() {
		g.Next()
	}
}

// BenchmarkGCWithRings is a full garbage collection with S1's buffered frames
// in the heap: 1000 session rings of 230 frames of 150 bytes. What a cycle
// costs grows with the objects it must find, so it measures what the arena
// saves (with a buffer per frame, each frame was an object to mark).
func BenchmarkGCWithRings(b *testing.B) {
	rings := make([]*Ring, 1000)
	frame := bytes.Repeat([]byte{'x'}, 150)
	for i := range rings {
		rings[i] = NewRing(1000, nil)
		for seq := uint64(1); seq <= 230; seq++ {
			if err := rings[i].Append(seq, frame); err != nil {
				b.Fatal(err)
			}
		}
	}
	runtime.GC()
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(rings)
}
