package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// The budget counts a body at its buffer from its head until done, refuses
// what does not fit (and says so once), ignores small and over-limit bodies,
// and a head that arrives on a header still holding a body gives it back.
func TestBodyBudget(t *testing.T) {
	b := newBodyBudget(32<<20, 10<<20)
	head := func(cl int) *fasthttp.RequestHeader {
		h := &fasthttp.RequestHeader{}
		h.SetMethod("POST")
		h.SetContentLength(cl)
		return h
	}
	a, c, d := head(10<<20), head(9<<20), head(1)
	if cfg := b.headerReceived(a); cfg.MaxRequestBodySize != 0 || b.inUse() != 16<<20 {
		t.Fatalf("first 10 MiB body: %+v, in use %d; want counted at 16 MiB", cfg, b.inUse())
	}
	if cfg := b.headerReceived(c); cfg.MaxRequestBodySize != 0 || b.inUse() != 32<<20 {
		t.Fatalf("second: %+v, in use %d", cfg, b.inUse())
	}
	if cfg := b.headerReceived(d); cfg.MaxRequestBodySize != 0 || b.inUse() != 32<<20 {
		t.Fatalf("a 1-byte body is not counted: %+v, in use %d", cfg, b.inUse())
	}
	over := head(5 << 20)
	if cfg := b.headerReceived(over); cfg.MaxRequestBodySize != smallBody {
		t.Fatalf("a body past the budget: %+v, want MaxRequestBodySize %d (fasthttp refuses it)", cfg, smallBody)
	}
	if !b.done(over) || b.done(over) {
		t.Fatal("done of a refused body: want refused once, then nothing")
	}
	if b.done(d) {
		t.Fatal("an uncounted body reported as refused")
	}
	huge := head(11 << 20)
	if cfg := b.headerReceived(huge); cfg.MaxRequestBodySize != 0 || b.inUse() != 32<<20 {
		t.Fatalf("a body over LASTEVENT_MAX_BODY_BYTES is fasthttp's to refuse: %+v, in use %d", cfg, b.inUse())
	}
	if b.done(a); b.inUse() != 16<<20 {
		t.Fatalf("after done: in use %d, want 16 MiB", b.inUse())
	}
	// The next request on c's header (its connection) without a done.
	c.SetContentLength(-1) // chunked: counted at LASTEVENT_MAX_BODY_BYTES's buffer
	if cfg := b.headerReceived(c); cfg.MaxRequestBodySize != 0 || b.inUse() != 16<<20 {
		t.Fatalf("a new head on a header still holding a body: %+v, in use %d; want the old given back, the new counted", cfg, b.inUse())
	}
	b.done(c)
	if b.inUse() != 0 || len(b.held) != 0 {
		t.Fatalf("all done: in use %d, %d held", b.inUse(), len(b.held))
	}
}
