package proxy

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// bodyBudget bounds the memory of the request bodies being read at once
// (LASTEVENT_MAX_BODY_MEMORY). fasthttp reads a body whole before the
// handler runs, and allocates a declared Content-Length in one piece as soon
// as the head is read: without a bound, a head that declared 10 MiB and a
// client that then sent nothing held 16 MiB for fasthttp's 60 s read timeout,
// some 80 bytes each, for every connection.
//
// A body counts from its head (HeaderReceived) until the handler or the error
// handler is done with it, at the buffer fasthttp takes for it: its declared
// length rounded up to a power of two (bodyBuffer). Bodies of at most
// smallBody bytes do not count (the connection's head buffer is larger). A
// chunked body declares no length, and fasthttp allocates each chunk's
// declared size as soon as its size line arrives (some 90 bytes held 16 MiB
// for the 60 s read timeout): it counts as the largest body allowed, or,
// when the budget has less room than that, as the room left (a power of two,
// at least minChunkedRoom), which then bounds it. A head whose body does not
// fit gets 503.
//
// The count is kept per request head: fasthttp reuses one RequestHeader for
// the requests of a connection, one after the other, so a head that arrives
// on a header still holding a body gives that body back first. fasthttp calls
// neither hook in a few cases (a "100 Continue" that cannot be written, a
// connection closed at shutdown); a count older than maxBodyAge is taken for
// one of those and given back, so no such case shrinks the budget for good.
// A body whose handler runs (handling) is not one of those: it counts until
// the handler is done, however long its upstream's answer takes.
type bodyBudget struct {
	max, maxBody int64

	mu     sync.Mutex
	used   int64
	held   map[*fasthttp.RequestHeader]heldBody
	swept  time.Time
	now    func() time.Time
	maxAge time.Duration
}

type heldBody struct {
	n  int64 // > 0 counted, -1 refused
	at time.Time
	// capped: a chunked body bounded by the room left rather than
	// LASTEVENT_MAX_BODY_BYTES: beyond it, it is refused (503), not too large.
	capped bool
	// inHandler: the handler has the body; done gives it back, the sweep
	// of lost counts leaves it.
	inHandler bool
}

// smallBody is the size up to which a body is not counted.
const smallBody = 4 << 10

// minChunkedRoom is the least room a chunked body is given; with less left,
// it is refused beyond smallBody.
const minChunkedRoom = 64 << 10

// maxBodyAge is how long a body may count before its handler has it: past
// fasthttp's 60 s read of the request (head and body; Server.ReadTimeout),
// after which the handler has it (handling) or fasthttp gave up on it.
const maxBodyAge = 65 * time.Second

func newBodyBudget(maxMemory int64, maxBody int) *bodyBudget {
	return &bodyBudget{max: maxMemory, maxBody: int64(maxBody), held: make(map[*fasthttp.RequestHeader]heldBody),
		now: time.Now, maxAge: maxBodyAge}
}

// headerReceived is fasthttp's HeaderReceived: it counts h's body, or makes
// fasthttp refuse it (a body limit it exceeds: ErrBodyTooLarge, which
// refused then tells from a body over LASTEVENT_MAX_BODY_BYTES).
func (b *bodyBudget) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	n := int64(h.ContentLength()) // -1 chunked, -2 none
	b.mu.Lock()
	defer b.mu.Unlock()
	b.giveLocked(h)
	now := b.now()
	if now.Sub(b.swept) > time.Second {
		b.swept = now
		for k, e := range b.held {
			if !e.inHandler && now.Sub(e.at) > b.maxAge {
				b.giveLocked(k)
			}
		}
	}
	if n == -1 {
		return b.chunkedLocked(h, now)
	}
	if n <= smallBody || n > b.maxBody {
		return fasthttp.RequestConfig{} // not counted, or refused by fasthttp with 413
	}
	n = bodyBuffer(n)
	if b.used+n > b.max {
		b.held[h] = heldBody{n: -1, at: now}
		return fasthttp.RequestConfig{MaxRequestBodySize: smallBody}
	}
	b.used += n
	b.held[h] = heldBody{n: n, at: now}
	return fasthttp.RequestConfig{}
}

// chunkedLocked counts a chunked body (see bodyBudget). fasthttp's buffer
// for a body of at most m bytes is at most bodyBuffer(m+2) (each chunk's CRLF
// is read into it too): a capped body gets m = n-2.
func (b *bodyBudget) chunkedLocked(h *fasthttp.RequestHeader, now time.Time) fasthttp.RequestConfig {
	n := bodyBuffer(b.maxBody)
	if room := b.max - b.used; room < n {
		n = minChunkedRoom
		for n*2 <= room {
			n *= 2
		}
		if n > room {
			b.held[h] = heldBody{n: -1, at: now}
			return fasthttp.RequestConfig{MaxRequestBodySize: smallBody}
		}
		b.used += n
		b.held[h] = heldBody{n: n, at: now, capped: true}
		return fasthttp.RequestConfig{MaxRequestBodySize: int(n - 2)}
	}
	b.used += n
	b.held[h] = heldBody{n: n, at: now}
	return fasthttp.RequestConfig{}
}

// handling notes that the handler has h's body: its count no longer
// expires (the handler's done gives it back).
func (b *bodyBudget) handling(h *fasthttp.RequestHeader) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.held[h]; ok {
		e.inHandler = true
		b.held[h] = e
	}
}

// done gives back what h's body held; refused reports whether the budget
// refused it (or capped it below LASTEVENT_MAX_BODY_BYTES).
func (b *bodyBudget) done(h *fasthttp.RequestHeader) (refused bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.giveLocked(h)
}

func (b *bodyBudget) giveLocked(h *fasthttp.RequestHeader) (refused bool) {
	e, ok := b.held[h]
	if !ok {
		return false
	}
	delete(b.held, h)
	if e.n > 0 {
		b.used -= e.n
	}
	return e.n < 0 || e.capped
}

// inUse is the memory counted now.
func (b *bodyBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// bodyBuffer is the buffer fasthttp allocates for a body of n bytes: n
// rounded up to a power of two, up to 100 MiB (fasthttp's
// roundUpForSliceCap: larger ones are allocated as they are).
func bodyBuffer(n int64) int64 {
	if n > 100<<20 {
		return n
	}
	b := int64(1)
	for b < n {
		b <<= 1
	}
	return b
}

// errNoRoom: an answer read whole did not fit in LASTEVENT_MAX_BODY_MEMORY.
var errNoRoom = errors.New("lastevent: no room left in LASTEVENT_MAX_BODY_MEMORY")

// errTooLarge: an answer read whole is larger than its limit.
var errTooLarge = errors.New("lastevent: answer larger than LASTEVENT_MAX_BODY_BYTES")

// reserve counts n bytes of an answer that lastevent holds whole (an
// upstream answer passed to an SSE client, a plain answer without a length
// to an HTTP/1.0 client): they count against LASTEVENT_MAX_BODY_MEMORY like
// request bodies, since any number of clients that do not read could
// otherwise hold LASTEVENT_MAX_BODY_BYTES each. Up to smallBody is free, as
// for requests. false: no room (the caller answers 503).
func (b *bodyBudget) reserve(n int64) bool {
	if b == nil || n <= smallBody {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

// release gives back what reserve counted.
func (b *bodyBudget) release(n int64) {
	if b == nil || n <= smallBody {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

// readWhole reads r to its end, up to limit bytes (errTooLarge beyond),
// counting the buffer against b as it grows (errNoRoom when it cannot). On
// success the caller owns the count, cap(buf) bytes (see held); on an error
// nothing stays counted.
//
// A grown buffer counts instead of the one it replaces (the old one is let go
// at once), and the buffer is never larger than limit: a body of limit bytes
// takes at most bodyBuffer(limit), which LASTEVENT_MAX_BODY_MEMORY holds at
// least, so an idle proxy always has room for one.
func readWhole(r io.Reader, limit int, b *bodyBudget) ([]byte, error) {
	buf := make([]byte, 0, min(512, max(limit, 1)))
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= limit {
				// Full: one more byte makes it too large.
				var one [1]byte
				m, err := r.Read(one[:])
				switch {
				case m > 0:
					b.release(held(buf))
					return nil, errTooLarge
				case err == io.EOF:
					return buf, nil
				case err != nil:
					b.release(held(buf))
					return nil, err
				}
				continue
			}
			n := min(2*cap(buf), limit)
			b.release(held(buf))
			if !b.reserve(int64(n)) {
				return nil, errNoRoom
			}
			grown := make([]byte, len(buf), n)
			copy(grown, buf)
			buf = grown
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			b.release(held(buf))
			return nil, err
		}
	}
}

// held is what readWhole counted for buf.
func held(buf []byte) int64 { return int64(cap(buf)) }

// heldReader is an answer body that holds a count of b until fasthttp has
// written it (or given up) and closes it.
type heldReader struct {
	*bytes.Reader
	b    *bodyBudget
	n    int64
	once sync.Once
}

func (h *heldReader) Close() error {
	h.once.Do(func() { h.b.release(h.n) })
	return nil
}
