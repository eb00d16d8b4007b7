package proxy_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lastevent/lastevent/proxy"
)

const testURL = "LASTEVENT_UPSTREAM_URL=http://127.0.0.1:9000"

// defaultRaw is the raw configuration with every default and a valid URL.
func defaultRaw(t *testing.T) proxy.RawConfig {
	t.Helper()
	return rawFromEnv([]string{testURL})
}

// rawFromEnv fills a RawConfig the way LoadConfig does, by setting its
// fields from the variables' names (the env tags).
func rawFromEnv(environ []string) proxy.RawConfig {
	var raw proxy.RawConfig
	set := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		set[k] = v
	}
	rv := reflect.ValueOf(&raw).Elem()
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		name := proxy.EnvPrefix + f.Tag.Get("env")
		v, ok := set[name]
		if !ok {
			v = f.Tag.Get("envDefault")
		}
		rv.Field(i).SetString(v)
	}
	return raw
}

// setVar sets the field of raw whose variable is name (without the prefix).
func setVar(t *testing.T, raw *proxy.RawConfig, name, value string) {
	t.Helper()
	rv := reflect.ValueOf(raw).Elem()
	for i := 0; i < rv.NumField(); i++ {
		if rv.Type().Field(i).Tag.Get("env") == name {
			rv.Field(i).SetString(value)
			return
		}
	}
	t.Fatalf("no setting %s", name)
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, warnings, err := proxy.LoadConfig([]string{"LASTEVENT_UPSTREAM_URL=http://127.0.0.1:9000/base/", "PATH=/bin", "HOME"})
	if err != nil || len(warnings) != 0 {
		t.Fatalf("err %v warnings %v", err, warnings)
	}
	if got := cfg.Upstream.String(); got != "http://127.0.0.1:9000/base" {
		t.Errorf("Upstream %q, want the trailing slash trimmed", got)
	}
	// An escaped slash stays escaped (trimming Path alone made String
	// drop RawPath, so requests went to /a/b/...).
	if cfg, _, err := proxy.LoadConfig([]string{"LASTEVENT_UPSTREAM_URL=http://127.0.0.1:9000/a%2Fb/"}); err != nil || cfg.Upstream.String() != "http://127.0.0.1:9000/a%2Fb" {
		t.Errorf("Upstream %v (%v), want http://127.0.0.1:9000/a%%2Fb", cfg.Upstream, err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ListenAddr", cfg.ListenAddr, ":8080"},
		{"AdminAddr", cfg.AdminAddr, ":8081"},
		{"Mode", cfg.Mode, proxy.ModeSession},
		{"BufferFrames", cfg.BufferFrames, 1000},
		{"MaxMemory", cfg.MaxMemory, int64(256 << 20)},
		{"Linger", cfg.Linger, 60 * time.Second},
		{"Heartbeat", cfg.Heartbeat, 15 * time.Second},
		{"Retry", cfg.Retry, 3 * time.Second},
		{"StreamKeyHeaders", cfg.StreamKeyHeaders, []string{"Authorization", "Cookie"}},
		{"LastEventIDParam", cfg.LastEventIDParam, "lastEventId"},
		{"MaxFrameBytes", cfg.MaxFrameBytes, 1 << 20},
		{"LogLevel", cfg.LogLevel, "info"},
		{"LogFormat", cfg.LogFormat, "json"},
		{"MaxConnections", cfg.MaxConnections, 10000},
		{"MaxHeaderBytes", cfg.MaxHeaderBytes, 16 << 10},
		{"MaxBodyBytes", cfg.MaxBodyBytes, 10 << 20},
		{"WriteTimeout", cfg.WriteTimeout, 10 * time.Second},
		{"ClientDeadTimeout", cfg.ClientDeadTimeout, 10 * time.Second},
		{"UpstreamTimeout", cfg.UpstreamTimeout, 10 * time.Second},
		{"UpstreamIdleTimeout", cfg.UpstreamIdleTimeout, time.Duration(0)},
		{"UpstreamResumes", cfg.UpstreamResumes, false},
		{"UpstreamPass5xx", cfg.UpstreamPass5xx, false},
		{"UpstreamBackoffMin", cfg.UpstreamBackoffMin, 200 * time.Millisecond},
		{"UpstreamBackoffMax", cfg.UpstreamBackoffMax, 10 * time.Second},
		{"UpstreamMaxConnections", cfg.UpstreamMaxConnections, 10000 + 64},
		{"SystemSyncData", cfg.SystemSyncData, "{}"},
		{"ShutdownGrace", cfg.ShutdownGrace, 10 * time.Second},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestLoadConfigReadsEveryVariable: each variable reaches its field.
func TestLoadConfigReadsEveryVariable(t *testing.T) {
	cfg, _, err := proxy.LoadConfig([]string{
		"LASTEVENT_UPSTREAM_URL=https://legacy.internal:8443",
		"LASTEVENT_LISTEN_ADDR=127.0.0.1:9999",
		"LASTEVENT_ADMIN_ADDR=[::1]:9998",
		"LASTEVENT_MODE=shared",
		"LASTEVENT_BUFFER_FRAMES=42",
		"LASTEVENT_MAX_MEMORY=64KiB",
		"LASTEVENT_LINGER=0",
		"LASTEVENT_HEARTBEAT=250ms",
		"LASTEVENT_RETRY=1500ms",
		"LASTEVENT_STREAM_KEY_HEADERS= x-tenant-id ,authorization,",
		"LASTEVENT_LAST_EVENT_ID_PARAM=lid",
		"LASTEVENT_MAX_FRAME_BYTES=2KiB",
		"LASTEVENT_LOG_LEVEL=DEBUG",
		"LASTEVENT_LOG_FORMAT=console",
		"LASTEVENT_MAX_CONNECTIONS=20",
		"LASTEVENT_MAX_HEADER_BYTES=8KiB",
		"LASTEVENT_MAX_BODY_BYTES=1KiB",
		"LASTEVENT_WRITE_TIMEOUT=3s",
		"LASTEVENT_CLIENT_DEAD_TIMEOUT=0",
		"LASTEVENT_UPSTREAM_TIMEOUT=2s",
		"LASTEVENT_UPSTREAM_IDLE_TIMEOUT=1m",
		"LASTEVENT_UPSTREAM_RESUMES=true",
		"LASTEVENT_UPSTREAM_PASS_5XX=1",
		"LASTEVENT_UPSTREAM_BACKOFF_MIN=10ms",
		"LASTEVENT_UPSTREAM_BACKOFF_MAX=10ms",
		"LASTEVENT_UPSTREAM_MAX_CONNECTIONS=7",
		`LASTEVENT_SYSTEM_SYNC_DATA= {"reload":true} `,
		"LASTEVENT_SHUTDOWN_GRACE=1s",
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Upstream", cfg.Upstream.String(), "https://legacy.internal:8443"},
		{"ListenAddr", cfg.ListenAddr, "127.0.0.1:9999"},
		{"AdminAddr", cfg.AdminAddr, "[::1]:9998"},
		{"Mode", cfg.Mode, proxy.ModeShared},
		{"BufferFrames", cfg.BufferFrames, 42},
		{"MaxMemory", cfg.MaxMemory, int64(64 << 10)},
		{"Linger", cfg.Linger, time.Duration(0)},
		{"Heartbeat", cfg.Heartbeat, 250 * time.Millisecond},
		{"Retry", cfg.Retry, 1500 * time.Millisecond},
		{"StreamKeyHeaders", cfg.StreamKeyHeaders, []string{"X-Tenant-Id", "Authorization"}},
		{"LastEventIDParam", cfg.LastEventIDParam, "lid"},
		{"MaxFrameBytes", cfg.MaxFrameBytes, 2 << 10},
		{"LogLevel", cfg.LogLevel, "debug"},
		{"LogFormat", cfg.LogFormat, "console"},
		{"MaxConnections", cfg.MaxConnections, 20},
		{"MaxHeaderBytes", cfg.MaxHeaderBytes, 8 << 10},
		{"MaxBodyBytes", cfg.MaxBodyBytes, 1 << 10},
		{"WriteTimeout", cfg.WriteTimeout, 3 * time.Second},
		{"ClientDeadTimeout", cfg.ClientDeadTimeout, time.Duration(0)},
		{"UpstreamTimeout", cfg.UpstreamTimeout, 2 * time.Second},
		{"UpstreamIdleTimeout", cfg.UpstreamIdleTimeout, time.Minute},
		{"UpstreamResumes", cfg.UpstreamResumes, true},
		{"UpstreamPass5xx", cfg.UpstreamPass5xx, true},
		{"UpstreamBackoffMin", cfg.UpstreamBackoffMin, 10 * time.Millisecond},
		{"UpstreamBackoffMax", cfg.UpstreamBackoffMax, 10 * time.Millisecond},
		{"UpstreamMaxConnections", cfg.UpstreamMaxConnections, 7},
		{"SystemSyncData", cfg.SystemSyncData, `{"reload":true}`},
		{"ShutdownGrace", cfg.ShutdownGrace, time.Second},
		{"Mode.String", cfg.Mode.String(), "shared"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestLoadConfigEmptyDisables: for the stream-key headers and the query
// parameter, a variable set to the empty string means none, not the default.
func TestLoadConfigEmptyDisables(t *testing.T) {
	cfg, _, err := proxy.LoadConfig([]string{testURL, "LASTEVENT_STREAM_KEY_HEADERS=", "LASTEVENT_LAST_EVENT_ID_PARAM="})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.StreamKeyHeaders) != 0 {
		t.Errorf("StreamKeyHeaders %q, want none", cfg.StreamKeyHeaders)
	}
	if cfg.LastEventIDParam != "" {
		t.Errorf("LastEventIDParam %q, want it disabled", cfg.LastEventIDParam)
	}
}

// TestParseRules: every rule rejects a bad value with one line that names
// the variable, its value and the rule.
func TestParseRules(t *testing.T) {
	cases := []struct {
		name, value, rule string
		also              map[string]string // other settings for the case
	}{
		{"UPSTREAM_URL", "", "is required", nil},
		{"UPSTREAM_URL", "   ", "is required", nil},
		{"UPSTREAM_URL", "legacy:9000", "scheme must be http or https", nil},
		{"UPSTREAM_URL", "legacy-svc", "scheme must be http or https", nil},
		{"UPSTREAM_URL", "ftp://legacy", "scheme must be http or https", nil},
		{"UPSTREAM_URL", "http://", "must name a host", nil},
		{"UPSTREAM_URL", "http://:9000", "must name a host", nil},
		{"UPSTREAM_URL", "http://legacy/?a=1", "must not hold a query", nil},
		{"UPSTREAM_URL", "http://legacy/?", "must not hold a query", nil}, // requests went to /?/path
		{"UPSTREAM_URL", "http://legacy:9000?", "must not hold a query", nil},
		{"UPSTREAM_URL", "http://legacy/#top", "must not hold a query", nil},
		{"UPSTREAM_URL", "http://user:S3cret@legacy", "must not hold a query", nil},
		{"UPSTREAM_URL", "http://legacy/?token=S3cret", "must not hold a query", nil},
		{"UPSTREAM_URL", "http://u:S3cret@legacy:bad", "is not a URL", nil},
		{"UPSTREAM_URL", "http://legacy:9000/%zz", "is not a URL", nil},
		{"UPSTREAM_URL", "http://legacy:99999", "port must be a number from 1", nil},
		{"UPSTREAM_URL", "http://legacy:0", "port must be a number from 1", nil},
		{"ADMIN_ADDR", ":8080", "must not be LASTEVENT_LISTEN_ADDR's address", nil},
		{"ADMIN_ADDR", "127.0.0.1:8080", "must not be LASTEVENT_LISTEN_ADDR's address", nil},
		{"ADMIN_ADDR", "localhost:8090", "must not be LASTEVENT_LISTEN_ADDR's address", map[string]string{"LISTEN_ADDR": "127.0.0.1:8090"}},
		{"ADMIN_ADDR", "[0:0::1]:8090", "must not be LASTEVENT_LISTEN_ADDR's address", map[string]string{"LISTEN_ADDR": "localhost:8090"}},
		{"LISTEN_ADDR", "8080", "must be host:port", nil},
		{"LISTEN_ADDR", ":99999", "port must be a number", nil},
		{"LISTEN_ADDR", "localhost:http", "port must be a number", nil},
		{"ADMIN_ADDR", "nowhere", "must be host:port", nil},
		{"MODE", "bogus", "must be session or shared", nil},
		{"MODE", "Shared", "must be session or shared", nil},
		{"BUFFER_FRAMES", "0", "whole number from 1", nil},
		{"BUFFER_FRAMES", "-3", "whole number from 1", nil},
		{"BUFFER_FRAMES", "ten", "whole number from 1", nil},
		{"BUFFER_FRAMES", "1.5", "whole number from 1", nil},
		{"BUFFER_FRAMES", "10000001", "whole number from 1", nil},
		{"MAX_MEMORY", "lots", "must be a size", nil},
		{"MAX_MEMORY", "-1", "must be a size", nil},
		{"MAX_MEMORY", "1KiB", "must be from 64KiB", map[string]string{"MAX_FRAME_BYTES": "1KiB"}},
		{"LINGER", "-1s", "must not be negative", nil},
		{"LINGER", "soon", "must be a duration", nil},
		{"HEARTBEAT", "-1s", "must be greater than 0", nil},
		{"HEARTBEAT", "0", "must be greater than 0", nil},
		{"HEARTBEAT", "15", "must be a duration", nil},
		{"HEARTBEAT", "1ns", "must be at least 10ms", nil},
		{"WRITE_TIMEOUT", "9ms", "must be at least 10ms", nil},
		{"RETRY", "0s", "must be greater than 0", nil},
		{"RETRY", "6m", "must be from 100ms to 5m0s", nil},
		{"RETRY", "50ms", "must be from 100ms to 5m0s", nil},
		{"STREAM_KEY_HEADERS", "Authorization,Bad Header", `"Bad Header" is not a header name`, nil},
		{"STREAM_KEY_HEADERS", "X:Y", `"X:Y" is not a header name`, nil},
		{"LAST_EVENT_ID_PARAM", "last id", "plain query parameter name", nil},
		{"LAST_EVENT_ID_PARAM", "a&b", "plain query parameter name", nil},
		{"MAX_FRAME_BYTES", "512", "must be from 1KiB to 1GiB", nil},
		{"MAX_FRAME_BYTES", "2GiB", "must be from 1KiB to 1GiB", nil},
		{"MAX_FRAME_BYTES", "big", "must be a size", nil},
		{"MAX_FRAME_BYTES", "1MiB", "must not exceed LASTEVENT_MAX_MEMORY", map[string]string{"MAX_MEMORY": "512KiB"}},
		{"LOG_LEVEL", "verbose", "must be one of", nil},
		{"LOG_FORMAT", "xml", "must be json or console", nil},
		{"MAX_CONNECTIONS", "0", "whole number from 1", nil},
		{"MAX_HEADER_BYTES", "100", "must be from 1KiB to 1MiB", nil},
		{"MAX_HEADER_BYTES", "2MiB", "must be from 1KiB to 1MiB", nil},
		{"MAX_BODY_BYTES", "2GiB", "must be from 1 to 1GiB", nil},
		{"MAX_BODY_BYTES", "0", "must be from 1 to 1GiB", nil},
		{"MAX_BODY_MEMORY", "1KiB", "must be from 64KiB to 1TiB", nil},
		{"MAX_BODY_MEMORY", "lots", "must be a size", nil},
		{"MAX_BODY_MEMORY", "8MiB", "must be at least 16MiB", map[string]string{"MAX_BODY_BYTES": "10MiB"}},
		{"MAX_BODY_MEMORY", "100MiB", "must be at least 128MiB", map[string]string{"MAX_BODY_BYTES": "100MiB"}},
		{"WRITE_TIMEOUT", "0", "must be greater than 0", nil},
		{"CLIENT_DEAD_TIMEOUT", "-1s", "must not be negative", nil},
		{"UPSTREAM_TIMEOUT", "0s", "must be greater than 0", nil},
		{"UPSTREAM_IDLE_TIMEOUT", "-5s", "must not be negative", nil},
		{"UPSTREAM_RESUMES", "yes", "must be true or false", nil},
		{"UPSTREAM_PASS_5XX", "maybe", "must be true or false", nil},
		{"UPSTREAM_BACKOFF_MIN", "0", "must be greater than 0", nil},
		{"UPSTREAM_BACKOFF_MAX", "100ms", "must not be below LASTEVENT_UPSTREAM_BACKOFF_MIN", nil},
		{"UPSTREAM_BACKOFF_MAX", "10", "must be a duration", nil}, // one line: not also "below BACKOFF_MIN"
		{"UPSTREAM_MAX_CONNECTIONS", "-1", "whole number from 0", nil},
		{"SYSTEM_SYNC_DATA", "{\n}", "must be one non-empty line", nil},
		{"SYSTEM_SYNC_DATA", " ", "must be one non-empty line", nil},
		{"SHUTDOWN_GRACE", "0", "must be greater than 0", nil},
		{"STORE", "disk", "must be memory or redis", nil},
		{"STORE", "Redis", "must be memory or redis", nil},
		{"REDIS_URL", "", "is required with LASTEVENT_STORE=redis", map[string]string{"STORE": "redis"}},
		{"REDIS_URL", "127.0.0.1:6379", "scheme must be redis or rediss", map[string]string{"STORE": "redis"}},
		{"REDIS_URL", "http://redis:6379", "scheme must be redis or rediss", map[string]string{"STORE": "redis"}},
		{"REDIS_URL", "redis://", "must name a host", map[string]string{"STORE": "redis"}},
		{"REDIS_URL", "redis://redis:6379/notadb", "invalid database number", map[string]string{"STORE": "redis"}},
		{"REDIS_URL", "redis://u:S3cret@redis:99999", "port must be a number from 1 to 65535", map[string]string{"STORE": "redis"}},
		{"REDIS_URL", "redis://redis:6379?addr=redis2:70000", "port must be a number from 1 to 65535", map[string]string{"STORE": "redis", "REDIS_CLUSTER": "true"}},
		{"REDIS_URL", "redis://redis:6379?password=S3cret", "unexpected option", map[string]string{"STORE": "redis"}},
		{"REDIS_CLUSTER", "yes", "must be true or false", map[string]string{"STORE": "redis", "REDIS_URL": "redis://127.0.0.1:6379"}},
		{"NODE_ID", "pod 1", "without spaces or control characters", map[string]string{"STORE": "redis", "REDIS_URL": "redis://127.0.0.1:6379"}},
		{"REDIS_LEASE", "100ms", "at least 300ms", map[string]string{"STORE": "redis", "REDIS_URL": "redis://127.0.0.1:6379"}},
		{"REDIS_LEASE", "0", "must be greater than 0", map[string]string{"STORE": "redis", "REDIS_URL": "redis://127.0.0.1:6379"}},
		{"REDIS_TIMEOUT", "4s", "at most half of LASTEVENT_REDIS_LEASE", map[string]string{"STORE": "redis", "REDIS_URL": "redis://127.0.0.1:6379"}},
		{"REDIS_RETENTION", "-1h", "must be greater than 0", map[string]string{"STORE": "redis", "REDIS_URL": "redis://127.0.0.1:6379"}},
		{"CLOCK_OFFSET", "an hour", "must be a duration", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			raw := defaultRaw(t)
			setVar(t, &raw, tc.name, tc.value)
			for k, v := range tc.also {
				setVar(t, &raw, k, v)
			}
			_, err := raw.Parse()
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.name, tc.value)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != 1 {
				t.Fatalf("one bad value gave %d problems:\n%v", len(lines), err)
			}
			prefix := proxy.EnvPrefix + tc.name + "="
			if !strings.HasPrefix(lines[0], prefix) {
				t.Fatalf("error %q does not start with %s", lines[0], prefix)
			}
			if !strings.Contains(lines[0], tc.rule) {
				t.Fatalf("error %q does not say %q", lines[0], tc.rule)
			}
			// A password or token in a URL never shows (errors go to the logs).
			if strings.Contains(lines[0], "S3cret") {
				t.Fatalf("error %q shows a secret", lines[0])
			}
		})
	}
}

// TestParseRedis: the Redis settings parse into RedisConfig; a password in
// the URL never shows in an error.
func TestParseRedis(t *testing.T) {
	raw := defaultRaw(t)
	if cfg, err := raw.Parse(); err != nil || cfg.Redis != nil {
		t.Fatalf("memory by default: %+v %v", cfg.Redis, err)
	}
	setVar(t, &raw, "STORE", "redis")
	setVar(t, &raw, "REDIS_URL", "rediss://user:hunter2@redis.internal:6380/2")
	setVar(t, &raw, "NODE_ID", "pod-7")
	setVar(t, &raw, "CLOCK_OFFSET", "-1h")
	cfg, err := raw.Parse()
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redis
	if r == nil || r.Addr != "redis.internal:6380" || r.NodeID != "pod-7" || r.Lease != 6*time.Second ||
		r.Timeout != 500*time.Millisecond || r.Retention != time.Hour || r.Cluster || cfg.ClockOffset != -time.Hour {
		t.Fatalf("parsed %+v offset %v", r, cfg.ClockOffset)
	}
	setVar(t, &raw, "NODE_ID", "")
	if cfg, err := raw.Parse(); err != nil || cfg.Redis.NodeID == "" {
		t.Fatalf("the node id defaults to the hostname: %+v %v", cfg.Redis, err)
	}
	setVar(t, &raw, "REDIS_URL", "redis://user:hunter2@redis:6379/x")
	_, err = raw.Parse()
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "LASTEVENT_REDIS_URL=") {
		t.Fatalf("bad URL error %v", err)
	}
	setVar(t, &raw, "REDIS_URL", "redis://a:7000?addr=b:7001&addr=c:7002")
	setVar(t, &raw, "REDIS_CLUSTER", "true")
	if cfg, err := raw.Parse(); err != nil || !cfg.Redis.Cluster || cfg.Redis.Addr != "a:7000" {
		t.Fatalf("cluster URL: %+v %v", cfg.Redis, err)
	}
}

// TestParseAccepts: values at the edges of the rules are fine.
func TestParseAccepts(t *testing.T) {
	cases := []struct{ name, value string }{
		{"UPSTREAM_URL", "https://legacy.svc.cluster.local"},
		{"UPSTREAM_URL", " http://[::1]:9000/api "},
		{"LISTEN_ADDR", ":0"},
		{"LISTEN_ADDR", "0.0.0.0:65535"},
		{"BUFFER_FRAMES", "1"},
		{"BUFFER_FRAMES", "10000000"},
		{"MAX_MEMORY", "65536"},
		{"MAX_MEMORY", "1GiB"},
		{"LINGER", "0"},
		{"LINGER", "0s"},
		{"RETRY", "100ms"},
		{"RETRY", "5m"},
		{"STREAM_KEY_HEADERS", "X-Api-Key"},
		{"STREAM_KEY_HEADERS", ""},
		{"LAST_EVENT_ID_PARAM", "last_event-id.v2"},
		{"LAST_EVENT_ID_PARAM", ""},
		{"MAX_FRAME_BYTES", "1KiB"},
		{"LOG_LEVEL", ""},
		{"LOG_LEVEL", "Warn"},
		{"LOG_LEVEL", "disabled"},
		{"LOG_FORMAT", "JSON"},
		{"MAX_BODY_BYTES", "1"},
		{"UPSTREAM_RESUMES", "TRUE"},
		{"UPSTREAM_BACKOFF_MAX", "200ms"},
		{"UPSTREAM_MAX_CONNECTIONS", "0"},
	}
	for _, tc := range cases {
		raw := defaultRaw(t)
		setVar(t, &raw, tc.name, tc.value)
		if tc.name == "MAX_MEMORY" {
			setVar(t, &raw, "MAX_FRAME_BYTES", "64KiB")
		}
		cfg, err := raw.Parse()
		if err != nil {
			t.Errorf("%s=%q rejected: %v", tc.name, tc.value, err)
			continue
		}
		if tc.name == "LOG_LEVEL" && cfg.LogLevel != map[string]string{"": "info", "Warn": "warn", "disabled": "disabled"}[tc.value] {
			t.Errorf("LOG_LEVEL=%q gives level %q", tc.value, cfg.LogLevel)
		}
	}
}

// TestParseReportsEveryProblem: many bad values give one line each, all in
// one error, and a bad value in one setting does not hide the others.
func TestParseReportsEveryProblem(t *testing.T) {
	raw := defaultRaw(t)
	bad := map[string]string{
		"UPSTREAM_URL":  "legacy:9000",
		"MODE":          "bogus",
		"BUFFER_FRAMES": "0",
		"MAX_MEMORY":    "lots",
		"HEARTBEAT":     "-1s",
		"LOG_FORMAT":    "yaml",
		"LISTEN_ADDR":   "8080",
	}
	for k, v := range bad {
		setVar(t, &raw, k, v)
	}
	_, err := raw.Parse()
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(bad) {
		t.Fatalf("%d problems reported, want %d:\n%v", len(lines), len(bad), err)
	}
	for k := range bad {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, proxy.EnvPrefix+k+"=") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s named in %d lines:\n%v", k, n, err)
		}
	}
}

func TestLoadConfigWarnsUnknown(t *testing.T) {
	cfg, warnings, err := proxy.LoadConfig([]string{testURL, "LASTEVENT_BUFER_FRAMES=5", "LASTEVENTS_X=1", "OTHER_BUFFER_FRAMES=1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "LASTEVENT_BUFER_FRAMES") {
		t.Fatalf("warnings %q, want one naming LASTEVENT_BUFER_FRAMES", warnings)
	}
	if cfg.BufferFrames != 1000 {
		t.Fatalf("BufferFrames %d: the misspelt variable was used", cfg.BufferFrames)
	}
}

func TestLoadConfigMissingURL(t *testing.T) {
	_, _, err := proxy.LoadConfig([]string{"LASTEVENT_MODE=shared"})
	if err == nil || !strings.Contains(err.Error(), "LASTEVENT_UPSTREAM_URL") {
		t.Fatalf("err %v, want one naming LASTEVENT_UPSTREAM_URL", err)
	}
}

// TestVariablesMatchRawConfig: every field is a listed LASTEVENT_ variable.
func TestVariablesMatchRawConfig(t *testing.T) {
	names := proxy.VariableNames()
	if n := reflect.TypeOf(proxy.RawConfig{}).NumField(); len(names) != n {
		t.Fatalf("%d variables for %d fields", len(names), n)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !strings.HasPrefix(n, proxy.EnvPrefix) || seen[n] {
			t.Fatalf("bad or repeated name %q", n)
		}
		seen[n] = true
	}
}

func TestParseByteSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"65536", 65536},
		{" 42 ", 42},
		{"7B", 7},
		{"64KiB", 64 << 10},
		{"1MiB", 1 << 20},
		{"256MiB", 256 << 20},
		{"1GiB", 1 << 30},
		{"2TiB", 2 << 40},
		{"10 MiB", 10 << 20},
		{"1KB", 1000},
		{"10MB", 10_000_000},
		{"3GB", 3_000_000_000},
		{"1TB", 1_000_000_000_000},
		{"4K", 4 << 10},
		{"5M", 5 << 20},
		{"6G", 6 << 30},
		{"8388607TiB", 8388607 << 40},
	}
	for _, tc := range good {
		got, err := proxy.ParseByteSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []string{"", " ", "lots", "-1", "-1KiB", "1.5GiB", "KiB", "1 0", "0x10", "1e6", "8388608TiB", "9223372036854775808", "10XB", "MiB5"}
	for _, in := range bad {
		if n, err := proxy.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, n)
		}
	}
	for _, n := range []int64{0, 1, 1000, 1 << 10, 3 << 20, 5 << 30, 7 << 40, 1536} {
		s := proxy.FormatByteSize(n)
		if back, err := proxy.ParseByteSize(s); err != nil || back != n {
			t.Errorf("FormatByteSize(%d) = %q parses to %d, %v", n, s, back, err)
		}
	}
	if s := proxy.FormatByteSize(64 << 10); s != "64KiB" {
		t.Errorf("FormatByteSize(64KiB) = %q", s)
	}
}

// In session mode every client needs an upstream connection: a pool below
// LASTEVENT_MAX_CONNECTIONS is accepted (it may be what the upstream can
// take) but warned about; in shared mode, or with room, nothing is said.
func TestUpstreamPoolBelowClientsWarns(t *testing.T) {
	for _, c := range []struct {
		env  []string
		warn bool
	}{
		{[]string{"LASTEVENT_UPSTREAM_MAX_CONNECTIONS=10"}, true},
		{[]string{"LASTEVENT_UPSTREAM_MAX_CONNECTIONS=10", "LASTEVENT_MODE=shared"}, false},
		{[]string{"LASTEVENT_UPSTREAM_MAX_CONNECTIONS=10", "LASTEVENT_MAX_CONNECTIONS=10"}, false},
		{nil, false},
	} {
		_, warnings, err := proxy.LoadConfig(append([]string{testURL}, c.env...))
		if err != nil {
			t.Fatalf("%v: %v", c.env, err)
		}
		warned := false
		for _, w := range warnings {
			warned = warned || (strings.Contains(w, "LASTEVENT_UPSTREAM_MAX_CONNECTIONS=10") && strings.Contains(w, "LASTEVENT_MAX_CONNECTIONS"))
		}
		if warned != c.warn {
			t.Errorf("%v: warned %v, want %v (%q)", c.env, warned, c.warn, warnings)
		}
	}
}

// LASTEVENT_MAX_BODY_MEMORY=0 (the default) is 64MiB, or the buffer of one
// body of LASTEVENT_MAX_BODY_BYTES when that is larger.
func TestMaxBodyMemoryDefault(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want int64
	}{
		{nil, 64 << 20},
		{[]string{"LASTEVENT_MAX_BODY_BYTES=100MiB"}, 128 << 20},
		{[]string{"LASTEVENT_MAX_BODY_MEMORY=1GiB"}, 1 << 30},
	} {
		cfg, _, err := proxy.LoadConfig(append([]string{testURL}, c.env...))
		if err != nil || cfg.MaxBodyMemory != c.want {
			t.Errorf("%v: MaxBodyMemory %d, %v; want %d", c.env, cfg.MaxBodyMemory, err, c.want)
		}
	}
}
