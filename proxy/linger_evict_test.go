package proxy

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// With LASTEVENT_UPSTREAM_MAX_CONNECTIONS streams open, a new stream ends the
// oldest lingering one (endLingering: go s.halt()) and at once asks the
// upstream for its own answer, through a pool of the same size whose
// connection the ended stream has not given back yet. The stream client
// waits for it (MaxConnWaitTimeout) rather than failing: before, fasthttp
// answered ErrNoFreeConns, the stream counted an upstream error and waited a
// backoff (here LASTEVENT_UPSTREAM_BACKOFF_MIN=2s: 1 to 3 s without a frame,
// although the upstream sends one every 3 ms).
func TestEndedLingeringStreamFreesItsConnectionFirst(t *testing.T) {
	quit := make(chan struct{})
	up := tickUpstream(quit)
	defer up.Close()
	defer close(quit)
	var logs syncBuffer
	srv, addr := serveInProcess(t, up.URL, zerolog.New(&logs),
		"LASTEVENT_MODE=shared",
		"LASTEVENT_LINGER=60s",
		"LASTEVENT_HEARTBEAT=20ms",
		"LASTEVENT_UPSTREAM_MAX_CONNECTIONS=1",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=2s",
	)

	const rounds = 10
	slow := 0
	for i := range rounds {
		path := "/feed/" + string(rune('a'+i)) // a new stream each time
		errsBefore := srv.hub.metrics.upstreamErrors.Get()
		start := time.Now()
		c := mustOpenSSE(t, addr, path)
		c.mustLastID(t, 1)
		took := time.Since(start)
		errs := srv.hub.metrics.upstreamErrors.Get() - errsBefore
		if took > time.Second || errs > 0 {
			slow++
			t.Logf("round %d: first frame after %v, %d upstream errors (streams ended early so far: %d)",
				i, took.Round(time.Millisecond), errs, srv.hub.metrics.streamsEndedEarly.Get())
		}
		c.c.Close()
		deadline := time.Now().Add(5 * time.Second)
		for srv.hub.metrics.clients.Load() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the client did not detach")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("streams ended early: %d", srv.hub.metrics.streamsEndedEarly.Get())
	if slow > 0 {
		t.Logf("upstream errors logged: %d with %q", strings.Count(logs.String(), "no free connections"), "no free connections available to host")
		t.Fatalf("%d of %d new streams that ended a lingering one waited a backoff for the upstream connection it still held", slow, rounds)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
