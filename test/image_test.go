package test

// Tests of the container image without a container engine: the Dockerfile is
// read and checked against the image rules (DESIGN.md section 6), its
// `go build` line is run as written, and the binary it makes is checked to be
// static and run in an empty root directory (no libc, no /etc, no shell, no
// /tmp), with nothing in its environment but LASTEVENT_* variables.
//
// Everything here is self-contained (standard library and the product's own
// proxy package): names start with img or df so that they stay clear of the
// other end-to-end tests in this package.

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lastevent/lastevent/proxy"
)

const (
	imgVersion  = "v0.0.0-imagetest"
	imgRevision = "0123456789abcdef0123456789abcdef01234567"
	imgUID      = 65532 // distroless "nonroot"
)

// dfInstr is one Dockerfile instruction, continuation lines joined.
type dfInstr struct {
	Line int    // first line, 1-based
	Cmd  string // upper case: FROM, RUN, ...
	Args string // the rest, as written
}

// dfStage is one FROM and the instructions after it.
type dfStage struct {
	From   dfInstr
	Image  string // image reference, flags and AS name removed
	Name   string // the AS name, or ""
	Instrs []dfInstr
}

func (s *dfStage) all(cmd string) []dfInstr {
	var out []dfInstr
	for _, in := range s.Instrs {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// args gives the ARGs of the stage with their defaults ("" when none).
func (s *dfStage) args() map[string]string {
	m := map[string]string{}
	for _, in := range s.all("ARG") {
		for _, a := range strings.Fields(in.Args) {
			k, v, _ := strings.Cut(a, "=")
			m[k] = strings.Trim(v, `"'`)
		}
	}
	return m
}

func imgRepoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

// dfParse reads a Dockerfile: comments and blank lines dropped, lines ending
// in a backslash joined with the next (comment lines inside are skipped, as
// Docker does), instructions grouped into stages.
func dfParse(src string) (global []dfInstr, stages []*dfStage, err error) {
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		start := i + 1
		var b strings.Builder
		for {
			cont := strings.HasSuffix(line, `\`)
			b.WriteString(strings.TrimSuffix(line, `\`))
			if !cont {
				break
			}
			b.WriteByte(' ')
			for i++; i < len(lines); i++ {
				line = strings.TrimSpace(lines[i])
				if !strings.HasPrefix(line, "#") {
					break
				}
			}
			if i >= len(lines) {
				return nil, nil, fmt.Errorf("line %d: continuation at end of file", start)
			}
		}
		cmd, args, _ := strings.Cut(strings.TrimSpace(b.String()), " ")
		in := dfInstr{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)}
		if in.Cmd == "FROM" {
			st := &dfStage{From: in}
			words := strings.Fields(in.Args)
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				words = words[1:]
			}
			if len(words) == 0 {
				return nil, nil, fmt.Errorf("line %d: FROM without an image", start)
			}
			st.Image = words[0]
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.Name = words[2]
			} else if len(words) != 1 {
				return nil, nil, fmt.Errorf("line %d: cannot read FROM %s", start, in.Args)
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			global = append(global, in)
		} else {
			stages[len(stages)-1].Instrs = append(stages[len(stages)-1].Instrs, in)
		}
	}
	return global, stages, nil
}

// dfExecForm parses the JSON (exec) form of ENTRYPOINT, CMD or RUN; ok is
// false for the shell form.
func dfExecForm(args string) (argv []string, ok bool) {
	if !strings.HasPrefix(strings.TrimSpace(args), "[") {
		return nil, false
	}
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		return nil, false
	}
	return argv, true
}

// dfWords splits a shell-form command line into words the way sh would for
// a simple command: quotes, backslash escapes, $VAR and ${VAR} from vars.
// Lists and pipelines (&&, ||, ;, |) are refused: the build line must be one
// command so that this test can run it as written.
func dfWords(s string, vars map[string]string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	expand := func(i int) (int, error) { // s[i] == '$'
		j := i + 1
		var name string
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				return 0, errors.New("unterminated ${")
			}
			name = s[j+1 : j+end]
			j += end + 1
		} else {
			k := j
			for k < len(s) && (s[k] == '_' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= '0' && s[k] <= '9') {
				k++
			}
			name, j = s[j:k], k
		}
		if name == "" || strings.ContainsAny(name, ":-+?#%/") {
			return 0, fmt.Errorf("unsupported expansion in %q", s[i:])
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("$%s is not an ARG or ENV of the stage", name)
		}
		cur.WriteString(v)
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '&' || c == '|' || c == ';' || c == '<' || c == '>' || c == '`' || c == '(' || c == ')':
			return nil, fmt.Errorf("%q: not a single simple command", s)
		case c == '\\':
			if i+1 < len(s) {
				cur.WriteByte(s[i+1])
			}
			inWord = true
			i += 2
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			inWord = true
			i += end + 2
		case c == '"':
			inWord = true
			i++
			for {
				if i >= len(s) {
					return nil, errors.New("unterminated double quote")
				}
				if s[i] == '"' {
					i++
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					cur.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '$' {
					j, err := expand(i)
					if err != nil {
						return nil, err
					}
					i = j
					continue
				}
				cur.WriteByte(s[i])
				i++
			}
		case c == '$':
			j, err := expand(i)
			if err != nil {
				return nil, err
			}
			i = j
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

var dfAssign = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// dfBuild is the `go build` command of the Dockerfile's build stage.
type dfBuild struct {
	Raw  string            // the RUN line, as written
	Env  map[string]string // stage ENV and the command's own VAR=value prefix
	Args []string          // after "go": build -trimpath ...
	Out  string            // the -o value
}

// dfFindBuild finds the RUN of stage st whose command is `go build` and
// splits it with the given ARG values.
func dfFindBuild(st *dfStage, argValues map[string]string) (*dfBuild, error) {
	vars := map[string]string{}
	env := map[string]string{}
	for k, v := range st.args() {
		vars[k] = v
	}
	for k, v := range argValues {
		if _, declared := vars[k]; declared {
			vars[k] = v
		}
	}
	var found *dfBuild
	for _, in := range st.Instrs {
		switch in.Cmd {
		case "ENV":
			words, err := dfWords(in.Args, vars)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", in.Line, err)
			}
			for _, w := range words {
				if k, v, ok := strings.Cut(w, "="); ok {
					env[k], vars[k] = v, v
				}
			}
		case "RUN":
			if !strings.Contains(in.Args, "go build") {
				continue
			}
			if found != nil {
				return nil, fmt.Errorf("line %d: a second `go build` RUN", in.Line)
			}
			if _, exec := dfExecForm(in.Args); exec {
				return nil, fmt.Errorf("line %d: write the build RUN in shell form (it sets variables)", in.Line)
			}
			rest := in.Args
			for strings.HasPrefix(rest, "--") { // --mount=..., --network=...
				_, rest, _ = strings.Cut(rest, " ")
				rest = strings.TrimSpace(rest)
			}
			words, err := dfWords(rest, vars)
			if err != nil {
				return nil, fmt.Errorf("line %d: %v", in.Line, err)
			}
			b := &dfBuild{Raw: in.Args, Env: map[string]string{}}
			for k, v := range env {
				b.Env[k] = v
			}
			for len(words) > 0 && dfAssign.MatchString(words[0]) {
				k, v, _ := strings.Cut(words[0], "=")
				b.Env[k] = v
				words = words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				return nil, fmt.Errorf("line %d: the build RUN must be a plain `go build`, got %q", in.Line, words)
			}
			b.Args = words[1:]
			for i, w := range b.Args {
				if w == "-o" && i+1 < len(b.Args) {
					b.Out = b.Args[i+1]
				} else if v, ok := strings.CutPrefix(w, "-o="); ok {
					b.Out = v
				}
			}
			found = b
		}
	}
	if found == nil {
		return nil, errors.New("no RUN with `go build` in the build stage")
	}
	return found, nil
}

// flagValue gives the value of a go build flag given as -f v or -f=v.
func (b *dfBuild) flagValue(name string) (string, bool) {
	for i, w := range b.Args {
		if w == name && i+1 < len(b.Args) {
			return b.Args[i+1], true
		}
		if v, ok := strings.CutPrefix(w, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func imgReadDockerfile(t *testing.T) (global []dfInstr, stages []*dfStage) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(imgRepoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	global, stages, err = dfParse(string(src))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(stages) != 2 {
		t.Fatalf("Dockerfile: want exactly two stages (build, runtime), got %d", len(stages))
	}
	return global, stages
}

// imgPort is the port of a host:port default from proxy.Variables().
func imgPort(t *testing.T, key string) string {
	t.Helper()
	for _, p := range proxy.Variables() {
		if p.Key == key {
			_, port, err := net.SplitHostPort(p.DefaultValue)
			if err != nil {
				t.Fatalf("%s default %q: %v", key, p.DefaultValue, err)
			}
			return port
		}
	}
	t.Fatalf("%s is not in proxy.Variables()", key)
	return ""
}

func TestDockerfileRules(t *testing.T) {
	_, stages := imgReadDockerfile(t)
	build, run := stages[0], stages[1]

	// Build stage: the Go toolchain of go.mod, named so the runtime copies from it.
	if !strings.HasPrefix(build.Image, "golang:1.26") {
		t.Errorf("line %d: build stage should be FROM golang:1.26, got %s", build.From.Line, build.Image)
	}
	if build.Name == "" {
		t.Errorf("line %d: name the build stage (FROM ... AS build)", build.From.Line)
	}
	b, err := dfFindBuild(build, map[string]string{"VERSION": "$VERSION", "REVISION": "$REVISION"})
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if b.Env["CGO_ENABLED"] != "0" {
		t.Errorf("the go build must run with CGO_ENABLED=0 (distroless static has no libc); env %v", b.Env)
	}
	if !slices.Contains(b.Args, "-trimpath") {
		t.Errorf("the go build must use -trimpath: %v", b.Args)
	}
	ld, _ := b.flagValue("-ldflags")
	for _, want := range []string{"-s", "-w", "-X main.version=$VERSION", "-X main.revision=$REVISION"} {
		if !strings.Contains(" "+ld+" ", " "+want+" ") {
			t.Errorf("-ldflags %q lacks %q", ld, want)
		}
	}
	for _, a := range []string{"VERSION", "REVISION"} {
		if _, ok := build.args()[a]; !ok {
			t.Errorf("build stage needs ARG %s (stamped into the binary)", a)
		}
	}
	if b.Out == "" {
		t.Errorf("the go build needs -o: %v", b.Args)
	}

	// Runtime stage.
	if !strings.HasPrefix(run.Image, "gcr.io/distroless/static") || !strings.Contains(run.Image, ":nonroot") {
		t.Errorf("line %d: runtime stage should be gcr.io/distroless/static-debian12:nonroot, got %s", run.From.Line, run.Image)
	}
	copies := run.all("COPY")
	var binary string
	for _, c := range copies {
		words := strings.Fields(c.Args)
		if slices.Contains(words, "--from="+build.Name) && len(words) >= 3 && words[len(words)-2] == b.Out {
			binary = words[len(words)-1]
		}
	}
	if binary == "" {
		t.Errorf("runtime stage should COPY --from=%s %s <path>; COPY lines: %v", build.Name, b.Out, copies)
	}
	users := run.all("USER")
	if len(users) == 0 {
		t.Errorf("runtime stage has no USER (want USER %d:%d)", imgUID, imgUID)
	} else if u := users[len(users)-1]; u.Args != fmt.Sprintf("%d:%d", imgUID, imgUID) {
		t.Errorf("line %d: USER %s: want numeric %d:%d (the kubelet cannot check runAsNonRoot for a named user)", u.Line, u.Args, imgUID, imgUID)
	}
	eps := run.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Errorf("runtime stage needs exactly one ENTRYPOINT, has %d", len(eps))
	} else if argv, ok := dfExecForm(eps[0].Args); !ok {
		t.Errorf("line %d: ENTRYPOINT %s is not exec form: the process would not be PID 1 and would miss SIGTERM", eps[0].Line, eps[0].Args)
	} else if len(argv) != 1 || argv[0] != binary {
		t.Errorf("line %d: ENTRYPOINT %v: want [%q]", eps[0].Line, argv, binary)
	}
	for _, c := range run.all("CMD") {
		if _, ok := dfExecForm(c.Args); !ok {
			t.Errorf("line %d: CMD in shell form needs a shell, which distroless lacks", c.Line)
		}
	}
	var exposed []string
	for _, e := range run.all("EXPOSE") {
		for _, p := range strings.Fields(e.Args) {
			exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
		}
	}
	slices.Sort(exposed)
	want := []string{imgPort(t, "LASTEVENT_LISTEN_ADDR"), imgPort(t, "LASTEVENT_ADMIN_ADDR")}
	slices.Sort(want)
	if !slices.Equal(exposed, want) {
		t.Errorf("EXPOSE %v: want %v (the default client and admin ports)", exposed, want)
	}
	labels := map[string]string{}
	for _, l := range run.all("LABEL") {
		words, err := dfWords(l.Args, map[string]string{"VERSION": "$VERSION", "REVISION": "$REVISION"})
		if err != nil {
			t.Errorf("line %d: LABEL: %v", l.Line, err)
			continue
		}
		for _, w := range words {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				t.Errorf("line %d: LABEL %q: write key=value", l.Line, w)
			}
			labels[k] = v
		}
	}
	for _, k := range []string{"title", "description", "source", "version", "revision"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("missing OCI label org.opencontainers.image.%s", k)
		}
	}
	if v := labels["org.opencontainers.image.version"]; v != "$VERSION" {
		t.Errorf("org.opencontainers.image.version = %q: want the VERSION build arg", v)
	}
	if v := labels["org.opencontainers.image.revision"]; v != "$REVISION" {
		t.Errorf("org.opencontainers.image.revision = %q: want the REVISION build arg", v)
	}
	for _, st := range stages {
		for _, in := range st.Instrs {
			if in.Cmd == "HEALTHCHECK" {
				t.Errorf("line %d: no HEALTHCHECK: the kubelet probes /healthz and /readyz (and distroless has no shell)", in.Line)
			}
		}
	}
}

// dfIgnore is a .dockerignore: patterns in order, the last match wins, a
// pattern that matches a directory excludes everything in it.
type dfIgnore []struct {
	re     *regexp.Regexp
	negate bool
}

func dfReadIgnore(path string) (dfIgnore, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ig dfIgnore
	for _, line := range strings.Split(string(src), "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		p = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch c := p[i]; {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		rx, err := regexp.Compile(re.String())
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %v", line, err)
		}
		ig = append(ig, struct {
			re     *regexp.Regexp
			negate bool
		}{rx, neg})
	}
	return ig, nil
}

// excluded says whether rel (slash-separated, relative to the context) stays
// out of the build context.
func (ig dfIgnore) excluded(rel string) bool {
	out := false
	for _, p := range ig {
		parts := strings.Split(rel, "/")
		for i := 1; i <= len(parts); i++ {
			if p.re.MatchString(strings.Join(parts[:i], "/")) {
				out = !p.negate
				break
			}
		}
	}
	return out
}

func TestDockerfileIgnore(t *testing.T) {
	root := imgRepoRoot(t)
	ig, err := dfReadIgnore(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	for _, p := range []string{".git", ".git/config", ".git/objects/ab/cdef"} {
		if !ig.excluded(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	// Every file the build reads must be in the context.
	need := []string{"go.mod", "go.sum"}
	list := exec.Command("go", "list", "-deps", "-json=Dir,GoFiles,EmbedFiles,Module", ".")
	list.Dir = root
	list.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var pkg struct {
			Dir        string
			GoFiles    []string
			EmbedFiles []string
			Module     *struct{ Main bool }
		}
		if err := dec.Decode(&pkg); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if pkg.Module == nil || !pkg.Module.Main {
			continue
		}
		for _, f := range append(pkg.GoFiles, pkg.EmbedFiles...) {
			rel, err := filepath.Rel(root, filepath.Join(pkg.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			need = append(need, filepath.ToSlash(rel))
		}
	}
	if len(need) < 4 {
		t.Fatalf("go list found only %v", need)
	}
	for _, f := range need {
		if ig.excluded(f) {
			t.Errorf(".dockerignore leaves out %s, which the build needs", f)
		}
	}
}

// imgBuild runs the Dockerfile's own go build line (ARGs substituted, the
// -o path moved to a temporary directory) and returns the binary.
func imgBuild(t *testing.T) string {
	t.Helper()
	root := imgRepoRoot(t)
	_, stages, err := dfParse(imgRead(root, "Dockerfile"))
	if err != nil || len(stages) != 2 {
		t.Fatalf("Dockerfile: %v (%d stages)", err, len(stages))
	}
	b, err := dfFindBuild(stages[0], map[string]string{
		"VERSION": imgVersion, "REVISION": imgRevision,
		"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH,
	})
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "lastevent")
	args := slices.Clone(b.Args)
	for i := range args {
		if args[i] == "-o" && i+1 < len(args) {
			args[i+1] = bin
		} else if strings.HasPrefix(args[i], "-o=") {
			args[i] = "-o=" + bin
		}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root // the WORKDIR, after COPY . .
	// The build context has no .git (.dockerignore), so no VCS stamp.
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	for k, v := range b.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

func imgRead(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return string(b)
}

func TestImageStaticBinary(t *testing.T) {
	bin := imgBuild(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("ELF has PT_INTERP: dynamically linked, will not start on distroless static")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Errorf("ELF has a PT_DYNAMIC segment")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("ELF needs shared libraries (DT_NEEDED): %v", libs)
	}
	if needed, _ := f.DynString(elf.DT_NEEDED); len(needed) > 0 {
		t.Errorf("DT_NEEDED: %v", needed)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("ELF has a symbol table: -ldflags -s did not strip it")
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if info.Main.Path != "github.com/lastevent/lastevent" || info.Path != "github.com/lastevent/lastevent" {
		t.Errorf("built %s (main module %s): want the product's main package", info.Path, info.Main.Path)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("build settings: CGO_ENABLED=%q", settings["CGO_ENABLED"])
	}
	if settings["-trimpath"] != "true" {
		t.Errorf("build settings: -trimpath=%q", settings["-trimpath"])
	}
	// (With -trimpath, Go does not record -ldflags; -version shows the stamp.)
	version := exec.Command(bin, "-version")
	version.Env = []string{}
	out, err := version.Output()
	if want := fmt.Sprintf("lastevent %s (revision %s)\n", imgVersion, imgRevision); err != nil || string(out) != want {
		t.Errorf("-version: %q, %v; want %q", out, err, want)
	}
	if !strings.HasPrefix(info.GoVersion, "go1.26") {
		t.Errorf("built with %s, want go1.26 (the golang:1.26 builder)", info.GoVersion)
	}
	data := imgReadBytes(t, bin)
	for _, dir := range []string{imgRepoRoot(t), os.Getenv("GOMODCACHE"), filepath.Join(runtime.GOROOT(), "src")} {
		if dir != "" && dir != "/" && bytes.Contains(data, []byte(dir+"/")) {
			t.Errorf("binary contains the build path %s: -trimpath had no effect", dir)
		}
	}
}

func imgReadBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imgEmptyRoot makes a directory that holds only /lastevent, writable by the
// image's user so that any file the binary writes would show.
func imgEmptyRoot(t *testing.T) string {
	t.Helper()
	bin := imgBuild(t)
	root := t.TempDir()
	data := imgReadBytes(t, bin)
	if err := os.WriteFile(filepath.Join(root, "lastevent"), data, 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if err := os.Chmod(root, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// imgSnapshot lists every file under root with its mode and size.
func imgSnapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		size := info.Size()
		if d.IsDir() {
			size = 0
		}
		out = append(out, fmt.Sprintf("%s %v %d", rel, info.Mode(), size))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// imgInRoot is a command that runs /lastevent chrooted into root as the
// image's numeric user, with exactly env as its environment: as root
// directly, otherwise in a new user namespace that maps the current user to
// 65532 (what `unshare -r chroot` does, without needing those programs).
func imgInRoot(root string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("/lastevent", args...)
	cmd.Env = env
	cmd.Dir = "/" // inside the new root: never leave the working directory outside it
	attr := &syscall.SysProcAttr{Chroot: root, Pdeathsig: syscall.SIGKILL}
	if os.Getuid() == 0 {
		attr.Credential = &syscall.Credential{Uid: imgUID, Gid: imgUID}
	} else {
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: imgUID, HostID: os.Getuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: imgUID, HostID: os.Getgid(), Size: 1}}
	}
	cmd.SysProcAttr = attr
	return cmd
}

// imgSkipIfNoChroot skips when this machine cannot chroot (no privilege and
// no unprivileged user namespaces); other start errors fail.
func imgSkipIfNoChroot(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.ENOSYS) {
		t.Skipf("cannot run in an empty root here (chroot / user namespaces unavailable: %v); the static-ELF test still holds", err)
	}
	t.Fatal(err)
}

func imgFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestImageEmptyRoot(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("chroot run is Linux only")
	}
	root := imgEmptyRoot(t)
	before := imgSnapshot(t, root)

	t.Run("version", func(t *testing.T) {
		cmd := imgInRoot(root, []string{}, "-version")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			imgSkipIfNoChroot(t, err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("-version: %v\n%s", err, stderr.String())
		}
		want := fmt.Sprintf("lastevent %s (revision %s)\n", imgVersion, imgRevision)
		if stdout.String() != want {
			t.Errorf("-version printed %q, want %q", stdout.String(), want)
		}
	})

	t.Run("check-config", func(t *testing.T) {
		cmd := imgInRoot(root, []string{"LASTEVENT_UPSTREAM_URL=http://app:9000"}, "-check-config")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			imgSkipIfNoChroot(t, err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("-check-config: %v\n%s", err, out.String())
		}
		if strings.Contains(out.String(), "warning") {
			t.Errorf("-check-config warned:\n%s", out.String())
		}
	})

	t.Run("serve and SIGTERM", func(t *testing.T) {
		admin := imgFreeAddr(t)
		env := []string{
			// Nothing listens there: liveness must not depend on the upstream.
			"LASTEVENT_UPSTREAM_URL=http://127.0.0.1:1",
			"LASTEVENT_LISTEN_ADDR=" + imgFreeAddr(t),
			"LASTEVENT_ADMIN_ADDR=" + admin,
		}
		cmd := imgInRoot(root, env)
		var logs imgLogBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			imgSkipIfNoChroot(t, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				<-exited
			}
		})

		client := &http.Client{Timeout: 2 * time.Second}
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := client.Get("http://" + admin + "/healthz")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
				}
				break
			}
			select {
			case err := <-exited:
				t.Fatalf("lastevent exited before serving /healthz: %v\n%s", err, logs.String())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz not served within 10s: %v\n%s", err, logs.String())
			}
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v (want status 0)\n%s", err, logs.String())
			}
		case <-time.After(15 * time.Second): // LASTEVENT_SHUTDOWN_GRACE is 10s
			t.Fatalf("still running 15s after SIGTERM\n%s", logs.String())
		}
		if strings.Contains(logs.String(), "warning") {
			t.Errorf("unexpected warnings:\n%s", logs.String())
		}
	})

	if after := imgSnapshot(t, root); !slices.Equal(before, after) {
		t.Errorf("lastevent wrote to its root filesystem (it must run read-only):\nbefore %v\nafter  %v", before, after)
	}
}

// imgLogBuffer is a bytes.Buffer safe for a process's stdout and stderr.
type imgLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *imgLogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *imgLogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
