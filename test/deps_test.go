package test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRule holds the package boundaries of DESIGN.md: the wire
// format and the log depend on the standard library only (no fasthttp, no
// zerolog, no Redis client), so that proxy alone carries the network.
func TestDependencyRule(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../frame", "../replay").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(dep, "/")
		if strings.Contains(first, ".") && !strings.HasPrefix(dep, "github.com/lastevent/lastevent/") {
			t.Errorf("frame or replay depends on %s", dep)
		}
	}
}
