package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lastevent/lastevent/test/load"
)

// proc is a child process this run started (load.Child).
type proc = load.Child

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
	p, addr, err := load.StartGeneratorChild(load.BaseEnv(), filepath.Join(dir, "upstream.log"))
	if err != nil {
		return nil, err
	}
	return &upstream{proc: p, addr: addr}, nil
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
	p, _, err := load.StartChild("redis-server", bin, []string{
		"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", rdir, "--maxmemory-policy", "noeviction", "--daemonize", "no",
	}, load.BaseEnv(), filepath.Join(dir, "redis.log"), "")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pingRedis(addr) == nil {
			return &redisServer{proc: p, addr: addr, version: version}, nil
		}
		if p.Exited() || time.Now().After(deadline) {
			p.Stop(syscall.SIGKILL, time.Second)
			return nil, fmt.Errorf("redis-server did not answer PING on %s:\n%s", addr, p.LogTail())
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
	env := append(load.BaseEnv(),
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
	p, errOut, err := load.StartChild(name, bin, nil, env, filepath.Join(dir, name+".log"), "stderr")
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
			_, _ = p.Log.Write(append(line, '\n'))
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
	case <-p.Done:
		return nil, fmt.Errorf("%s exited at start:\n%s", name, p.LogTail())
	case <-time.After(15 * time.Second):
		p.Stop(syscall.SIGKILL, time.Second)
		return nil, fmt.Errorf("%s did not log its start:\n%s", name, p.LogTail())
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
		if p.Exited() || time.Now().After(deadline) {
			p.Stop(syscall.SIGTERM, 3*time.Second)
			return nil, fmt.Errorf("%s not ready:\n%s", name, p.LogTail())
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
