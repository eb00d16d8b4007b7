package proxy

import (
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"
)

func (s *Server) serveAdmin(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	if path == "/drain" {
		if !ctx.IsPost() {
			ctx.Error("use POST\n", fasthttp.StatusMethodNotAllowed)
			ctx.Response.Header.Set("Allow", "POST") // after Error, which resets the headers
			return
		}
	} else if !ctx.IsGet() && !ctx.IsHead() && !strings.HasPrefix(path, "/debug/pprof/") { // pprof looks symbols up with POST
		// Reading endpoints: a POST or a DELETE there is a mistake to say.
		ctx.Error("use GET\n", fasthttp.StatusMethodNotAllowed)
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		return
	}
	switch path {
	case "/healthz":
		// Liveness: the process answers. Never depends on the upstream, or
		// a slow app would get its sidecar restarted.
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok\n")
	case "/readyz":
		ctx.SetContentType("text/plain; charset=utf-8")
		reps := s.hub.reps
		redisWait := reps != nil && !reps.everUp.Load()
		if s.ready.Load() && !s.draining.Load() && !redisWait {
			ctx.SetBodyString("ready\n")
			return
		}
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		switch {
		case s.draining.Load():
			ctx.SetBodyString("draining\n")
		case redisWait:
			// Not ready until Redis has answered once: a replica that never
			// reached it cannot resume other replicas' clients. Later
			// outages keep it ready (owners go on serving their clients).
			ctx.SetBodyString("waiting for Redis (LASTEVENT_REDIS_URL, " + s.cfg.Redis.Addr + "): " + s.hub.redisState().Error + "\n")
		default:
			ctx.SetBodyString("starting\n")
		}
	case "/drain":
		s.Drain()
		s.log.Info().Msg("drain requested: not ready any more")
		ctx.SetBodyString("draining\n")
	case "/debug/stream-state":
		ctx.SetContentType("application/json")
		b, _ := json.MarshalIndent(s.hub.state(), "", "  ")
		ctx.SetBody(append(b, '\n'))
	case "/metrics":
		s.serveMetrics(ctx)
	default:
		if s.cfg.Pprof && strings.HasPrefix(string(ctx.Path()), "/debug/pprof/") {
			pprofhandler.PprofHandler(ctx)
			return
		}
		ctx.Error("not found\n", fasthttp.StatusNotFound)
	}
}

// StreamState is one stream in /debug/stream-state.
type StreamState struct {
	Generation  string `json:"generation"`
	Path        string `json:"path"`
	Mode        string `json:"mode"`
	LastID      string `json:"last_id"`
	OldestID    string `json:"oldest_id"`
	Frames      int    `json:"buffer_frames"`
	Bytes       int64  `json:"buffer_bytes"`
	Connections int    `json:"connections"`
	Upstream    string `json:"upstream_state"`
	Connects    uint64 `json:"upstream_connects"`
	Reconnects  uint64 `json:"upstream_reconnects"`
	IdleSince   string `json:"idle_since,omitempty"`
	// Redis mode: owner, follower or local (not in Redis: it opened or went
	// on while Redis did not answer), and the generation of its Redis log.
	Role     string `json:"role,omitempty"`
	RedisGen string `json:"redis_gen,omitempty"`
}

// State is the whole /debug/stream-state document.
type State struct {
	Redis   redisState    `json:"redis"`
	Streams []StreamState `json:"streams"`
	Totals  struct {
		Streams        int    `json:"streams"`
		Connections    int64  `json:"connections"`
		BufferedBytes  int64  `json:"buffered_bytes"`
		MaxMemory      int64  `json:"max_memory"`
		FramesIn       uint64 `json:"frames_in"`
		Resumes        uint64 `json:"resumes"`
		SyncRequired   uint64 `json:"sync_required"`
		SystemSync     uint64 `json:"system_sync"`
		StreamsOpened  uint64 `json:"streams_opened"`
		ClientsDropped uint64 `json:"clients_dropped_slow"`
	} `json:"totals"`
}

func (h *Hub) state() State {
	h.mu.Lock()
	all := make([]*stream, 0, len(h.byGen))
	for _, s := range h.byGen {
		all = append(all, s)
	}
	h.mu.Unlock()
	var st State
	st.Redis = h.redisState()
	st.Streams = []StreamState{}
	for _, s := range all {
		oldest, newest := s.log.Bounds()
		frames, bytes := s.log.Stats()
		s.mu.Lock()
		conns := len(s.subs)
		var idle string
		if conns == 0 && !s.lastLeft.IsZero() {
			idle = s.lastLeft.UTC().Format(time.RFC3339Nano)
		}
		s.mu.Unlock()
		ss := StreamState{
			Generation:  genText(s.gen),
			Path:        s.pathOnly(),
			Mode:        h.cfg.Mode.String(),
			LastID:      s.id(newest).String(),
			Frames:      frames,
			Bytes:       bytes,
			Connections: conns,
			Upstream:    stateNames[s.state.Load()],
			Connects:    s.connects.Load(),
			Reconnects:  s.reconnects.Load(),
			IdleSince:   idle,
		}
		if frames > 0 {
			ss.OldestID = s.id(oldest).String()
		}
		if s.rep != nil {
			ss.Role = roleNames[s.rep.role.Load()]
			if g := s.rep.redisGen.Load(); g != nil {
				ss.RedisGen = genText(*g)
			}
			ss.LastID = s.id(s.seq.Load()).String()
		}
		st.Streams = append(st.Streams, ss)
	}
	sort.Slice(st.Streams, func(i, j int) bool { return st.Streams[i].Generation < st.Streams[j].Generation })
	t := &st.Totals
	t.Streams = len(st.Streams)
	t.Connections = h.metrics.clients.Load()
	t.BufferedBytes = h.budget.Used()
	t.MaxMemory = h.budget.Max()
	t.FramesIn = h.metrics.framesIn.Get()
	t.Resumes = h.metrics.resumes.Get()
	t.SyncRequired = h.metrics.syncRequiredTotal()
	t.SystemSync = h.metrics.systemSync.Get()
	t.StreamsOpened = h.metrics.streamsOpened.Get()
	t.ClientsDropped = h.metrics.clientsDroppedSlow.Get()
	return st
}
