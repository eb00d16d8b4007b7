package upstream

import (
	_ "embed"
	"net/http"
	"sync"

	"github.com/lastevent/lastevent/clients"
)

// demoHTML is the demo page: the /broadcast stream read through lastevent
// with lastevent.js, with buttons for the demo's hooks.
//
//go:embed demo.html
var demoHTML []byte

// demoHooks are the actions behind POST /demo/<name> (see HandleDemo).
type demoHooks struct {
	mu sync.Mutex
	m  map[string]func()
}

// registerDemo serves the demo page at /, the helper at /lastevent.js and
// the hooks at POST /demo/<name>. Loaded through lastevent (which proxies
// every non-SSE request), the page is same-origin with its EventSource.
func (s *Server) registerDemo(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if s.canned(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(demoHTML)
	})
	mux.HandleFunc("GET /lastevent.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(clients.LasteventJS)
	})
	mux.HandleFunc("POST /demo/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.demo.mu.Lock()
		fn := s.demo.m[r.PathValue("name")]
		s.demo.mu.Unlock()
		if fn == nil {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go fn()
	})
}

// HandleDemo makes POST /demo/<name> answer 202 and then run fn in a
// goroutine of its own: the answer is on its way before fn acts (fn may
// well restart the proxy that carries it).
func (s *Server) HandleDemo(name string, fn func()) {
	s.demo.mu.Lock()
	defer s.demo.mu.Unlock()
	if s.demo.m == nil {
		s.demo.m = make(map[string]func())
	}
	s.demo.m[name] = fn
}
