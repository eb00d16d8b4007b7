// Package load is lastevent's load tool: an SSE upstream generator, a client
// swarm over raw TCP, /proc readings of the process under test, and the raw
// loopback write bound. The command in cmd/loadbench runs the scenarios of
// the performance issue against lastevent, the upstream directly and nginx.
//
// Nothing here starts a load by itself: the tests of this package only
// exercise the histogram and the parsers.
package load

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a recorded value is reported within 1/128 (< 0.8 %) of itself.
const (
	subBits    = 7
	subCount   = 1 << subBits
	numBuckets = (64 - subBits) * subCount
)

// Histogram records non-negative values (nanoseconds here) in log-linear
// buckets, like HdrHistogram: exact below 128, then 128 buckets per power of
// two. It is safe for concurrent use: Record is a few atomic adds and takes
// no lock. The zero value is ready to use.
type Histogram struct {
	counts   [numBuckets]atomic.Uint64
	n        atomic.Uint64
	sum      atomic.Int64
	max      atomic.Int64
	negative atomic.Uint64 // values below zero, recorded as 0 (clock steps)
}

func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // >= 0
	m := v >> e                              // in [subCount, 2*subCount)
	return (e+1)<<subBits + int(m-subCount)
}

// bucketBounds returns the smallest and largest value of bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	e := i>>subBits - 1
	m := int64(i&(subCount-1)) + subCount
	lo = m << e
	return lo, lo + (int64(1) << e) - 1
}

// Record adds one value; negative values count as 0 (and in Negative).
func (h *Histogram) Record(v int64) {
	if v < 0 {
		h.negative.Add(1)
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Merge adds every value recorded in o to h. o must not be written meanwhile.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	h.negative.Add(o.negative.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max is the largest value recorded (exact), 0 when empty.
func (h *Histogram) Max() int64 { return h.max.Load() }

// Negative is the number of negative values recorded (as 0).
func (h *Histogram) Negative() uint64 { return h.negative.Load() }

// Mean is the average value, 0 when empty.
func (h *Histogram) Mean() float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding the ceil(q*n)-th smallest value, capped at Max, so it never
// under-reports by more than the bucket width. 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketBounds(i)
			return min(hi, h.max.Load())
		}
	}
	return h.max.Load()
}
