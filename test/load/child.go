package load

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child is a process a benchmark command started; it is only ever stopped by
// its own PID (and the PIDs of the children it left, such as nginx's
// workers).
type Child struct {
	Name string
	Cmd  *exec.Cmd
	Done chan struct{} // closed once it exited
	Log  *os.File      // its output, unless piped
}

var (
	childrenMu sync.Mutex
	children   = map[*Child]bool{}
)

// StartChild runs path with args and env; its output goes to logPath, or,
// for the stream pipe names ("stdout" or "stderr"), to the returned reader,
// which the caller must drain. If this process dies, the child goes with it.
func StartChild(name, path string, args, env []string, logPath, pipe string) (*Child, io.Reader, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
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
	p := &Child{Name: name, Cmd: cmd, Done: make(chan struct{}), Log: lf}
	childrenMu.Lock()
	children[p] = true
	childrenMu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(p.Done)
	}()
	if r == nil {
		return p, nil, nil
	}
	return p, r, nil
}

// PID is the child's process id.
func (p *Child) PID() int { return p.Cmd.Process.Pid }

// Exited reports whether the child has exited.
func (p *Child) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

// Stop sends sig to the child, waits up to grace, then kills it, and the
// processes it had started that are still alive. Stopping twice, or a nil
// Child, does nothing.
func (p *Child) Stop(sig syscall.Signal, grace time.Duration) {
	if p == nil {
		return
	}
	childrenMu.Lock()
	if !children[p] {
		childrenMu.Unlock()
		return
	}
	delete(children, p)
	childrenMu.Unlock()
	kids := Children(p.PID())
	_ = p.Cmd.Process.Signal(sig)
	select {
	case <-p.Done:
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.Done
	}
	for _, k := range kids {
		if alive(k) {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
	p.Log.Close()
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// StopChildren ends every child still running (on an interrupt or a
// failure).
func StopChildren() {
	childrenMu.Lock()
	all := make([]*Child, 0, len(children))
	for p := range children {
		all = append(all, p)
	}
	childrenMu.Unlock()
	for _, p := range all {
		p.Stop(syscall.SIGTERM, 3*time.Second)
	}
}

// LogTail is the end of the child's log, for an error message.
func (p *Child) LogTail() string {
	b, _ := os.ReadFile(p.Log.Name())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// BaseEnv is this process's environment without LASTEVENT_* and GOMAXPROCS,
// so that the caller's settings cannot change a run.
func BaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LASTEVENT_") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	return env
}

// ReadLine reads one line from br, trimmed, within timeout.
func ReadLine(br *bufio.Reader, timeout time.Duration) (string, error) {
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

// StartGeneratorChild runs the calling command's "upstream -listen
// 127.0.0.1:0" subcommand (a Generator) as a child, logging to logPath, and
// returns it with the address it printed ("listening <addr>").
func StartGeneratorChild(env []string, logPath string) (*Child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	p, out, err := StartChild("upstream", self, []string{"upstream", "-listen", "127.0.0.1:0"}, env, logPath, "stdout")
	if err != nil {
		return nil, "", err
	}
	br := bufio.NewReader(out)
	line, err := ReadLine(br, 10*time.Second)
	if err != nil || !strings.HasPrefix(line, "listening ") {
		p.Stop(syscall.SIGKILL, time.Second)
		return nil, "", fmt.Errorf("upstream did not start: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, br) }()
	return p, strings.TrimPrefix(line, "listening "), nil
}
