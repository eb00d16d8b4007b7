package replay

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"io"
	"slices"
	"sync"
	"time"
)

// Gen is a log generation: 16 bytes in the ULID layout, a 48-bit Unix time in
// milliseconds (big-endian) followed by 80 random bits. Generations compare
// bytewise, so a generation made later sorts after one made earlier, and one
// generation cannot be guessed from another.
//
// The zero Gen is never returned by a Generator; IsZero tells it apart.
type Gen [16]byte

// Time returns the creation time stored in g, to the millisecond.
func (g Gen) Time() time.Time {
	ms := uint64(g[0])<<40 | uint64(g[1])<<32 | uint64(g[2])<<24 |
		uint64(g[3])<<16 | uint64(g[4])<<8 | uint64(g[5])
	return time.UnixMilli(int64(ms))
}

// IsZero reports whether g is the zero Gen.
func (g Gen) IsZero() bool { return g == Gen{} }

// Generator makes generations that increase strictly. It is safe for
// concurrent use; make one with NewGenerator (the zero Generator is not
// usable).
type Generator struct {
	now  func() time.Time
	rand io.Reader

	mu   sync.Mutex
	last Gen
}

// NewGenerator returns a Generator reading the wall clock and crypto/rand.
func NewGenerator() *Generator {
	return &Generator{now: time.Now, rand: rand.Reader}
}

// NewGeneratorClock returns a Generator reading now instead of the wall
// clock (lastevent shifts it with LASTEVENT_CLOCK_OFFSET to test skew).
func NewGeneratorClock(now func() time.Time) *Generator {
	return &Generator{now: now, rand: rand.Reader}
}

// Observe makes every later Next return a generation above seen, as a
// hybrid logical clock does with the timestamps it receives: a replica whose
// clock is behind still issues generations that sort after the ones its
// clients already hold.
//
// A generation whose time is more than MaxObservedSkew ahead of this
// Generator's clock is ignored, and Observe reports false: it was forged or
// comes from a broken clock, and following it would push every later
// generation (up to the end of the time range) past it.
func (g *Generator) Observe(seen Gen) bool {
	if seen.Time().After(g.now().Add(MaxObservedSkew)) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if bytes.Compare(seen[:], g.last[:]) > 0 {
		g.last = seen
	}
	return true
}

// MaxObservedSkew is how far ahead of the local clock an observed generation
// may be.
const MaxObservedSkew = 24 * time.Hour

// maxMillis is the largest time the 48 time bits of a Gen can hold.
const maxMillis = 1<<48 - 1

// Next returns a generation strictly greater (bytewise) than every one this
// Generator returned before.
//
// Normally that is the current millisecond and 80 fresh random bits. When that
// would not sort after the previous one (same millisecond, or the clock
// stepped back), Next adds 1 plus 64 random bits to the previous generation
// instead of 1, so the next generation of a busy millisecond is still not
// guessable from the one before it. A carry out of the random part (which
// takes thousands of calls in one millisecond) moves the stored time a
// millisecond ahead of the clock; the order is kept either way.
func (g *Generator) Next() Gen {
	ms := g.now().UnixMilli()
	if ms < 0 {
		ms = 0
	} else if ms > maxMillis {
		ms = maxMillis
	}
	var fresh Gen
	fresh[0] = byte(ms >> 40)
	fresh[1] = byte(ms >> 32)
	fresh[2] = byte(ms >> 24)
	fresh[3] = byte(ms >> 16)
	fresh[4] = byte(ms >> 8)
	fresh[5] = byte(ms)
	if _, err := io.ReadFull(g.rand, fresh[6:]); err != nil {
		// crypto/rand does not fail (since Go 1.24 it crashes the program
		// instead); ids built without randomness would be guessable.
		panic("replay: reading random bits: " + err.Error())
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	if bytes.Compare(fresh[:], g.last[:]) > 0 {
		g.last = fresh
		return fresh
	}
	step := binary.BigEndian.Uint64(fresh[8:])
	hi := binary.BigEndian.Uint64(g.last[:8])
	lo := binary.BigEndian.Uint64(g.last[8:])
	lo, carry := addCarry(lo, step, 1)
	hi += carry
	binary.BigEndian.PutUint64(g.last[:8], hi)
	binary.BigEndian.PutUint64(g.last[8:], lo)
	return g.last
}

// addCarry returns a+b+c (c is 0 or 1) and the carry out, which is 0 or 1.
func addCarry(a, b, c uint64) (sum, carry uint64) {
	sum = a + b
	if sum < a {
		carry = 1
	}
	s2 := sum + c
	if s2 < sum {
		carry++
	}
	return s2, carry
}

// ID names one frame: the generation of its log and its sequence number in
// that log (the first frame of a generation is 1).
//
// The text form (TextLen bytes) is the generation as 26 Crockford base32
// characters, '-', then the sequence as 13 Crockford base32 characters, e.g.
// "01JDQ8ZK3W6Y2H5V9R8T4M1N0P-0000000000001". Both parts have a fixed width
// and the alphabet is ASCII-ascending, so comparing two texts as strings gives
// the same answer as comparing (Gen bytewise, Seq numerically).
type ID struct {
	Gen Gen
	Seq uint64
}

// TextLen is the length of an ID's text form.
const TextLen = genTextLen + 1 + seqTextLen

const (
	genTextLen = 26 // ceil(128/5)
	seqTextLen = 13 // ceil(64/5)
	// alphabet is Crockford's base32, which is in ASCII order.
	alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	invalid  = 0xFF
)

// decode maps a byte to its base32 value, or invalid. Only the upper-case
// alphabet is accepted: an id is ours byte for byte or it is not an id.
var decode = func() (t [256]byte) {
	for i := range t {
		t[i] = invalid
	}
	for i := range len(alphabet) {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

// AppendText appends the text form of id (TextLen bytes) to dst and returns
// the extended slice. It does not allocate when dst has room.
func (id ID) AppendText(dst []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, TextLen)[:n+TextLen]
	b := dst[n : n+TextLen]

	hi := binary.BigEndian.Uint64(id.Gen[:8])
	lo := binary.BigEndian.Uint64(id.Gen[8:])
	for i := genTextLen - 1; i >= 0; i-- {
		b[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	b[genTextLen] = '-'
	seq := id.Seq
	for i := TextLen - 1; i > genTextLen; i-- {
		b[i] = alphabet[seq&31]
		seq >>= 5
	}
	return dst
}

// String returns the text form of id.
func (id ID) String() string {
	return string(id.AppendText(make([]byte, 0, TextLen)))
}

// ParseID parses the text form of an ID. It is strict: exactly TextLen bytes,
// '-' at index 26, upper-case Crockford base32 only (no lower case, no I, L,
// O or U aliases), and values in range: 26 characters carry 130 bits, so the
// first character of the generation is at most '7' (3 bits); 13 characters
// carry 65 bits, so the first character of the sequence is at most 'F' (4
// bits). Anything else is
// ErrMalformedID. The length is checked before any byte is looked at, so a
// huge header costs nothing. ParseID does not allocate.
func ParseID(b []byte) (ID, error) {
	if len(b) != TextLen {
		return ID{}, ErrMalformedID
	}
	b = b[:TextLen]
	if b[genTextLen] != '-' {
		return ID{}, ErrMalformedID
	}
	// Invalid bytes decode to 0xFF; OR-ing every value and testing the high
	// bits once keeps the loops free of branches.
	var acc byte
	v := decode[b[0]]
	if v > 7 { // also catches invalid
		return ID{}, ErrMalformedID
	}
	var hi, lo uint64 = 0, uint64(v)
	for _, c := range b[1:genTextLen] {
		v := decode[c]
		acc |= v
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v&31)
	}
	v = decode[b[genTextLen+1]]
	if v > 15 {
		return ID{}, ErrMalformedID
	}
	seq := uint64(v)
	for _, c := range b[genTextLen+2:] {
		v := decode[c]
		acc |= v
		seq = seq<<5 | uint64(v&31)
	}
	if acc&^31 != 0 {
		return ID{}, ErrMalformedID
	}
	var id ID
	binary.BigEndian.PutUint64(id.Gen[:8], hi)
	binary.BigEndian.PutUint64(id.Gen[8:], lo)
	id.Seq = seq
	return id, nil
}
