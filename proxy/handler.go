package proxy

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Handler serves client requests: SSE requests through the hub, every other
// request proxied to the upstream as it is (lastevent sits in front of the
// whole app).
type Handler struct {
	hub    *Hub
	plain  *fasthttp.Client
	bodies *bodyBudget
}

// NewHandler returns the client-facing handler.
func NewHandler(h *Hub) *Handler {
	return &Handler{hub: h, plain: newPlainClient(h.cfg), bodies: h.bodies}
}

// Serve is the fasthttp request handler.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	h.bodies.handling(&ctx.Request.Header)
	defer h.bodies.done(&ctx.Request.Header)
	if h.hub.cfg.Upstream.Path != "" && hasDotSegment(ctx.URI().PathOriginal()) {
		// The path is put under the upstream's base path as it is: an
		// upstream that resolves "..", as most do, would serve what lies
		// outside it. Browsers resolve dot segments before they send.
		h.writeIdle(ctx, h.hub.cfg.WriteTimeout)
		ctx.Error("lastevent: a path with . or .. segments cannot go under the upstream's base path\n", fasthttp.StatusBadRequest)
		return
	}
	if !isSSERequest(ctx) {
		h.writeIdle(ctx, h.hub.cfg.WriteTimeout)
		h.proxyPlain(ctx)
		return
	}
	// An event stream's request body is not forwarded: let it go now, or
	// fasthttp holds it (uncounted once done runs) until the response ends,
	// which for a stream is its whole life.
	ctx.Request.ResetBody()
	r := h.request(ctx)
	a := h.hub.attach(r)
	if a.pass != nil {
		h.writeIdle(ctx, h.hub.cfg.WriteTimeout)
		h.writePassed(ctx, a.pass)
		return
	}
	h.writeIdle(ctx, 0)
	// A stream's response has no overall deadline: per-write deadlines
	// guard each write instead.
	_ = ctx.SetWriteDeadline(timeZero)
	if uh := a.c.s.header.Load(); uh != nil {
		copyStreamHeaders(&ctx.Response.Header, uh, ctx, a.opener)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Accel-Buffering", "no")
	ctx.SetBodyStream(a.c, -1)
}

// writeIdle sets the deadline of each piece of the connection's writes
// (countedConn.idleWrites): LASTEVENT_WRITE_TIMEOUT for a plain answer, 0
// for an SSE response, which moves its deadlines itself. It holds until the
// next request on the connection sets it.
func (h *Handler) writeIdle(ctx *fasthttp.RequestCtx, d time.Duration) {
	if cc, ok := ctx.Conn().(*countedConn); ok {
		cc.idleWrites = d
	}
}

// hasDotSegment reports whether the path (up to its query) has a "." or
// ".." segment, also percent-encoded ("%2e"), and also where a segment ends
// with a percent-encoded slash ("..%2F"), a backslash or an encoded one
// ("..%5C"): an upstream that decodes the path before it resolves dot
// segments (nginx does), or takes a backslash for a slash (IIS), takes it for
// "../".
func hasDotSegment(path []byte) bool {
	dots, other := 0, false // in the current segment
	for i := 0; i <= len(path); i++ {
		encSlash := escaped(path, i, "2f") || escaped(path, i, "5c")
		if i == len(path) || path[i] == '/' || path[i] == '\\' || path[i] == '?' || encSlash {
			if !other && (dots == 1 || dots == 2) {
				return true
			}
			if i == len(path) || path[i] == '?' {
				return false
			}
			dots, other = 0, false
			if encSlash {
				i += 2
			}
			continue
		}
		switch {
		case path[i] == '.':
			dots++
		case escaped(path, i, "2e"):
			dots++
			i += 2
		default:
			other = true
		}
	}
	return false
}

// escaped reports whether path holds "%" and hex (lower-case) at i, in
// either case.
func escaped(path []byte, i int, hex string) bool {
	return i+2 < len(path) && path[i] == '%' && strings.EqualFold(string(path[i+1:i+3]), hex)
}

// isSSERequest: a GET whose Accept names text/event-stream, which is what
// EventSource sends, other than with q=0 ("not acceptable", RFC 9110
// 12.4.2).
func isSSERequest(ctx *fasthttp.RequestCtx) bool {
	if !ctx.IsGet() {
		return false
	}
	for part := range strings.SplitSeq(string(ctx.Request.Header.Peek("Accept")), ",") {
		if mt, params, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
			q, err := strconv.ParseFloat(params["q"], 64)
			return params["q"] == "" || err != nil || q > 0
		}
	}
	return false
}

// request extracts what the hub needs: the upstream target as the client
// wrote it (raw path and query, not decoded or re-encoded) without the
// Last-Event-ID query parameter, the stream-key headers and the id.
func (h *Handler) request(ctx *fasthttp.RequestCtx) *request {
	r := &request{ctx: ctx, keyHdrs: h.hub.keyHeaders(ctx)}
	if v := ctx.Request.Header.Peek("Last-Event-ID"); len(v) > 0 {
		r.lastID = append([]byte(nil), v...)
	}
	query, fromQuery := stripParam(string(ctx.URI().QueryString()), h.hub.cfg.LastEventIDParam)
	if r.lastID == nil && fromQuery != nil {
		r.lastID = fromQuery
	}
	r.target = string(ctx.URI().PathOriginal())
	if i := strings.IndexByte(r.target, '?'); i >= 0 {
		r.target = r.target[:i]
	}
	if query != "" {
		r.target += "?" + query
	}
	return r
}

// stripParam removes every name=value pair of the raw query whose decoded
// name is param, keeping the other pairs byte for byte; it returns the first
// removed value, decoded (nil when there was none).
func stripParam(raw, param string) (string, []byte) {
	if param == "" || raw == "" {
		return raw, nil
	}
	var kept []string
	var value []byte
	for pair := range strings.SplitSeq(raw, "&") {
		name, v, _ := strings.Cut(pair, "=")
		if n, err := url.QueryUnescape(name); err == nil && n == param {
			if value == nil {
				dv, err := url.QueryUnescape(v)
				if err != nil {
					dv = v
				}
				value = []byte(dv)
			}
			continue
		}
		kept = append(kept, pair)
	}
	return strings.Join(kept, "&"), value
}

// writePassed gives the client an upstream answer passed on as it is. Its
// body is not copied (several clients of a shared stream may get it), and
// counts against LASTEVENT_MAX_BODY_MEMORY until it is written: a client
// that does not read holds its room, and one that finds none gets 503.
func (h *Handler) writePassed(ctx *fasthttp.RequestCtx, p *passedResponse) {
	if !h.bodies.reserve(int64(len(p.body))) {
		p = noRoomAnswer
	}
	p.header.CopyTo(&ctx.Response.Header)
	ctx.SetStatusCode(p.status)
	if n := int64(len(p.body)); n > smallBody {
		ctx.SetBodyStream(&heldReader{Reader: bytes.NewReader(p.body), b: h.bodies, n: n}, len(p.body))
		return
	}
	ctx.SetBody(p.body) // not counted (noRoomAnswer among them)
}

// proxyPlain forwards a non-SSE request and its answer unchanged.
func (h *Handler) proxyPlain(ctx *fasthttp.RequestCtx) {
	cfg := h.hub.cfg
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethodBytes(ctx.Method())
	target := string(ctx.RequestURI())
	if !strings.HasPrefix(target, "/") {
		// The absolute form (RFC 9112, 3.2.2): the upstream gets the path
		// and query, as for the origin form.
		target = string(ctx.URI().PathOriginal())
		if q := ctx.URI().QueryString(); len(q) > 0 {
			target += "?" + string(q)
		}
	}
	req.SetRequestURI(cfg.Upstream.String() + target)
	copyRequestHeaders(req, ctx)
	if lid := ctx.Request.Header.Peek("Last-Event-ID"); len(lid) > 0 {
		req.Header.SetBytesV("Last-Event-ID", lid) // not ours to interpret here
	}
	req.Header.SetHost(cfg.Upstream.Host)
	// Not a copy: the body stays ctx's, counted once (bodyBudget), until
	// it is let go after Do below.
	req.SetBodyRaw(ctx.Request.Body())
	// Unchanged means no Content-Type where the other side sent none
	// (fasthttp would add application/octet-stream and text/plain).
	req.Header.SetNoDefaultContentType(true)
	resp.Header.SetNoDefaultContentType(true)
	err := h.plain.Do(req, resp)
	// Forwarded: the body is let go before the answer is written, which a
	// slow client can make last (done gives its count back then too).
	ctx.Request.ResetBody()
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		h.hub.log.Warn().Err(err).Bytes("path", ctx.Path()).Msg("upstream request failed")
		switch {
		case errors.Is(err, fasthttp.ErrTimeout) || isTimeout(err):
			ctx.Error("lastevent: upstream did not answer in time\n", fasthttp.StatusGatewayTimeout)
		case errors.Is(err, fasthttp.ErrNoFreeConns):
			ctx.Error("lastevent: too many upstream connections (LASTEVENT_UPSTREAM_MAX_CONNECTIONS)\n", fasthttp.StatusServiceUnavailable)
		default:
			ctx.Error("lastevent: upstream unavailable\n", fasthttp.StatusBadGateway)
		}
		return
	}
	copyResponseHeaders(&ctx.Response.Header, &resp.Header)
	ctx.Response.Header.SetNoDefaultContentType(true)
	ctx.SetStatusCode(resp.StatusCode())
	h.passBody(ctx, resp)
}

// passBody gives the client the upstream's answer body as it arrives (the
// plain client streams it), so that memory stays bounded by buffers, not
// by bodies, and an answer that never ends (an event stream asked for
// without Accept: text/event-stream) flows as it does directly. resp is
// released once fasthttp has written the body, or here.
func (h *Handler) passBody(ctx *fasthttp.RequestCtx, resp *fasthttp.Response) {
	n := resp.Header.ContentLength() // -1 chunked, -2 until the upstream closes
	body := resp.BodyStream()
	switch {
	case body == nil || ctx.IsHead():
		if ctx.IsHead() && n >= 0 {
			ctx.Response.Header.SetContentLength(n) // the size a GET would have
		}
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
	case n < 0 && !ctx.Request.Header.IsHTTP11():
		// HTTP/1.0 has no chunked encoding, and fasthttp would use it for a
		// body of unknown length: read it whole (up to
		// LASTEVENT_MAX_BODY_BYTES) and send it with its length.
		// The buffer counts against LASTEVENT_MAX_BODY_MEMORY until it is
		// written: without a bound, clients that do not read held
		// LASTEVENT_MAX_BODY_BYTES (twice that, grown) each.
		b, err := readWhole(body, h.hub.cfg.MaxBodyBytes, h.bodies)
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		switch {
		case err == errNoRoom:
			h.writePassed(ctx, noRoomAnswer)
		case err == errTooLarge:
			ctx.Error("lastevent: upstream answer larger than LASTEVENT_MAX_BODY_BYTES (an HTTP/1.0 client needs its length)\n", fasthttp.StatusBadGateway)
		case err != nil:
			ctx.Error("lastevent: upstream unavailable\n", fasthttp.StatusBadGateway)
		default:
			ctx.SetBodyStream(&heldReader{Reader: bytes.NewReader(b), b: h.bodies, n: held(b)}, len(b))
		}
	default:
		if n < 0 {
			n = -1
			ctx.Response.ImmediateHeaderFlush = true // the head, even before the first bytes of the body
		}
		ctx.SetBodyStream(&plainBody{r: body, resp: resp}, n)
	}
}

// plainBody is an upstream answer's body being written to the client; fasthttp
// closes it when done, which gives the upstream connection back (or closes
// it, when the body was not read to its end).
type plainBody struct {
	r    io.Reader
	resp *fasthttp.Response
}

func (b *plainBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *plainBody) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}

// copyStreamHeaders gives a client the upstream's own response headers (CORS
// among them, so a cross-origin EventSource works as it did directly),
// except those lastevent sets itself. A stream can serve several clients, so
// Set-Cookie goes only to the client that opened it, and an
// Access-Control-Allow-Origin naming one origin only to a request from that
// origin.
func copyStreamHeaders(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader, ctx *fasthttp.RequestCtx, opener bool) {
	origin := ctx.Request.Header.Peek("Origin")
	for k, v := range src.All() {
		switch string(k) {
		case "Content-Type", "Cache-Control", "X-Accel-Buffering", "Content-Length", "Content-Encoding", "Date", "Server":
			continue
		case "Set-Cookie":
			if !opener {
				continue
			}
		case "Access-Control-Allow-Origin":
			if string(v) != "*" && string(v) != string(origin) {
				continue
			}
		}
		dst.AddBytesKV(k, v)
	}
}
