// Package upstream is a fake legacy SSE service for tests and the demo: it
// sends no ids and ignores Last-Event-ID, like most SSE services do. Tests
// drive it through Feeds (raw bytes pushed to every connection on a path),
// status overrides and connection kills, over a real TCP listener.
package upstream

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the fake upstream.
type Server struct {
	Addr string // host:port it listens on
	ln   net.Listener
	srv  *http.Server

	mu       sync.Mutex
	feeds    map[string]*Feed
	statuses map[string][]Status
	requests []*http.Request
	times    []time.Time   // when each of requests arrived
	tick     atomic.Uint64 // broadcast sequence
	bcast    *Feed
	stop     chan struct{}
	wg       sync.WaitGroup
	demo     demoHooks
}

// Status is a canned answer for the next request on a path.
type Status struct {
	Code   int
	Header http.Header
	Body   string
	// Delay holds the answer back this long (a hanging upstream); the
	// request ending or the server closing cuts it short.
	Delay time.Duration
}

// Start listens on addr (127.0.0.1:0 for tests) and serves:
//
//	/events?interval=1s&count=0&event=   a per-connection counter: data {"n":1,...}
//	/broadcast?interval=1s                  one counter shared by every connection
//	/feed/...                               bytes pushed by the test through Feed(path); ?set-cookie=V answers with Set-Cookie: V
//	/echo/...                               a JSON description of the request (see Echo)
//	/, /lastevent.js, POST /demo/<name>     the demo page, its helper and hooks (see HandleDemo)
//	anything else                           404, or a canned Status
func Start(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:     ln.Addr().String(),
		ln:       ln,
		feeds:    make(map[string]*Feed),
		statuses: make(map[string][]Status),
		stop:     make(chan struct{}),
	}
	s.bcast = s.Feed("/broadcast")
	mux := http.NewServeMux()
	mux.HandleFunc("/events", s.counter)
	mux.HandleFunc("/feed/", s.feed)
	mux.HandleFunc("/broadcast", s.feed)
	mux.HandleFunc("/echo/", s.echo)
	s.registerDemo(mux) // GET / (the demo page), GET /lastevent.js, POST /demo/<name>
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if s.canned(w, r) {
			return
		}
		http.NotFound(w, r)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); _ = s.srv.Serve(ln) }()
	return s, nil
}

// StartBroadcast makes /broadcast send one counter event every interval.
func (s *Server) StartBroadcast(interval time.Duration) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				n := s.tick.Add(1)
				s.bcast.Send(fmt.Sprintf("event: tick\ndata: {\"n\":%d,\"at\":%q}\n\n", n, time.Now().UTC().Format(time.RFC3339Nano)))
			}
		}
	}()
}

// Close stops the server and ends every connection. It may be called more
// than once.
func (s *Server) Close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.mu.Lock()
	for _, f := range s.feeds {
		f.Kill()
	}
	s.mu.Unlock()
	_ = s.srv.Close()
	s.wg.Wait()
}

// URL is the base URL of the server.
func (s *Server) URL() string { return "http://" + s.Addr }

// Requests returns the requests received so far (headers and URL only).
func (s *Server) Requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.requests...)
}

// QueueStatus makes the next request on path answer st instead of streaming.
func (s *Server) QueueStatus(path string, st ...Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses[path] = append(s.statuses[path], st...)
}

// ClearStatus drops the canned answers still queued for path.
func (s *Server) ClearStatus(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.statuses, path)
}

// RequestTimes returns when each request on path (as recorded by Requests)
// arrived, oldest first.
func (s *Server) RequestTimes(path string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for i, r := range s.requests {
		if r.URL.Path == path {
			out = append(out, s.times[i])
		}
	}
	return out
}

func (s *Server) record(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Clone(r.Context()))
	s.times = append(s.times, time.Now())
}

// Echo is the JSON body /echo/ answers with: the request as the upstream saw
// it. The status is 200 unless the query holds status=<code>; the response
// also carries the header X-Echo: yes.
type Echo struct {
	Method string              `json:"method"`
	Path   string              `json:"path"`
	Query  string              `json:"query"`
	Host   string              `json:"host"`
	Header map[string][]string `json:"header"`
	Body   string              `json:"body"`
}

func (s *Server) echo(w http.ResponseWriter, r *http.Request) {
	s.record(r)
	if s.canned(w, r) {
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	code := http.StatusOK
	if c, err := strconv.Atoi(r.URL.Query().Get("status")); err == nil && c >= 200 && c <= 599 {
		code = c
	}
	b, _ := json.Marshal(Echo{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Header: r.Header, Body: string(body)})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Echo", "yes")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (s *Server) canned(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	q := s.statuses[r.URL.Path]
	if len(q) == 0 {
		s.mu.Unlock()
		return false
	}
	st := q[0]
	s.statuses[r.URL.Path] = q[1:]
	s.mu.Unlock()
	if st.Delay > 0 {
		t := time.NewTimer(st.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
		case <-s.stop:
		}
		t.Stop()
	}
	for k, v := range st.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(st.Code)
	_, _ = w.Write([]byte(st.Body))
	return true
}

func (s *Server) counter(w http.ResponseWriter, r *http.Request) {
	s.record(r)
	if s.canned(w, r) {
		return
	}
	interval, err := time.ParseDuration(r.URL.Query().Get("interval"))
	if err != nil || interval <= 0 {
		interval = time.Second
	}
	count, _ := strconv.Atoi(r.URL.Query().Get("count"))
	event := r.URL.Query().Get("event")
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "no flusher", 500)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	fl.Flush()
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 1; count == 0 || n <= count; n++ {
		select {
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
		if event != "" {
			fmt.Fprintf(w, "event: %s\n", event)
		}
		fmt.Fprintf(w, "data: {\"n\":%d,\"at\":%q}\n\n", n, time.Now().UTC().Format(time.RFC3339Nano))
		fl.Flush()
	}
}

// Feed is a path under /feed/ (or /broadcast) whose bytes the test pushes.
type Feed struct {
	s       *Server
	path    string
	mu      sync.Mutex
	conns   map[*feedConn]struct{}
	total   atomic.Int64
	dropped atomic.Int64
	onCon   chan struct{}
}

type feedConn struct {
	ch   chan string
	kill chan struct{}
	once sync.Once
	req  *http.Request // the request that opened the connection (headers, URL)
}

// Feed returns the feed for path, creating it.
func (s *Server) Feed(path string) *Feed {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.feeds[path]
	if f == nil {
		f = &Feed{s: s, path: path, conns: make(map[*feedConn]struct{}), onCon: make(chan struct{}, 1024)}
		s.feeds[path] = f
	}
	return f
}

func (s *Server) feed(w http.ResponseWriter, r *http.Request) {
	s.record(r)
	if s.canned(w, r) {
		return
	}
	f := s.Feed(r.URL.Path)
	fl := w.(http.Flusher)
	// Register before answering: once the proxy has the 200 (and its client
	// has its response), a Send must reach this connection.
	c := &feedConn{ch: make(chan string, 4096), kill: make(chan struct{}), req: r.Clone(r.Context())}
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	f.total.Add(1)
	select {
	case f.onCon <- struct{}{}:
	default:
	}
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	if v := r.URL.Query().Get("set-cookie"); v != "" {
		w.Header().Set("Set-Cookie", v) // a session cookie, for the tests of who gets it
	}
	w.WriteHeader(200)
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.kill:
			// Abort mid-response: the client sees an unexpected EOF.
			panic(http.ErrAbortHandler)
		case b := <-c.ch:
			if _, err := w.Write([]byte(b)); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// Send writes b to every connection on the feed.
func (f *Feed) Send(b string) {
	f.SendEach(func(*http.Request) string { return b })
}

// SendEach writes to every connection on the feed the bytes that gen returns
// for the request that opened it (its headers and URL), so that each
// upstream connection can carry data of its own; "" sends nothing.
func (f *Feed) SendEach(gen func(r *http.Request) string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		b := gen(c.req)
		if b == "" {
			continue
		}
		select {
		case c.ch <- b:
		default: // a stuck reader; tests keep well below the buffer
			f.dropped.Add(1)
		}
	}
}

// Dropped is the number of sends lost because a connection's buffer was
// full; a test that relies on every send arriving checks it is 0.
func (f *Feed) Dropped() int64 { return f.dropped.Load() }

// ConnRequests returns the requests that opened the connections now open.
func (f *Feed) ConnRequests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*http.Request
	for c := range f.conns {
		out = append(out, c.req)
	}
	return out
}

// Conns is the number of open connections on the feed.
func (f *Feed) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// Total is the number of connections ever opened on the feed.
func (f *Feed) Total() int64 { return f.total.Load() }

// WaitConns waits until the feed has at least n open connections.
func (f *Feed) WaitConns(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f.Conns() >= n {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f.Conns() >= n
}

// Kill aborts every connection on the feed mid-stream.
func (f *Feed) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.once.Do(func() { close(c.kill) })
	}
}
