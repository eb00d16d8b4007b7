package test

// Helpers of the Redis-mode tests (issue 6): a private redis-server the test
// owns (restartable empty on the same port, pausable), a set of lastevent
// replicas behind the round-robin balancer of package test/lb, the
// replicas' /debug/stream-state with the Redis fields, and the checker that
// every multi-replica test holds each client's history to.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lastevent/lastevent/test/lb"
	"github.com/lastevent/lastevent/test/upstream"
	"github.com/redis/go-redis/v9"
)

const redisInstallHint = "redis-server not found in PATH: install it with `apt-get install -y redis-server` " +
	"(the tests start their own server on a private port; no service is needed)"

// lookRedisServer finds redis-server, or skips the test; with
// TEST_REQUIRE_REDIS=1 (CI, test/all.sh) a missing server fails it.
func lookRedisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("TEST_REQUIRE_REDIS") == "1" {
			t.Fatal(redisInstallHint + " (TEST_REQUIRE_REDIS=1)")
		}
		t.Skip(redisInstallHint)
	}
	return bin
}

// redisProc is one redis-server process of a test: 127.0.0.1, a free port,
// no persistence, so a restart comes back empty. It is killed by PID at the
// end of the test (and by the kernel if the test binary dies: Pdeathsig).
type redisProc struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	args []string // extra arguments (e.g. --requirepass)

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer
}

// lockedBuffer collects a process's output, written by exec's goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loopbackPort returns a loopback port that was free a moment ago.
func loopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedis starts a private redis-server; extra arguments are passed on.
func startRedis(t testing.TB, args ...string) *redisProc {
	t.Helper()
	r := newRedis(t, loopbackPort(t), args...)
	var err error
	for try := 0; try < 3; try++ {
		if err = r.Start(); err == nil {
			return r
		}
		r.port = loopbackPort(t) // taken meanwhile by someone else: another port
	}
	t.Fatalf("starting redis-server: %v", err)
	return nil
}

// newRedis prepares a server on port without starting it (a test of a Redis
// that is not there yet).
func newRedis(t testing.TB, port int, args ...string) *redisProc {
	t.Helper()
	r := &redisProc{t: t, bin: lookRedisServer(t), port: port, dir: t.TempDir(), args: args}
	t.Cleanup(func() {
		if t.Failed() {
			r.mu.Lock()
			if r.out != nil {
				t.Logf("redis-server output (last run):\n%s", r.out)
			}
			r.mu.Unlock()
		}
		r.Kill()
	})
	return r
}

func (r *redisProc) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is the LASTEVENT_REDIS_URL of the server.
func (r *redisProc) URL() string { return "redis://" + r.Addr() }

// Start runs the server on its port (the same one after Kill) and waits
// until it answers. A server that exits at once (the port still held right
// after a kill) is started again until a deadline.
func (r *redisProc) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return fmt.Errorf("redis-server already running on %s", r.Addr())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := new(lockedBuffer)
		cmd := exec.Command(r.bin, append([]string{
			"--port", strconv.Itoa(r.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", r.dir,
			"--daemonize", "no",
			"--logfile", "",
			"--maxmemory-policy", "noeviction",
		}, r.args...)...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return err
		}
		exited := make(chan struct{})
		var waitErr error
		go func() { waitErr = cmd.Wait(); close(exited) }()
		r.out = out
		for !redisAnswers(r.Addr()) {
			select {
			case <-exited:
			case <-time.After(20 * time.Millisecond):
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					<-exited
					return fmt.Errorf("redis-server on %s does not answer\n%s", r.Addr(), out)
				}
				continue
			}
			break
		}
		select {
		case <-exited:
			if time.Now().After(deadline) {
				return fmt.Errorf("redis-server on %s exited: %v\n%s", r.Addr(), waitErr, out)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		default:
		}
		r.cmd, r.exited = cmd, exited
		return nil
	}
}

// redisAnswers says whether a Redis answers PING on addr (NOAUTH counts).
func redisAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// Kill ends the server with SIGKILL (its data is gone) and waits for it.
func (r *redisProc) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
	}
	r.cmd = nil
}

// Restart kills the server and starts an empty one on the same port.
func (r *redisProc) Restart(t testing.TB) {
	t.Helper()
	r.Kill()
	if err := r.Start(); err != nil {
		t.Fatalf("restarting redis-server: %v", err)
	}
}

// Client is a go-redis client of the server, closed at the end of the test.
func (r *redisProc) Client(t testing.TB, password string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: password, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

// Pause runs CLIENT PAUSE d ALL: every client's commands wait until d has
// passed, on connections that stay open.
func (r *redisProc) Pause(t testing.TB, d time.Duration) {
	t.Helper()
	c := r.Client(t, "")
	if err := c.Do(context.Background(), "CLIENT", "PAUSE", strconv.FormatInt(d.Milliseconds(), 10), "ALL").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
}

// replicaConfig describes a set of lastevent replicas in Redis mode.
type replicaConfig struct {
	mode     string             // session or shared
	n        int                // replicas; 0 means 3
	redisURL func(int) string   // LASTEVENT_REDIS_URL of replica i; nil or "": the set's Redis
	env      func(int) []string // extra settings of replica i
	prepare  func(*replicaSet)  // runs once Redis is up, before the replicas start
}

// replicaSet is n lastevent replicas (the real binary) sharing one Redis,
// behind a round-robin balancer, in front of one fake legacy upstream.
type replicaSet struct {
	t     *testing.T
	cfg   replicaConfig
	up    *upstream.Server
	redis *redisProc
	procs []*proc
	lb    *lb.Balancer
}

// replicaLease is the owner lease of the tests: short, so that a takeover
// fits in a few seconds.
const replicaLease = 2 * time.Second

func startReplicaSet(t *testing.T, cfg replicaConfig) *replicaSet {
	t.Helper()
	if cfg.n == 0 {
		cfg.n = 3
	}
	rs := &replicaSet{t: t, cfg: cfg, up: startUpstream(t)}
	rs.redis = startRedis(t)
	if cfg.prepare != nil {
		cfg.prepare(rs)
	}
	for i := range cfg.n {
		rs.procs = append(rs.procs, rs.startReplica(i))
	}
	addrs := make([]string, cfg.n)
	for i, p := range rs.procs {
		addrs[i] = p.Addr
	}
	b, err := lb.New(addrs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	rs.lb = b
	return rs
}

func (rs *replicaSet) replicaEnv(i int) []string {
	url := rs.redis.URL()
	if rs.cfg.redisURL != nil {
		if u := rs.cfg.redisURL(i); u != "" {
			url = u
		}
	}
	env := []string{
		"LASTEVENT_STORE=redis",
		"LASTEVENT_REDIS_URL=" + url,
		fmt.Sprintf("LASTEVENT_NODE_ID=replica-%d", i),
		"LASTEVENT_MODE=" + rs.cfg.mode,
		"LASTEVENT_REDIS_LEASE=" + replicaLease.String(),
		"LASTEVENT_BUFFER_FRAMES=10000",
		"LASTEVENT_LINGER=30s",
		"LASTEVENT_HEARTBEAT=500ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=50ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MAX=500ms",
		"LASTEVENT_LOG_LEVEL=info",
	}
	if rs.cfg.env != nil {
		env = append(env, rs.cfg.env(i)...)
	}
	return env
}

func (rs *replicaSet) startReplica(i int) *proc {
	rs.t.Helper()
	return startProxy(rs.t, rs.up.URL(), rs.replicaEnv(i)...)
}

// alive says whether replica i still runs.
func (rs *replicaSet) alive(i int) bool {
	select {
	case <-rs.procs[i].exited:
		return false
	default:
		return true
	}
}

// replicaStream is a stream as /debug/stream-state shows it in Redis mode.
type replicaStream struct {
	Generation  string `json:"generation"`
	Path        string `json:"path"`
	LastID      string `json:"last_id"`
	Connections int    `json:"connections"`
	Upstream    string `json:"upstream_state"`
	Role        string `json:"role"`
	RedisGen    string `json:"redis_gen"`
}

type replicaState struct {
	Streams []replicaStream `json:"streams"`
	Totals  struct {
		Connections int64 `json:"connections"`
	} `json:"totals"`
	Redis struct {
		State string `json:"state"`
	} `json:"redis"`
	raw string
}

// tryState reads a replica's /debug/stream-state without failing the test.
func tryState(p *proc) (replicaState, error) {
	var st replicaState
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + p.Admin + "/debug/stream-state")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("stream-state: %d %s", resp.StatusCode, b)
	}
	var compact bytes.Buffer
	if json.Compact(&compact, b) == nil {
		st.raw = compact.String()
	} else {
		st.raw = string(b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("stream-state: %v: %s", err, b)
	}
	return st, nil
}

// states renders the live replicas' stream states for a failure message.
func (rs *replicaSet) states() string {
	var b strings.Builder
	for i, p := range rs.procs {
		if !rs.alive(i) {
			fmt.Fprintf(&b, "\n  replica-%d: not running", i)
			continue
		}
		st, err := tryState(p)
		if err != nil {
			fmt.Fprintf(&b, "\n  replica-%d: %v", i, err)
			continue
		}
		fmt.Fprintf(&b, "\n  replica-%d: %.1500s", i, st.raw)
	}
	return b.String()
}

// roles returns, per live replica, the role of its stream on path ("" when it
// has none, "dead" when it does not run).
func (rs *replicaSet) roles(path string) []string {
	out := make([]string, len(rs.procs))
	for i, p := range rs.procs {
		if !rs.alive(i) {
			out[i] = "dead"
			continue
		}
		st, err := tryState(p)
		if err != nil {
			out[i] = "error"
			continue
		}
		for _, s := range st.Streams {
			if s.Path == path {
				out[i] = s.Role
				if out[i] == "" {
					out[i] = "no-role"
				}
			}
		}
	}
	return out
}

// owner waits until exactly one live replica says it owns the stream on
// path and every other live replica in want (nil: none required) has it as a
// follower; it returns the owner's index.
func (rs *replicaSet) owner(path string, followers []int, timeout time.Duration) int {
	rs.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		roles := rs.roles(path)
		owner, owners := -1, 0
		for i, r := range roles {
			if r == "owner" {
				owner, owners = i, owners+1
			}
		}
		ok := owners == 1
		for _, f := range followers {
			if f != owner && roles[f] != "follower" {
				ok = false
			}
		}
		if ok {
			return owner
		}
		if time.Now().After(deadline) {
			rs.t.Fatalf("no single owner of %s within %v (roles per replica %q); stream states:%s", path, timeout, roles, rs.states())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaseHolders gives the node named by each stream lease in Redis.
func (rs *replicaSet) leaseHolders(t testing.TB) []string {
	t.Helper()
	c := rs.redis.Client(t, "")
	ctx := context.Background()
	keys, err := c.Keys(ctx, "{le:*}:lease").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	var out []string
	for _, k := range keys {
		v, err := c.Get(ctx, k).Result()
		if err != nil {
			continue // expired or released meanwhile
		}
		if fields := strings.Fields(v); len(fields) > 0 { // token, instance, node
			out = append(out, fields[len(fields)-1])
		}
	}
	return out
}

// connections is the number of client connections over the live replicas.
func (rs *replicaSet) connections() int64 {
	var n int64
	for i, p := range rs.procs {
		if !rs.alive(i) {
			continue
		}
		if st, err := tryState(p); err == nil {
			n += st.Totals.Connections
		}
	}
	return n
}

// replicaOf says which replica serves the connection whose local address is
// local, through the balancer.
func (rs *replicaSet) replicaOf(local net.Addr) int {
	if local == nil {
		return -1
	}
	i, ok := rs.lb.Backend(local.String())
	if !ok {
		return -1
	}
	return i
}

// currentReplica is the replica a fault client's current connection goes to
// through the balancer (-1 if none).
func (rs *replicaSet) currentReplica(c *faultClient) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return -1
	}
	return rs.replicaOf(c.cur.LocalAddr())
}

// replicaRules is what replicaViolation holds a client's history to.
type replicaRules struct {
	tag   string   // the only tag whose frames this client may see
	first int      // > 0: the first tick must be n=first (unless a sync event precedes it)
	final int      // > 0: the history must end with tick n=final
	syncs []string // sync-required reasons allowed, "system-sync" for that event, "*" any reason; none: no sync at all
	// maxSyncs > 0 bounds the number of sync events.
	maxSyncs int
	// lowerAtSystemSync lets a system-sync carry an id below the previous
	// one. Only for a client that got frames from a stream no other replica
	// knows: an owner cut off from Redis, or the losing one of two streams
	// opened at once for a key while Redis came back empty; a replica of
	// the surviving stream answers those ids with system-sync at its own,
	// possibly lower, head. README ("Running replicas") states this.
	lowerAtSystemSync bool
}

// replicaViolation is the universal check of the multi-replica tests, for
// one client's whole history across its connections and replicas: every
// event is a tick of the client's own stream, intact, or an allowed sync
// event whose payload carries its own id; ids are present and strictly
// increase as strings (across replicas, generations, sync events, skewed
// clocks); tick numbers strictly increase (no duplicate, no reordering);
// wherever they skip, a sync event stands between them (never a silent
// gap); the history ends with n=final. Unlike deliveryViolation it does not
// assume the memory mode's id layout (one generation, consecutive
// sequences), which the Redis mode's hybrid-logical-clock ids need not have.
func replicaViolation(evs []event, r replicaRules) string {
	prevID, prevN, syncSince, syncs := "", 0, false, 0
	allowed := func(reason string) bool {
		for _, s := range r.syncs {
			if s == reason || (s == "*" && reason != "system-sync") {
				return true
			}
		}
		return false
	}
	for i, ev := range evs {
		at := fmt.Sprintf("event %d %s", i, ev)
		if ev.ID == "" {
			return at + ": no id"
		}
		if i > 0 && !(ev.ID > prevID) && !(r.lowerAtSystemSync && ev.Type == "system-sync" && ev.ID != prevID) {
			return fmt.Sprintf("%s: id does not increase (previous %s)", at, prevID)
		}
		prevID = ev.ID
		switch ev.Type {
		case "tick":
			tag, n, ok := faultParseTick(ev.Data)
			if !ok || ev.Data != faultTickData(tag, n) {
				return at + ": corrupt data"
			}
			if tag != r.tag {
				return fmt.Sprintf("%s: a frame of another stream (tag %q)", at, tag)
			}
			switch {
			case prevN == 0 && r.first > 0 && n != r.first && !syncSince:
				return fmt.Sprintf("%s: the first frame is n=%d, want n=%d (n=%d..%d missing with no sync event)", at, n, r.first, r.first, n-1)
			case prevN == 0:
			case n == prevN:
				return fmt.Sprintf("%s: duplicate of n=%d", at, n)
			case n < prevN:
				return fmt.Sprintf("%s: n=%d after n=%d (reordered or a duplicate)", at, n, prevN)
			case n != prevN+1 && !syncSince:
				return fmt.Sprintf("%s: silent gap: n=%d..%d missing with no sync event", at, prevN+1, n-1)
			}
			prevN, syncSince = n, false
		case "sync-required", "system-sync":
			reason := "system-sync"
			if ev.Type == "sync-required" {
				var p struct{ Reason, ID string }
				if json.Unmarshal([]byte(ev.Data), &p) != nil || p.ID != ev.ID {
					return at + ": malformed sync-required payload (or its id differs from the event's)"
				}
				reason = p.Reason
			}
			if !allowed(reason) {
				return fmt.Sprintf("%s: unexpected %s (%s)", at, ev.Type, reason)
			}
			syncs++
			if r.maxSyncs > 0 && syncs > r.maxSyncs {
				return fmt.Sprintf("%s: %d sync events, at most %d expected", at, syncs, r.maxSyncs)
			}
			syncSince = true
		default:
			return at + ": unexpected event type"
		}
	}
	if r.final > 0 {
		if len(evs) == 0 {
			return "no event at all"
		}
		if last := evs[len(evs)-1]; last.Type != "tick" || prevN != r.final {
			return fmt.Sprintf("the history ends with %s (n=%d), not with n=%d", last, prevN, r.final)
		}
	}
	return ""
}

// checkReplicaHistory reports a violation with the history.
func checkReplicaHistory(t testing.TB, who string, evs []event, r replicaRules) bool {
	t.Helper()
	if msg := replicaViolation(evs, r); msg != "" {
		t.Errorf("%s: %s\n  expected: frames of %q, consecutive from n=%d (a sync event only where frames are missing; allowed: %v), ending with n=%d\n  seen (%d events): %s",
			who, msg, r.tag, r.first, r.syncs, r.final, len(evs), replicaHistory(evs))
		return false
	}
	return true
}

// replicaHistory renders a history compactly: runs of consecutive ticks with
// their first and last ids, sync events in brackets.
func replicaHistory(evs []event) string {
	var b strings.Builder
	for i := 0; i < len(evs); {
		ev := evs[i]
		tag, n, ok := faultParseTick(ev.Data)
		if ev.Type != "tick" || !ok || ev.Data != faultTickData(tag, n) {
			if ev.Type == "tick" {
				fmt.Fprintf(&b, " CORRUPT(%s %.60q)", ev.ID, ev.Data)
			} else {
				fmt.Fprintf(&b, " [%s id=%s %.100s]", ev.Type, ev.ID, ev.Data)
			}
			i++
			continue
		}
		j := i + 1
		for j < len(evs) && evs[j].Type == "tick" && evs[j].ID > evs[j-1].ID {
			t2, n2, ok := faultParseTick(evs[j].Data)
			if !ok || t2 != tag || n2 != n+(j-i) || evs[j].Data != faultTickData(t2, n2) {
				break
			}
			j++
		}
		if j-i == 1 {
			fmt.Fprintf(&b, " %s:n%d(%s)", tag, n, ev.ID)
		} else {
			fmt.Fprintf(&b, " %s:n%d-%d(%s..%s)", tag, n, n+j-i-1, ev.ID, evs[j-1].ID)
		}
		i = j
	}
	return strings.TrimSpace(b.String())
}

// syncCount counts the sync events of a history by kind ("system-sync",
// "sync-required:<reason>").
func syncCount(evs []event) map[string]int {
	m := faultCountTypes(evs)
	delete(m, "tick")
	return m
}

// sameIDs checks that a frame has one id whatever replica delivered it (the
// log is shared): ids maps n to the id first seen for it, per tag.
type sameIDs struct {
	mu  sync.Mutex
	ids map[string]string // tag/n -> id
	bad []string
}

func (s *sameIDs) add(who string, evs []event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]string{}
	}
	for _, ev := range evs {
		tag, n, ok := faultParseTick(ev.Data)
		if ev.Type != "tick" || !ok {
			continue
		}
		k := fmt.Sprintf("%s/%d", tag, n)
		if id, seen := s.ids[k]; !seen {
			s.ids[k] = ev.ID
		} else if id != ev.ID && len(s.bad) < 5 {
			s.bad = append(s.bad, fmt.Sprintf("%s got %s n=%d with id %s, another client with %s", who, tag, n, ev.ID, id))
		}
	}
}

// ticksOnly returns the ticks' numbers of a history.
func ticksOnly(evs []event) []int {
	var out []int
	for _, ev := range evs {
		if _, n, ok := faultParseTick(ev.Data); ok && ev.Type == "tick" {
			out = append(out, n)
		}
	}
	return out
}

// stallMonitor samples how far a set of fault clients got and records the
// longest time any of them went without a new frame while watching.
type stallMonitor struct {
	mu      sync.Mutex
	longest map[string]time.Duration
	stop    chan struct{}
	done    chan struct{}
}

func watchStalls(cs []*faultClient) *stallMonitor {
	m := &stallMonitor{longest: map[string]time.Duration{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		last := make([]int, len(cs))
		since := make([]time.Time, len(cs))
		now := time.Now()
		for i, c := range cs {
			last[i], since[i] = c.LastN(), now
		}
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tk.C:
			}
			now := time.Now()
			m.mu.Lock()
			for i, c := range cs {
				if n := c.LastN(); n != last[i] {
					last[i], since[i] = n, now
				}
				if d := now.Sub(since[i]); d > m.longest[c.name] {
					m.longest[c.name] = d
				}
			}
			m.mu.Unlock()
		}
	}()
	return m
}

// Stop ends the watch and returns the longest stall per client.
func (m *stallMonitor) Stop() map[string]time.Duration {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.longest
}

// sharedRun is the common start of the shared-mode replica tests: a replica
// set, nine fault clients on path through the balancer (all attached, one
// owner among the replicas), and a feeder sending one tick every 20 ms. The
// clients and the feeder stop at the end of the test at the latest.
type sharedRun struct {
	rs      *replicaSet
	feed    *upstream.Feed
	clients []*faultClient
	fc      *faultClients
	f       *faultFeeder
	owner   int
}

func startSharedRun(t *testing.T, path string, seed uint64) *sharedRun {
	t.Helper()
	rs := startReplicaSet(t, replicaConfig{mode: "shared"})
	run := &sharedRun{rs: rs, feed: rs.up.Feed(path)}
	rng := newFaultRand(seed, 1)
	run.clients = make([]*faultClient, 9)
	for i := range run.clients {
		run.clients[i] = newFaultClient(fmt.Sprintf("c%d", i), path, rs.lb.Addr, rng)
	}
	run.fc = startFaultClients(run.clients)
	t.Cleanup(run.fc.Stop)
	waitFor(t, 10*time.Second, "9 clients attached", func() bool { return rs.connections() == 9 })
	run.owner = rs.owner(path, []int{0, 1, 2}, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	run.f = faultStartFeeder(run.feed, 20*time.Millisecond, func(*http.Request) string { return "shared" })
	t.Cleanup(func() { run.f.Stop() })
	return run
}
