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

func (c *client) WriteTo(w io.Writer) (int64, error) {
	defer c.Close()
	m := &c.s.hub.metrics
	cfg := c.s.hub.cfg
	var total int64
	write := func(b []byte) error {
		if c.conn != nil {
			_ = c.conn.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
		}
		n, err := w.Write(b)
		total += int64(n)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				m.clientsDroppedSlow.Add(1)
			} else {
				m.clientsGone.Add(1)
			}
		}
		return err
	}
	if err := write(c.first); err != nil {
		return total, err
	}
	c.first = nil
	hb := time.NewTimer(cfg.Heartbeat)
	defer hb.Stop()
	for {
		var last uint64
		var err error
		c.buf, last, err = c.s.log.Read(c.cursor, c.buf[:0], maxBatch)
		if errors.Is(err, replay.ErrEvicted) {
			// Fell off the tail of the log: say so at this exact point and
			// go on from the head.
			head := c.s.head()
			m.syncRequired.Add(1)
			c.buf = appendSyncRequired(c.buf[:0], head, ReasonSlowClient, false)
			last = head.Seq
			err = nil
		}
		if err != nil {
			return total, nil // the log was closed: the stream has ended
		}
		if len(c.buf) > 0 {
			if err := write(c.buf); err != nil {
				return total, err
			}
			m.framesOut.Add(1)
			c.cursor = last
			if cap(c.buf) > 4*maxBatch {
				c.buf = nil
			}
			hb.Reset(cfg.Heartbeat)
			continue
		}
		select {
		case <-c.wake:
		case <-hb.C:
			if err := write(heartbeat); err != nil {
				return total, err
			}
			m.heartbeats.Add(1)
			hb.Reset(cfg.Heartbeat)
		case <-c.s.done:
			// Deliver what the log still holds, then end the response so
			// the client reconnects.
			c.buf, last, _ = c.s.log.Read(c.cursor, c.buf[:0], maxBatch)
			if len(c.buf) == 0 {
				return total, nil
			}
			if err := write(c.buf); err != nil {
				return total, err
			}
			c.cursor = last
		case <-c.shutdown:
			return total, nil
		}
	}
}
