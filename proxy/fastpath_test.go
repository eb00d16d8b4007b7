package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/replay"
)

// chunkPeer is the reading end of a client's connection: it decodes the
// chunks (as a browser's HTTP stack would) and checks that each holds whole
// frames or one heartbeat, and that nothing follows the terminating chunk.
type chunkPeer struct {
	mu        sync.Mutex
	data      []byte // every frame byte, in order, heartbeats left out
	heartbeat int
	bad       string // the first framing fault
	ended     bool   // the terminating chunk arrived
	after     int    // bytes after the terminating chunk
	closed    chan struct{}
}

func (p *chunkPeer) fault(f string, args ...any) {
	p.mu.Lock()
	if p.bad == "" {
		p.bad = fmt.Sprintf(f, args...)
	}
	p.mu.Unlock()
}

func readPeer(conn net.Conn, slow bool) *chunkPeer {
	p := &chunkPeer{closed: make(chan struct{})}
	go func() {
		defer close(p.closed)
		var r io.Reader = conn
		if slow {
			r = &slowReader{r: conn}
		}
		br := bufio.NewReaderSize(r, 512)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "closed") {
					p.fault("reading a chunk size line: %v (%.40q)", err, line)
				}
				return
			}
			s := strings.TrimRight(string(line), "\r\n")
			var n int
			if _, err := fmt.Sscanf(s, "%x", &n); err != nil {
				p.fault("bad chunk size line %q", line)
				return
			}
			p.mu.Lock()
			ended := p.ended
			p.mu.Unlock()
			if ended {
				p.mu.Lock()
				p.after += len(line)
				p.mu.Unlock()
				p.fault("%d bytes after the terminating chunk: %q", len(line), line)
			}
			if n == 0 {
				crlf := make([]byte, 2)
				if _, err := io.ReadFull(br, crlf); err != nil {
					return
				}
				p.mu.Lock()
				p.ended = true
				p.mu.Unlock()
				continue
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(br, buf); err != nil {
				if !strings.Contains(err.Error(), "closed") {
					p.fault("reading a chunk of %d bytes: %v", n, err)
				}
				return
			}
			if string(buf[n:]) != "\r\n" {
				p.fault("chunk of %d bytes not followed by CRLF: %q", n, buf[max(0, n-20):])
				return
			}
			ch := buf[:n]
			p.mu.Lock()
			switch {
			case bytes.Equal(ch, heartbeat):
				p.heartbeat++
			case bytes.HasPrefix(ch, []byte("retry:")):
				// the preamble
			case bytes.HasPrefix(ch, []byte("id: ")) && bytes.HasSuffix(ch, []byte("\n\n")):
				p.data = append(p.data, ch...)
			default:
				if p.bad == "" {
					p.bad = fmt.Sprintf("chunk %.60q…%q holds no whole frames", ch, ch[max(0, len(ch)-20):])
				}
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// slowReader reads in small pieces with pauses, so the client's socket
// fills and writes go out in part.
type slowReader struct {
	r io.Reader
	n int
}

func (s *slowReader) Read(b []byte) (int, error) {
	s.n++
	if s.n%8 == 0 {
		time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
	}
	return s.r.Read(b[:min(len(b), 1+rand.IntN(3000))])
}

// waitEnd waits up to 5 s for the terminating chunk: the peer reads in its
// own time, which on a loaded machine can be a while.
func (p *chunkPeer) waitEnd() {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, _, ended, _ := p.snapshot(); ended {
			return
		}
	}
}

func (p *chunkPeer) snapshot() (data []byte, bad string, ended bool, after int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.data...), p.bad, p.ended, p.after
}

// fpLoop runs a client's real loop on conn behind a chunkWriter; when
// the loop returns it writes the terminating chunk, as fasthttp does.
type fpLoop struct {
	c    *client
	conn net.Conn
	peer net.Conn
	p    *chunkPeer
	out  chan string
}

func startFPLoop(t *testing.T, s *stream, from uint64, slow bool, sndbuf int) *fpLoop {
	t.Helper()
	peer, conn := tcpPair(t)
	if sndbuf > 0 {
		_ = conn.(*net.TCPConn).SetWriteBuffer(sndbuf)
		_ = peer.(*net.TCPConn).SetReadBuffer(4 * sndbuf)
	}
	c := attachTestClient(s, conn, from)
	rl := &fpLoop{c: c, conn: conn, peer: peer, p: readPeer(peer, slow), out: make(chan string, 1)}
	go func() {
		cw := &chunkWriter{conn: conn}
		o, err := c.loop(cw)
		if err == nil {
			_, _ = conn.Write([]byte("0\r\n\r\n"))
		}
		c.Close()
		rl.out <- o
	}()
	t.Cleanup(func() { conn.Close(); peer.Close() })
	return rl
}

// declineOffers makes every offer to the client fail (as for a connection
// without a file descriptor): the stream and the sweepers only wake its
// loop, which writes everything itself.
func (l *fpLoop) declineOffers() {
	l.c.mu.Lock()
	l.c.noRaw = true
	l.c.mu.Unlock()
}

// fpPublish is the stream goroutine's work for one upstream read that
// brought the frames of the given data sizes; it returns their bytes.
func fpPublish(s *stream, sizes ...int) []byte {
	var all []byte
	for _, n := range sizes {
		seq := s.seq.Load() + 1
		s.idText = s.id(seq).AppendText(s.idText[:0])
		f := &frame.Frame{Data: bytes.Repeat([]byte{byte('a' + seq%26)}, n), Retry: -1, Dispatch: true}
		s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, f)
		all = append(all, s.scratch...)
		s.publish(seq, "")
	}
	s.flushStage()
	return all
}

func randSize(r *rand.Rand) int {
	switch r.IntN(20) {
	case 0:
		return maxBatch + r.IntN(3*maxBatch) // larger than a batch
	case 1, 2:
		return 5000 + r.IntN(20000)
	default:
		return r.IntN(300)
	}
}

// TestFastPathStress: frames of random sizes, in bursts, to 1 and 4
// clients (the stream's goroutine offers), 6 and 70 (one sweeper, and
// several: 70 is more than sweepPer) and 6 whose offers always fail (the
// loops are woken and drain), whose peers read slowly through small socket
// buffers, with a heartbeat every millisecond. Every client gets exactly the
// published bytes, in order, every chunk holds whole frames or one
// heartbeat, the loops end with the stream and nothing follows the
// terminating chunk.
func TestFastPathStress(t *testing.T) {
	for _, tc := range []struct {
		clients, bursts, div int // div scales the frame sizes down
		wakeOnly             bool
	}{
		{1, 250, 1, false},
		{4, 250, 1, false},
		{6, 250, 1, false},
		{6, 250, 1, true},
		{70, 100, 8, false},
	} {
		t.Run(fmt.Sprintf("clients=%d,wakeOnly=%v", tc.clients, tc.wakeOnly), func(t *testing.T) {
			n := tc.clients
			s := newStressStream()
			loops := make([]*fpLoop, n)
			for i := range loops {
				loops[i] = startFPLoop(t, s, 0, i%2 == 0, 16<<10)
				if tc.wakeOnly {
					loops[i].declineOffers()
				}
			}
			r := rand.New(rand.NewPCG(uint64(n), 7))
			var want []byte
			partial := 0 // times a partly written chunk was seen pending: the path is exercised
			for i := 0; i < tc.bursts; i++ {
				sizes := make([]int, 1+r.IntN(4))
				for j := range sizes {
					sizes[j] = randSize(r) / tc.div
				}
				want = append(want, fpPublish(s, sizes...)...)
				for _, l := range loops {
					if l.c.mu.TryLock() {
						if l.c.pending != nil {
							partial++
						}
						l.c.mu.Unlock()
					}
				}
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
				}
			}
			t.Logf("a partly written chunk seen pending %d times", partial)
			// Wait until every peer has everything, then end the stream.
			deadline := time.Now().Add(20 * time.Second)
			for li, l := range loops {
				for {
					got, bad, _, _ := l.p.snapshot()
					if bad != "" {
						t.Fatalf("client %d: framing fault after %d good bytes: %s", li, len(got), bad)
					}
					if len(got) >= len(want) {
						break
					}
					if time.Now().After(deadline) {
						l.c.mu.Lock()
						cur, pend := l.c.cursor, len(l.c.pending)
						l.c.mu.Unlock()
						t.Fatalf("peer has %d of %d bytes after 20 s (cursor %d of %d, pending %d): a lost wake-up?", len(got), len(want), cur, s.seq.Load(), pend)
					}
					time.Sleep(time.Millisecond)
				}
			}
			endStream(s)
			for i, l := range loops {
				select {
				case o := <-l.out:
					if o != outcomeEnded {
						t.Errorf("client %d ended with %q, want %q", i, o, outcomeEnded)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("client %d: loop did not end with the stream", i)
				}
			}
			// Offers after the loops ended must write nothing.
			for range 5 {
				fpPublish(s, 10)
			}
			for _, l := range loops {
				l.p.waitEnd()
			}
			time.Sleep(50 * time.Millisecond)
			for i, l := range loops {
				got, bad, ended, after := l.p.snapshot()
				if bad != "" {
					t.Errorf("client %d: %s", i, bad)
				}
				if !bytes.Equal(got, want) {
					j := 0
					for j < min(len(got), len(want)) && got[j] == want[j] {
						j++
					}
					t.Errorf("client %d: got %d bytes, want %d; first difference at %d: got %.80q want %.80q", i, len(got), len(want), j, got[j:], want[j:])
				}
				if !ended || after > 0 {
					t.Errorf("client %d: terminating chunk seen %v, %d bytes after it", i, ended, after)
				}
				l.p.mu.Lock()
				hb := l.p.heartbeat
				l.p.mu.Unlock()
				t.Logf("client %d: %d bytes, %d heartbeats", i, len(got), hb)
			}
		})
	}
}

// TestOfferRacesLoopEnd: the stream keeps publishing (offering) while
// the client's loop ends because the stream closes; after the loop's
// terminating chunk, not one byte may arrive (offer must see gone).
func TestOfferRacesLoopEnd(t *testing.T) {
	for round := 0; round < 200; round++ {
		s, _ := newBenchStream(0)
		s.done, s.stop = make(chan struct{}), make(chan struct{})
		l := startFPLoop(t, s, 0, false, 0)
		stop := make(chan struct{})
		pubDone := make(chan struct{})
		go func() {
			defer close(pubDone)
			for {
				select {
				case <-stop:
					return
				default:
				}
				fpPublish(s, 1+rand.IntN(200))
			}
		}()
		time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		close(s.done)
		l.c.notify()
		select {
		case <-l.out:
		case <-time.After(10 * time.Second):
			t.Fatal("loop did not end")
		}
		time.Sleep(2 * time.Millisecond)
		close(stop)
		<-pubDone
		l.p.waitEnd() // then give stray bytes time to follow
		time.Sleep(5 * time.Millisecond)
		_, bad, ended, after := l.p.snapshot()
		if bad != "" || !ended || after > 0 {
			t.Fatalf("round %d: fault %q, ended %v, %d bytes after the end", round, bad, ended, after)
		}
		l.conn.Close()
		l.peer.Close()
	}
}

// TestClientLoopLeavesNoGoroutines: clients that vanish (the peer closes) and a
// stream that ends leave no goroutine behind (loops, watchers, timers, and
// with 70 clients the sweepers).
func TestClientLoopLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for round := range 20 {
		s, _ := newBenchStream(0)
		s.hub.cfg.Heartbeat = 5 * time.Millisecond
		s.done, s.stop = make(chan struct{}), make(chan struct{})
		var loops []*fpLoop
		for range []int{3, 70}[round%2] {
			loops = append(loops, startFPLoop(t, s, 0, false, 0))
		}
		fpPublish(s, 100)
		loops[0].peer.Close() // vanishes: the next writes fail
		for range 50 {
			fpPublish(s, 100)
			time.Sleep(100 * time.Microsecond)
		}
		endStream(s)
		for _, l := range loops {
			select {
			case <-l.out:
			case <-time.After(5 * time.Second):
				t.Fatal("a loop did not end")
			}
			l.conn.Close()
			l.peer.Close()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func newFPRing(cfg *Config) *replay.Ring {
	return replay.NewRing(cfg.BufferFrames, replay.NewBudget(cfg.MaxMemory))
}

// TestStreamEndsWhileChunkPartlyWritten: the stream ends while offers' chunks are only
// partly written (big frames, a slow reader): each loop finishes the chunk,
// delivers the rest of the log, then ends; nothing is cut or lost.
func TestStreamEndsWhileChunkPartlyWritten(t *testing.T) {
	for round := 0; round < 10; round++ {
		s := newStressStream()
		loops := []*fpLoop{startFPLoop(t, s, 0, true, 16<<10), startFPLoop(t, s, 0, true, 16<<10)}
		var want []byte
		r := rand.New(rand.NewPCG(uint64(round), 9))
		for i := 0; i < 40; i++ {
			want = append(want, fpPublish(s, 20000+r.IntN(100000))...)
			time.Sleep(time.Duration(r.IntN(100)) * time.Microsecond)
		}
		endStream(s)
		for i, l := range loops {
			select {
			case o := <-l.out:
				if o != outcomeEnded {
					t.Fatalf("client %d ended with %q", i, o)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("client %d did not end", i)
			}
		}
		for i, l := range loops {
			deadline := time.Now().Add(30 * time.Second)
			for {
				got, bad, ended, after := l.p.snapshot()
				if bad != "" {
					t.Fatalf("round %d client %d: %s", round, i, bad)
				}
				if ended {
					if !bytes.Equal(got, want) || after > 0 {
						t.Fatalf("round %d client %d: %d bytes of %d before the end, %d after", round, i, len(got), len(want), after)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("round %d client %d: no terminating chunk (%d of %d bytes)", round, i, len(got), len(want))
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
}

// TestClientChurnAcrossInlineMax: clients attach at the head and leave while frames flow,
// so the stream crosses inlineMax both ways (up to 9 clients), and sweepPer
// (up to 150: the sweepers' parts change), and its wake list is refreshed
// often; every client gets exactly the frames after its cursor, in order.
func TestClientChurnAcrossInlineMax(t *testing.T) {
	for _, tc := range []struct {
		members, join, leave, iters, div int // join, leave: one in that many rounds
	}{
		{9, 50, 120, 3000, 4},
		{150, 4, 12, 1500, 64},
	} {
		t.Run(fmt.Sprintf("members=%d", tc.members), func(t *testing.T) {
			clientChurn(t, tc.members, tc.join, tc.leave, tc.iters, tc.div)
		})
	}
}

func clientChurn(t *testing.T, most, join, leave, iters, div int) {
	s, _ := newBenchStream(0)
	cfg := *s.hub.cfg
	cfg.BufferFrames = 1 << 20
	cfg.Heartbeat = 2 * time.Millisecond
	cfg.WriteTimeout = 20 * time.Second
	cfg.Linger = time.Hour
	s.hub.cfg = &cfg
	s.log = newFPRing(&cfg)
	s.done, s.stop = make(chan struct{}), make(chan struct{})
	type member struct {
		l    *fpLoop
		from int // offset in all where its frames begin
	}
	var all []byte
	var members []member
	r := rand.New(rand.NewPCG(3, 4))
	crossed := 0 // rounds with more than sweepPer members
	for i := 0; i < iters; i++ {
		if r.IntN(join) == 0 && len(members) < most {
			// Attach at the head, as attach does for a live client: the
			// stream goroutine is this one, so seq is exact.
			members = append(members, member{l: startFPLoop(t, s, s.seq.Load(), r.IntN(2) == 0, 32<<10), from: len(all)})
		}
		if r.IntN(leave) == 0 && len(members) > 0 {
			// One leaves: its peer closes; its loop finds out on a write.
			k := r.IntN(len(members))
			members[k].l.peer.Close()
			members = append(members[:k], members[k+1:]...)
		}
		if len(members) > sweepPer {
			crossed++
		}
		sizes := make([]int, 1+r.IntN(3))
		for j := range sizes {
			sizes[j] = randSize(r) / div
		}
		all = append(all, fpPublish(s, sizes...)...)
		if r.IntN(8) == 0 {
			time.Sleep(time.Duration(r.IntN(100)) * time.Microsecond)
		}
	}
	if most > sweepPer && crossed == 0 {
		t.Fatalf("never more than %d members: the test does not reach several sweepers", sweepPer)
	}
	for i, m := range members {
		want := all[m.from:]
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, bad, _, _ := m.l.p.snapshot()
			if bad != "" {
				t.Fatalf("member %d: %s", i, bad)
			}
			if len(got) >= len(want) {
				if !bytes.Equal(got, want) {
					t.Fatalf("member %d: got %d bytes, want %d (or other bytes)", i, len(got), len(want))
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d: %d of %d bytes after 30 s", i, len(got), len(want))
			}
			time.Sleep(time.Millisecond)
		}
	}
	endStream(s)
}

// TestOwnBufferGivesUpBigFrame: one big frame (200 KiB, under
// MAX_FRAME_BYTES' 1 MiB default) read by a caught-up client grows the
// client's own buffer to its size, and putBatch keeps anything up to
// 4*maxBatch (256 KiB) for the client's life: later small frames never
// shrink it. On a shared stream that is ~200 KiB per client, outside
// LASTEVENT_MAX_MEMORY (10,000 clients: ~2 GB), against the ~14 KiB per
// connection the README measures. All paths: offer by the stream's
// goroutine (4 clients), by a sweeper (6), and the loop's drain (6 whose
// offers fail, woken only).
func TestOwnBufferGivesUpBigFrame(t *testing.T) {
	for _, tc := range []struct {
		n        int
		wakeOnly bool
	}{{4, false}, {6, false}, {6, true}} {
		t.Run(fmt.Sprintf("clients=%d,wakeOnly=%v", tc.n, tc.wakeOnly), func(t *testing.T) {
			s, _ := newBenchStream(0)
			s.done, s.stop = make(chan struct{}), make(chan struct{})
			loops := make([]*fpLoop, tc.n)
			for i := range loops {
				loops[i] = startFPLoop(t, s, 0, false, 0)
				if tc.wakeOnly {
					loops[i].declineOffers()
				}
			}
			var want []byte
			await := func() {
				for i, l := range loops {
					deadline := time.Now().Add(10 * time.Second)
					for {
						got, bad, _, _ := l.p.snapshot()
						if bad != "" {
							t.Fatal(bad)
						}
						if len(got) >= len(want) {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("client %d: %d of %d bytes", i, len(got), len(want))
						}
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			// Each frame reaches caught-up clients (their own buffers, not a
			// borrowed batch buffer).
			want = append(want, fpPublish(s, 200<<10)...)
			await()
			for range 50 {
				want = append(want, fpPublish(s, 100)...)
				await()
			}
			for i, l := range loops {
				l.c.mu.Lock()
				kept := cap(l.c.buf)
				l.c.mu.Unlock()
				if kept > maxBatch {
					t.Errorf("client %d: caught up, after 50 frames of 100 bytes, still holds a %d KiB buffer from one 200 KiB frame", i, kept>>10)
				}
			}
			// A client that keeps getting big frames keeps its buffer: no
			// allocation per frame.
			for range 5 {
				want = append(want, fpPublish(s, 30<<10)...)
				await()
			}
			for i, l := range loops {
				l.c.mu.Lock()
				kept := cap(l.c.buf)
				l.c.mu.Unlock()
				if kept < 30<<10 {
					t.Errorf("client %d: getting 30 KiB frames, keeps a %d-byte buffer: it allocates one per frame", i, kept)
				}
			}
			endStream(s)
		})
	}
}

// newStressStream is a stream for the stress tests: a ring that keeps every
// frame, a heartbeat every millisecond, a long write timeout.
func newStressStream() *stream {
	s, _ := newBenchStream(0)
	cfg := *s.hub.cfg
	cfg.BufferFrames = 1 << 20
	cfg.Heartbeat = time.Millisecond
	cfg.WriteTimeout = 20 * time.Second
	s.hub.cfg = &cfg
	s.log = newFPRing(&cfg)
	s.done, s.stop = make(chan struct{}), make(chan struct{})
	return s
}

// endStream ends the stream as its run's finish does (the sweepers stop,
// done closes) and wakes its clients, as its watcher does. The caller plays
// the stream's goroutine.
func endStream(s *stream) {
	s.sweep.stop()
	close(s.done)
	s.mu.Lock()
	for _, c := range s.subs {
		c.notify()
	}
	s.mu.Unlock()
}

// TestOfferAfterSilence: a caught-up client that got nothing for longer
// than LASTEVENT_WRITE_TIMEOUT (with the defaults, 10 s of a 15 s heartbeat)
// still gets the next frame from offer: the write deadline set for its last
// write has passed, and offer moves it before writing, as the loop does (it
// moved it only after a write, so the raw write met the old deadline and
// every such frame took the loop's wake-up instead).
func TestOfferAfterSilence(t *testing.T) {
	s, _ := newBenchStream(0)
	s.hub.cfg.WriteTimeout = 100 * time.Millisecond
	s.done, s.stop = make(chan struct{}), make(chan struct{})
	l := startFPLoop(t, s, 0, false, 0)
	defer endStream(s)
	want := fpPublish(s, 10)
	for i := range 3 {
		time.Sleep(150 * time.Millisecond) // the deadline passes
		seq := s.seq.Load() + 1
		s.idText = s.id(seq).AppendText(s.idText[:0])
		s.scratch = frame.AppendEvent(s.scratch[:0], s.idText, &frame.Frame{Data: []byte("after silence"), Retry: -1, Dispatch: true})
		want = append(want, s.scratch...)
		s.publish(seq, "")
		s.wakeDue = false // offered here, not by flushStage
		if !l.c.offer() {
			t.Fatalf("frame %d after %v of silence: offer declined (write deadline %v)", i+1, 150*time.Millisecond, s.hub.cfg.WriteTimeout)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, bad, _, _ := l.p.snapshot()
		if bad != "" {
			t.Fatal(bad)
		}
		if bytes.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer has %q, want %q", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}
