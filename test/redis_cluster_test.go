package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRedisCluster starts a three-master Redis Cluster on loopback (no
// persistence, private ports) and returns the cluster URL for
// LASTEVENT_REDIS_URL with LASTEVENT_REDIS_CLUSTER=true.
func startRedisCluster(t *testing.T) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err != nil || err2 != nil {
		if os.Getenv("TEST_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server and redis-cli are required (TEST_REQUIRE_REDIS=1)")
		}
		t.Skip("redis-server or redis-cli not installed")
	}
	var addrs []string
	for range 3 {
		port := freePort(t)
		dir := t.TempDir()
		cmd := exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--dir", dir, "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	for _, a := range addrs {
		waitFor(t, 5*time.Second, "redis node "+a, func() bool {
			c, err := net.Dial("tcp", a)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	create := exec.Command(cli, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...)
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	waitFor(t, 10*time.Second, "cluster state ok", func() bool {
		for _, a := range addrs {
			host, port, _ := net.SplitHostPort(a)
			out, _ := exec.Command(cli, "-h", host, "-p", port, "cluster", "info").Output()
			if !strings.Contains(string(out), "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return fmt.Sprintf("redis://%s?addr=%s&addr=%s", addrs[0], addrs[1], addrs[2])
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestRedisClusterResumeOnAnotherReplica: with a Redis Cluster as the store
// (a stream's keys share one hash tag; the key index and aliases live in
// other slots), a client that read from replica A resumes exactly on
// replica B, in shared and in session mode.
func TestRedisClusterResumeOnAnotherReplica(t *testing.T) {
	url := startRedisCluster(t)
	for _, mode := range []string{"shared", "session"} {
		t.Run(mode, func(t *testing.T) {
			up := startUpstream(t)
			feed := up.Feed("/feed/cluster-" + mode)
			env := []string{"LASTEVENT_STORE=redis", "LASTEVENT_REDIS_URL=" + url, "LASTEVENT_REDIS_CLUSTER=true",
				"LASTEVENT_MODE=" + mode, "LASTEVENT_REDIS_LEASE=1500ms"}
			a := startProxy(t, up.URL(), append(env, "LASTEVENT_NODE_ID=cluster-a")...)
			b := startProxy(t, up.URL(), append(env, "LASTEVENT_NODE_ID=cluster-b")...)
			path := "/feed/cluster-" + mode
			ca := dial(t, a.URL(), path)
			if !feed.WaitConns(1, 5*time.Second) {
				t.Fatal("upstream not connected")
			}
			for i := 1; i <= 5; i++ {
				feed.Send(fmt.Sprintf("data: m%d\n\n", i))
			}
			var ids []string
			for i := 1; i <= 5; i++ {
				ev := ca.Next(5 * time.Second)
				if ev.Data != fmt.Sprintf("m%d", i) {
					t.Fatalf("A: event %d = %v", i, ev)
				}
				ids = append(ids, ev.ID)
			}
			ca.Close()
			cb := dial(t, b.URL(), path, "Last-Event-ID: "+ids[1])
			for i := 3; i <= 5; i++ {
				ev := cb.Next(5 * time.Second)
				if ev.Data != fmt.Sprintf("m%d", i) || ev.ID != ids[i-1] {
					t.Fatalf("B replayed %v, want m%d with id %s", ev, i, ids[i-1])
				}
			}
			// Live frames reach B's client through Redis, after the replay.
			feed.Send("data: m6\n\n")
			ev := cb.Next(5 * time.Second)
			if ev.Data != "m6" || ev.ID <= ids[4] {
				t.Fatalf("B live %v after %s", ev, ids[4])
			}
			if _, body := b.adminGet(t, "/debug/stream-state"); !strings.Contains(string(body), `"role": "follower"`) {
				t.Fatalf("B's stream is not a follower:\n%s", body)
			}
		})
	}
}
