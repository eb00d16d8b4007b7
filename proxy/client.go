package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/valyala/fasthttp"
)

// maxBatch bounds the bytes a client that is behind gets in one write; a
// single frame larger than this still goes out whole.
const maxBatch = 64 << 10

// client is one downstream SSE response: a cursor into its stream's log. Live
// delivery and replay are the same loop: write every frame after the cursor,
// then wait to be woken. It is the response body stream; fasthttp calls
// WriteTo on the connection's goroutine and every Write is one flushed chunk,
// so a chunk always holds whole frames.
type client struct {
	s        *stream
	cursor   uint64
	wake     chan struct{}
	conn     net.Conn
	shutdown <-chan struct{}
	first    []byte // written before the log: the preamble or a sync event
	buf      []byte
	detach   sync.Once

	start       string    // how it started, for the log: live, resume, sync reason
	attached    time.Time // when it attached
	replayUntil uint64    // a resume is caught up at this sequence (0: not a resume)
}

var _ fasthttp.BodyWriterTo = (*client)(nil)

func (c *client) SupportsBodyWriteTo() bool { return true }

// Read is never used: SupportsBodyWriteTo makes fasthttp call WriteTo.
func (c *client) Read([]byte) (int, error) { return 0, io.EOF }

// Close detaches the client from its stream; fasthttp calls it when the
// response is done, also when WriteTo never ran (the connection broke first).
func (c *client) Close() error {
	c.detach.Do(func() { c.s.removeSub(c) })
	return nil
}

// Outcomes of a client response, for its log line.
const (
	outcomeGone      = "client-gone"  // the write failed: closed or reset
	outcomeSlow      = "client-slow"  // a write timed out: not reading, or dead
	outcomeEnded     = "stream-ended" // the stream closed (upstream refused a reconnect)
	outcomeShutdown  = "shutdown"
	outcomeLogClosed = "log-closed"
)

func (c *client) WriteTo(w io.Writer) (int64, error) {
	defer c.Close()
	started := time.Now()
	sent := uint64(0)
	outcome, err := c.loop(w, &sent)
	ev := c.s.hub.log.Info()
	if outcome == outcomeSlow {
		ev = c.s.hub.log.Warn()
	}
	ev.Str("stream", genText(c.s.gen)).Str("path", c.s.pathOnly()).Dur("duration", time.Since(started)).
		Uint64("frames", sent).Str("start", c.start).Str("outcome", outcome).Msg("client done")
	return 0, err
}

// loop writes the client's frames until the client, the stream or the
// server ends. sent counts frames written.
func (c *client) loop(w io.Writer, sent *uint64) (string, error) {
	m := c.s.hub.metrics
	cfg := c.s.hub.cfg
	// The write deadline is moved only when a quarter of it has passed (each
	// write still gets at least three quarters of LASTEVENT_WRITE_TIMEOUT),
	// and heartbeats are timed from the last write: no timer work per frame.
	var deadlineSet, lastWrite time.Time
	write := func(b []byte) (string, error) {
		lastWrite = time.Now()
		if c.conn != nil && lastWrite.Sub(deadlineSet) > cfg.WriteTimeout/4 {
			_ = c.conn.SetWriteDeadline(lastWrite.Add(cfg.WriteTimeout))
			deadlineSet = lastWrite
		}
		if _, err := w.Write(b); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				m.clientsDroppedSlow.Inc()
				return outcomeSlow, err
			}
			m.clientsGone.Inc()
			return outcomeGone, err
		}
		return "", nil
	}
	if o, err := write(c.first); err != nil {
		return o, err
	}
	c.first = nil
	hb := time.NewTimer(cfg.Heartbeat)
	defer hb.Stop()
	ended := false // the stream closed: deliver what the log holds, then end
	for {
		var last uint64
		var err error
		c.buf, last, err = c.s.readLog(c.cursor, c.buf[:0], maxBatch)
		if errors.Is(err, replay.ErrEvicted) {
			select {
			case <-c.s.done:
				// A closed log reads as evicted: the stream is over.
				m.clientsEnded.Inc()
				return outcomeLogClosed, nil
			default:
			}
			// Fell off the tail of the log: say so at this exact point and
			// go on from the head.
			head := c.s.head()
			m.syncRequired(ReasonSlowClient)
			c.buf = appendSyncRequired(c.buf[:0], head, ReasonSlowClient, false)
			last, err = head.Seq, nil
		}
		if err != nil {
			m.clientsEnded.Inc()
			return outcomeLogClosed, nil
		}
		if len(c.buf) == 0 && ended {
			m.clientsEnded.Inc()
			return outcomeEnded, nil
		}
		if len(c.buf) > 0 {
			// A client that is behind (a long replay) writes batch after
			// batch without reaching the select below: look at the shutdown
			// here too, so its response ends now, after whole frames, and
			// it resumes elsewhere with its last id.
			select {
			case <-c.shutdown:
				return outcomeShutdown, nil
			default:
			}
			if o, err := write(c.buf); err != nil {
				return o, err
			}
			n := last - c.cursor
			*sent += n
			m.framesOut.Add(int(n))
			c.cursor = last
			if c.replayUntil > 0 && last >= c.replayUntil {
				m.replaySeconds.UpdateDuration(c.attached)
				c.replayUntil = 0
			}
			if cap(c.buf) > 4*maxBatch {
				c.buf = nil
			}
			continue
		}
		select {
		case <-c.wake:
		case <-hb.C:
			if idle := time.Since(lastWrite); idle < cfg.Heartbeat {
				hb.Reset(cfg.Heartbeat - idle)
				continue
			}
			if o, err := write(heartbeat); err != nil {
				return o, err
			}
			m.heartbeats.Inc()
			hb.Reset(cfg.Heartbeat)
		case <-c.s.done:
			// No frame follows: the loop delivers what the log still
			// holds, then ends the response so the client reconnects.
			ended = true
		case <-c.shutdown:
			return outcomeShutdown, nil
		}
	}
}
