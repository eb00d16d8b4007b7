package replay

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// Budget is a memory bound shared by every Ring of a process (the
// LASTEVENT_MAX_MEMORY setting). It counts the size of the rings' arenas.
// The bound is soft by design: each ring keeps at least its newest frame, so
// Used can exceed Max by up to an arena for one frame (the frame, rounded up
// to 256 bytes) per ring.
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

// room is how many more bytes the bound allows (a lot when unlimited).
func (b *Budget) room() int64 {
	if b == nil || b.max == 0 {
		return 1 << 62
	}
	return b.max - b.used.Load()
}

// errClosed is returned by Append on a closed Ring. It is not exported: a
// closed log has no writer left to handle it.
var errClosed = errors.New("replay: ring closed")

// The arena grows by half (at least to fit the frame being appended), or into
// what is left of the Budget when that would not fit in it, and is sized
// in arenaStep bytes, starting at minArena. It shrinks to twice what it holds
// when it holds less than an eighth of its size (a stream whose frames got
// smaller does not keep, and get charged for, a big arena), and, when the
// Budget is over its bound, to what it keeps, after dropping as few of its
// oldest frames as that takes (it then drops its oldest frames to make room:
// no more moves while the Budget stays spent).
const (
	minArena  = 256
	arenaStep = 256
)

// initialSlots is the index a Ring starts with; it doubles as frames arrive,
// up to the capacity, so an idle stream with a large capacity does not pay 8
// bytes per slot up front.
const initialSlots = 64

// Ring is an in-memory Store: the last capacity frames of one stream, back to
// back in one circular byte arena, with an index of where each frame starts
// (frame s starts at starts[s%len(starts)]), so locating a sequence is O(1).
// The arena and the index hold no pointers: however many frames a process
// keeps, the garbage collector has one object per arena to mark, not one per
// frame (with a buffer per frame, 230,000 buffered frames made a GC cycle 20
// times longer).
//
// It keeps at most capacity frames (the oldest is dropped to make room) and,
// after each Append, drops its own oldest frames while the shared Budget is
// over its bound, always keeping the frame just appended.
//
// Concurrency: one writer and any number of readers. Append holds the write
// lock while it copies the frame in; Read holds the read lock while it copies
// frames out, so readers never see bytes being overwritten.
//
// Stats and the Budget count the arena's size, not the index (8 bytes per
// slot, at most capacity slots).
//
// After Close, Append fails, Read returns ErrEvicted (the frames are gone and
// a reader must resynchronise), Bounds reports an empty log and Stats zero.
type Ring struct {
	capacity int
	budget   *Budget

	mu     sync.RWMutex
	data   []byte   // the arena: offset v is at data[(v-base)%len(data)]
	base   uint64   // the offset at data[0] when the arena was last moved
	starts []uint64 // frame s starts at offset starts[s%len(starts)]; len(starts) <= capacity
	tail   uint64   // offset after the newest frame's last byte
	oldest uint64   // oldest kept sequence; newest+1 when empty
	newest uint64
	n      int // frames held: newest-oldest+1
	closed bool
}

var _ Store = (*Ring)(nil)

// NewRing returns an empty Ring keeping at most capacity frames (capacity < 1
// means 1), charging its arena to budget (nil means unlimited).
func NewRing(capacity int, budget *Budget) *Ring {
	capacity = max(capacity, 1)
	return &Ring{
		capacity: capacity,
		budget:   budget,
		starts:   make([]uint64, min(capacity, initialSlots)),
		oldest:   1,
	}
}

// Append implements Store. Once the arena is big enough for the frames the
// ring keeps, Append does not allocate. Growing the index (at most
// log2(capacity/64) times in a ring's life) or the arena (by half each time)
// copies what they hold, so Append is O(1) amortised.
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
	if r.n == len(r.starts) {
		if r.n < r.capacity {
			r.growIndex()
		} else {
			r.evictOldest() // full: the oldest frame's slot is seq's
		}
	}
	need := uint64(len(frame))
	if used, size := r.tail-r.head(), uint64(len(r.data)); used+need > size || size == 0 {
		// Grow by half, or into what the Budget has left; else make room
		// by dropping the oldest frames, and grow only for a frame bigger
		// than the whole arena.
		// Rounded before it is checked against the room: the arena is
		// allocated rounded, and charged so.
		grown := uint64(roundArena(max(used+need, size+size/2)))
		if room := r.budget.room(); int64(grown-size) > room {
			grown = size + uint64(max(room, 0))/arenaStep*arenaStep
		}
		switch {
		case grown >= used+need && grown > size:
			r.move(int(grown)) // a multiple of arenaStep, at least minArena
		case need > size || size == 0:
			r.move(roundArena(used + need)) // a frame bigger than the arena: giveBack trims below
		default:
			for r.n > 0 && r.tail-r.head()+need > size {
				r.evictOldest()
			}
		}
	} else if size > minArena && 8*(used+need) < size {
		r.move(roundArena(2 * (used + need)))
	}
	r.starts[seq%uint64(len(r.starts))] = r.tail
	p := int((r.tail - r.base) % uint64(len(r.data)))
	if c := copy(r.data[p:], frame); c < len(frame) {
		copy(r.data, frame[c:])
	}
	r.tail += need
	r.newest = seq
	r.n++

	if over := -r.budget.room(); over > 0 {
		r.giveBack(uint64(over))
	}
	return nil
}

// giveBack moves the frames into a smaller arena, at least over bytes smaller
// if it can, dropping as few of the oldest as that takes (never the newest).
// When even the newest frame alone fits no smaller arena, it drops nothing:
// that would free no memory.
func (r *Ring) giveBack(over uint64) {
	shrunk := func(from uint64) int { return roundArena(r.tail - from) } // the arena for the frames from offset from on
	size := uint64(len(r.data))
	if uint64(shrunk(r.starts[r.newest%uint64(len(r.starts))])) >= size {
		return
	}
	for r.n > 1 && uint64(shrunk(r.head()))+over > size {
		r.evictOldest()
	}
	if target := shrunk(r.head()); target < len(r.data) {
		r.move(target)
	}
}

func roundArena(n uint64) int {
	return int(max((n+arenaStep-1)/arenaStep*arenaStep, minArena))
}

// move copies the frames held into a new arena of size bytes (at least what
// they take) and charges the difference to the budget.
func (r *Ring) move(size int) {
	data := make([]byte, size)
	head := r.head()
	if used := int(r.tail - head); used > 0 {
		p := int((head - r.base) % uint64(len(r.data)))
		if c := copy(data[:used], r.data[p:]); c < used {
			copy(data[c:used], r.data)
		}
	}
	r.budget.add(int64(size - len(r.data)))
	r.data, r.base = data, head
}

// growIndex doubles the index (up to capacity), re-placing the frames held.
func (r *Ring) growIndex() {
	starts := make([]uint64, min(2*len(r.starts), r.capacity))
	for s := r.oldest; s-r.oldest < uint64(r.n); s++ {
		starts[s%uint64(len(starts))] = r.starts[s%uint64(len(r.starts))]
	}
	r.starts = starts
}

// end is the offset after frame s, one the ring holds.
func (r *Ring) end(s uint64) uint64 {
	if s == r.newest {
		return r.tail
	}
	return r.starts[(s+1)%uint64(len(r.starts))]
}

// head is the offset of the oldest frame's first byte (tail when empty).
func (r *Ring) head() uint64 {
	if r.n == 0 {
		return r.tail
	}
	return r.starts[r.oldest%uint64(len(r.starts))]
}

// evictOldest drops the oldest frame; its bytes are reused by later frames
// (the arena's size changes only in move).
func (r *Ring) evictOldest() {
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
	size := uint64(len(r.starts))
	from := r.starts[(after+1)%size]
	last, to := r.newest, r.tail
	if maxBytes <= 0 || to-from > uint64(maxBytes) {
		// Not all of it: whole frames up to maxBytes, at least one. Count
		// with k rather than the sequence, which may sit at the top of
		// uint64.
		last, to = after+1, r.end(after+1)
		for k := uint64(2); k <= r.newest-after; k++ {
			e := r.end(after + k)
			if maxBytes <= 0 || e-from > uint64(maxBytes) {
				break
			}
			last, to = after+k, e
		}
	}
	total := int(to - from)
	dst = slices.Grow(dst, total)
	p := int((from - r.base) % uint64(len(r.data)))
	c := min(total, len(r.data)-p)
	dst = append(dst, r.data[p:p+c]...)
	dst = append(dst, r.data[:total-c]...)
	return dst, last, nil
}

// Bounds implements Store.
func (r *Ring) Bounds() (oldest, newest uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.oldest, r.newest
}

// Stats implements Store; bytes is the arena's size (what the stream's
// frames take, plus the room it keeps to grow into).
func (r *Ring) Stats() (frames int, bytes int64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n, int64(len(r.data))
}

// Close implements Store: it drops every frame and the arena and returns its
// bytes to the budget. Close is idempotent.
func (r *Ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.budget.add(-int64(len(r.data)))
	r.closed = true
	r.data, r.starts = nil, nil
	r.n = 0
	r.oldest = r.newest + 1
}
