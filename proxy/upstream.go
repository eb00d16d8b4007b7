package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1) that a proxy
// must not forward, plus the headers lastevent sets itself.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// upstreamReadBuffer is the read buffer of each upstream stream connection
// (session mode has one per client, so it stays small; fasthttp's default is
// 4 KiB).
const upstreamReadBuffer = 8 << 10

// newStreamClient returns the client for upstream SSE streams. Its
// connections apply UpstreamTimeout until the first response byte and
// UpstreamIdleTimeout (if set) between reads after that, because fasthttp's
// own ReadTimeout is one deadline for the whole response and would cut a long
// stream.
//
// Its open connections are in conns, so that shutdown can end a request
// still waiting for its answer's head (a hung upstream), which a stream's
// halt cannot reach: there is no body to close yet.
func newStreamClient(cfg *Config, conns *connSet) *fasthttp.Client {
	d := &net.Dialer{Timeout: cfg.UpstreamTimeout, KeepAlive: 15 * time.Second}
	cl := &fasthttp.Client{}
	*cl = fasthttp.Client{
		Name:                     "lastevent",
		NoDefaultUserAgentHeader: true,
		StreamResponseBody:       true,
		MaxConnsPerHost:          cfg.UpstreamMaxConnections,
		// At the limit, wait for a connection to come free rather than fail
		// at once: a stream that just ended (one that lingered, ended for a
		// new one) gives its connection back a moment later.
		MaxConnWaitTimeout:            cfg.UpstreamTimeout,
		MaxIdleConnDuration:           time.Second,
		MaxResponseBodySize:           cfg.MaxBodyBytes,
		ReadBufferSize:                upstreamReadBuffer, // also bounds the upstream's response header
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		ConfigureClient:               secureErrors,
		Dial: func(addr string) (net.Conn, error) {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return finishDial(cl, cfg, c, addr, cfg.UpstreamIdleTimeout, conns)
		},
		TLSConfig: upstreamTLSConfig(),
	}
	return cl
}

// upstreamTLSConfig is the base of the upstream clients' TLS: the system's
// roots (SSL_CERT_FILE and SSL_CERT_DIR name others), sessions resumed.
func upstreamTLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
}

// finishDial makes c, a new TCP connection to the upstream, a streamConn of
// cl (which set is not nil puts in set), with TLS underneath it when the
// upstream is https: the streamConn's head scan and deadlines must see the
// HTTP bytes, not TLS records (with fasthttp's TLS put on top of it, the
// head's end was never found, so every stream was cut at its head deadline,
// LASTEVENT_UPSTREAM_TIMEOUT after it began). The handshake gets
// LASTEVENT_UPSTREAM_TIMEOUT and, in set, can be ended by closeAll.
func finishDial(cl *fasthttp.Client, cfg *Config, c net.Conn, addr string, idle time.Duration, set *connSet) (net.Conn, error) {
	var tc *tls.Conn
	if cfg.Upstream != nil && cfg.Upstream.Scheme == "https" {
		conf := cl.TLSConfig.Clone()
		if conf.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			conf.ServerName = host
		}
		tc = tls.Client(c, conf)
		c = tc
	}
	sc := newStreamConn(c, cfg.UpstreamTimeout, idle)
	if set != nil {
		sc.set = set // before add: closeAll may close it from then on
		if !set.add(sc) {
			sc.Close()
			return nil, errStopped // shutting down
		}
	}
	if tc == nil {
		return sc, nil
	}
	_ = tc.SetDeadline(time.Now().Add(cfg.UpstreamTimeout))
	if err := tc.Handshake(); err != nil {
		sc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tlsStreamConn{sc}, nil
}

// tlsStreamConn is a streamConn over TLS. Its Handshake method tells
// fasthttp that the connection is TLS already (it would put TLS on top).
type tlsStreamConn struct{ *streamConn }

func (tlsStreamConn) Handshake() error { return nil }

// connSet is the open upstream stream connections.
type connSet struct {
	mu     sync.Mutex
	m      map[*streamConn]struct{}
	closed bool
}

func newConnSet() *connSet { return &connSet{m: make(map[*streamConn]struct{})} }

func (cs *connSet) add(c *streamConn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	cs.m[c] = struct{}{}
	return true
}

func (cs *connSet) remove(c *streamConn) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.m, c)
}

// closeAll closes every connection, and every one dialled from now on.
func (cs *connSet) closeAll() {
	cs.mu.Lock()
	cs.closed = true
	all := make([]*streamConn, 0, len(cs.m))
	for c := range cs.m {
		all = append(all, c)
	}
	cs.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// plainBodyIdle bounds the silence between reads of a plain answer's body.
const plainBodyIdle = 60 * time.Second

// secureErrors keeps the upstream's bytes out of fasthttp's errors (a head
// it cannot parse was quoted in them, Set-Cookie values and all), which
// lastevent logs.
func secureErrors(hc *fasthttp.HostClient) error {
	hc.SecureErrorLogMessage = true
	return nil
}

// connWasClosed reports whether err says the connection was closed under
// the request: what a kept-alive connection that the upstream closed while
// it was idle gives.
func connWasClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// newPlainClient returns the client for ordinary (non-SSE) requests, which
// are proxied as they are.
func newPlainClient(cfg *Config) *fasthttp.Client {
	cl := &fasthttp.Client{}
	*cl = fasthttp.Client{
		NoDefaultUserAgentHeader: true, // and no Name: a request without User-Agent goes on without one
		MaxConnsPerHost:          cfg.UpstreamMaxConnections,
		ReadTimeout:              max(cfg.UpstreamTimeout, 60*time.Second),
		WriteTimeout:             cfg.UpstreamTimeout,
		// The answer's body is passed on as it arrives (Handler.passBody),
		// so it has no size limit, as with a direct connection.
		StreamResponseBody: true,
		ReadBufferSize:     cfg.MaxHeaderBytes,
		// One attempt: fasthttp would retry a GET, HEAD or PUT up to five
		// times on any error, a timeout among them, so an upstream that does
		// not answer took five LASTEVENT_UPSTREAM_TIMEOUTs and saw the
		// request five times. The one retry left is for a kept-alive
		// connection the upstream had closed before the request reached it.
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			return false, attempts < 2 && (req.Header.IsGet() || req.Header.IsHead() || req.Header.IsPut()) && connWasClosed(err)
		},
		DisablePathNormalizing: true,
		ConfigureClient:        secureErrors,
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			// fasthttp passes 0 for a request without a timeout of its own:
			// min(0, ...) would make every dial time out at once.
			if timeout <= 0 || timeout > cfg.UpstreamTimeout {
				timeout = cfg.UpstreamTimeout
			}
			// Dual stack, as the stream client's dial: DialTimeout resolves
			// IPv4 addresses only, so an IPv6 upstream got 502 for every
			// plain request while its streams worked.
			c, err := fasthttp.DialDualStackTimeout(addr, timeout)
			if err != nil {
				return nil, err
			}
			// The answer's head within LASTEVENT_UPSTREAM_TIMEOUT, then each
			// read of its body within plainBodyIdle (fasthttp's ReadTimeout,
			// one deadline for the whole answer, is not applied).
			return finishDial(cl, cfg, c, addr, plainBodyIdle, nil)
		},
		TLSConfig: upstreamTLSConfig(),
	}
	return cl
}

// streamConn enforces the upstream stream timeouts itself (see
// newStreamClient); deadlines set by fasthttp are ignored, since the stream
// client configures none.
type streamConn struct {
	net.Conn
	first, idle time.Duration
	// inHead: the answer's head is still being read (from a request's
	// write until its empty line), within one fixed deadline: first from
	// its first read. A head that stops halfway (a hung upstream after its
	// status line) then ends the attempt instead of blocking the stream for
	// good, where nothing could interrupt it.
	inHead     atomic.Bool
	headBy     time.Time
	lineEmpty  bool // the head's current line holds nothing yet (CR aside)
	status     headStatus
	noDeadline bool     // the read deadline is cleared: without an idle timeout, reads need no deadline work
	raw        *rawSock // nil: reads go through Conn.Read
	set        *connSet // the stream client's connections; nil for the plain client's
}

// Close closes the connection and takes it out of its set.
func (c *streamConn) Close() error {
	if c.set != nil {
		c.set.remove(c)
	}
	return c.Conn.Close()
}

func newStreamConn(c net.Conn, first, idle time.Duration) *streamConn {
	sc := &streamConn{Conn: c, first: first, idle: idle, raw: newRawSock(c)}
	sc.inHead.Store(true)
	return sc
}

func (c *streamConn) Read(p []byte) (int, error) {
	if c.inHead.Load() {
		switch {
		case c.first > 0:
			if c.headBy.IsZero() {
				c.headBy = time.Now().Add(c.first)
			}
			_ = c.Conn.SetReadDeadline(c.headBy)
			c.noDeadline = false
		case !c.noDeadline:
			_ = c.Conn.SetReadDeadline(time.Time{})
			c.noDeadline = true
		}
		n, err := c.read(p)
		c.scanHead(p[:n])
		return n, err
	}
	switch t := c.idle; {
	case t > 0:
		_ = c.Conn.SetReadDeadline(time.Now().Add(t))
		c.noDeadline = false
	case !c.noDeadline:
		_ = c.Conn.SetReadDeadline(time.Time{})
		c.noDeadline = true
	}
	return c.read(p)
}

// scanHead looks for the empty line that ends the answer's head in b, the
// bytes just read; the reads after it are the body's. An informational head
// (1xx but 101, which fasthttp reads past, such as 103 Early Hints) does not
// end it: the final head that follows is still within the same deadline.
func (c *streamConn) scanHead(b []byte) {
	for _, x := range b {
		switch x {
		case '\n':
			if !c.status.started {
				continue // empty lines before a status line (fasthttp skips them)
			}
			if c.lineEmpty {
				if !c.status.interim() {
					c.inHead.Store(false)
					return
				}
				c.status = headStatus{}
				c.lineEmpty = false
				continue
			}
			c.status.lineDone = true
			c.lineEmpty = true
		case '\r':
		default:
			c.lineEmpty = false
			c.status.started = true
			c.status.scan(x)
		}
	}
}

// headStatus reads the status code off a head's first line ("HTTP/1.1 103
// Early Hints"): the digits after its first spaces, up to the next space.
type headStatus struct {
	started, lineDone, spaced, ended bool
	digits, code                     int
}

func (h *headStatus) scan(x byte) {
	switch {
	case h.lineDone || h.ended:
	case !h.spaced:
		h.spaced = x == ' '
	case x == ' ' && h.digits == 0: // more spaces before the code
	case x >= '0' && x <= '9' && h.digits < 4:
		h.code = h.code*10 + int(x-'0')
		h.digits++
	default:
		h.ended = true
		if x != ' ' {
			h.digits = 0 // not a status code
		}
	}
}

func (h *headStatus) interim() bool {
	return h.digits == 3 && h.code >= 100 && h.code <= 199 && h.code != 101
}

// read is Conn.Read through the descriptor (see sysRead), with the errors
// Conn.Read gives: io.EOF at the end, a *net.OpError otherwise (a deadline
// that passed among them).
func (c *streamConn) read(p []byte) (int, error) {
	if c.raw == nil || len(p) == 0 {
		return c.Conn.Read(p)
	}
	n, errno, err := c.raw.read(p)
	switch {
	case err != nil:
		if oe, ok := err.(*net.OpError); ok {
			oe.Op = "read" // not "raw-read": the error reads as Conn.Read's would
		}
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", errno)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write sends a request: its answer's head gets UpstreamTimeout again, also
// on a connection reused from fasthttp's pool after a stream that ended
// cleanly.
func (c *streamConn) Write(p []byte) (int, error) {
	c.headBy, c.lineEmpty, c.status = time.Time{}, false, headStatus{}
	c.inHead.Store(true)
	return c.Conn.Write(p)
}

func (c *streamConn) SetReadDeadline(time.Time) error { return nil }
func (c *streamConn) SetDeadline(t time.Time) error   { return c.Conn.SetWriteDeadline(t) }

// copyRequestHeaders copies the client's headers to the upstream request,
// leaving out hop-by-hop headers, the headers named in Connection, the
// client's Last-Event-ID (it is lastevent's id, not the upstream's), and adds
// the X-Forwarded-* headers.
func copyRequestHeaders(dst *fasthttp.Request, ctx *fasthttp.RequestCtx) {
	src := &ctx.Request.Header
	connTokens := bytes.Join(src.PeekAll("Connection"), []byte(",")) // every line names hop-by-hop headers
	cookies := cookieLine(src)
	for k, v := range src.All() {
		if isHop(k) || hasToken(connTokens, k) || string(k) == "Last-Event-Id" || string(k) == "Host" ||
			(string(k) == "Cookie" && cookies != nil) {
			continue
		}
		dst.Header.AddBytesKV(k, v)
	}
	if cookies != nil && !hasToken(connTokens, []byte("Cookie")) {
		// As a plain line: fasthttp would parse a Cookie line and write it
		// again, as it did the client's (see cookieLine).
		dst.Header.DisableSpecialHeader()
		dst.Header.SetBytesKV([]byte("Cookie"), cookies)
		dst.Header.EnableSpecialHeader()
	}
	addForwarded(dst, ctx)
}

// cookieLine returns the request's cookies as the client sent them, its
// Cookie lines joined with "; " into the one list they make (RFC 9113
// 8.2.3), or nil without any (or when the head was not parsed from the
// wire). fasthttp's own view of them (All, Cookie) is parsed and written
// again: it drops a cookie whose value holds a quote or a backslash and
// strips the quotes around the others, so a quoted cookie (Python's
// SimpleCookie quotes Django's and Flask's messages) would not reach the
// upstream, and would not tell two users' stream keys apart.
func cookieLine(h *fasthttp.RequestHeader) []byte {
	var out []byte
	raw := h.RawHeaders()
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			return nil // an obs-fold: fasthttp's joined view, then
		}
		name, v, ok := bytes.Cut(line, []byte(":"))
		if v = bytes.Trim(v, " \t"); ok && len(v) > 0 && bytes.EqualFold(name, []byte("Cookie")) {
			if len(out) > 0 {
				out = append(out, "; "...)
			}
			out = append(out, v...)
		}
	}
	return out
}

func addForwarded(dst *fasthttp.Request, ctx *fasthttp.RequestCtx) {
	ip := ctx.RemoteIP().String()
	if prior := bytes.Join(ctx.Request.Header.PeekAll("X-Forwarded-For"), []byte(", ")); len(prior) > 0 {
		dst.Header.Set("X-Forwarded-For", string(prior)+", "+ip) // every line's hops, then this one
	} else {
		dst.Header.Set("X-Forwarded-For", ip)
	}
	proto := "http"
	if ctx.IsTLS() {
		proto = "https"
	}
	// The client's own, when it went on (a header its Connection line named
	// did not, and so is replaced like a missing one).
	if prior := dst.Header.Peek("X-Forwarded-Proto"); len(prior) == 0 {
		dst.Header.Set("X-Forwarded-Proto", proto)
	}
	if prior := dst.Header.Peek("X-Forwarded-Host"); len(prior) == 0 {
		dst.Header.SetBytesV("X-Forwarded-Host", ctx.Host())
	}
}

func isHop(k []byte) bool {
	for _, h := range hopHeaders {
		if string(k) == h {
			return true
		}
	}
	return false
}

// copyResponseHeaders copies an upstream response's headers to the client,
// leaving out hop-by-hop headers.
func copyResponseHeaders(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader) {
	connTokens := bytes.Join(src.PeekAll("Connection"), []byte(","))
	for k, v := range src.All() {
		if isHop(k) || hasToken(connTokens, k) || string(k) == "Content-Length" {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// hasToken reports whether the comma-separated list holds token, ignoring
// case and spaces (for the Connection header).
func hasToken(list, token []byte) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(item), token) {
			return true
		}
	}
	return false
}
