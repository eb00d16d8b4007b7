package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// runBinary runs lastevent with args and exactly the given environment (plus
// PATH) and returns its exit status, stdout and stderr. It fails the test if
// the process does not exit by itself within 10 s.
func runBinary(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("lastevent %v did not exit by itself (it is serving?)\nstderr:\n%s", args, stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// holdAddr listens on a loopback port for the whole test and returns it: a
// lastevent that tried to listen there would fail with exit status 1.
func holdAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestConfigBadSettingsAllReported: many bad settings at once give exit
// status 2 and one run's stderr names every bad variable, before anything
// listens: the test holds both addresses, so a lastevent that listened first
// would fail there with status 1.
func TestConfigBadSettingsAllReported(t *testing.T) {
	t.Parallel()
	bad := []string{
		"LASTEVENT_MODE=bogus",
		"LASTEVENT_BUFFER_FRAMES=0",
		"LASTEVENT_MAX_MEMORY=lots",
		"LASTEVENT_HEARTBEAT=-1s",
		"LASTEVENT_LOG_FORMAT=yaml",
	}
	for _, url := range []string{"LASTEVENT_UPSTREAM_URL=legacy:9000", "LASTEVENT_UPSTREAM_URL=legacy-svc", ""} {
		name := url
		if name == "" {
			name = "missing-url"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			listen, admin := holdAddr(t), holdAddr(t)
			env := append([]string{"LASTEVENT_LISTEN_ADDR=" + listen, "LASTEVENT_ADMIN_ADDR=" + admin}, bad...)
			if url != "" {
				env = append(env, url)
			}
			code, stdout, stderr := runBinary(t, env)
			if code != 2 {
				t.Fatalf("exit status %d, want 2\nstderr:\n%s", code, stderr)
			}
			for _, kv := range append(bad, "LASTEVENT_UPSTREAM_URL=") {
				name, _, _ := strings.Cut(kv, "=")
				if !strings.Contains(stderr, name) {
					t.Errorf("stderr does not name %s:\n%s", name, stderr)
				}
			}
			// One line per problem, each naming its variable.
			n := 0
			for _, l := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(strings.TrimSpace(l), "LASTEVENT_") {
					n++
				}
			}
			if n != len(bad)+1 {
				t.Errorf("%d problem lines, want %d:\n%s", n, len(bad)+1, stderr)
			}
			if strings.Contains(stderr+stdout, "lastevent started") {
				t.Fatalf("it started:\n%s", stderr)
			}
		})
	}
}

// TestConfigMisspeltVariableWarned: an unknown LASTEVENT_* variable is
// warned about by name, and lastevent starts anyway.
func TestConfigMisspeltVariableWarned(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	p := startProxy(t, up.URL(), "LASTEVENT_BUFER_FRAMES=5")
	var warned bool
	for _, l := range strings.Split(p.Logs(), "\n") {
		// A log line like the others (JSON), which a log pipeline can read.
		if strings.Contains(l, "LASTEVENT_BUFER_FRAMES") && strings.Contains(l, `"level":"warn"`) && json.Valid([]byte(l)) {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning naming LASTEVENT_BUFER_FRAMES:\n%s", p.Logs())
	}
	if code, _ := p.adminGet(t, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	// The misspelt value is not used: the buffer keeps its default size.
	feed := up.Feed("/feed/misspelt")
	c := dial(t, p.URL(), "/feed/misspelt")
	if !feed.WaitConns(1, 5*time.Second) {
		t.Fatal("upstream never saw the connection")
	}
	for range 10 {
		feed.Send("data: x\n\n")
	}
	for range 10 {
		c.Next(5 * time.Second)
	}
	if st := p.state(t); len(st.Streams) != 1 || st.Streams[0].Frames != 10 {
		t.Fatalf("stream state %+v, want 10 frames buffered", st.Streams)
	}
}

// TestConfigCheckConfig: -check-config validates and exits, 0 on a good
// configuration and 2 on a bad one, without listening (the addresses are
// held by the test, so listening would fail with status 1).
func TestConfigCheckConfig(t *testing.T) {
	t.Parallel()
	listen, admin := holdAddr(t), holdAddr(t)
	good := []string{"LASTEVENT_UPSTREAM_URL=http://127.0.0.1:9", "LASTEVENT_LISTEN_ADDR=" + listen, "LASTEVENT_ADMIN_ADDR=" + admin, "LASTEVENT_MODE=shared"}
	code, stdout, stderr := runBinary(t, good, "-check-config")
	if code != 0 {
		t.Fatalf("good config: exit status %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if strings.Contains(stderr+stdout, "lastevent started") {
		t.Fatalf("-check-config started serving:\n%s", stderr)
	}
	code, _, stderr = runBinary(t, append(good, "LASTEVENT_LINGER=forever", "LASTEVENT_RETRY=10m"), "-check-config")
	if code != 2 {
		t.Fatalf("bad config: exit status %d, want 2\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "LASTEVENT_LINGER") || !strings.Contains(stderr, "LASTEVENT_RETRY") {
		t.Fatalf("stderr does not name the bad variables:\n%s", stderr)
	}
	// Without -check-config the same good settings do try to listen (and
	// fail on the held port): so the exit 0 above was not luck.
	code, _, stderr = runBinary(t, good)
	if code != 1 {
		t.Fatalf("serving on a held port: exit status %d, want 1\n%s", code, stderr)
	}
}

func TestConfigVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runBinary(t, nil, "-version")
	if code != 0 {
		t.Fatalf("exit status %d\n%s", code, stderr)
	}
	if !regexp.MustCompile(`^lastevent \S+`).MatchString(stdout) {
		t.Fatalf("-version printed %q", stdout)
	}
	code, _, _ = runBinary(t, nil, "-no-such-flag")
	if code != 2 {
		t.Fatalf("unknown flag: exit status %d, want 2", code)
	}
	code, _, stderr = runBinary(t, nil, "-h")
	if code != 0 || !strings.Contains(stderr, "usage: lastevent") {
		t.Fatalf("-h: exit status %d, want 0 and the usage\n%s", code, stderr)
	}
	// Flags stop at an argument: this used to start the server.
	listen, admin := holdAddr(t), holdAddr(t)
	env := []string{"LASTEVENT_UPSTREAM_URL=http://127.0.0.1:9", "LASTEVENT_LISTEN_ADDR=" + listen, "LASTEVENT_ADMIN_ADDR=" + admin}
	code, _, stderr = runBinary(t, env, "check", "-check-config")
	if code != 2 || !strings.Contains(stderr, `unexpected argument "check"`) {
		t.Fatalf("an argument before -check-config: exit status %d, want 2 and what is wrong\n%s", code, stderr)
	}
}
