package proxy

import (
	"os"
	"regexp"
	"strings"
	"testing"
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
