package test

// Helpers shared by the sync, reconnect, modes, chaos, heartbeat, admin and
// shutdown tests: an SSE client that reads the response at the level of HTTP
// chunks (so heartbeats, chunk boundaries and the terminating chunk can be
// seen), a client that never reads, and id arithmetic.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wireKind says what a wireItem is.
type wireKind int

const (
	wireEvent   wireKind = iota // a dispatched event
	wireComment                 // a comment block (heartbeat)
	wireEnd                     // the terminating 0-length chunk: a clean end
	wireErr                     // the connection failed (EOF, reset) before a clean end
)

type wireItem struct {
	kind    wireKind
	ev      event
	comment string
	err     error
}

// wireClient is one SSE request over raw TCP whose chunked body is decoded
// here, not by net/http, so the test sees every chunk as the proxy wrote it.
// Its SSE parsing is deliberately independent of package frame.
type wireClient struct {
	t      testing.TB
	conn   net.Conn
	br     *bufio.Reader
	Status int
	Header http.Header
	Body   []byte // the body of a response that is not a 200 stream

	items    chan wireItem
	done     chan struct{}
	closeOne sync.Once

	mu       sync.Mutex
	chunks   [][]byte // every chunk received, in order
	cutChunk []string // chunks that did not end on a frame boundary

	comments atomic.Int64

	// Parser state, owned by the reader goroutine.
	pending []byte
	lastID  string
	retry   int64
}

// dialWire opens an SSE request; it fails the test when the connection or
// the response head fails.
func dialWire(t testing.TB, base, path string, headers ...string) *wireClient {
	t.Helper()
	c, err := tryDialWire(t, base, path, headers...)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return c
}

func tryDialWire(t testing.TB, base, path string, headers ...string) (*wireClient, error) {
	return tryDialWireSlow(t, base, path, nil, headers...)
}

// throttle slows a client's reads to about Rate bytes a second while Rate
// is above 0; set it to 0 to read at full speed again.
type throttle struct{ Rate atomic.Int64 }

type throttledConn struct {
	net.Conn
	th *throttle
}

func (c throttledConn) Read(p []byte) (int, error) {
	rate := c.th.Rate.Load()
	if rate <= 0 {
		return c.Conn.Read(p)
	}
	if len(p) > 4<<10 {
		p = p[:4<<10]
	}
	n, err := c.Conn.Read(p)
	time.Sleep(time.Duration(int64(n) * int64(time.Second) / rate))
	return n, err
}

// tryDialWireSlow is tryDialWire for a client that reads slowly while th
// says so (nil: at full speed); its socket's receive buffer is small, so the
// proxy's writes wait for it.
func tryDialWireSlow(t testing.TB, base, path string, th *throttle, headers ...string) (*wireClient, error) {
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if th != nil {
		_ = conn.(*net.TCPConn).SetReadBuffer(16 << 10)
		conn = throttledConn{Conn: conn, th: th}
	}
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", path, addr)
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := conn.Write([]byte(req.String())); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(conn, 64<<10)
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the status line: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if err != nil || !strings.HasPrefix(proto, "HTTP/1.") {
		conn.Close()
		return nil, fmt.Errorf("bad status line %q", line)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	c := &wireClient{
		t: t, conn: conn, br: br, Status: status, Header: http.Header(mh),
		items: make(chan wireItem, 1024), done: make(chan struct{}), retry: -1,
	}
	t.Cleanup(c.Close)
	if status != 200 {
		if n, err := strconv.Atoi(c.Header.Get("Content-Length")); err == nil {
			c.Body = make([]byte, n)
			_, _ = io.ReadFull(br, c.Body)
		}
		_ = conn.SetReadDeadline(time.Time{})
		close(c.items)
		return c, nil
	}
	_ = conn.SetReadDeadline(time.Time{})
	if te := c.Header.Get("Transfer-Encoding"); !strings.EqualFold(te, "chunked") {
		conn.Close()
		return nil, fmt.Errorf("200 response is not chunked (Transfer-Encoding %q, Content-Length %q)", te, c.Header.Get("Content-Length"))
	}
	go c.read()
	return c, nil
}

func (c *wireClient) emit(it wireItem) bool {
	select {
	case c.items <- it:
		return true
	case <-c.done:
		return false
	}
}

// read decodes the chunked body: every chunk is logged and parsed.
func (c *wireClient) read() {
	defer close(c.items)
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			c.emit(wireItem{kind: wireErr, err: err})
			return
		}
		sizeText, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sizeText), 16, 64)
		if err != nil || size < 0 {
			c.emit(wireItem{kind: wireErr, err: fmt.Errorf("bad chunk size line %q", line)})
			return
		}
		if size == 0 {
			// The last chunk; then the (empty) trailer section.
			for {
				l, err := c.br.ReadString('\n')
				if err != nil {
					c.emit(wireItem{kind: wireErr, err: fmt.Errorf("after the last chunk: %w", err)})
					return
				}
				if l == "\r\n" {
					break
				}
			}
			c.emit(wireItem{kind: wireEnd})
			return
		}
		chunk := make([]byte, size)
		if _, err := io.ReadFull(c.br, chunk); err != nil {
			c.emit(wireItem{kind: wireErr, err: fmt.Errorf("inside a chunk: %w", err)})
			return
		}
		var crlf [2]byte
		if _, err := io.ReadFull(c.br, crlf[:]); err != nil || crlf != [2]byte{'\r', '\n'} {
			c.emit(wireItem{kind: wireErr, err: fmt.Errorf("chunk not ended by CRLF: %v", err)})
			return
		}
		c.mu.Lock()
		c.chunks = append(c.chunks, chunk)
		if !bytes.HasSuffix(chunk, []byte("\n\n")) {
			c.cutChunk = append(c.cutChunk, string(chunk))
		}
		c.mu.Unlock()
		if !c.parse(chunk) {
			return
		}
	}
}

// parse feeds body bytes to a minimal event-stream parser. The proxy writes
// LF line endings only, so a CR is reported as an error.
func (c *wireClient) parse(b []byte) bool {
	if bytes.IndexByte(b, '\r') >= 0 {
		return c.emit(wireItem{kind: wireErr, err: fmt.Errorf("CR in the proxy's output: %q", b)})
	}
	c.pending = append(c.pending, b...)
	for {
		i := bytes.Index(c.pending, []byte("\n\n"))
		if i < 0 {
			return true
		}
		block := string(c.pending[:i])
		c.pending = c.pending[i+2:]
		var ev event
		var data []string
		hasData, onlyComments := false, true
		var comment []string
		for _, line := range strings.Split(block, "\n") {
			if strings.HasPrefix(line, ":") {
				comment = append(comment, strings.TrimPrefix(strings.TrimPrefix(line, ":"), " "))
				continue
			}
			onlyComments = false
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "id":
				c.lastID = value
			case "event":
				ev.Type = value
			case "data":
				data = append(data, value)
				hasData = true
			case "retry":
				if n, err := strconv.ParseInt(value, 10, 64); err == nil {
					c.retry = n
				}
			}
		}
		if onlyComments && len(comment) > 0 {
			c.comments.Add(1)
			if !c.emit(wireItem{kind: wireComment, comment: strings.Join(comment, "\n")}) {
				return false
			}
			continue
		}
		if !hasData {
			continue
		}
		if ev.Type == "" {
			ev.Type = "message"
		}
		ev.ID, ev.Data, ev.Retry = c.lastID, strings.Join(data, "\n"), c.retry
		if !c.emit(wireItem{kind: wireEvent, ev: ev}) {
			return false
		}
	}
}

// NextItem returns the next event, comment or end; errTimeout after timeout,
// io.EOF once the items are exhausted.
func (c *wireClient) NextItem(timeout time.Duration) (wireItem, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case it, ok := <-c.items:
		if !ok {
			return wireItem{}, io.EOF
		}
		return it, nil
	case <-t.C:
		return wireItem{}, errTimeout
	}
}

// TryNext returns the next event, skipping comments; an error when the
// stream ended (cleanly or not) or nothing came within timeout.
func (c *wireClient) TryNext(timeout time.Duration) (event, error) {
	deadline := time.Now().Add(timeout)
	for {
		it, err := c.NextItem(time.Until(deadline))
		if err != nil {
			return event{}, err
		}
		switch it.kind {
		case wireEvent:
			return it.ev, nil
		case wireEnd:
			return event{}, errEnded
		case wireErr:
			return event{}, it.err
		}
	}
}

var errEnded = errors.New("response ended (terminating chunk)")

// Next is TryNext that fails the test.
func (c *wireClient) Next(timeout time.Duration) event {
	c.t.Helper()
	ev, err := c.TryNext(timeout)
	if err != nil {
		c.t.Fatalf("waiting for an event: %v", err)
	}
	return ev
}

// NoEvent checks that no event arrives within d (comments are fine).
func (c *wireClient) NoEvent(d time.Duration) {
	c.t.Helper()
	ev, err := c.TryNext(d)
	if err == nil {
		c.t.Fatalf("unexpected event %v", ev)
	}
	if err != errTimeout {
		c.t.Fatalf("stream failed: %v", err)
	}
}

// Chunks returns a copy of the chunks received so far.
func (c *wireClient) Chunks() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.chunks...)
}

// CutChunks returns the chunks that did not end on a frame boundary.
func (c *wireClient) CutChunks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.cutChunk...)
}

// Close drops the connection.
func (c *wireClient) Close() {
	c.closeOne.Do(func() { close(c.done) })
	c.conn.Close()
}

// stuckClient sends an SSE request and then never reads a byte: the kernel
// buffers fill and the proxy's writes block.
type stuckClient struct{ conn *net.TCPConn }

func dialStuck(t testing.TB, base, path string, headers ...string) *stuckClient {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tc := conn.(*net.TCPConn)
	_ = tc.SetReadBuffer(4 << 10) // keep what the kernel swallows small
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n", path, addr)
	for _, h := range headers {
		req.WriteString(h + "\r\n")
	}
	req.WriteString("\r\n")
	if _, err := conn.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &stuckClient{conn: tc}
}

// Ids. The text form is 26 base32 characters of generation, '-', 13 of
// sequence (replay.ID); the tests work on the text, as a client would.

const idAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// splitID returns the generation text and the sequence of an id, failing the
// test when id is not in the proxy's format.
func splitID(t testing.TB, id string) (gen string, seq uint64) {
	t.Helper()
	g, s, ok := strings.Cut(id, "-")
	if !ok || len(g) != 26 || len(s) != 13 {
		t.Fatalf("id %q is not <26 chars>-<13 chars>", id)
	}
	for _, ch := range s {
		v := strings.IndexRune(idAlphabet, ch)
		if v < 0 {
			t.Fatalf("id %q: bad sequence character %q", id, ch)
		}
		seq = seq<<5 | uint64(v)
	}
	return g, seq
}

// makeID builds an id text from a generation text and a sequence.
func makeID(gen string, seq uint64) string {
	var b [13]byte
	for i := 12; i >= 0; i-- {
		b[i] = idAlphabet[seq&31]
		seq >>= 5
	}
	return gen + "-" + string(b[:])
}

// randomOldGen returns a well-formed generation the proxy never issued, with
// a time part far in the past so that every real generation sorts after it.
func randomOldGen(rng *rand.Rand) string {
	b := []byte("00")
	for len(b) < 26 {
		b = append(b, idAlphabet[rng.IntN(32)])
	}
	return string(b)
}

// syncPayload decodes the data of a sync-required event.
func syncPayload(t testing.TB, ev event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &m); err != nil {
		t.Fatalf("sync event data %q is not a JSON object: %v", ev.Data, err)
	}
	if len(ev.Data) > 512 {
		t.Fatalf("sync event data is not small: %d bytes", len(ev.Data))
	}
	return m
}

// streamByGen finds a stream in /debug/stream-state by its generation.
func (st streamState) byGen(gen string) (int, bool) {
	for i, s := range st.Streams {
		if s.Generation == gen {
			return i, true
		}
	}
	return -1, false
}

// requestsTo returns the upstream requests recorded for path.
func requestsTo(reqs []*http.Request, path string) []*http.Request {
	var out []*http.Request
	for _, r := range reqs {
		if r.URL.Path == path {
			out = append(out, r)
		}
	}
	return out
}
