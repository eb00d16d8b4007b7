package proxy

import (
	"bytes"
	"runtime"
	"sync/atomic"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// metrics are the hub's counters. Every update on a hot path is one atomic
// add (VictoriaMetrics/metrics counters), never a lock. Each hub has its own
// Set, so several servers in one process (tests, the demo) do not mix.
type metrics struct {
	set *vm.Set

	clients atomic.Int64 // open client SSE responses

	framesIn, framesOut, framesTooLarge, heartbeats      *vm.Counter
	resumes, systemSync, syncMarkers, streamsOpened      *vm.Counter
	streamsEndedEarly                                    *vm.Counter // lingering streams ended to make room (Hub.endOldestLingering)
	upstreamConnects, upstreamReconnects, upstreamErrors *vm.Counter
	clientsDroppedSlow, clientsGone, clientsEnded        *vm.Counter
	syncByReason                                         map[string]*vm.Counter // read-only after newMetrics
	replaySeconds                                        *vm.PrometheusHistogram
	redisAppends                                         *vm.Counter // Redis append calls (one per burst)
}

var syncReasons = []string{
	ReasonMalformed, ReasonEvicted, ReasonUnknown, ReasonOtherStream, ReasonKeyMismatch, ReasonSlowClient,
}

func newMetrics(h *Hub) *metrics {
	vm.ExposeMetadata(true) // # TYPE lines, for scrapers that want them
	s := vm.NewSet()
	m := &metrics{
		set:                s,
		framesIn:           s.NewCounter("lastevent_frames_in_total"),
		framesOut:          s.NewCounter("lastevent_frames_out_total"),
		framesTooLarge:     s.NewCounter("lastevent_frames_too_large_total"),
		heartbeats:         s.NewCounter("lastevent_heartbeats_total"),
		resumes:            s.NewCounter(`lastevent_resumes_total{outcome="hit"}`),
		systemSync:         s.NewCounter("lastevent_system_sync_total"),
		syncMarkers:        s.NewCounter("lastevent_sync_markers_total"),
		streamsOpened:      s.NewCounter("lastevent_streams_opened_total"),
		streamsEndedEarly:  s.NewCounter("lastevent_streams_ended_early_total"),
		upstreamConnects:   s.NewCounter("lastevent_upstream_connects_total"),
		upstreamReconnects: s.NewCounter("lastevent_upstream_reconnects_total"),
		upstreamErrors:     s.NewCounter("lastevent_upstream_errors_total"),
		clientsDroppedSlow: s.NewCounter(`lastevent_clients_closed_total{reason="slow"}`),
		clientsGone:        s.NewCounter(`lastevent_clients_closed_total{reason="gone"}`),
		clientsEnded:       s.NewCounter(`lastevent_clients_closed_total{reason="stream_end"}`),
		syncByReason:       make(map[string]*vm.Counter),
		replaySeconds:      s.NewPrometheusHistogram("lastevent_replay_seconds"),
	}
	for _, r := range syncReasons {
		m.syncByReason[r] = s.NewCounter(`lastevent_resumes_total{outcome="sync_required",reason="` + r + `"}`)
	}
	s.NewGauge("lastevent_connections", func() float64 { return float64(m.clients.Load()) })
	s.NewGauge("lastevent_streams", func() float64 { return float64(h.streamCount()) })
	s.NewGauge("lastevent_buffered_bytes", func() float64 { return float64(h.budget.Used()) })
	s.NewGauge("lastevent_max_memory_bytes", func() float64 { return float64(h.budget.Max()) })
	if r := h.reps; r != nil {
		s.NewGauge("lastevent_redis_up", func() float64 {
			if r.up.Load() {
				return 1
			}
			return 0
		})
		r.errCounter = s.NewCounter("lastevent_redis_errors_total")
		m.redisAppends = s.NewCounter("lastevent_redis_appends_total")
	}
	s.NewGauge("lastevent_goroutines", func() float64 { return float64(runtime.NumGoroutine()) })
	return m
}

// syncRequired counts a sync-required sent to a client for reason.
func (m *metrics) syncRequired(reason string) {
	if c := m.syncByReason[reason]; c != nil {
		c.Inc()
	}
}

// syncRequiredTotal sums the sync-required counters.
func (m *metrics) syncRequiredTotal() uint64 {
	var n uint64
	for _, c := range m.syncByReason {
		n += c.Get()
	}
	return n
}

// serveMetrics writes the metrics in the Prometheus text format, with the
// process and Go runtime metrics.
func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	var b bytes.Buffer
	s.hub.metrics.set.WritePrometheus(&b)
	vm.WriteProcessMetrics(&b)
	vm.WriteFDMetrics(&b) // process_open_fds, process_max_fds: a proxy sized by its connections
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	ctx.SetBody(b.Bytes())
}
