package frame

import (
	"go/build"
	"strings"
	"testing"
)

// TestStdlibOnly holds the package boundary: standard library only, and no
// network packages.
func TestStdlibOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("imports %s: frame uses the standard library only", imp)
		}
		if imp == "net" || strings.HasPrefix(imp, "net/") {
			t.Errorf("imports %s: frame does no network I/O", imp)
		}
	}
}
