package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/test/load"
)

// proc is a child process this run started (load.Child).
type proc = load.Child

// upstream is the generator subprocess.
type upstream struct {
	*proc
	addr string
}

func startUpstream(dir, name string) (*upstream, error) {
	p, addr, err := load.StartGeneratorChild(load.BaseEnv(), filepath.Join(dir, name+"-upstream.log"))
	if err != nil {
		return nil, err
	}
	return &upstream{proc: p, addr: addr}, nil
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
		t.p.Stop(syscall.SIGTERM, 5*time.Second) // fast shutdown of master and workers
	default:
		t.p.Stop(syscall.SIGTERM, 5*time.Second)
	}
}

type lasteventOpts struct {
	bin      string
	mode     string
	clients  int
	pprofVar bool     // the profiling variant: LOADBENCH_PPROF_ADDR
	extraEnv []string // -lastevent-env, after the run's own settings
}

func startLastevent(dir, name string, up *upstream, o lasteventOpts) (*target, error) {
	env := append(load.BaseEnv(),
		"LASTEVENT_UPSTREAM_URL=http://"+up.addr,
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:0",
		"LASTEVENT_ADMIN_ADDR=127.0.0.1:0",
		"LASTEVENT_MODE="+o.mode,
		fmt.Sprintf("LASTEVENT_MAX_CONNECTIONS=%d", o.clients+1000),
		fmt.Sprintf("LASTEVENT_UPSTREAM_MAX_CONNECTIONS=%d", o.clients+1000),
		"LASTEVENT_LOG_LEVEL=info",
		"LASTEVENT_SHUTDOWN_GRACE=3s",
	)
	env = append(env, o.extraEnv...)
	var pprofAddr string
	if o.pprofVar {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		pprofAddr = a
		env = append(env, "LOADBENCH_PPROF_ADDR="+a)
	}
	p, errOut, err := load.StartChild("lastevent", o.bin, nil, env, filepath.Join(dir, name+"-lastevent.log"), "stderr")
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
			p.Log.Write(append(line, '\n'))
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
	case <-p.Done:
		return nil, fmt.Errorf("lastevent exited at start:\n%s", p.LogTail())
	case <-time.After(15 * time.Second):
		p.Stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("lastevent did not log its start:\n%s", p.LogTail())
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
	p, _, err := load.StartChild("nginx", bin, []string{"-p", ndir, "-c", confPath, "-e", filepath.Join(ndir, "nginx-error.log"), "-g", "daemon off; master_process on;"}, load.BaseEnv(), filepath.Join(dir, name+"-nginx.log"), "")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("tcp", listen); err == nil {
			c.Close()
			// The workers must be up too, not only the master's socket.
			if len(load.Children(p.PID())) > 0 {
				return &target{kind: "nginx", addr: listen, p: p}, nil
			}
		}
		select {
		case <-p.Done:
			b, _ := os.ReadFile(filepath.Join(ndir, "nginx-error.log"))
			return nil, fmt.Errorf("nginx exited at start:\n%s%s", p.LogTail(), b)
		case <-ctx.Done():
			p.Stop(syscall.SIGTERM, 3*time.Second)
			return nil, errors.New("nginx did not start listening")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
