package proxy

import (
	"bytes"
	"io"
	"net"
	"os"
	"sync/atomic"
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
func newStreamClient(cfg *Config) *fasthttp.Client {
	d := &net.Dialer{Timeout: cfg.UpstreamTimeout, KeepAlive: 15 * time.Second}
	return &fasthttp.Client{
		Name:                          "lastevent",
		NoDefaultUserAgentHeader:      true,
		StreamResponseBody:            true,
		MaxConnsPerHost:               cfg.UpstreamMaxConnections,
		MaxIdleConnDuration:           time.Second,
		MaxResponseBodySize:           cfg.MaxBodyBytes,
		ReadBufferSize:                upstreamReadBuffer, // also bounds the upstream's response header
		DisableHeaderNamesNormalizing: false,
		DisablePathNormalizing:        true,
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		Dial: func(addr string) (net.Conn, error) {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return newStreamConn(c, cfg.UpstreamTimeout, cfg.UpstreamIdleTimeout), nil
		},
	}
}

// newPlainClient returns the client for ordinary (non-SSE) requests, which
// are proxied as they are.
func newPlainClient(cfg *Config) *fasthttp.Client {
	return &fasthttp.Client{
		Name:                     "lastevent",
		NoDefaultUserAgentHeader: true,
		MaxConnsPerHost:          cfg.UpstreamMaxConnections,
		ReadTimeout:              max(cfg.UpstreamTimeout, 60*time.Second),
		WriteTimeout:             cfg.UpstreamTimeout,
		MaxResponseBodySize:      cfg.MaxBodyBytes,
		ReadBufferSize:           cfg.MaxHeaderBytes,
		DisablePathNormalizing:   true,
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			// fasthttp passes 0 for a request without a timeout of its own:
			// min(0, ...) would make every dial time out at once.
			if timeout <= 0 || timeout > cfg.UpstreamTimeout {
				timeout = cfg.UpstreamTimeout
			}
			return fasthttp.DialTimeout(addr, timeout)
		},
	}
}

// streamConn enforces the upstream stream timeouts itself (see
// newStreamClient); deadlines set by fasthttp are ignored, since the stream
// client configures none.
type streamConn struct {
	net.Conn
	first, idle time.Duration
	gotByte     atomic.Bool
	noDeadline  bool     // the read deadline is cleared: without an idle timeout, reads need no deadline work
	raw         *rawSock // nil: reads go through Conn.Read
}

func newStreamConn(c net.Conn, first, idle time.Duration) *streamConn {
	return &streamConn{Conn: c, first: first, idle: idle, raw: newRawSock(c)}
}

func (c *streamConn) Read(p []byte) (int, error) {
	t := c.idle
	if !c.gotByte.Load() {
		t = c.first
	}
	switch {
	case t > 0:
		_ = c.Conn.SetReadDeadline(time.Now().Add(t))
		c.noDeadline = false
	case !c.noDeadline:
		_ = c.Conn.SetReadDeadline(time.Time{})
		c.noDeadline = true
	}
	n, err := c.read(p)
	if n > 0 {
		c.gotByte.Store(true)
	}
	return n, err
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

// Write sends a request: its answer gets UpstreamTimeout until its first
// byte again, also on a connection reused from fasthttp's pool after a stream
// that ended cleanly.
func (c *streamConn) Write(p []byte) (int, error) {
	c.gotByte.Store(false)
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
	var connTokens []byte
	if v := src.Peek("Connection"); len(v) > 0 {
		connTokens = v
	}
	for k, v := range src.All() {
		if isHop(k) || hasToken(connTokens, k) || string(k) == "Last-Event-Id" || string(k) == "Host" {
			continue
		}
		dst.Header.AddBytesKV(k, v)
	}
	addForwarded(dst, ctx)
}

func addForwarded(dst *fasthttp.Request, ctx *fasthttp.RequestCtx) {
	ip := ctx.RemoteIP().String()
	if prior := ctx.Request.Header.Peek("X-Forwarded-For"); len(prior) > 0 {
		dst.Header.Set("X-Forwarded-For", string(prior)+", "+ip)
	} else {
		dst.Header.Set("X-Forwarded-For", ip)
	}
	proto := "http"
	if ctx.IsTLS() {
		proto = "https"
	}
	if prior := ctx.Request.Header.Peek("X-Forwarded-Proto"); len(prior) == 0 {
		dst.Header.Set("X-Forwarded-Proto", proto)
	}
	if prior := ctx.Request.Header.Peek("X-Forwarded-Host"); len(prior) == 0 {
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
	connTokens := src.Peek("Connection")
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
