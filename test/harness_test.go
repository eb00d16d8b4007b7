package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lastevent/lastevent/frame"
	"github.com/lastevent/lastevent/test/upstream"
)

// binary is the lastevent executable under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lastevent-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "lastevent")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building lastevent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startUpstream starts the fake legacy upstream on loopback.
func startUpstream(t testing.TB) *upstream.Server {
	t.Helper()
	up, err := upstream.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return up
}

// proc is a running lastevent process.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	Addr   string // client listener host:port
	Admin  string // admin listener host:port
	mu     sync.Mutex
	logs   bytes.Buffer
	exited chan struct{}
	err    error
}

// startProxy runs the lastevent binary in front of upstreamURL with the
// given extra LASTEVENT_* settings (KEY=VALUE) and waits until it listens.
func startProxy(t testing.TB, upstreamURL string, env ...string) *proc {
	t.Helper()
	return startProxyBinary(t, binary, upstreamURL, env...)
}

// startProxyBinary is startProxy with another lastevent executable (the
// soak tests measure a build without -race).
func startProxyBinary(t testing.TB, bin, upstreamURL string, env ...string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"LASTEVENT_UPSTREAM_URL=" + upstreamURL,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:0",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:0",
		"LASTEVENT_LOG_LEVEL=debug",
	}, env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered before waiting, so a process that fails to start is ended too.
	t.Cleanup(func() {
		p.Stop()
		if strings.Contains(p.Logs(), "WARNING: DATA RACE") {
			t.Errorf("the lastevent process reported a data race")
		}
		if t.Failed() {
			t.Logf("lastevent logs:\n%s", p.Logs())
		}
	})
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Bytes()
			p.mu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			p.mu.Unlock()
			var rec struct {
				Msg           string `json:"message"`
				Listen, Admin string
			}
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "lastevent started" {
				p.mu.Lock()
				p.Addr, p.Admin = rec.Listen, rec.Admin
				p.mu.Unlock()
				once.Do(func() { close(started) })
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-started:
	case <-p.exited:
		t.Fatalf("lastevent exited before listening: %v\n%s", p.err, p.Logs())
	case <-time.After(10 * time.Second):
		t.Fatalf("lastevent did not start\n%s", p.Logs())
	}
	return p
}

// Logs returns what the process logged so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Stop sends SIGTERM and waits (then SIGKILL) for the process to exit.
func (p *proc) Stop() error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New("lastevent did not stop on SIGTERM")
	}
	return p.err
}

// Kill ends the process with SIGKILL.
func (p *proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// URL is the client-facing base URL.
func (p *proc) URL() string { return "http://" + p.Addr }

// adminGet fetches an admin endpoint.
func (p *proc) adminGet(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get("http://" + p.Admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// streamState is the part of /debug/stream-state the tests read.
type streamState struct {
	Streams []struct {
		Generation  string `json:"generation"`
		Path        string `json:"path"`
		LastID      string `json:"last_id"`
		OldestID    string `json:"oldest_id"`
		Frames      int    `json:"buffer_frames"`
		Bytes       int64  `json:"buffer_bytes"`
		Connections int    `json:"connections"`
		Upstream    string `json:"upstream_state"`
	} `json:"streams"`
	Totals struct {
		Streams       int   `json:"streams"`
		Connections   int64 `json:"connections"`
		BufferedBytes int64 `json:"buffered_bytes"`
		MaxMemory     int64 `json:"max_memory"`
	} `json:"totals"`
}

func (p *proc) state(t testing.TB) streamState {
	t.Helper()
	code, b := p.adminGet(t, "/debug/stream-state")
	if code != 200 {
		t.Fatalf("stream-state: %d %s", code, b)
	}
	var st streamState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stream-state: %v\n%s", err, b)
	}
	return st
}

// event is one dispatched SSE event as a client sees it.
type event struct {
	ID, Type, Data string
	Retry          int64 // retry in effect when the event was seen, -1 if none yet
}

func (e event) String() string { return fmt.Sprintf("{id=%s type=%s data=%q}", e.ID, e.Type, e.Data) }

// sseClient is one SSE connection over a real TCP socket.
type sseClient struct {
	t      testing.TB
	conn   net.Conn
	Resp   *http.Response
	p      *frame.Parser
	lastID string
	retry  int64
	events chan eventOrErr
}

type eventOrErr struct {
	ev  event
	err error
}

// dial opens an SSE request to base+path with extra headers ("Name: value").
func dial(t testing.TB, base, path string, headers ...string) *sseClient {
	t.Helper()
	c, err := tryDial(t, base, path, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tryDial(t testing.TB, base, path string, headers ...string) (*sseClient, error) {
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
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
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	c := &sseClient{t: t, conn: conn, Resp: resp, retry: -1, events: make(chan eventOrErr, 1<<16)}
	t.Cleanup(c.Close)
	if resp.StatusCode == 200 {
		c.p = frame.NewParser(resp.Body, 8<<20)
		go c.pump()
	}
	return c, nil
}

func (c *sseClient) pump() {
	for {
		f, err := c.p.Next()
		if err != nil {
			c.events <- eventOrErr{err: err}
			close(c.events)
			return
		}
		if f.HasID {
			c.lastID = string(f.ID)
		}
		if f.Retry >= 0 {
			c.retry = f.Retry
		}
		if !f.Dispatch {
			continue
		}
		typ := string(f.Event)
		if typ == "" {
			typ = "message"
		}
		c.events <- eventOrErr{ev: event{ID: c.lastID, Type: typ, Data: string(f.Data), Retry: c.retry}}
	}
}

// Next returns the next event, failing the test after timeout.
func (c *sseClient) Next(timeout time.Duration) event {
	c.t.Helper()
	ev, err := c.TryNext(timeout)
	if err != nil {
		c.t.Fatalf("waiting for an event: %v", err)
	}
	return ev
}

// TryNext returns the next event or an error (io.EOF when the stream ended,
// errTimeout).
func (c *sseClient) TryNext(timeout time.Duration) (event, error) {
	select {
	case e, ok := <-c.events:
		if !ok {
			return event{}, io.EOF
		}
		return e.ev, e.err
	case <-time.After(timeout):
		return event{}, errTimeout
	}
}

var errTimeout = errors.New("timeout")

// Close drops the connection.
func (c *sseClient) Close() { c.conn.Close() }

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitUntil(timeout, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// waitUntil polls cond until it holds (true) or the timeout passes (false).
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
