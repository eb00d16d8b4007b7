package replay

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// Budget is a memory bound shared by every Ring of a process (the
// LASTEVENT_MAX_MEMORY setting). It counts the capacity of the frame buffers
// the rings hold. The bound is soft by design: each ring keeps at least its
// newest frame, so Used can exceed Max by up to one frame per ring.
//
// A Budget is safe for concurrent use. A nil *Budget is unlimited and reports
// zero for Used and Max.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a Budget of maxBytes; maxBytes <= 0 means unlimited.
func NewBudget(maxBytes int64) *Budget {
	return &Budget{max: max(maxBytes, 0)}
}

// Used returns the bytes currently held by the rings sharing b.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Max returns the bound in bytes, 0 when unlimited.
func (b *Budget) Max() int64 {
	if b == nil {
		return 0
	}
	return b.max
}

func (b *Budget) add(n int64) {
	if b != nil && n != 0 {
		b.used.Add(n)
	}
}

func (b *Budget) over() bool {
	return b != nil && b.max > 0 && b.used.Load() > b.max
}

// errClosed is returned by Append on a closed Ring. It is not exported: a
// closed log has no writer left to handle it.
var errClosed = errors.New("replay: ring closed")

// Slot buffers are grown to the allocator's size class and reused for later
// frames; one whose capacity is more than shrinkFactor times the frame and
// wastes more than shrinkSlack bytes is replaced by a tight one, so a stream
// whose frames got smaller does not keep (and get charged for) big buffers.
const (
	shrinkFactor = 4
	shrinkSlack  = 512
)

// initialSlots is the slot array a Ring starts with; it doubles as frames
// arrive, up to the capacity, so an idle stream with a large capacity does not
// pay 24 bytes per slot up front.
const initialSlots = 64

// Ring is an in-memory Store: the last capacity frames of one stream, each in
// its own reusable buffer, in a circular array indexed by sequence number
// (frame s lives at slots[s%len(slots)]), so locating a sequence is O(1).
//
// It keeps at most capacity frames (the oldest is dropped to make room) and,
// after each Append, drops its own oldest frames while the shared Budget is
// over its bound, always keeping the frame just appended.
//
// Concurrency: one writer and any number of readers. Append holds the write
// lock while it copies the frame in; Read holds the read lock while it copies
// frames out, so readers never see a buffer being overwritten.
//
// Stats and the Budget count the capacity of the frame buffers, not the slot
// array itself (24 bytes per slot, at most capacity slots).
//
// After Close, Append fails, Read returns ErrEvicted (the frames are gone and
// a reader must resynchronise), Bounds reports an empty log and Stats zero.
type Ring struct {
	capacity int
	budget   *Budget

	mu     sync.RWMutex
	slots  [][]byte // frame s at slots[s%len(slots)]; len(slots) <= capacity
	oldest uint64   // oldest kept sequence; newest+1 when empty
	newest uint64
	n      int   // frames held: newest-oldest+1
	bytes  int64 // sum of cap of the buffers held
	closed bool
}

var _ Store = (*Ring)(nil)

// NewRing returns an empty Ring keeping at most capacity frames (capacity < 1
// means 1), charging its buffers to budget (nil means unlimited).
func NewRing(capacity int, budget *Budget) *Ring {
	capacity = max(capacity, 1)
	return &Ring{
		capacity: capacity,
		budget:   budget,
		slots:    make([][]byte, min(capacity, initialSlots)),
		oldest:   1,
	}
}

// Append implements Store. Once the ring is full and its buffers are big
// enough, Append does not allocate. Growing the slot array (at most
// log2(capacity/64) times in a ring's life) copies the slot headers, so Append
// is O(1) amortised.
func (r *Ring) Append(seq uint64, frame []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	if seq == 0 || (r.n > 0 && seq != r.newest+1) {
		return ErrOutOfOrder
	}
	if r.n == 0 {
		r.oldest = seq
	}
	if r.n == len(r.slots) {
		if r.n < r.capacity {
			r.grow()
		} else {
			// Full: the oldest frame's slot is exactly seq's slot, so its
			// buffer stays there and is reused below.
			r.oldest++
			r.n--
		}
	}

	i := seq % uint64(len(r.slots))
	buf := r.slots[i]
	old := cap(buf)
	if c, n := cap(buf), len(frame); n > c || (c > shrinkFactor*n && c-n > shrinkSlack) {
		buf = nil // the slot was empty, or its buffer is too small or too big
	}
	buf = append(buf[:0], frame...)
	r.slots[i] = buf
	r.newest = seq
	r.n++
	delta := int64(cap(buf) - old)
	r.bytes += delta
	r.budget.add(delta)

	for r.n > 1 && r.budget.over() {
		r.evictOldest()
	}
	return nil
}

// grow doubles the slot array (up to capacity), re-placing the frames held.
func (r *Ring) grow() {
	slots := make([][]byte, min(2*len(r.slots), r.capacity))
	for s := r.oldest; s-r.oldest < uint64(r.n); s++ {
		slots[s%uint64(len(slots))] = r.slots[s%uint64(len(r.slots))]
	}
	r.slots = slots
}

// evictOldest drops the oldest frame and frees its buffer, returning its bytes
// to the budget.
func (r *Ring) evictOldest() {
	i := r.oldest % uint64(len(r.slots))
	c := int64(cap(r.slots[i]))
	r.slots[i] = nil
	r.bytes -= c
	r.budget.add(-c)
	r.oldest++
	r.n--
}

// Read implements Store. maxBytes <= 0 reads exactly one frame. Read
// allocates only when dst is too small for the frames read (it grows dst once).
func (r *Ring) Read(after uint64, dst []byte, maxBytes int) ([]byte, uint64, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	switch {
	case r.closed:
		return dst, after, ErrEvicted
	case after > r.newest:
		return dst, after, ErrAhead
	case after == r.newest:
		return dst, after, nil
	case after+1 < r.oldest:
		return dst, after, ErrEvicted
	}
	size := uint64(len(r.slots))
	// Count with k rather than the sequence, which may sit at the top of
	// uint64.
	avail := r.newest - after
	var k uint64
	total := 0
	for ; k < avail; k++ {
		n := len(r.slots[(after+1+k)%size])
		if k > 0 && total+n > maxBytes {
			break
		}
		total += n
	}
	dst = slices.Grow(dst, total)
	for j := range k {
		dst = append(dst, r.slots[(after+1+j)%size]...)
	}
	last := after + k
	return dst, last, nil
}

// Bounds implements Store.
func (r *Ring) Bounds() (oldest, newest uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.oldest, r.newest
}

// Stats implements Store; bytes is the capacity of the buffers held.
func (r *Ring) Stats() (frames int, bytes int64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n, r.bytes
}

// Close implements Store: it drops every frame and buffer and returns their
// bytes to the budget. Close is idempotent.
func (r *Ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.budget.add(-r.bytes)
	r.closed = true
	r.slots = nil
	r.bytes = 0
	r.n = 0
	r.oldest = r.newest + 1
}
