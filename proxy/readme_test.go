package proxy

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestReadmeSettings keeps the README's settings table equal to the config
// struct: every variable, with its default ("required" or "empty" when it
// has none), and nothing else.
func TestReadmeSettings(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `(LASTEVENT_[A-Z0-9_]+)` \\| ([^|]+) \\|").FindAllSubmatch(b, -1)
	inReadme := map[string]string{}
	for _, r := range rows {
		inReadme[string(r[1])] = strings.TrimSpace(string(r[2]))
	}
	for _, p := range Variables() {
		got, ok := inReadme[p.Key]
		if !ok {
			t.Errorf("README settings table lacks %s", p.Key)
			continue
		}
		want := "`" + p.DefaultValue + "`"
		if p.DefaultValue == "" {
			// No default: "required", or "empty" where the meaning column
			// says what an empty value means (LASTEVENT_REDIS_PASSWORD).
			want = "required"
			if got == "empty" {
				want = got
			}
		}
		if got != want {
			t.Errorf("README gives %s the default %q, the code %q", p.Key, got, want)
		}
		delete(inReadme, p.Key)
	}
	for k := range inReadme {
		t.Errorf("README documents %s, which the code does not read", k)
	}
}

// TestReadmeMetrics: every lastevent_ metric /metrics serves (Redis mode's
// included) is in README's metrics table, and the table names no other.
func TestReadmeMetrics(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	inReadme := map[string]bool{}
	for _, row := range regexp.MustCompile("(?m)^\\| (`lastevent_[^|]+)\\|").FindAllSubmatch(b, -1) {
		for _, m := range regexp.MustCompile("`(lastevent_[a-z_]+)").FindAllSubmatch(row[1], -1) {
			inReadme[string(m[1])] = true
		}
	}
	cfg, _, err := LoadConfig([]string{"LASTEVENT_UPSTREAM_URL=http://127.0.0.1:1", "LASTEVENT_STORE=redis", "LASTEVENT_REDIS_URL=redis://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHub(&cfg, zerolog.Nop())
	var out bytes.Buffer
	h.metrics.set.WritePrometheus(&out)
	served := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^(lastevent_[a-z_]+?)(_bucket|_sum|_count)?[{ ]").FindAllSubmatch(out.Bytes(), -1) {
		served[string(m[1])] = true
	}
	if len(served) < 20 {
		t.Fatalf("only %d metrics served:\n%s", len(served), out.String())
	}
	for name := range served {
		if !inReadme[name] {
			t.Errorf("/metrics serves %s, README's metrics table lacks it", name)
		}
	}
	for name := range inReadme {
		if !served[name] {
			t.Errorf("README's metrics table names %s, which /metrics does not serve", name)
		}
	}
}
