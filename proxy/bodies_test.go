package proxy

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
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
	c.SetContentLength(6 << 20)
	if cfg := b.headerReceived(c); cfg.MaxRequestBodySize != 0 || b.inUse() != 8<<20 {
		t.Fatalf("a new head on a header still holding a body: %+v, in use %d; want the old given back, the new counted", cfg, b.inUse())
	}
	b.done(c)
	if b.inUse() != 0 || len(b.held) != 0 {
		t.Fatalf("all done: in use %d, %d held", b.inUse(), len(b.held))
	}
	// Chunked: fasthttp allocates each chunk's declared size as soon as its
	// size line arrives, so a chunked body counts as the largest allowed...
	ch := head(-1)
	if cfg := b.headerReceived(ch); cfg.MaxRequestBodySize != 0 || b.inUse() != 16<<20 {
		t.Fatalf("a chunked body: %+v, in use %d; want counted at 16 MiB", cfg, b.inUse())
	}
	fixed := head(9 << 20)
	b.headerReceived(fixed)
	if cfg := b.headerReceived(head(-1)); cfg.MaxRequestBodySize != smallBody || b.inUse() != 32<<20 {
		t.Fatalf("a chunked body with no room: %+v, in use %d; want refused beyond %d bytes", cfg, b.inUse(), smallBody)
	}
	// ...or, with less room than that, as the room left, which bounds it.
	b.done(fixed)
	b.headerReceived(head(3 << 20)) // 4 MiB: 12 MiB left
	capped := head(-1)
	if cfg := b.headerReceived(capped); cfg.MaxRequestBodySize != 8<<20-2 || b.inUse() != 28<<20 {
		t.Fatalf("a chunked body with 12 MiB of room: %+v, in use %d; want capped at 8 MiB", cfg, b.inUse())
	}
	if !b.done(capped) || b.inUse() != 20<<20 {
		t.Fatalf("a capped chunked body: want it reported as refused (503, not 413), in use %d", b.inUse())
	}
	if b.done(ch) || b.inUse() != 4<<20 {
		t.Fatalf("a chunked body within LASTEVENT_MAX_BODY_BYTES: not refused; in use %d", b.inUse())
	}
}

// A count no hook gave back (fasthttp skips both in a few cases) expires
// after maxAge, so it cannot shrink the budget for good; one within its age
// stays.
func TestBodyBudgetExpires(t *testing.T) {
	b := newBodyBudget(32<<20, 10<<20)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	lost := &fasthttp.RequestHeader{}
	lost.SetContentLength(10 << 20)
	b.headerReceived(lost) // never done: its connection ended unseen
	now = now.Add(b.maxAge / 2)
	young := &fasthttp.RequestHeader{}
	young.SetContentLength(10 << 20)
	b.headerReceived(young)
	full := &fasthttp.RequestHeader{}
	full.SetContentLength(10 << 20)
	if cfg := b.headerReceived(full); cfg.MaxRequestBodySize != smallBody {
		t.Fatalf("a third 16 MiB body in 32 MiB: %+v, want refused", cfg)
	}
	b.done(full)
	now = now.Add(b.maxAge/2 + 2*time.Second)
	if cfg := b.headerReceived(full); cfg.MaxRequestBodySize != 0 || b.inUse() != 32<<20 {
		t.Fatalf("after the lost count's age: %+v, in use %d; want it given back and this one counted beside the young one", cfg, b.inUse())
	}
}

// A body whose handler runs (a plain request waiting on a slow upstream
// answer) counts until the handler is done, past maxAge: the sweep gives back
// only counts no handler has.
func TestBodyBudgetHandledBodyDoesNotExpire(t *testing.T) {
	b := newBodyBudget(32<<20, 10<<20)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	slow := &fasthttp.RequestHeader{}
	slow.SetContentLength(10 << 20)
	b.headerReceived(slow)
	b.handling(slow)
	now = now.Add(2 * b.maxAge)
	next := &fasthttp.RequestHeader{}
	next.SetContentLength(10 << 20)
	b.headerReceived(next)
	if b.inUse() != 32<<20 {
		t.Fatalf("in use %d after maxAge, want the handled body still counted beside the new one (32 MiB)", b.inUse())
	}
	b.done(slow)
	b.done(next)
	if b.inUse() != 0 || len(b.held) != 0 {
		t.Fatalf("all done: in use %d, %d held", b.inUse(), len(b.held))
	}
}

// bodyBuffer follows fasthttp's allocation: powers of two up to 100 MiB,
// the size itself above.
func TestBodyBuffer(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{
		{1, 1}, {4097, 8192}, {10 << 20, 16 << 20}, {100 << 20, 128 << 20}, {100<<20 + 1, 100<<20 + 1}, {600 << 20, 600 << 20},
	} {
		if got := bodyBuffer(c.n); got != c.want {
			t.Errorf("bodyBuffer(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

// Serve marks the body it handles: a plain request waiting on an upstream
// that has not answered keeps its count past maxAge, while the sweep that
// the next head runs gives back only counts no handler has.
func TestServeMarksItsBodyHandled(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			return
		}
		_, _ = c.Read(make([]byte, 1)) // the request arrived; no answer
		got <- c
	}()
	cfg, _, err := LoadConfig([]string{"LASTEVENT_UPSTREAM_URL=http://" + up.Addr().String(), "LASTEVENT_UPSTREAM_TIMEOUT=30s"})
	if err != nil {
		t.Fatal(err)
	}
	hub := NewHub(&cfg, zerolog.Nop())
	defer hub.Close()
	h := NewHandler(hub)
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	h.bodies.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	var req fasthttp.Request
	req.Header.SetMethod("POST")
	req.SetRequestURI("/up")
	req.SetBody(make([]byte, 10<<20))
	req.Header.SetContentLength(10 << 20)
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, nil, nil)
	h.bodies.headerReceived(&ctx.Request.Header) // as fasthttp does when the head arrives
	served := make(chan struct{})
	go func() { defer close(served); h.Serve(ctx) }()
	var c net.Conn
	select {
	case c = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the upstream")
	}
	mu.Lock()
	now = now.Add(2 * h.bodies.maxAge)
	mu.Unlock()
	next := &fasthttp.RequestHeader{}
	next.SetContentLength(10 << 20)
	h.bodies.headerReceived(next) // sweeps the counts older than maxAge
	if n := h.bodies.inUse(); n != 32<<20 {
		t.Fatalf("in use %d MiB while Serve waits on the upstream, want 32 (its body and the next)", n>>20)
	}
	c.Close() // the upstream goes: Serve answers and gives its body back
	<-served
	if n := h.bodies.inUse(); n != 16<<20 {
		t.Fatalf("in use %d MiB after Serve, want 16 (the next body)", n>>20)
	}
}
