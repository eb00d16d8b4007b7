package test

// Point 11: on SIGTERM lastevent stops accepting, turns not ready, ends
// every stream cleanly (the chunked body's last chunk, so clients reconnect
// by themselves) and exits within LASTEVENT_SHUTDOWN_GRACE.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// blockStuckClient attaches a client that never reads to its own shared
// stream and pushes frames through it until the proxy has read them all
// from the upstream: far more than the kernel buffers hold, so the proxy's
// write to that client is now blocked (until LASTEVENT_WRITE_TIMEOUT drops
// it).
func blockStuckClient(t *testing.T, p *proc, feedSend func(string), path string) {
	t.Helper()
	dialStuck(t, p.URL(), path)
	waitFor(t, 5*time.Second, "the stuck client attached", func() bool {
		for _, s := range p.state(t).Streams {
			if s.Path == path && s.Connections == 1 {
				return true
			}
		}
		return false
	})
	pad := strings.Repeat("x", 64<<10)
	const frames = 200 // 12.5 MiB, well beyond the socket buffers
	for k := 1; k <= frames; k++ {
		feedSend(fmt.Sprintf("data: %d %s\n\n", k, pad))
	}
	waitFor(t, 10*time.Second, "the proxy to read the flood", func() bool {
		for _, s := range p.state(t).Streams {
			if s.Path == path {
				_, seq := splitID(t, s.LastID)
				return seq == frames
			}
		}
		return false
	})
}

func TestShutdownEndsStreamsCleanly(t *testing.T) {
	t.Parallel()
	const grace = 10 * time.Second
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_WRITE_TIMEOUT=2s",
		fmt.Sprintf("LASTEVENT_SHUTDOWN_GRACE=%s", grace), "LASTEVENT_HEARTBEAT=100ms")
	var clients []*wireClient
	for _, path := range []string{"/feed/sd-a", "/feed/sd-a", "/feed/sd-b"} {
		clients = append(clients, dialWire(t, p.URL(), path))
	}
	up.Feed("/feed/sd-a").Send("data: a\n\n")
	up.Feed("/feed/sd-b").Send("data: b\n\n")
	for i, c := range clients {
		if ev := c.Next(5 * time.Second); ev.Type != "message" {
			t.Fatalf("client %d: %v", i, ev)
		}
	}
	// The stuck client keeps the shutdown busy for a while, so its middle
	// can be observed.
	blockStuckClient(t, p, up.Feed("/feed/sd-stuck").Send, "/feed/sd-stuck")

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Every reading client's response ends with the last chunk.
	for i, c := range clients {
		for {
			it, err := c.NextItem(5 * time.Second)
			if err != nil {
				t.Fatalf("client %d: no clean end after SIGTERM: %v", i, err)
			}
			if it.kind == wireErr {
				t.Fatalf("client %d: the response broke instead of ending cleanly: %v", i, it.err)
			}
			if it.kind == wireEnd {
				break
			}
		}
	}
	// Not ready (or the admin already closed), and no new stream.
	saw503 := false
	if code, err := tryAdminGet(p, "/readyz"); err == nil {
		if code != 503 {
			t.Fatalf("/readyz during shutdown: %d, want 503", code)
		}
		saw503 = true
	} // else the admin listener is closed already: not ready either
	if c, err := tryDialWire(t, p.URL(), "/feed/sd-a"); err == nil {
		if c.Status == 200 {
			t.Fatalf("a new SSE connection was served after SIGTERM")
		}
		t.Logf("new connection after SIGTERM answered %d", c.Status)
	}
	select {
	case <-p.exited:
	case <-time.After(grace + 5*time.Second):
		t.Fatalf("lastevent still running %s after SIGTERM (grace %s)", time.Since(start), grace)
	}
	took := time.Since(start)
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0\n%s", p.err, p.Logs())
	}
	if took > grace+time.Second {
		t.Fatalf("exited after %s, beyond LASTEVENT_SHUTDOWN_GRACE %s", took, grace)
	}
	if _, err := tryDialWire(t, p.URL(), "/feed/sd-a"); err == nil {
		t.Fatalf("connection accepted after exit")
	}
	t.Logf("exited 0 after %s; /readyz 503 seen: %v", took, saw503)
	// The log pipe may be read a moment after the exit.
	waitFor(t, 5*time.Second, "'shutdown complete' in the logs", func() bool { return strings.Contains(p.Logs(), "shutdown complete") })
}

// TestShutdownDuringReplay: a client in the middle of a long replay (it
// reads slowly) when SIGTERM comes is not served to the end of its replay:
// its response ends cleanly after whole frames, soon, and the process exits
// 0 within the grace. The client resumes elsewhere with its last id.
func TestShutdownDuringReplay(t *testing.T) {
	t.Parallel()
	const grace = 3 * time.Second
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_BUFFER_FRAMES=5000", "LASTEVENT_WRITE_TIMEOUT=10s",
		"LASTEVENT_LINGER=60s", fmt.Sprintf("LASTEVENT_SHUTDOWN_GRACE=%s", grace))
	const path, frames = "/feed/sd-replay", 2000
	feed := up.Feed(path)
	pad := strings.Repeat("r", 8<<10)
	holder := dialWire(t, p.URL(), path)
	for k := 1; k <= frames; k++ {
		feed.Send(fmt.Sprintf("data: %d %s\n\n", k, pad))
	}
	first := holder.Next(5 * time.Second)
	for k := 2; k <= frames; k++ {
		holder.Next(5 * time.Second)
	}
	holder.Close()

	// About 16 MiB to replay at 2 MiB/s (fast enough for the write timeout):
	// 8 s, were it served to the end.
	th := &throttle{}
	th.Rate.Store(2 << 20)
	c, err := tryDialWireSlow(t, p.URL(), path, th, "Last-Event-ID: "+first.ID)
	if err != nil || c.Status != 200 {
		t.Fatalf("resume: %v %+v", err, c)
	}
	if ev := c.Next(5 * time.Second); ev.Data != fmt.Sprintf("2 %s", pad) {
		t.Fatalf("replay starts with %.40v, want frame 2", ev)
	}
	time.Sleep(time.Second)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(grace + 10*time.Second):
		t.Fatalf("lastevent still running %s after SIGTERM", time.Since(start))
	}
	took := time.Since(start)
	if p.err != nil || took > grace+time.Second {
		t.Fatalf("exit after SIGTERM during a replay: %v after %s, want status 0 within the grace %s", p.err, took, grace)
	}
	// What the kernel holds still arrives; then the last chunk, after whole
	// frames, each the one after the other.
	th.Rate.Store(0)
	want := 3
	for {
		it, err := c.NextItem(10 * time.Second)
		if err != nil {
			t.Fatalf("after frame %d: %v", want-1, err)
		}
		if it.kind == wireErr {
			t.Fatalf("after frame %d the response broke instead of ending cleanly: %v", want-1, it.err)
		}
		if it.kind == wireEnd {
			break
		}
		if it.kind == wireEvent {
			if it.ev.Data != fmt.Sprintf("%d %s", want, pad) {
				t.Fatalf("replay: want frame %d, got %.40v", want, it.ev)
			}
			want++
		}
	}
	if cut := c.CutChunks(); len(cut) > 0 {
		t.Fatalf("a chunk cut a frame: %.60q", cut[0])
	}
	if want > frames {
		t.Fatalf("test setup: the replay finished before SIGTERM; make it longer")
	}
	t.Logf("the replay ended cleanly after frame %d of %d; exit 0 after %s", want-1, frames, took)
}

// TestShutdownGraceBounds: streams that cannot end (a write blocked on a
// client that does not read, with a long write timeout) do not keep the
// process beyond LASTEVENT_SHUTDOWN_GRACE.
func TestShutdownGraceBounds(t *testing.T) {
	t.Parallel()
	const grace = 1 * time.Second
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_WRITE_TIMEOUT=60s",
		fmt.Sprintf("LASTEVENT_SHUTDOWN_GRACE=%s", grace))
	c := dialWire(t, p.URL(), "/feed/gb-a")
	blockStuckClient(t, p, up.Feed("/feed/gb-stuck").Send, "/feed/gb-stuck")
	if st := p.state(t); st.Totals.Connections != 2 {
		t.Fatalf("test setup: the stuck client should be attached, blocked: %+v", st.Totals)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The healthy client still ends cleanly.
	for {
		it, err := c.NextItem(5 * time.Second)
		if err != nil || it.kind == wireErr {
			t.Fatalf("the reading client did not end cleanly: %v %v", err, it.err)
		}
		if it.kind == wireEnd {
			break
		}
	}
	select {
	case <-p.exited:
	case <-time.After(grace + 5*time.Second):
		t.Fatalf("lastevent still running %s after SIGTERM (grace %s)", time.Since(start), grace)
	}
	took := time.Since(start)
	if took > grace+2*time.Second {
		t.Fatalf("exited after %s, well beyond LASTEVENT_SHUTDOWN_GRACE %s", took, grace)
	}
	t.Logf("exited after %s with %v", took, p.err)
}

// tryAdminGet fetches an admin endpoint, returning the error instead of
// failing (the admin listener may be closed).
func tryAdminGet(p *proc, path string) (int, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + p.Admin + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// TestShutdownSecondSignal: a second SIGTERM or SIGINT (Ctrl-C again) ends
// the grace period at once, for an operator who will not wait for a stuck
// client (it was ignored: the process waited out LASTEVENT_SHUTDOWN_GRACE).
// The exit status says the shutdown was not complete. Found by a black-box
// probe.
func TestShutdownSecondSignal(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_MODE=shared", "LASTEVENT_WRITE_TIMEOUT=60s", "LASTEVENT_SHUTDOWN_GRACE=60s")
	blockStuckClient(t, p, up.Feed("/feed/ss-stuck").Send, "/feed/ss-stuck")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		t.Fatalf("lastevent exited (%v) with a stuck client before its grace period", p.err)
	case <-time.After(time.Second):
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("lastevent still running %s after a second signal", time.Since(start))
	}
	if p.err == nil || !strings.Contains(p.Logs(), "second signal") {
		t.Fatalf("exit %v after a second signal, want status 1 and a log line saying why", p.err)
	}
}
