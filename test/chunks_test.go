package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
)

// This file pins how frames map onto HTTP/1.1 chunks, reading the chunked
// encoding off the socket by hand. It also holds the raw-socket client
// (rawSSE) that the other wire tests use.

// rawFrame is a copy of one parsed frame (frame.Frame points into the
// parser's buffers).
type rawFrame struct {
	ID       string
	HasID    bool
	Event    string
	Data     string
	Retry    int64
	Dispatch bool
}

// Type is the event type an EventSource dispatches the frame as.
func (f rawFrame) Type() string {
	if f.Event == "" {
		return "message"
	}
	return f.Event
}

func (f rawFrame) String() string {
	return fmt.Sprintf("{id=%q event=%q data=%q retry=%d dispatch=%v}", f.ID, f.Event, f.Data, f.Retry, f.Dispatch)
}

func copyFrame(f *frame.Frame) rawFrame {
	return rawFrame{ID: string(f.ID), HasID: f.HasID, Event: string(f.Event), Data: string(f.Data), Retry: f.Retry, Dispatch: f.Dispatch}
}

// parseAll parses b as a whole stream with frame.Parser (maxFrame bytes per
// frame) and returns every frame it yields; it fails on any error but EOF.
func parseAll(b []byte, maxFrame int) ([]rawFrame, error) {
	p := frame.NewParser(bytes.NewReader(b), maxFrame)
	var out []rawFrame
	for {
		f, err := p.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, copyFrame(f))
	}
}

// rawSSE is an HTTP/1.1 exchange over a raw TCP socket. The status line and
// the headers are read with textproto; a chunked body is decoded here, chunk
// by chunk, so tests can see exactly what each chunk held.
type rawSSE struct {
	t       testing.TB
	conn    net.Conn
	br      *bufio.Reader
	Proto   string
	Status  int
	Header  textproto.MIMEHeader
	Chunked bool
	Body    []byte // the whole body of a response that is not chunked

	mu     sync.Mutex
	chunks [][]byte
	newCh  chan struct{} // signalled on every chunk
	frames chan rawFrameOrErr
	done   chan struct{} // closed when the chunk reader ended
	err    error         // why it ended
}

type rawFrameOrErr struct {
	f   rawFrame
	err error
}

// rawGet sends "GET path" with Accept: text/event-stream and the extra
// headers ("Name: value") to addr (host:port) and reads the response head.
func rawGet(t testing.TB, addr, path string, headers ...string) *rawSSE {
	t.Helper()
	return rawDo(t, addr, "GET "+path+" HTTP/1.1", append([]string{"Accept: text/event-stream"}, headers...), "")
}

// rawDo sends one request (requestLine, headers, body) and reads the
// response head; a chunked body is then read in the background, any other
// body is read whole into Body.
func rawDo(t testing.TB, addr, requestLine string, headers []string, body string) *rawSSE {
	t.Helper()
	r, err := tryRawDo(t, addr, requestLine, headers, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func tryRawDo(t testing.TB, addr, requestLine string, headers []string, body string) (*rawSSE, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	var req strings.Builder
	req.WriteString(requestLine + "\r\nHost: " + addr + "\r\n")
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n" + body)
	if _, err := conn.Write([]byte(req.String())); err != nil {
		conn.Close()
		return nil, err
	}
	r := &rawSSE{t: t, conn: conn, br: bufio.NewReaderSize(conn, 64<<10), newCh: make(chan struct{}, 1),
		frames: make(chan rawFrameOrErr, 1<<16), done: make(chan struct{})}
	t.Cleanup(r.Close)
	if err := r.readHead(); err != nil {
		conn.Close()
		return nil, err
	}
	return r, nil
}

func (r *rawSSE) readHead() error {
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewReader(r.br)
	line, err := tp.ReadLine()
	if err != nil {
		return fmt.Errorf("reading the status line: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	r.Proto = proto
	if r.Status, err = strconv.Atoi(code); err != nil {
		return fmt.Errorf("bad status line %q", line)
	}
	if r.Header, err = tp.ReadMIMEHeader(); err != nil {
		return fmt.Errorf("reading the headers: %w", err)
	}
	r.Chunked = strings.EqualFold(r.Header.Get("Transfer-Encoding"), "chunked")
	if r.Chunked && !strings.HasPrefix(r.Header.Get("Content-Type"), "text/event-stream") {
		// A plain answer passed on as it came: its body, whole.
		close(r.done)
		close(r.frames)
		r.Body, err = io.ReadAll(httputil.NewChunkedReader(r.br))
		return err
	}
	if r.Chunked {
		_ = r.conn.SetReadDeadline(time.Time{})
		pr, pw := io.Pipe()
		go r.readChunks(pw)
		go r.parseFrames(pr)
		return nil
	}
	close(r.done)
	close(r.frames)
	if cl := r.Header.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil {
			return fmt.Errorf("bad Content-Length %q", cl)
		}
		r.Body = make([]byte, n)
		_, err = io.ReadFull(r.br, r.Body)
		return err
	}
	r.Body, err = io.ReadAll(r.br)
	return err
}

// readChunks decodes the chunked body: size line, data, CRLF, until the last
// chunk. Each chunk's data is kept as it came, and fed to the parser.
func (r *rawSSE) readChunks(pw *io.PipeWriter) {
	err := func() error {
		for {
			line, err := r.br.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasSuffix(line, "\r\n") {
				return fmt.Errorf("chunk size line %q does not end with CRLF", line)
			}
			sz, _, _ := strings.Cut(strings.TrimSuffix(line, "\r\n"), ";")
			n, err := strconv.ParseUint(strings.TrimSpace(sz), 16, 31)
			if err != nil {
				return fmt.Errorf("bad chunk size line %q", line)
			}
			if n == 0 {
				return io.EOF // trailers are not read: the test is over
			}
			data := make([]byte, n+2)
			if _, err := io.ReadFull(r.br, data); err != nil {
				return err
			}
			if string(data[n:]) != "\r\n" {
				return fmt.Errorf("chunk of %d bytes not followed by CRLF", n)
			}
			data = data[:n]
			r.mu.Lock()
			r.chunks = append(r.chunks, data)
			r.mu.Unlock()
			select {
			case r.newCh <- struct{}{}:
			default:
			}
			if _, err := pw.Write(data); err != nil {
				return err
			}
		}
	}()
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
	pw.CloseWithError(err)
	close(r.done)
}

func (r *rawSSE) parseFrames(pr io.Reader) {
	p := frame.NewParser(pr, 64<<20)
	for {
		f, err := p.Next()
		if err != nil {
			r.frames <- rawFrameOrErr{err: err}
			close(r.frames)
			return
		}
		r.frames <- rawFrameOrErr{f: copyFrame(f)}
	}
}

// Close drops the connection.
func (r *rawSSE) Close() { r.conn.Close() }

// Chunks returns the data of every chunk read so far.
func (r *rawSSE) Chunks() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.chunks...)
}

// waitChunks waits until at least n chunks arrived, or the body ended, or
// the timeout passed; it returns the chunks read.
func (r *rawSSE) waitChunks(n int, timeout time.Duration) [][]byte {
	deadline := time.After(timeout)
	for {
		if c := r.Chunks(); len(c) >= n {
			return c
		}
		select {
		case <-r.newCh:
		case <-r.done:
			return r.Chunks()
		case <-deadline:
			return r.Chunks()
		}
	}
}

// NextFrame returns the next frame of the body (dispatching or not: a
// retry-only block is a frame; comments are not).
func (r *rawSSE) NextFrame(timeout time.Duration) (rawFrame, error) {
	select {
	case fe, ok := <-r.frames:
		if !ok {
			return rawFrame{}, io.EOF
		}
		return fe.f, fe.err
	case <-time.After(timeout):
		return rawFrame{}, errTimeout
	}
}

// NextEvent returns the next frame that dispatches an event, failing the
// test if none comes in time.
func (r *rawSSE) NextEvent(timeout time.Duration) rawFrame {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := r.NextFrame(time.Until(deadline))
		if err != nil {
			r.t.Fatalf("waiting for an event: %v", err)
		}
		if f.Dispatch {
			return f
		}
	}
}

// eventsUntil collects dispatched frames until one whose data is last.
func (r *rawSSE) eventsUntil(last string, timeout time.Duration) []rawFrame {
	r.t.Helper()
	var out []rawFrame
	deadline := time.Now().Add(timeout)
	for {
		f, err := r.NextFrame(time.Until(deadline))
		if err != nil {
			r.t.Fatalf("waiting for data %q: %v (got %v)", last, err, out)
		}
		if !f.Dispatch {
			continue
		}
		out = append(out, f)
		if f.Data == last {
			return out
		}
	}
}

// checkWholeChunks asserts that every chunk holds whole frames only: it ends
// with a blank line, holds no CR, and parsing it alone gives the same frames
// as parsing the whole body did for those bytes (a cut frame would parse
// differently, or not at all, on its own).
func checkWholeChunks(t testing.TB, chunks [][]byte) {
	t.Helper()
	var all []byte
	var perChunk []rawFrame
	for i, c := range chunks {
		if !bytes.HasSuffix(c, []byte("\n\n")) {
			t.Fatalf("chunk %d (%d bytes) does not end with a blank line: ...%q", i, len(c), tail(c, 80))
		}
		if bytes.IndexByte(c, '\r') >= 0 {
			t.Fatalf("chunk %d holds a CR byte: %q", i, head(c, 200))
		}
		fs, err := parseAll(c, 64<<20)
		if err != nil {
			t.Fatalf("chunk %d does not parse: %v", i, err)
		}
		perChunk = append(perChunk, fs...)
		all = append(all, c...)
	}
	whole, err := parseAll(all, 64<<20)
	if err != nil {
		t.Fatalf("the body does not parse: %v", err)
	}
	if len(whole) != len(perChunk) {
		t.Fatalf("chunks parsed one by one give %d frames, the whole body %d", len(perChunk), len(whole))
	}
	for i := range whole {
		if whole[i] != perChunk[i] {
			t.Fatalf("frame %d differs between per-chunk and whole-body parsing:\n%v\n%v", i, perChunk[i], whole[i])
		}
	}
}

func head(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestChunksHoldWholeFrames: small frames, a 10,000-byte frame and a 200 KiB
// frame, each sent by the upstream in pieces, each arrive in chunks that hold
// whole frames only.
func TestChunksHoldWholeFrames(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MAX_FRAME_BYTES=512KiB", "LASTEVENT_HEARTBEAT=200ms")
	feed := up.Feed("/feed/chunks")
	c := rawGet(t, p.Addr, "/feed/chunks")
	if c.Status != 200 || !c.Chunked {
		t.Fatalf("status %d, chunked %v", c.Status, c.Chunked)
	}
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	big10k := strings.Repeat("0123456789", 1000)
	big200k := strings.Repeat("abcdefghijklmnopqrstuvwxyz012345", 200<<10/32)
	sendPieces := func(s string, piece int) {
		for len(s) > 0 {
			n := min(piece, len(s))
			feed.Send(s[:n])
			s = s[n:]
			time.Sleep(time.Millisecond)
		}
	}
	feed.Send("data: one\n\n")
	sendPieces("event: big\ndata: "+big10k+"\n\n", 3000)
	feed.Send("data: two\n\n")
	sendPieces("data: "+big200k+"\ndata: second line\n\n", 16<<10)
	// A multi-line frame whose lines come in separate pieces.
	sendPieces("data: a\ndata: b\ndata: c\n\n", 4)
	feed.Send("data: end\n\n")

	evs := c.eventsUntil("end", 15*time.Second)
	want := []string{"one", big10k, "two", big200k + "\nsecond line", "a\nb\nc", "end"}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d: %v", len(evs), len(want), evs)
	}
	for i, w := range want {
		if evs[i].Data != w {
			t.Fatalf("event %d: data of %d bytes, want %d bytes (%q...)", i, len(evs[i].Data), len(w), head([]byte(evs[i].Data), 40))
		}
	}
	if evs[1].Event != "big" {
		t.Fatalf("10,000-byte frame lost its type: %v", evs[1].Event)
	}
	chunks := c.Chunks()
	checkWholeChunks(t, chunks)
	// The big frames each went out in one chunk of their own.
	var saw10k, saw200k bool
	for _, ch := range chunks {
		saw10k = saw10k || bytes.Contains(ch, []byte(big10k))
		saw200k = saw200k || bytes.Contains(ch, []byte(big200k))
	}
	if !saw10k || !saw200k {
		t.Fatalf("a big frame is not whole in any chunk (10k %v, 200k %v)", saw10k, saw200k)
	}
}

// TestChunksReplayBatch: after a resume, the frames the client missed come
// several to a chunk, each chunk still holding whole frames only, and they
// are exactly the frames after the resume id.
func TestChunksReplayBatch(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_LINGER=30s")
	feed := up.Feed("/feed/replay")
	c := rawGet(t, p.Addr, "/feed/replay")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("data: 0\n\n")
	first := c.NextEvent(5 * time.Second)
	if first.Data != "0" || !first.HasID {
		t.Fatalf("first event %v", first)
	}
	c.Close()
	const missed = 30
	for i := 1; i <= missed; i++ {
		feed.Send(fmt.Sprintf("event: n\ndata: %d\ndata: line two of %d\n\n", i, i))
	}
	waitFor(t, 5*time.Second, "the proxy to buffer the missed frames", func() bool {
		st := p.state(t)
		return len(st.Streams) == 1 && st.Streams[0].Frames == missed+1
	})
	c2 := rawGet(t, p.Addr, "/feed/replay", "Last-Event-ID: "+first.ID)
	if c2.Status != 200 {
		t.Fatalf("resume status %d", c2.Status)
	}
	evs := c2.eventsUntil(fmt.Sprintf("%d\nline two of %d", missed, missed), 10*time.Second)
	if len(evs) != missed {
		t.Fatalf("replayed %d events, want %d: %v", len(evs), missed, evs)
	}
	prev := first.ID
	for i, ev := range evs {
		if want := fmt.Sprintf("%d\nline two of %d", i+1, i+1); ev.Data != want || ev.Event != "n" {
			t.Fatalf("replayed event %d is %v, want data %q", i, ev, want)
		}
		if !(ev.ID > prev) {
			t.Fatalf("id %q does not follow %q", ev.ID, prev)
		}
		prev = ev.ID
	}
	chunks := c2.Chunks()
	checkWholeChunks(t, chunks)
	most := 0
	for _, ch := range chunks {
		fs, _ := parseAll(ch, 64<<20)
		n := 0
		for _, f := range fs {
			if f.Dispatch {
				n++
			}
		}
		most = max(most, n)
	}
	if most < 2 {
		t.Fatalf("the replay never put several frames in one chunk (%d chunks)", len(chunks))
	}
}

// TestChunksNoCR: an upstream that ends lines with CR or CRLF (and mixes
// them) still gives output with LF line endings only.
func TestChunksNoCR(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL())
	feed := up.Feed("/feed/cr")
	c := rawGet(t, p.Addr, "/feed/cr")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	feed.Send("data: cr1\rdata: cr2\r\r")
	feed.Send("event: crlf\r\ndata: x\r\ndata: y\r\n\r\n")
	feed.Send("retry: 2000\r\ndata: mixed\n\r\n")
	feed.Send("data: split\r")
	time.Sleep(50 * time.Millisecond)
	feed.Send("\n\r")
	time.Sleep(50 * time.Millisecond)
	feed.Send("\ndata: end\r\n\r\n")
	evs := c.eventsUntil("end", 10*time.Second)
	want := []string{"cr1\ncr2", "x\ny", "mixed", "split", "end"}
	if len(evs) != len(want) {
		t.Fatalf("got %v, want data %q", evs, want)
	}
	for i := range want {
		if evs[i].Data != want[i] {
			t.Fatalf("event %d: %v, want data %q", i, evs[i], want[i])
		}
	}
	if evs[1].Event != "crlf" || evs[2].Retry != 2000 {
		t.Fatalf("fields lost: %v %v", evs[1], evs[2])
	}
	chunks := c.Chunks()
	for i, ch := range chunks {
		if bytes.IndexByte(ch, '\r') >= 0 {
			t.Fatalf("chunk %d holds a CR: %q", i, ch)
		}
	}
	checkWholeChunks(t, chunks)
}
