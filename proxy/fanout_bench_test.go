package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
	"github.com/rs/zerolog"
)

// newBenchStream is a stream without an upstream: the benchmark plays the
// reader goroutine's part (encode once, append, wake) and the subscribers'
// (copy everything after the cursor into the write buffer).
func newBenchStream(subs int) (*stream, []*client) {
	cfg := &Config{BufferFrames: 1000, MaxMemory: 256 << 20, Heartbeat: time.Hour, WriteTimeout: time.Hour}
	h := &Hub{cfg: cfg, log: zerolog.Nop(), gens: replay.NewGenerator(), budget: replay.NewBudget(cfg.MaxMemory)}
	h.metrics = newMetrics(h)
	s := &stream{hub: h, gen: h.gens.Next(), log: replay.NewRing(cfg.BufferFrames, h.budget)}
	clients := make([]*client, subs)
	for i := range clients {
		clients[i] = &client{s: s, wake: make(chan struct{}, 1), buf: make([]byte, 0, maxBatch)}
		s.subs = append(s.subs, clients[i])
	}
	s.wakeDirty.Store(true)
	return s, clients
}

var benchFrame = &frame.Frame{Data: []byte(`{"n":12345,"payload":"0123456789012345678901234567890123456789012345678901234567890123456789"}`), Retry: -1, Dispatch: true}

// publishOne is the reader goroutine's work for one upstream frame.
func publishOne(s *stream) {
	seq := s.seq.Load() + 1
	s.idText = s.id(seq).AppendText(s.idText[:0])
	s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, benchFrame)
	s.publish(seq, "")
	s.flushStage() // the parser's hook before its next upstream read
}

// BenchmarkFanout: one frame to N subscribers; ns/op is per delivery. These
// clients have no loop, so offers fail and every client is woken: by the
// stream's goroutine (1 subscriber) or by the sweepers (more than inlineMax).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			s, clients := newBenchStream(n)
			defer s.sweep.stop()
			b.ReportAllocs()
			b.ResetTimer()
			delivered := 0
			for delivered < b.N {
				publishOne(s)
				for _, c := range clients {
					<-c.wake
					var err error
					c.buf, c.cursor, err = s.log.Read(c.cursor, c.buf[:0], maxBatch)
					if err != nil || len(c.buf) == 0 {
						b.Fatal("nothing read", err)
					}
					delivered++
				}
			}
		})
	}
}

// BenchmarkBatchRead: a subscriber 100 frames behind copies them in batches of
// whole frames (what a reconnecting client's first writes cost).
func BenchmarkBatchRead(b *testing.B) {
	s, _ := newBenchStream(0)
	for range 1000 {
		publishOne(s)
	}
	buf := make([]byte, 0, maxBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		cursor := s.seq.Load() - 100
		for cursor < s.seq.Load() {
			var err error
			buf, cursor, err = s.log.Read(cursor, buf[:0], maxBatch)
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// loopClient is a client of a bench stream running its real write loop over
// a loopback TCP connection, behind a chunked writer as fasthttp's; the peer
// decodes the chunks and reports the data bytes of each on got. stop ends the
// loop (the stream's done) and waits for it.
type loopClient struct {
	c      *client
	peer   net.Conn // the reading end
	got    chan int
	chunks chan []byte // a copy of every chunk's data, when newLoopClient was asked to keep them
	stop   func()
}

// chunkWriter frames each Write as one HTTP/1.1 chunk in one write, as
// fasthttp's writer does for a body stream.
type chunkWriter struct {
	conn net.Conn
	buf  []byte
}

func (cw *chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	cw.buf = strconv.AppendInt(cw.buf[:0], int64(len(p)), 16)
	cw.buf = append(cw.buf, "\r\n"...)
	cw.buf = append(cw.buf, p...)
	cw.buf = append(cw.buf, "\r\n"...)
	_, err := cw.conn.Write(cw.buf)
	return len(p), err
}

// tcpPair gives both ends of a real TCP connection on 127.0.0.1: the
// dialled one and the accepted one.
func tcpPair(tb testing.TB) (dialled, accepted net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	dialled, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	accepted, err = ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	return dialled, accepted
}

// attachTestClient attaches a client writing to conn, its cursor at from
// (the frames after it are its), as Hub.attach does for a live client.
func attachTestClient(s *stream, conn net.Conn, from uint64) *client {
	c := &client{s: s, wake: make(chan struct{}, 1), conn: conn, cursor: from, first: appendPreamble(nil, 3000)}
	s.mu.Lock()
	s.subs = append(s.subs, c)
	s.mu.Unlock()
	s.wakeDirty.Store(true)
	return c
}

// The client's cursor is from: the frames after it are its.
func newLoopClient(tb testing.TB, s *stream, from uint64, keep bool) *loopClient {
	tb.Helper()
	peer, conn := tcpPair(tb)
	if s.done == nil {
		s.done = make(chan struct{})
	}
	c := attachTestClient(s, conn, from)
	preamble := len(c.first)
	lc := &loopClient{c: c, peer: peer, got: make(chan int, 64)}
	if keep {
		lc.chunks = make(chan []byte, 1024)
	}
	go func() {
		defer close(lc.got)
		br := bufio.NewReader(peer)
		buf := make([]byte, 1<<20)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			n := 0
			for _, d := range bytes.TrimSpace(line) {
				n = n<<4 | int(hexVal(d))
			}
			if _, err := io.ReadFull(br, buf[:n+2]); err != nil || string(buf[n:n+2]) != "\r\n" {
				return
			}
			if lc.chunks != nil {
				lc.chunks <- append([]byte(nil), buf[:n]...)
			}
			lc.got <- n
		}
	}()
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_, _ = c.loop(&chunkWriter{conn: conn})
	}()
	lc.stop = func() {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
		drained := make(chan struct{})
		go func() { // the peer may be blocked handing over chunks nobody reads
			defer close(drained)
			for {
				select {
				case _, ok := <-lc.got:
					if !ok {
						return
					}
				case <-lc.chunks:
				}
			}
		}()
		<-ended
		conn.Close()
		peer.Close()
		<-drained
	}
	lc.recv(tb, preamble)
	return lc
}

func hexVal(d byte) byte {
	if d >= 'a' {
		return d - 'a' + 10
	}
	return d - '0'
}

// recv waits until the peer got n more data bytes.
func (lc *loopClient) recv(tb testing.TB, n int) {
	for n > 0 {
		k, ok := <-lc.got
		if !ok {
			tb.Fatal("connection closed")
		}
		n -= k
	}
}

// recvDrain forgets the byte counts of the chunks read so far (a test that
// reads lc.chunks does not need them).
func (lc *loopClient) recvDrain() {
	for {
		select {
		case <-lc.got:
		default:
			return
		}
	}
}

// startLiveLoop starts a client's loop at the head of a bench stream and
// gets one frame through it; size is the bytes of a published frame.
func startLiveLoop(tb testing.TB) (*stream, *loopClient, int) {
	s, _ := newBenchStream(0)
	lc := newLoopClient(tb, s, s.seq.Load(), false)
	publishOne(s)
	size := len(s.scratch)
	lc.recv(tb, size)
	return s, lc, size
}

// BenchmarkClientLoop: one frame published and written by the client's loop
// to a loopback socket (wake, read from the log, write system call, the
// peer's read); ns/op is per frame.
func BenchmarkClientLoop(b *testing.B) {
	s, lc, size := startLiveLoop(b)
	defer func() {
		b.StopTimer() // the teardown's allocations are not the loop's
		lc.stop()
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		publishOne(s)
		lc.recv(b, size)
	}
}

func appendEventForBench(dst, id []byte) []byte { return frame.AppendEvent(dst, id, benchFrame) }

// BenchmarkFanoutLoops: one frame published to N subscribers with real
// loops on loopback sockets, and read by their peers (the stream's goroutine
// offers for 4, its sweepers for 100 and 1000); ns/op is per delivery, the
// peers' reads included.
func BenchmarkFanoutLoops(b *testing.B) {
	for _, n := range []int{4, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			s, _ := newBenchStream(0)
			lcs := make([]*loopClient, n)
			for i := range lcs {
				lcs[i] = newLoopClient(b, s, 0, false)
			}
			defer func() {
				b.StopTimer() // the teardown's allocations are not the fan-out's
				s.sweep.stop()
				for _, lc := range lcs {
					lc.stop()
				}
			}()
			publishOne(s)
			size := len(s.scratch)
			for _, lc := range lcs {
				lc.recv(b, size)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for delivered := 0; delivered < b.N; delivered += n {
				publishOne(s)
				for _, lc := range lcs {
					lc.recv(b, size)
				}
			}
		})
	}
}
