package main

import (
	"bufio"
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
	"time"

	"github.com/lastevent/lastevent/test/load"
)

// proc is a child process this run started; it is only ever stopped by its
// own PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	logf *os.File
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

// start runs path with args and env, its stdout and stderr to logPath.
// When pipe is "stdout" or "stderr", that stream goes to the returned
// reader instead, which the caller must drain.
func start(name, path string, args, env []string, logPath, pipe string) (*proc, io.Reader, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	// If this tool dies, its children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var r, w *os.File
	if pipe != "" {
		if r, w, err = os.Pipe(); err != nil {
			lf.Close()
			return nil, nil, err
		}
		if pipe == "stdout" {
			cmd.Stdout = w
		} else {
			cmd.Stderr = w
		}
	}
	err = cmd.Start()
	if w != nil {
		w.Close()
	}
	if err != nil {
		lf.Close()
		if r != nil {
			r.Close()
		}
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), logf: lf}
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if r == nil {
		return p, nil, nil
	}
	return p, r, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process (by its PID), waits up to grace, then
// kills it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p == nil {
		return
	}
	procsMu.Lock()
	if !procs[p] {
		procsMu.Unlock()
		return
	}
	delete(procs, p)
	procsMu.Unlock()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.logf.Close()
}

// stopAll ends every child still running, each by its own PID.
func stopAll() {
	procsMu.Lock()
	all := make([]*proc, 0, len(procs))
	for p := range procs {
		all = append(all, p)
	}
	procsMu.Unlock()
	for _, p := range all {
		p.stop(syscall.SIGTERM, 3*time.Second)
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logf.Name())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// baseEnv is this process's environment without LASTEVENT_* variables, so
// that the caller's settings cannot change a run.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LASTEVENT_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	return env
}

func readLine(br *bufio.Reader, timeout time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := br.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(timeout):
		return "", errors.New("timed out")
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

var httpc = &http.Client{Timeout: 10 * time.Second}

func getJSON(url string, v any) error {
	resp, err := httpc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// upstream is the generator (load.Generator) in a child process: this
// command run as "replicabench upstream".
type upstream struct {
	*proc
	addr string
}

func startUpstream(dir string) (*upstream, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, out, err := start("upstream", self, []string{"upstream", "-listen", "127.0.0.1:0"}, baseEnv(), filepath.Join(dir, "upstream.log"), "stdout")
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(out)
	line, err := readLine(br, 10*time.Second)
	if err != nil || !strings.HasPrefix(line, "listening ") {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("upstream did not start: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, br) }()
	return &upstream{proc: p, addr: strings.TrimPrefix(line, "listening ")}, nil
}

// head is the newest sequence the generator sent on topic.
func (u *upstream) head(topic string) (int64, error) {
	var st struct {
		Topics map[string]int64 `json:"topics"`
	}
	err := getJSON("http://"+u.addr+"/stats", &st)
	return st.Topics[topic], err
}

// redisServer is the private redis-server of the run.
type redisServer struct {
	*proc
	addr    string
	version string
}

func startRedis(bin, dir string) (*redisServer, error) {
	if bin == "" {
		p, err := exec.LookPath("redis-server")
		if err != nil {
			return nil, errors.New("redis-server is not on PATH (apt-get install -y redis-server), or pass -redis-server")
		}
		bin = p
	}
	vb, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %v", bin, err)
	}
	version := strings.TrimSpace(string(vb))
	if i := strings.Index(version, "v="); i >= 0 {
		version, _, _ = strings.Cut(version[i+2:], " ")
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	p, _, err := start("redis-server", bin, []string{
		"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", rdir, "--maxmemory-policy", "noeviction", "--daemonize", "no",
	}, baseEnv(), filepath.Join(dir, "redis.log"), "")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pingRedis(addr) == nil {
			return &redisServer{proc: p, addr: addr, version: version}, nil
		}
		if p.exited() || time.Now().After(deadline) {
			p.stop(syscall.SIGKILL, time.Second)
			return nil, fmt.Errorf("redis-server did not answer PING on %s:\n%s", addr, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b[:n]), "+PONG") {
		return fmt.Errorf("PING answered %q", b[:n])
	}
	return nil
}

// lastevent is one proxy process.
type lastevent struct {
	*proc
	name, addr, admin string
}

func startLastevent(bin, dir, name string, up *upstream, clients int, extra ...string) (*lastevent, error) {
	env := append(baseEnv(),
		"LASTEVENT_UPSTREAM_URL=http://"+up.addr,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:0",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:0",
		"LASTEVENT_MODE=shared",
		// A stream closes as soon as its last client leaves: the run keeps
		// the streams it needs open with a holder client, and a resume to a
		// replica without clients on the stream really finds no stream there.
		"LASTEVENT_LINGER=0",
		fmt.Sprintf("LASTEVENT_MAX_CONNECTIONS=%d", clients+1000),
		"LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_SHUTDOWN_GRACE=3s",
	)
	env = append(env, extra...)
	p, errOut, err := start(name, bin, nil, env, filepath.Join(dir, name+".log"), "stderr")
	if err != nil {
		return nil, err
	}
	type started struct{ listen, admin string }
	ch := make(chan started, 1)
	go func() {
		sc := bufio.NewScanner(errOut)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.logf.Write(append(line, '\n'))
			if sent {
				continue
			}
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["message"] == "lastevent started" {
				l, _ := m["listen"].(string)
				a, _ := m["admin"].(string)
				ch <- started{l, a}
				sent = true
			}
		}
	}()
	var s started
	select {
	case s = <-ch:
	case <-p.done:
		return nil, fmt.Errorf("%s exited at start:\n%s", name, p.logTail())
	case <-time.After(15 * time.Second):
		p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("%s did not log its start:\n%s", name, p.logTail())
	}
	le := &lastevent{proc: p, name: name, addr: s.listen, admin: s.admin}
	// Redis mode is ready after the first Redis answer.
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := httpc.Get("http://" + le.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return le, nil
			}
		}
		if p.exited() || time.Now().After(deadline) {
			p.stop(syscall.SIGTERM, 3*time.Second)
			return nil, fmt.Errorf("%s not ready:\n%s", name, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamState is the part of /debug/stream-state the run reads.
type streamState struct {
	Redis struct {
		State string `json:"state"`
	} `json:"redis"`
	Streams []struct {
		Generation  string `json:"generation"`
		Connections int    `json:"connections"`
		Role        string `json:"role"`
		RedisGen    string `json:"redis_gen"`
		Frames      int    `json:"buffer_frames"`
	} `json:"streams"`
	Totals struct {
		Streams       int    `json:"streams"`
		FramesIn      uint64 `json:"frames_in"`
		Resumes       uint64 `json:"resumes"`
		SyncRequired  uint64 `json:"sync_required"`
		SystemSync    uint64 `json:"system_sync"`
		StreamsOpened uint64 `json:"streams_opened"`
		Dropped       uint64 `json:"clients_dropped_slow"`
	} `json:"totals"`
}

func (le *lastevent) state() (streamState, error) {
	var st streamState
	err := getJSON("http://"+le.admin+"/debug/stream-state", &st)
	return st, err
}

// roleOf is the role of the stream whose id generation (the first 26
// characters of an id a client got) is gen, "" when the replica has none.
func (le *lastevent) roleOf(gen string) string {
	st, err := le.state()
	if err != nil {
		return "error: " + err.Error()
	}
	for _, s := range st.Streams {
		if s.RedisGen == gen || s.Generation == gen {
			if s.Role == "" {
				return "memory"
			}
			return s.Role
		}
	}
	return ""
}

func cpuOf(pid int) float64 {
	s, err := load.Sample(pid)
	if err != nil {
		return 0
	}
	return s.CPUSeconds
}
