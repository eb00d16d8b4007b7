package load

import (
	"math"
	"sync"
	"testing"
)

func TestBucketsAreContiguous(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < 40*subCount; i++ {
		lo, hi := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prevHi = hi
	}
	if b := bucketOf(math.MaxInt64); b >= numBuckets {
		t.Fatalf("MaxInt64 lands in bucket %d of %d", b, numBuckets)
	}
}

func TestQuantilesOfUniform(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000) // 1 µs .. 100 ms
	}
	for _, c := range []struct {
		q    float64
		want float64
	}{{0.5, 50e6}, {0.9, 90e6}, {0.99, 99e6}, {0.999, 99.9e6}, {1, 100e6}} {
		got := float64(h.Quantile(c.q))
		if got < c.want || got > c.want*1.01 {
			t.Errorf("q%v = %v, want within 1%% above %v", c.q, got, c.want)
		}
	}
	if h.Max() != 100e6 || h.Count() != 100000 {
		t.Errorf("max %d count %d", h.Max(), h.Count())
	}
	if m := h.Mean(); math.Abs(m-50.0005e6) > 1 {
		t.Errorf("mean %v", m)
	}
}

func TestSmallValuesExactAndNegative(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram should report 0")
	}
	for _, v := range []int64{3, 3, 3, 7, -5} {
		h.Record(v)
	}
	if h.Quantile(0.5) != 3 || h.Quantile(1) != 7 || h.Quantile(0) != 0 {
		t.Errorf("p50 %d p100 %d p0 %d", h.Quantile(0.5), h.Quantile(1), h.Quantile(0))
	}
	if h.Negative() != 1 {
		t.Errorf("negative %d", h.Negative())
	}
}

func TestConcurrentRecordAndMerge(t *testing.T) {
	var shards [4]Histogram
	var wg sync.WaitGroup
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range int64(1000) {
				shards[i].Record(v + int64(i)*1000)
			}
		}()
	}
	wg.Wait()
	var all Histogram
	for i := range shards {
		all.Merge(&shards[i])
	}
	if all.Count() != 4000 || all.Max() != 3999 {
		t.Fatalf("count %d max %d", all.Count(), all.Max())
	}
	if p := all.Quantile(0.5); p < 1999 || p > 2020 {
		t.Errorf("p50 %d", p)
	}
}
