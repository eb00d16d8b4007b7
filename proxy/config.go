package proxy

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caarlos0/env/v11"
	"github.com/rs/zerolog"
)

// EnvPrefix is the prefix of every environment variable lastevent reads.
const EnvPrefix = "LASTEVENT_"

// RawConfig is the configuration as read from the environment, one string per
// variable, so that every value can be checked and reported by its variable
// name. Parse turns it into a Config. The env tags are the public interface.
type RawConfig struct {
	UpstreamURL      string `env:"UPSTREAM_URL"`
	ListenAddr       string `env:"LISTEN_ADDR" envDefault:":8080"`
	AdminAddr        string `env:"ADMIN_ADDR" envDefault:":8081"`
	Mode             string `env:"MODE" envDefault:"session"`
	BufferFrames     string `env:"BUFFER_FRAMES" envDefault:"1000"`
	MaxMemory        string `env:"MAX_MEMORY" envDefault:"256MiB"`
	Linger           string `env:"LINGER" envDefault:"60s"`
	Heartbeat        string `env:"HEARTBEAT" envDefault:"15s"`
	Retry            string `env:"RETRY" envDefault:"3s"`
	StreamKeyHeaders string `env:"STREAM_KEY_HEADERS" envDefault:"Authorization,Cookie"`
	LastEventIDParam string `env:"LAST_EVENT_ID_PARAM" envDefault:"lastEventId"`
	MaxFrameBytes    string `env:"MAX_FRAME_BYTES" envDefault:"1MiB"`
	LogLevel         string `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat        string `env:"LOG_FORMAT" envDefault:"json"`

	MaxConnections         string `env:"MAX_CONNECTIONS" envDefault:"10000"`
	MaxHeaderBytes         string `env:"MAX_HEADER_BYTES" envDefault:"16KiB"`
	MaxBodyBytes           string `env:"MAX_BODY_BYTES" envDefault:"10MiB"`
	MaxBodyMemory          string `env:"MAX_BODY_MEMORY" envDefault:"0"`
	WriteTimeout           string `env:"WRITE_TIMEOUT" envDefault:"10s"`
	ClientDeadTimeout      string `env:"CLIENT_DEAD_TIMEOUT" envDefault:"10s"`
	UpstreamTimeout        string `env:"UPSTREAM_TIMEOUT" envDefault:"10s"`
	UpstreamIdleTimeout    string `env:"UPSTREAM_IDLE_TIMEOUT" envDefault:"0"`
	UpstreamResumes        string `env:"UPSTREAM_RESUMES" envDefault:"false"`
	UpstreamPass5xx        string `env:"UPSTREAM_PASS_5XX" envDefault:"false"`
	UpstreamBackoffMin     string `env:"UPSTREAM_BACKOFF_MIN" envDefault:"200ms"`
	UpstreamBackoffMax     string `env:"UPSTREAM_BACKOFF_MAX" envDefault:"10s"`
	UpstreamMaxConnections string `env:"UPSTREAM_MAX_CONNECTIONS" envDefault:"0"`
	SystemSyncData         string `env:"SYSTEM_SYNC_DATA" envDefault:"{}"`
	ShutdownGrace          string `env:"SHUTDOWN_GRACE" envDefault:"10s"`
	Pprof                  string `env:"PPROF" envDefault:"false"`

	Store          string `env:"STORE" envDefault:"memory"`
	RedisURL       string `env:"REDIS_URL"`
	RedisPassword  string `env:"REDIS_PASSWORD"`
	RedisCluster   string `env:"REDIS_CLUSTER" envDefault:"false"`
	NodeID         string `env:"NODE_ID"`
	RedisLease     string `env:"REDIS_LEASE" envDefault:"6s"`
	RedisTimeout   string `env:"REDIS_TIMEOUT" envDefault:"500ms"`
	RedisRetention string `env:"REDIS_RETENTION" envDefault:"1h"`
	ClockOffset    string `env:"CLOCK_OFFSET" envDefault:"0"`
}

// Mode says how a request finds its stream.
type Mode int

const (
	// ModeSession gives every new client connection its own upstream
	// connection; a resume finds the stream by the generation in its id.
	ModeSession Mode = iota
	// ModeShared lets clients with the same stream key (path, query and the
	// stream-key headers) share one upstream connection.
	ModeShared
)

func (m Mode) String() string {
	if m == ModeShared {
		return "shared"
	}
	return "session"
}

// Config is the parsed, validated configuration. The zero value is not
// usable; build it with LoadConfig or RawConfig.Parse.
type Config struct {
	Upstream         *url.URL // scheme http or https, host set, no query or fragment
	ListenAddr       string
	AdminAddr        string
	Mode             Mode
	BufferFrames     int           // frames kept per stream, >= 1
	MaxMemory        int64         // buffered frame bytes, all streams together, > 0
	Linger           time.Duration // 0 closes a stream as soon as its last client leaves
	Heartbeat        time.Duration // > 0
	Retry            time.Duration // sent as retry: at the start of each response
	StreamKeyHeaders []string      // canonical header names; may be empty
	LastEventIDParam string        // empty disables the query parameter
	MaxFrameBytes    int
	LogLevel         string
	LogFormat        string // json or console

	MaxConnections         int           // concurrent client connections; more get 503
	MaxHeaderBytes         int           // request header size; larger gets 431
	MaxBodyBytes           int           // non-SSE request and response bodies
	MaxBodyMemory          int64         // request bodies being read at once, all together; more get 503
	WriteTimeout           time.Duration // one write to a client; a client that does not read is dropped
	ClientDeadTimeout      time.Duration // TCP_USER_TIMEOUT and keepalive on client connections; 0 keeps the OS default
	UpstreamTimeout        time.Duration // connect and time to the first response byte
	UpstreamIdleTimeout    time.Duration // silence on an upstream stream before reconnecting; 0 waits forever
	UpstreamResumes        bool          // trust the upstream to honour Last-Event-ID: no sync-required on reconnect
	UpstreamPass5xx        bool          // pass an upstream 5xx to the client instead of holding the stream
	UpstreamBackoffMin     time.Duration
	UpstreamBackoffMax     time.Duration
	UpstreamMaxConnections int    // upstream connections; 0 means MaxConnections + 64
	SystemSyncData         string // data of system-sync events, one line of JSON
	ShutdownGrace          time.Duration
	Pprof                  bool // serve /debug/pprof/ on the admin address

	// Redis is the shared store; nil keeps every log in this process
	// (LASTEVENT_STORE=memory).
	Redis       *RedisConfig
	ClockOffset time.Duration // added to the clock used for new generations (testing clock skew)
}

// RedisConfig is the shared store's configuration (LASTEVENT_STORE=redis).
type RedisConfig struct {
	URL       string // redis:// or rediss://, as given (it may hold a password: log Addr instead)
	Addr      string // host:port of the first server, for messages
	Password  string // overrides the URL's password when set
	Cluster   bool
	NodeID    string        // names this replica as a lease holder; default the hostname
	Lease     time.Duration // owner lease; renewed every third
	Timeout   time.Duration // bound on every call
	Retention time.Duration // keys kept after the last owner left
}

// LoadConfig reads the configuration from environ (KEY=VALUE pairs, as
// os.Environ returns) and validates it. Unknown LASTEVENT_* variables are
// returned as warnings, not errors.
func LoadConfig(environ []string) (cfg Config, warnings []string, err error) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	var raw RawConfig
	if err := env.ParseWithOptions(&raw, env.Options{Prefix: EnvPrefix, Environment: m}); err != nil {
		return Config{}, nil, err
	}
	// caarlos0/env replaces a variable that is set but empty by its
	// default; for these two, empty means "none" (it disables the feature).
	if v, ok := m[EnvPrefix+"STREAM_KEY_HEADERS"]; ok && strings.TrimSpace(v) == "" {
		raw.StreamKeyHeaders = ""
	}
	if v, ok := m[EnvPrefix+"LAST_EVENT_ID_PARAM"]; ok && strings.TrimSpace(v) == "" {
		raw.LastEventIDParam = ""
	}
	known := make(map[string]bool)
	for _, name := range VariableNames() {
		known[name] = true
	}
	for k := range m {
		if strings.HasPrefix(k, EnvPrefix) && !known[k] && !isServiceLink(k) {
			warnings = append(warnings, fmt.Sprintf("%s is not a lastevent setting; ignored (known: %s)", k, strings.Join(VariableNames(), ", ")))
		}
	}
	sort.Strings(warnings)
	cfg, err = raw.Parse()
	if err == nil && cfg.Mode == ModeSession && cfg.UpstreamMaxConnections < cfg.MaxConnections {
		warnings = append(warnings, fmt.Sprintf("LASTEVENT_UPSTREAM_MAX_CONNECTIONS=%d is below LASTEVENT_MAX_CONNECTIONS=%d: in session mode every client needs an upstream connection, so clients past %d wait for a free one (heartbeats, no frames) while the first ones stay",
			cfg.UpstreamMaxConnections, cfg.MaxConnections, cfg.UpstreamMaxConnections))
	}
	return cfg, warnings, err
}

// Variables lists every setting with its default, in declaration order. The
// README and the Helm chart are checked against it.
func Variables() []env.FieldParams {
	params, err := env.GetFieldParamsWithOptions(&RawConfig{}, env.Options{Prefix: EnvPrefix})
	if err != nil {
		panic(err) // the struct tags are constant
	}
	return params
}

// VariableNames lists the names of every setting.
func VariableNames() []string {
	var names []string
	for _, p := range Variables() {
		names = append(names, p.Key)
	}
	return names
}

// Parse validates every value and reports all problems at once, one line per
// problem, each naming its variable. It is pure.
func (r RawConfig) Parse() (Config, error) {
	var c Config
	var errs []error
	bad := func(name, value, rule string) {
		errs = append(errs, fmt.Errorf("%s%s=%q: %s", EnvPrefix, name, value, rule))
	}
	durPos := func(name, v string, allowZero bool) time.Duration {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		switch {
		case err != nil:
			bad(name, v, "must be a duration such as 500ms, 15s or 2m")
		case d < 0 || (d == 0 && !allowZero):
			if allowZero {
				bad(name, v, "must not be negative")
			} else {
				bad(name, v, "must be greater than 0")
			}
		}
		return d
	}
	intRange := func(name, v string, lo, hi int64) int64 {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < lo || n > hi {
			bad(name, v, fmt.Sprintf("must be a whole number from %d to %d", lo, hi))
		}
		return n
	}
	size := func(name, v string, lo, hi int64) int64 {
		n, err := ParseByteSize(v)
		if err != nil {
			bad(name, v, err.Error())
		} else if n < lo || n > hi {
			bad(name, v, fmt.Sprintf("must be from %s to %s", FormatByteSize(lo), FormatByteSize(hi)))
			return 0 // reported once: the cross checks below skip a 0
		}
		return n
	}
	boolean := func(name, v string) bool {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			bad(name, v, "must be true or false")
		}
		return b
	}
	addr := func(name, v string) string {
		v = strings.TrimSpace(v)
		if _, port, err := net.SplitHostPort(v); err != nil {
			bad(name, v, "must be host:port or :port")
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad(name, v, "port must be a number from 0 to 65535")
		}
		return v
	}

	shownUp := redactURL(r.UpstreamURL) // the value may hold a password or a token
	if strings.TrimSpace(r.UpstreamURL) == "" {
		bad("UPSTREAM_URL", shownUp, "is required: the base URL of the upstream, e.g. http://127.0.0.1:9000")
	} else if u, err := url.Parse(strings.TrimSpace(r.UpstreamURL)); err != nil {
		bad("UPSTREAM_URL", shownUp, "is not a URL: "+urlErrText(err))
	} else if u.Scheme != "http" && u.Scheme != "https" {
		bad("UPSTREAM_URL", shownUp, "scheme must be http or https")
	} else if u.Host == "" || u.Hostname() == "" {
		bad("UPSTREAM_URL", shownUp, "must name a host, e.g. http://127.0.0.1:9000")
	} else if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		bad("UPSTREAM_URL", shownUp, "must not hold a query, fragment or user info")
	} else if p, err := strconv.Atoi(u.Port()); u.Port() != "" && (err != nil || p < 1 || p > 65535) {
		bad("UPSTREAM_URL", shownUp, "port must be a number from 1 to 65535")
	} else {
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = strings.TrimSuffix(u.RawPath, "/") // else String drops its escapes (%2F)
		c.Upstream = u
	}
	c.ListenAddr = addr("LISTEN_ADDR", r.ListenAddr)
	c.AdminAddr = addr("ADMIN_ADDR", r.AdminAddr)
	if sameListener(c.ListenAddr, c.AdminAddr) {
		bad("ADMIN_ADDR", r.AdminAddr, "must not be LASTEVENT_LISTEN_ADDR's address: the two listeners cannot share a port")
	}
	switch strings.TrimSpace(r.Mode) {
	case "session":
		c.Mode = ModeSession
	case "shared":
		c.Mode = ModeShared
	default:
		bad("MODE", r.Mode, "must be session or shared")
	}
	c.BufferFrames = int(intRange("BUFFER_FRAMES", r.BufferFrames, 1, 10_000_000))
	c.MaxMemory = size("MAX_MEMORY", r.MaxMemory, 64<<10, 1<<50)
	c.Linger = durPos("LINGER", r.Linger, true)
	c.Heartbeat = durPos("HEARTBEAT", r.Heartbeat, false)
	if c.Heartbeat > 0 && c.Heartbeat < minTimeout {
		bad("HEARTBEAT", r.Heartbeat, "must be at least "+minTimeout.String()+": every client gets a comment that often")
	}
	c.Retry = durPos("RETRY", r.Retry, false)
	if c.Retry > MaxRetry || (c.Retry > 0 && c.Retry < MinRetry) {
		// The same bounds as an upstream's retry: a tiny one makes every
		// client hammer the proxy.
		bad("RETRY", r.Retry, "must be from "+MinRetry.String()+" to "+MaxRetry.String())
	}
	for _, h := range strings.Split(r.StreamKeyHeaders, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if !validToken(h) {
			bad("STREAM_KEY_HEADERS", r.StreamKeyHeaders, fmt.Sprintf("%q is not a header name", h))
			continue
		}
		c.StreamKeyHeaders = append(c.StreamKeyHeaders, textproto.CanonicalMIMEHeaderKey(h))
	}
	c.LastEventIDParam = strings.TrimSpace(r.LastEventIDParam)
	if c.LastEventIDParam != "" && url.QueryEscape(c.LastEventIDParam) != c.LastEventIDParam {
		bad("LAST_EVENT_ID_PARAM", r.LastEventIDParam, "must be a plain query parameter name (letters, digits, - _ .)")
	}
	c.MaxFrameBytes = int(size("MAX_FRAME_BYTES", r.MaxFrameBytes, 1<<10, 1<<30))
	if c.MaxFrameBytes > 0 && c.MaxMemory > 0 && int64(c.MaxFrameBytes) > c.MaxMemory {
		bad("MAX_FRAME_BYTES", r.MaxFrameBytes, "must not exceed LASTEVENT_MAX_MEMORY ("+strings.TrimSpace(r.MaxMemory)+"): set it lower too (its default is 1MiB), or LASTEVENT_MAX_MEMORY higher")
	}
	c.LogLevel = strings.ToLower(strings.TrimSpace(r.LogLevel))
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled":
	default:
		bad("LOG_LEVEL", r.LogLevel, "must be one of trace, debug, info, warn, error, fatal, panic, disabled")
	}
	c.LogFormat = strings.ToLower(strings.TrimSpace(r.LogFormat))
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", r.LogFormat, "must be json or console")
	}

	c.MaxConnections = int(intRange("MAX_CONNECTIONS", r.MaxConnections, 1, 10_000_000))
	// Each connection reading a request head holds a buffer of this size,
	// for up to a minute if the client stalls: 1 MiB x 10,000 is 10 GiB.
	c.MaxHeaderBytes = int(size("MAX_HEADER_BYTES", r.MaxHeaderBytes, 1<<10, 1<<20))
	// 0 would mean three things: fasthttp's 4 MiB default for request
	// bodies, no bound on responses, and every passed-through answer a 502.
	c.MaxBodyBytes = int(size("MAX_BODY_BYTES", r.MaxBodyBytes, 1, 1<<30))
	if strings.TrimSpace(r.MaxBodyMemory) == "0" {
		c.MaxBodyMemory = max(64<<20, bodyBuffer(int64(c.MaxBodyBytes)))
	} else {
		c.MaxBodyMemory = size("MAX_BODY_MEMORY", r.MaxBodyMemory, 64<<10, 1<<40)
		if least := bodyBuffer(int64(c.MaxBodyBytes)); c.MaxBodyMemory > 0 && c.MaxBodyBytes > 0 && c.MaxBodyMemory < least {
			bad("MAX_BODY_MEMORY", r.MaxBodyMemory, fmt.Sprintf("must be at least %s: a body of LASTEVENT_MAX_BODY_BYTES takes a buffer that large (rounded up to a power of two)", FormatByteSize(least)))
		}
	}
	c.WriteTimeout = durPos("WRITE_TIMEOUT", r.WriteTimeout, false)
	if c.WriteTimeout > 0 && c.WriteTimeout < minTimeout {
		bad("WRITE_TIMEOUT", r.WriteTimeout, "must be at least "+minTimeout.String()+": one write to a client may take that long")
	}
	c.ClientDeadTimeout = durPos("CLIENT_DEAD_TIMEOUT", r.ClientDeadTimeout, true)
	c.UpstreamTimeout = durPos("UPSTREAM_TIMEOUT", r.UpstreamTimeout, false)
	c.UpstreamIdleTimeout = durPos("UPSTREAM_IDLE_TIMEOUT", r.UpstreamIdleTimeout, true)
	c.UpstreamResumes = boolean("UPSTREAM_RESUMES", r.UpstreamResumes)
	c.UpstreamPass5xx = boolean("UPSTREAM_PASS_5XX", r.UpstreamPass5xx)
	c.UpstreamBackoffMin = durPos("UPSTREAM_BACKOFF_MIN", r.UpstreamBackoffMin, false)
	c.UpstreamBackoffMax = durPos("UPSTREAM_BACKOFF_MAX", r.UpstreamBackoffMax, false)
	if c.UpstreamBackoffMin > 0 && c.UpstreamBackoffMax > 0 && c.UpstreamBackoffMax < c.UpstreamBackoffMin {
		bad("UPSTREAM_BACKOFF_MAX", r.UpstreamBackoffMax, "must not be below LASTEVENT_UPSTREAM_BACKOFF_MIN")
	}
	c.UpstreamMaxConnections = int(intRange("UPSTREAM_MAX_CONNECTIONS", r.UpstreamMaxConnections, 0, 10_000_000))
	if c.UpstreamMaxConnections == 0 {
		c.UpstreamMaxConnections = c.MaxConnections + 64
	}
	c.SystemSyncData = strings.TrimSpace(r.SystemSyncData)
	if strings.ContainsAny(c.SystemSyncData, "\r\n") || c.SystemSyncData == "" {
		bad("SYSTEM_SYNC_DATA", r.SystemSyncData, "must be one non-empty line (JSON such as {})")
	}
	c.ShutdownGrace = durPos("SHUTDOWN_GRACE", r.ShutdownGrace, false)
	c.Pprof = boolean("PPROF", r.Pprof)
	c.ClockOffset = durAny("CLOCK_OFFSET", r.ClockOffset, bad)
	switch strings.TrimSpace(r.Store) {
	case "memory":
	case "redis":
		rc := &RedisConfig{
			URL:       strings.TrimSpace(r.RedisURL),
			Password:  r.RedisPassword,
			Cluster:   boolean("REDIS_CLUSTER", r.RedisCluster),
			NodeID:    strings.TrimSpace(r.NodeID),
			Lease:     durPos("REDIS_LEASE", r.RedisLease, false),
			Timeout:   durPos("REDIS_TIMEOUT", r.RedisTimeout, false),
			Retention: durPos("REDIS_RETENTION", r.RedisRetention, false),
		}
		if rc.URL == "" {
			bad("REDIS_URL", r.RedisURL, "is required with LASTEVENT_STORE=redis, e.g. redis://redis:6379 or rediss://user:password@redis:6380/0")
		} else if addr, err := redisAddr(rc.URL, rc.Cluster); err != nil {
			bad("REDIS_URL", redactURL(r.RedisURL), err.Error())
		} else {
			rc.Addr = addr
		}
		if rc.NodeID == "" {
			rc.NodeID = defaultNodeID()
		}
		if rc.NodeID == "" || len(rc.NodeID) > 255 || strings.ContainsFunc(rc.NodeID, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			bad("NODE_ID", r.NodeID, "must be 1 to 255 bytes without spaces or control characters (default: the hostname)")
		}
		if rc.Lease > 0 && rc.Lease < 300*time.Millisecond {
			bad("REDIS_LEASE", r.RedisLease, "must be at least 300ms")
		}
		if rc.Lease >= 300*time.Millisecond && rc.Timeout > 0 && rc.Timeout*2 > rc.Lease {
			bad("REDIS_TIMEOUT", r.RedisTimeout, "must be at most half of LASTEVENT_REDIS_LEASE, or a slow call outlives the lease")
		}
		c.Redis = rc
	default:
		bad("STORE", r.Store, "must be memory or redis")
	}
	return c, errors.Join(errs...)
}

// MaxRetry and MinRetry bound the retry: values passed to clients, including
// an upstream's own (Chromium takes a huge retry as "never reconnect").
const (
	MinRetry = 100 * time.Millisecond
	MaxRetry = 5 * time.Minute
)

func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"TB", 1000_000_000_000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseByteSize parses sizes such as 64KiB, 1GiB, 10MB or plain bytes.
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num, mult := s, int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("must be a size such as 65536, 64KiB, 256MiB or 1GiB")
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("is too large")
	}
	return n * mult, nil
}

// FormatByteSize renders n with the largest binary unit that divides it.
func FormatByteSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return strconv.FormatInt(n/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// MarshalZerologObject logs the configuration at start-up. The upstream URL
// is logged without user info; header values are never part of it.
func (c *Config) MarshalZerologObject(e *zerolog.Event) {
	e.Str("upstream_url", c.Upstream.Redacted()).Str("mode", c.Mode.String()).
		Int("buffer_frames", c.BufferFrames).Str("max_memory", FormatByteSize(c.MaxMemory)).
		Dur("linger", c.Linger).Dur("heartbeat", c.Heartbeat).Dur("retry", c.Retry).
		Strs("stream_key_headers", c.StreamKeyHeaders).Str("last_event_id_param", c.LastEventIDParam).
		Int("max_frame_bytes", c.MaxFrameBytes).Int("max_connections", c.MaxConnections).
		Dur("write_timeout", c.WriteTimeout).Dur("client_dead_timeout", c.ClientDeadTimeout).
		Dur("upstream_timeout", c.UpstreamTimeout).Dur("upstream_idle_timeout", c.UpstreamIdleTimeout).
		Bool("upstream_resumes", c.UpstreamResumes).Bool("upstream_pass_5xx", c.UpstreamPass5xx).
		Dur("shutdown_grace", c.ShutdownGrace)
}

// isServiceLink reports variables that Kubernetes injects for a Service named
// lastevent (LASTEVENT_SERVICE_HOST, LASTEVENT_PORT_8080_TCP, ...): not
// settings, and not worth a warning.
func isServiceLink(k string) bool {
	rest := strings.TrimPrefix(k, EnvPrefix)
	return strings.HasPrefix(rest, "SERVICE_HOST") || strings.HasPrefix(rest, "SERVICE_PORT") || rest == "PORT" || strings.HasPrefix(rest, "PORT_")
}

// durAny parses a duration that may be negative or zero.
func durAny(name, v string, bad func(name, value, rule string)) time.Duration {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		bad(name, v, "must be a duration such as -1h, 0 or 30s")
	}
	return d
}

// redisAddr checks a Redis URL with go-redis's own parser (so what passes
// here is what the client accepts) and returns the first host:port.
func redisAddr(raw string, cluster bool) (string, error) {
	if !strings.Contains(raw, "://") {
		return "", errors.New("scheme must be redis or rediss (TLS), e.g. redis://redis:6379")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("is not a URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "", errors.New("scheme must be redis or rediss (TLS), e.g. redis://redis:6379")
	}
	if u.Hostname() == "" {
		return "", errors.New("must name a host, e.g. redis://redis:6379")
	}
	if cluster {
		o, err := redis.ParseClusterURL(raw)
		if err != nil {
			return "", errors.New(strings.TrimPrefix(err.Error(), "redis: "))
		}
		for _, a := range o.Addrs {
			if err := checkHostPort(a); err != nil {
				return "", err
			}
		}
		return o.Addrs[0], nil
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return "", errors.New(strings.TrimPrefix(err.Error(), "redis: "))
	}
	if err := checkHostPort(o.Addr); err != nil {
		return "", err
	}
	return o.Addr, nil
}

// checkHostPort rejects what the dial would: a port out of range.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", addr)
	}
	return nil
}

// redactURL hides a password, a query and a fragment in a URL for messages
// and logs (a query may carry a token).
func redactURL(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		if strings.ContainsAny(raw, "@?#") {
			return "(unparsable URL)" // it may hold a password or a token
		}
		return raw
	}
	if u.RawQuery != "" {
		u.RawQuery = "xxxxx"
	}
	if u.Fragment != "" {
		u.Fragment, u.RawFragment = "xxxxx", ""
	}
	if u.User != nil {
		if _, ok := u.User.Password(); !ok && u.User.Username() != "" {
			// User info without a password is a token as often as a name
			// ("https://TOKEN@host"); Redacted shows it as it is.
			u.User = url.User("xxxxx")
		}
	}
	return u.Redacted()
}

// urlErrText is a url.Parse error without the URL it quotes.
func urlErrText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// defaultNodeID is the hostname: in Kubernetes, the pod name.
func defaultNodeID() string {
	h, _ := os.Hostname()
	return h
}

// minTimeout is the least LASTEVENT_HEARTBEAT and LASTEVENT_WRITE_TIMEOUT:
// a heartbeat of 1ns wrote megabytes of comments a second to every client.
const minTimeout = 10 * time.Millisecond

// sameListener reports whether two host:port addresses would bind the same
// port: the same non-zero port, and the same host or a wildcard on either.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" || h == "[::]" }
	if ha == hb || wild(ha) || wild(hb) {
		return true
	}
	// One address spelt two ways: 127.0.0.1 and localhost, ::1 and 0:0::1.
	ips := func(h string) []string {
		if h == "localhost" {
			return []string{"127.0.0.1", "::1"}
		}
		if ip := net.ParseIP(h); ip != nil {
			return []string{ip.String()}
		}
		return []string{h}
	}
	for _, x := range ips(ha) {
		if slices.Contains(ips(hb), x) {
			return true
		}
	}
	return false
}
