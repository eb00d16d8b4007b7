package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lastevent/lastevent/replay"
	"github.com/valyala/fasthttp"
)

// maxBatch bounds the bytes a client that is behind gets in one write; a
// single frame larger than this still goes out whole.
const maxBatch = 64 << 10

// smallBatch is how many pending frames a client reads into its own buffer;
// one further behind (a replay, a slow reader) borrows a maxBatch buffer from
// batchPool for the write and gives it back right after, so a client that
// caught up holds no batch buffer and an idle one holds none at all.
const smallBatch = 4

// chunkRoom is kept free at the front of every batch buffer for the chunk's
// size line (up to 8 hex digits and CRLF), and chunkTail at its end for the
// CRLF after the data: a batch then goes out as one chunk in one write system
// call, straight to the connection.
const (
	chunkRoom = 10
	chunkTail = 2
)

// batchPool holds maxBatch-sized write buffers (pointers, so that Put does not
// allocate).
var batchPool = sync.Pool{New: func() any {
	return &batchBuf{b: make([]byte, chunkRoom, chunkRoom+maxBatch+chunkTail)}
}}

type batchBuf struct{ b []byte }

// noBuf stands for the buffer of a client that has not read a frame yet (an
// idle one holds none). Nothing is ever written into it: its capacity is its
// length, so appending to it allocates.
var noBuf [chunkRoom]byte

// client is one downstream SSE response: a cursor into its stream's log. Live
// delivery and replay are the same loop: write every frame after the cursor,
// then wait to be woken. It is the response body stream; fasthttp calls
// WriteTo on the connection's goroutine and every Write is one flushed chunk,
// so a chunk always holds whole frames.
//
// The loop waits on its wake channel alone: the stream's publish, the
// heartbeat timer (hbDue) and the stream's watcher (the stream ended, the
// server shuts down) all send to it. A select over shared channels (the
// stream's done, the server's shutdown) made every wait of every subscriber
// queue on those channels' locks, and a timer channel in the select added and
// removed the timer at every wait (the S2 profile: selectgo 17 % of the CPU).
type client struct {
	s        *stream
	cursor   uint64
	wake     chan struct{}
	conn     net.Conn
	shutdown <-chan struct{}
	first    []byte // written before the log: the preamble or a sync event
	buf      []byte // the client's own buffer, for up to smallBatch frames (after chunkRoom)
	detach   sync.Once

	start       string    // how it started, for the log: live, resume, sync reason
	attached    time.Time // when it attached
	replayUntil uint64    // a resume is caught up at this sequence (0: not a resume)

	// Owned by whoever holds mu: the loop, whenever it is not waiting for a
	// wake, or the stream's goroutine in offer.
	mu          sync.Mutex
	gone        bool      // the loop returned: nothing more may be written
	pending     []byte    // the rest of a chunk that offer's write left: the loop writes it first
	raw         *rawSock  // offer's writes, set up on its first
	noRaw       bool      // conn has no file descriptor (tests): offer never writes
	sent        uint64    // frames written, for the log
	direct      bool      // fasthttp's buffer is flushed: batches go to conn directly
	lastWrite   time.Time // heartbeats are timed from it
	deadlineSet time.Time // when the write deadline was last moved
	hb          *time.Timer
	hbDue       atomic.Bool // set by hb before it wakes the loop
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

// WriteTo is kept small, like everything the loop calls: an idle client's
// goroutine then fits the runtime's initial 4 KiB stack down to the write
// system call (it used to grow to 8 KiB: S3's RSS per connection).
func (c *client) WriteTo(w io.Writer) (int64, error) {
	defer c.Close()
	started := time.Now()
	outcome, err := c.loop(w)
	if err == nil {
		c.endDeadline()
	}
	c.logDone(started, outcome)
	return 0, err
}

// endDeadline gives the write of the response's end (fasthttp's terminating
// chunk, once WriteTo returns) a whole LASTEVENT_WRITE_TIMEOUT: the deadline
// touch set at the last write may have passed while the client was idle,
// which would cut the response off without its end. Not inlined, so that
// WriteTo's frame stays small.
//
//go:noinline
func (c *client) endDeadline() {
	if c.conn != nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.s.hub.cfg.WriteTimeout))
	}
}

func (c *client) logDone(started time.Time, outcome string) {
	ev := c.s.hub.log.Info()
	if outcome == outcomeSlow {
		ev = c.s.hub.log.Warn()
	}
	ev.Str("stream", genText(c.s.gen)).Str("path", c.s.pathOnly()).Dur("duration", time.Since(started)).
		Uint64("frames", c.sent).Str("start", c.start).Str("outcome", outcome).Msg("client done")
}

// loop writes the client's frames until the client, the stream or the
// server ends.
func (c *client) loop(w io.Writer) (string, error) {
	c.mu.Lock()
	defer c.release()
	if o, err := c.write(w, c.first); err != nil {
		return o, err
	}
	c.first = nil
	c.hb = time.AfterFunc(c.s.hub.cfg.Heartbeat, c.heartbeatDue)
	defer c.hb.Stop()
	watch(c)
	ended := false // the stream closed: deliver what the log holds, then end
	for {
		if closed(c.shutdown) {
			return outcomeShutdown, nil
		}
		if o, err := c.drain(w); o != "" {
			return o, err
		}
		if ended {
			c.s.hub.metrics.clientsEnded.Inc()
			return outcomeEnded, nil
		}
		c.mu.Unlock()
		<-c.wake
		c.mu.Lock()
		if o, err := c.writePending(); err != nil {
			return o, err
		}
		// No frame follows a closed stream: the next round delivers what
		// the log still holds, then ends the response so the client
		// reconnects.
		ended = closed(c.s.done)
		if c.hbDue.Load() {
			if o, err := c.heartbeat(w); err != nil {
				return o, err
			}
		}
	}
}

// release ends the loop's hold on the client for good: offer writes nothing
// from now on (fasthttp writes the last chunk once WriteTo returns). The
// client's own buffer goes too: a wake list may hold the client until the
// stream's next frame.
func (c *client) release() {
	c.gone = true
	c.buf, c.pending = nil, nil
	c.mu.Unlock()
}

// drain writes every frame after the cursor, batch by batch; it returns ""
// once the client is caught up, else the outcome that ends the response.
func (c *client) drain(w io.Writer) (string, error) {
	m := c.s.hub.metrics
	for {
		var bb *batchBuf
		dst := c.ownBuf()
		if c.s.seq.Load() > c.cursor+smallBatch {
			bb = batchPool.Get().(*batchBuf)
			dst = bb.b[:chunkRoom]
		}
		buf, last, err := c.s.readLog(c.cursor, dst, maxBatch)
		if errors.Is(err, replay.ErrEvicted) {
			if closed(c.s.done) {
				// A closed log reads as evicted: the stream is over.
				c.putBatch(bb, buf)
				m.clientsEnded.Inc()
				return outcomeLogClosed, nil
			}
			// Fell off the tail of the log: say so at this exact point and
			// go on from the head.
			head := c.s.head()
			m.syncRequired(ReasonSlowClient)
			buf = appendSyncRequired(buf[:chunkRoom], head, ReasonSlowClient, false)
			last, err = head.Seq, nil
			c.cursor = head.Seq // the frames skipped are not counted as sent
		}
		if err != nil {
			c.putBatch(bb, buf)
			m.clientsEnded.Inc()
			return outcomeLogClosed, nil
		}
		if len(buf) == chunkRoom {
			c.putBatch(bb, buf)
			return "", nil
		}
		// A client that is behind (a long replay) writes batch after batch
		// without waiting: look at the shutdown here too, so its response
		// ends now, after whole frames, and it resumes elsewhere with its
		// last id.
		if closed(c.shutdown) {
			c.putBatch(bb, buf)
			return outcomeShutdown, nil
		}
		buf, o, err := c.writeBatch(w, buf)
		c.putBatch(bb, buf)
		if err != nil {
			return o, err
		}
		c.advance(last)
	}
}

// advance moves the cursor to last once the frames up to it are written.
func (c *client) advance(last uint64) {
	m := c.s.hub.metrics
	n := last - c.cursor
	c.sent += n
	m.framesOut.Add(int(n))
	c.cursor = last
	if c.replayUntil > 0 && last >= c.replayUntil {
		m.replaySeconds.UpdateDuration(c.attached)
		c.replayUntil = 0
	}
}

// ownBuf is the client's own buffer, emptied to its chunkRoom, or noBuf
// (full: a frame read into it makes Read allocate the client's buffer).
func (c *client) ownBuf() []byte {
	if c.buf != nil {
		return c.buf[:chunkRoom]
	}
	return noBuf[:]
}

// ownKeep is the size up to which a client keeps its own buffer whatever it
// last held; a bigger one (grown by a big frame) is kept only while the
// frames it gets fill a quarter of it (a read that found nothing does not
// count).
const ownKeep = 16 << 10

// putBatch keeps buf: in the pool when it is a borrowed batch buffer (unless
// a giant frame grew it), else as the client's own buffer. A client that got
// one big frame and then small ones gives the big buffer up (it would hold it
// for the life of the connection, outside LASTEVENT_MAX_MEMORY); one that
// keeps getting big frames keeps it, so it does not allocate per frame.
func (c *client) putBatch(bb *batchBuf, buf []byte) {
	switch {
	case bb != nil:
		if cap(buf) <= 2*maxBatch {
			bb.b = buf[:chunkRoom]
			batchPool.Put(bb)
		}
	case cap(buf) > 4*maxBatch || (cap(buf) > ownKeep && len(buf) > chunkRoom && len(buf) < cap(buf)/4):
		c.buf = nil
	case cap(buf) > chunkRoom: // not noBuf
		c.buf = buf[:chunkRoom]
	}
}

// write writes b as one chunk through fasthttp's writer (which copies it
// into its 4 KiB buffer, flushes, and writes a larger b in up to three system
// calls). The first write goes this way: the response head is still in that
// buffer.
func (c *client) write(w io.Writer, b []byte) (string, error) {
	c.touch()
	if _, err := w.Write(b); err != nil {
		return c.writeFailed(err), err
	}
	c.direct = c.conn != nil && len(b) > 0 // the buffer is empty from now on
	return "", nil
}

// writeBatch writes the frames of buf (after its chunkRoom) as one chunk. Once
// fasthttp's buffer is flushed it frames the chunk itself (size line, data,
// CRLF; RFC 9112, section 7.1) and writes it to the connection in one system
// call, without the copy; fasthttp writes the last chunk when WriteTo returns.
// It returns buf, which the CRLF may have grown.
func (c *client) writeBatch(w io.Writer, buf []byte) ([]byte, string, error) {
	if !c.direct {
		o, err := c.write(w, buf[chunkRoom:])
		return buf, o, err
	}
	buf, i := chunk(buf)
	c.touch()
	if _, err := c.conn.Write(buf[i:]); err != nil {
		return buf[:len(buf)-chunkTail], c.writeFailed(err), err
	}
	return buf[:len(buf)-chunkTail], "", nil
}

// chunk frames the data of buf (after its chunkRoom) as one chunk: the size
// line goes into the room before it, CRLF after it. The chunk is buf[i:];
// buf[:len(buf)-chunkTail] is the buffer without the CRLF.
func chunk(buf []byte) (_ []byte, i int) {
	i = chunkRoom - 2
	buf[i], buf[i+1] = '\r', '\n'
	for n := len(buf) - chunkRoom; ; n >>= 4 {
		i--
		buf[i] = "0123456789abcdef"[n&15]
		if n < 16 {
			break
		}
	}
	return append(buf, '\r', '\n'), i
}

// inlineMax is the most subscribers a stream's goroutine offers new frames
// to itself (offer): a session stream's client, a shared stream's few. With
// more, its sweepers offer them, in parallel (sweepSet).
const inlineMax = 4

// offer is the stream's goroutine handing the frames it just put in the log
// to a client whose loop waits, caught up: it writes them itself, as one
// chunk in one non-blocking system call, and the loop sleeps on. That saves a
// wake-up and a hand-off between goroutines per frame (S1's profile before:
// scheduling, channel operations and futex wake-ups were about a quarter of
// the CPU). The loop holds mu across its own blocking writes; the stream's
// goroutine (or a sweeper) only tries it, so it never waits for a client. It
// reports whether the frames are written; when not (the loop is busy, the
// client is behind, the socket is full, an error) the caller wakes the loop,
// which writes them as always. A chunk the socket took only in part leaves
// its rest in pending, which the loop writes before anything else.
func (c *client) offer() bool {
	if !c.mu.TryLock() {
		return false // the loop is running: it reads the log after its writes
	}
	defer c.mu.Unlock()
	if c.gone || !c.direct || c.pending != nil || c.s.seq.Load() > c.cursor+smallBatch || !c.rawReady() {
		return false
	}
	buf, last, err := c.s.log.Read(c.cursor, c.ownBuf(), maxBatch)
	if err != nil || len(buf) == chunkRoom {
		c.putBatch(nil, buf)
		return err == nil
	}
	buf, i := chunk(buf)
	c.putBatch(nil, buf[:len(buf)-chunkTail])
	// The deadline moves before the write, as for the loop's writes: after
	// a silence longer than LASTEVENT_WRITE_TIMEOUT the old one has passed,
	// and RawConn.Write would refuse to write at all.
	c.touch()
	n, errno, err := c.raw.write(buf[i:]) // one non-blocking write system call
	if err != nil || errno != 0 || n == 0 {
		return false // EAGAIN: the loop waits for room; an error: the loop meets it too
	}
	if i+n < len(buf) {
		c.pending = buf[i+n:]
	}
	c.advance(last)
	// A batch ends at maxBatch: frames after last (a small one behind a big
	// one) are the loop's. seq moves only on the stream's goroutine: called
	// there this is exact; a sweeper may see frames published since, and
	// then wakes the loop for them, which is only a wake-up too many.
	return c.pending == nil && last == c.s.seq.Load()
}

// writePending writes what offer's write left of a chunk.
func (c *client) writePending() (string, error) {
	if c.pending == nil {
		return "", nil
	}
	c.touch()
	_, err := c.conn.Write(c.pending)
	c.pending = nil
	if err != nil {
		return c.writeFailed(err), err
	}
	return "", nil
}

// rawReady gets the connection's file descriptor for offer, once.
func (c *client) rawReady() bool {
	if c.raw == nil && !c.noRaw {
		c.raw = newRawSock(c.conn)
		c.noRaw = c.raw == nil
	}
	return c.raw != nil
}

// touch notes a write: heartbeats are timed from the last one, and the write
// deadline is moved only when a quarter of it has passed (each write still
// gets at least three quarters of LASTEVENT_WRITE_TIMEOUT): no timer work per
// frame.
func (c *client) touch() {
	now := time.Now()
	c.lastWrite = now
	if timeout := c.s.hub.cfg.WriteTimeout; c.conn != nil && now.Sub(c.deadlineSet) > timeout/4 {
		_ = c.conn.SetWriteDeadline(now.Add(timeout))
		c.deadlineSet = now
	}
}

// isTimeout reports whether err is a deadline that passed (a net.Error
// with Timeout).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *client) writeFailed(err error) string {
	if isTimeout(err) {
		c.s.hub.metrics.clientsDroppedSlow.Inc()
		return outcomeSlow
	}
	c.s.hub.metrics.clientsGone.Inc()
	return outcomeGone
}

// heartbeatDue runs on the timer's own goroutine.
func (c *client) heartbeatDue() {
	c.hbDue.Store(true)
	c.notify()
}

// heartbeat writes a comment after LASTEVENT_HEARTBEAT of silence and sets
// the timer for the next one.
func (c *client) heartbeat(w io.Writer) (string, error) {
	c.hbDue.Store(false)
	every := c.s.hub.cfg.Heartbeat
	if idle := time.Since(c.lastWrite); idle < every {
		c.hb.Reset(every - idle)
		return "", nil
	}
	if o, err := c.write(w, heartbeat); err != nil {
		return o, err
	}
	c.s.hub.metrics.heartbeats.Inc()
	c.hb.Reset(every)
	return "", nil
}

// notify wakes the loop; a wake already pending is enough.
func (c *client) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closed reports whether ch is closed, without blocking and without taking
// the channel's lock while it is open (a nil ch is never closed).
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// watched holds the streams that have a watcher: one goroutine per stream
// (not per client) waiting for the stream to end or the server to shut down,
// which then wakes every client of the stream.
var watched sync.Map // *stream -> struct{}

// watch makes sure c's stream has a watcher. c is already attached (addSub),
// and the loop looks at both channels after watch and after every wake, so no
// end is missed: the watcher wakes every client attached when it fires, and a
// client attached later sees the closed channel itself (a finished stream
// attaches no one).
func watch(c *client) {
	s := c.s
	if _, loaded := watched.LoadOrStore(s, struct{}{}); loaded {
		return
	}
	go func(shutdown <-chan struct{}) {
		select {
		case <-s.done:
		case <-shutdown:
		}
		watched.Delete(s)
		s.mu.Lock()
		for _, x := range s.subs {
			x.notify()
		}
		s.mu.Unlock()
	}(c.shutdown)
}
