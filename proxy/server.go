package proxy

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

var timeZero time.Time

// Server is lastevent: the client listener, the admin listener and the hub.
type Server struct {
	cfg      *Config
	log      zerolog.Logger
	hub      *Hub
	client   *fasthttp.Server
	admin    *fasthttp.Server
	ready    atomic.Bool
	draining atomic.Bool
	started  time.Time
	version  string
}

// NewServer builds a server for cfg; Serve starts it.
func NewServer(cfg *Config, log zerolog.Logger, version string) *Server {
	hub := NewHub(cfg, log)
	s := &Server{cfg: cfg, log: log, hub: hub, started: time.Now(), version: version}
	h := NewHandler(hub)
	s.client = &fasthttp.Server{
		Name:                          "lastevent",
		Handler:                       h.Serve,
		Concurrency:                   cfg.MaxConnections + 1, // the listener enforces the limit with a clearer 503
		ReadBufferSize:                cfg.MaxHeaderBytes,
		MaxRequestBodySize:            cfg.MaxBodyBytes,
		ReadTimeout:                   60 * time.Second,
		IdleTimeout:                   60 * time.Second,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 false,
		ReduceMemoryUsage:             true,
		CloseOnShutdown:               true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		SecureErrorLogMessage:         true, // no client bytes (cookies, tokens) in the errors logged
		NoDefaultContentType:          true, // a plain answer without one is passed on without one
		ErrorHandler:                  h.requestError,
		HeaderReceived:                h.bodies.headerReceived,
		Logger:                        fasthttpLogger{log},
	}
	s.admin = &fasthttp.Server{
		Name:                  "lastevent-admin",
		Handler:               s.serveAdmin,
		ReadTimeout:           10 * time.Second,
		WriteTimeout:          10 * time.Second,
		NoDefaultServerHeader: true,
		CloseOnShutdown:       true,
		Logger:                fasthttpLogger{log},
	}
	return s
}

// Serve serves clients on ln and the admin endpoints on adminLn until
// Shutdown; it returns the first listener error.
func (s *Server) Serve(ln, adminLn net.Listener) error {
	errc := make(chan error, 2)
	go func() { errc <- s.admin.Serve(adminLn) }()
	go func() { errc <- s.client.Serve(WrapListener(ln, s.cfg.MaxConnections, s.cfg.ClientDeadTimeout)) }()
	if s.hub.reps != nil {
		s.hub.reps.start()
	}
	s.ready.Store(true)
	err := <-errc
	if s.draining.Load() {
		return nil
	}
	return err
}

// Drain marks the server not ready, so the load balancer stops sending new
// clients; existing streams go on.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops accepting, ends every stream (their clients reconnect by
// themselves, elsewhere), and returns when all is closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.ready.Store(false)
	done := make(chan error, 1)
	go func() {
		// ShutdownWithContext closes ctx.Done() of every request: the
		// client loops see it and end their responses.
		err := s.client.ShutdownWithContext(ctx)
		s.hub.Close()
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	aerr := s.admin.Shutdown()
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("shutdown grace period ended with connections still open (streams, or plain requests still being answered)")
	}
	return errors.Join(err, aerr)
}

type fasthttpLogger struct{ l zerolog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug().Msgf(format, args...)
}

// requestError answers a request fasthttp could not read: fasthttp's own
// answers (431 for a head over LASTEVENT_MAX_HEADER_BYTES, 408 for a
// timeout, 400), except a body over LASTEVENT_MAX_BODY_BYTES, which gets 413
// and says which setting (fasthttp answered 400 "Error when parsing
// request"), and one LASTEVENT_MAX_BODY_MEMORY had no room for: 503.
func (h *Handler) requestError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	refused := h.bodies.done(&ctx.Request.Header)
	switch {
	case refused && errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("lastevent: too many request bodies being read at once (LASTEVENT_MAX_BODY_MEMORY)\n", fasthttp.StatusServiceUnavailable)
		ctx.Response.Header.Set("Retry-After", "1") // after Error, which resets the headers
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("lastevent: request body larger than LASTEVENT_MAX_BODY_BYTES\n", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &small):
		ctx.Error("Too big request header", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case isTimeout(err):
		ctx.Error("Request timeout", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("Error when parsing request", fasthttp.StatusBadRequest)
	}
}
