package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// serveMetrics writes the counters in the Prometheus text format.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	m := &s.hub.metrics
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	var b []byte
	gauge := func(name, help string, v int64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" gauge\n"+name+" "...)
		b = strconv.AppendInt(b, v, 10)
		b = append(b, '\n')
	}
	counter := func(name, help string, v uint64) {
		b = append(b, "# HELP "+name+" "+help+"\n# TYPE "+name+" counter\n"+name+" "...)
		b = strconv.AppendUint(b, v, 10)
		b = append(b, '\n')
	}
	s.hub.mu.Lock()
	streams := len(s.hub.byGen)
	s.hub.mu.Unlock()
	gauge("lastevent_connections", "Client SSE connections open.", m.clients.Load())
	gauge("lastevent_streams", "Upstream streams open (live, reconnecting or lingering).", int64(streams))
	gauge("lastevent_buffered_bytes", "Bytes of frames buffered for replay, all streams.", s.hub.budget.Used())
	counter("lastevent_frames_in_total", "Frames read from upstreams (and sync markers).", m.framesIn.Load())
	counter("lastevent_writes_out_total", "Writes of whole frames to clients.", m.framesOut.Load())
	counter("lastevent_resumes_total", "Resumes served from the buffer.", m.resumes.Load())
	counter("lastevent_sync_required_total", "sync-required events sent to clients at connect or when they fell behind.", m.syncRequired.Load())
	counter("lastevent_system_sync_total", "system-sync events sent.", m.systemSync.Load())
	counter("lastevent_sync_markers_total", "sync-required markers put into stream logs (upstream reconnects, oversized frames).", m.syncMarkers.Load())
	counter("lastevent_frames_too_large_total", "Upstream frames dropped for exceeding LASTEVENT_MAX_FRAME_BYTES.", m.framesTooLarge.Load())
	counter("lastevent_heartbeats_total", "Heartbeat comments sent.", m.heartbeats.Load())
	counter("lastevent_clients_dropped_slow_total", "Clients dropped because a write timed out.", m.clientsDroppedSlow.Load())
	counter("lastevent_clients_gone_total", "Client connections that failed on write (closed or reset).", m.clientsGone.Load())
	counter("lastevent_streams_opened_total", "Streams opened.", m.streamsOpened.Load())
	ctx.SetBody(b)
}
