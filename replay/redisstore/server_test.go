package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The tests start their own redis-server on a private 127.0.0.1 port without
// persistence; they never touch a Redis the machine may already run.
const installHint = "redis-server not found in PATH: install it with `apt-get install -y redis-server` " +
	"(the tests start their own server on a private port; no service is needed)"

// redisServer is one redis-server process the tests own.
type redisServer struct {
	bin  string
	port int
	dir  string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *bytes.Buffer
}

var shared struct {
	once sync.Once
	srv  *redisServer
	err  error
}

// TestMain stops the shared server when the tests end.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.stop()
		os.RemoveAll(shared.srv.dir)
	}
	os.Exit(code)
}

// sharedServer returns the server most tests share, starting it on first
// use; it skips tb when redis-server is not installed.
func sharedServer(tb testing.TB) *redisServer {
	tb.Helper()
	bin := lookRedis(tb)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "redisstore-test-")
		if err != nil {
			shared.err = err
			return
		}
		shared.srv = &redisServer{bin: bin, dir: dir}
		shared.err = shared.srv.start()
	})
	if shared.err != nil {
		tb.Fatalf("starting redis-server: %v", shared.err)
	}
	return shared.srv
}

// ownServer starts a server for one test (one that restarts or pauses it).
func ownServer(tb testing.TB) *redisServer {
	tb.Helper()
	srv := &redisServer{bin: lookRedis(tb), dir: tb.TempDir()}
	if err := srv.start(); err != nil {
		tb.Fatalf("starting redis-server: %v", err)
	}
	tb.Cleanup(srv.stop)
	return srv
}

// lookRedis finds redis-server or skips: a developer without it still runs
// every other test. CI sets TEST_REQUIRE_REDIS=1 so that a missing
// install step fails instead of passing green with these tests skipped.
func lookRedis(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("TEST_REQUIRE_REDIS") == "1" {
			tb.Fatal(installHint + " (TEST_REQUIRE_REDIS=1)")
		}
		tb.Skip(installHint)
	}
	return bin
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// start runs redis-server (on the same port as before when restarted) and
// waits until it answers PING.
func (s *redisServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		s.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	s.out = new(bytes.Buffer)
	s.cmd = exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
		"--maxmemory-policy", "noeviction",
	)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	setPdeathsig(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: time.Second})
		err := c.Ping(context.Background()).Err()
		c.Close()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.cmd.Process.Kill()
			s.cmd.Wait()
			return fmt.Errorf("redis-server on %s did not answer PING: %v; output:\n%s", s.addr(), err, s.out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the server (SIGKILL: with persistence off, everything is lost).
func (s *redisServer) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// restart kills the server and starts an empty one on the same port.
func (s *redisServer) restart(tb testing.TB) {
	tb.Helper()
	s.stop()
	if err := s.start(); err != nil {
		tb.Fatalf("restarting redis-server: %v", err)
	}
}

// client returns a go-redis client of the server with the options the store
// requires, closed at the end of the test.
func (s *redisServer) client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  s.addr(),
		ContextTimeoutEnabled: true,
		PoolSize:              32,
	})
	tb.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			tb.Errorf("closing client: %v", err)
		}
	})
	return c
}
