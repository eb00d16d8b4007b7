package main

import (
	"bufio"
	"context"
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
	log  *os.File
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

// start runs path with args and env; its output goes to logPath, or to the
// returned reader when pipe is set (stdout for our own subcommands, stderr
// for lastevent), which the caller must drain.
func start(name, path string, args, env []string, logPath string, pipe string) (*proc, io.Reader, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	// If this tool dies, its children go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// An os.Pipe rather than cmd.StdoutPipe: Wait (run at once below) must
	// not close the reading end before the caller has read everything.
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
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: lf}
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

// stop sends sig to the process, waits up to grace, then kills it (and, for
// nginx, the workers it left, by their PIDs).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p == nil {
		return
	}
	kids := load.Children(p.pid())
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	for _, k := range kids {
		if alive(k) {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
	p.log.Close()
	procsMu.Lock()
	delete(procs, p)
	procsMu.Unlock()
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// stopAll ends every child still running (on an interrupt or a failure).
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
	b, _ := os.ReadFile(p.log.Name())
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

// upstream is the generator subprocess.
type upstream struct {
	*proc
	addr string
}

func startUpstream(dir, name string) (*upstream, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, out, err := start("upstream", self, []string{"upstream", "-listen", "127.0.0.1:0"}, baseEnv(), filepath.Join(dir, name+"-upstream.log"), "stdout")
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(out)
	line, err := readLine(br, 10*time.Second)
	if err != nil || !strings.HasPrefix(line, "listening ") {
		p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("upstream did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, br)
	return &upstream{proc: p, addr: strings.TrimPrefix(line, "listening ")}, nil
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

var httpc = &http.Client{Timeout: 120 * time.Second}

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

func (u *upstream) head(topic string) (int64, error) {
	var st struct {
		Topics map[string]int64 `json:"topics"`
	}
	err := getJSON("http://"+u.addr+"/stats", &st)
	return st.Topics[topic], err
}

func (u *upstream) sent(from, to int64) (stream, bcast int64, err error) {
	var s struct{ Stream, Broadcast int64 }
	err = getJSON(fmt.Sprintf("http://%s/sent?from=%d&to=%d", u.addr, from, to), &s)
	return s.Stream, s.Broadcast, err
}

// target is what the swarm connects to: the upstream itself, lastevent or
// nginx, and the process to measure (none for direct).
type target struct {
	kind  string
	addr  string
	admin string // lastevent's admin address
	p     *proc
}

func (t *target) stop() {
	if t.p == nil {
		return
	}
	switch t.kind {
	case "nginx":
		t.p.stop(syscall.SIGTERM, 5*time.Second) // fast shutdown of master and workers
	default:
		t.p.stop(syscall.SIGTERM, 5*time.Second)
	}
}

type lasteventOpts struct {
	bin      string
	mode     string
	clients  int
	pprofVar bool // the profiling variant: LOADBENCH_PPROF_ADDR
}

func startLastevent(dir, name string, up *upstream, o lasteventOpts) (*target, error) {
	env := append(baseEnv(),
		"LASTEVENT_UPSTREAM_URL=http://"+up.addr,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:0",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:0",
		"LASTEVENT_MODE="+o.mode,
		fmt.Sprintf("LASTEVENT_MAX_CONNECTIONS=%d", o.clients+1000),
		fmt.Sprintf("LASTEVENT_UPSTREAM_MAX_CONNECTIONS=%d", o.clients+1000),
		"LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_SHUTDOWN_GRACE=3s",
	)
	var pprofAddr string
	if o.pprofVar {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		pprofAddr = a
		env = append(env, "LOADBENCH_PPROF_ADDR="+a)
	}
	p, errOut, err := start("lastevent", o.bin, nil, env, filepath.Join(dir, name+"-lastevent.log"), "stderr")
	if err != nil {
		return nil, err
	}
	// The JSON line "lastevent started" carries the addresses; the rest of
	// the log goes to the file.
	type started struct{ listen, admin string }
	ch := make(chan started, 1)
	go func() {
		sc := bufio.NewScanner(errOut)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			p.log.Write(append(line, '\n'))
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
	select {
	case s := <-ch:
		t := &target{kind: "lastevent", addr: s.listen, admin: s.admin, p: p}
		if pprofAddr != "" {
			t.admin = pprofAddr
		}
		return t, nil
	case <-p.done:
		return nil, fmt.Errorf("lastevent exited at start:\n%s", p.logTail())
	case <-time.After(15 * time.Second):
		p.stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("lastevent did not log its start:\n%s", p.logTail())
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

// nginxConf is "nginx with proxy_buffering off" as it is deployed in front
// of SSE: HTTP/1.1 to the upstream, no Connection header, long timeouts. The
// listen backlog matches Go's (somaxconn) for the reconnect storm.
const nginxConf = `worker_processes auto;
worker_rlimit_nofile {{NOFILE}};
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/nginx-error.log warn;
events {
    worker_connections {{NOFILE}};
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path {{DIR}}/body;
    proxy_temp_path {{DIR}}/proxy;
    fastcgi_temp_path {{DIR}}/fastcgi;
    uwsgi_temp_path {{DIR}}/uwsgi;
    scgi_temp_path {{DIR}}/scgi;
    upstream app {
        server {{UPSTREAM}};
        keepalive 64;
    }
    server {
        listen {{LISTEN}} backlog=4096;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
`

func startNginx(bin, dir, name string, up *upstream) (*target, error) {
	ndir := filepath.Join(dir, name+"-nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return nil, err
	}
	listen, err := freePort()
	if err != nil {
		return nil, err
	}
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	nofile := fmt.Sprint(min(lim.Cur, 1<<20))
	conf := strings.NewReplacer("{{NOFILE}}", nofile, "{{DIR}}", ndir, "{{UPSTREAM}}", up.addr, "{{LISTEN}}", listen).Replace(nginxConf)
	confPath := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, _, err := start("nginx", bin, []string{"-p", ndir, "-c", confPath, "-e", filepath.Join(ndir, "nginx-error.log"), "-g", "daemon off; master_process on;"}, baseEnv(), filepath.Join(dir, name+"-nginx.log"), "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			// The workers must be up too, not only the master's socket.
			if len(load.Children(p.pid())) > 0 {
				return &target{kind: "nginx", addr: listen, p: p}, nil
			}
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(filepath.Join(ndir, "nginx-error.log"))
			return nil, fmt.Errorf("nginx exited at start:\n%s%s", p.logTail(), b)
		case <-ctx.Done():
			p.stop(syscall.SIGTERM, 3*time.Second)
			return nil, errors.New("nginx did not start listening")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
