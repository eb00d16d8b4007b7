// Package helm tests the Helm chart in helm/lastevent and the example parent
// chart in helm/examples/my-app without a cluster: `helm lint --strict` and
// `helm template` for every values file, every rendered manifest decoded
// strictly into k8s.io/api types (a misspelt or misplaced field fails), and
// the deployment rules checked on the result (probes, security context,
// ports, env names against the Go config struct, shutdown sizing).
//
// It lives in its own module so that k8s.io modules stay out of the
// product's go.mod. Run it with test/helm/run.sh, which installs helm.
package helm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const (
	nonRootUID    = 65532
	portName      = "lastevent"       // clients
	adminPortName = "lastevent-admin" // probes, /metrics
	containerName = "lastevent"
)

// variable is one entry of proxy.Variables() (caarlos0/env FieldParams).
type variable struct {
	Key             string
	DefaultValue    string
	HasDefaultValue bool
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "helm", "lastevent", "Chart.yaml")); err != nil {
		t.Fatalf("no chart under %s: %v", root, err)
	}
	return root
}

var (
	varsOnce sync.Once
	vars     []variable
	varsErr  error
)

// variables asks the product itself: `go run ./test/cmd/lastevent-vars` in
// the root module prints proxy.Variables() as JSON.
func variables(t testing.TB) []variable {
	t.Helper()
	varsOnce.Do(func() {
		cmd := exec.Command("go", "run", "./test/cmd/lastevent-vars")
		cmd.Dir = repoRoot(t)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			varsErr = fmt.Errorf("go run ./test/cmd/lastevent-vars: %v\n%s", err, stderr.String())
			return
		}
		if err := json.Unmarshal(out, &vars); err != nil {
			varsErr = fmt.Errorf("lastevent-vars output: %v", err)
			return
		}
		if len(vars) < 10 {
			varsErr = fmt.Errorf("lastevent-vars listed only %d variables", len(vars))
		}
		for _, v := range vars {
			if !strings.HasPrefix(v.Key, "LASTEVENT_") {
				varsErr = fmt.Errorf("variable %q lacks the LASTEVENT_ prefix", v.Key)
			}
		}
	})
	if varsErr != nil {
		t.Fatal(varsErr)
	}
	return vars
}

func variableNames(t testing.TB) []string {
	var names []string
	for _, v := range variables(t) {
		names = append(names, v.Key)
	}
	sort.Strings(names)
	return names
}

// storeVars are the settings the chart renders from its store and redis.*
// values instead of config (so that a password only ever comes from a Secret
// and the node id from the pod name). LASTEVENT_CLOCK_OFFSET, a testing aid
// that skews the clock of ids, the chart never sets.
var storeVars = []string{
	"LASTEVENT_STORE", "LASTEVENT_REDIS_URL", "LASTEVENT_REDIS_PASSWORD", "LASTEVENT_REDIS_CLUSTER",
	"LASTEVENT_NODE_ID", "LASTEVENT_REDIS_LEASE", "LASTEVENT_REDIS_TIMEOUT", "LASTEVENT_REDIS_RETENTION",
	"LASTEVENT_CLOCK_OFFSET",
}

// redisValues maps the redis.* values that carry a binary default to their
// variables.
var redisValues = map[string]string{
	"store":           "LASTEVENT_STORE",
	"redis.cluster":   "LASTEVENT_REDIS_CLUSTER",
	"redis.lease":     "LASTEVENT_REDIS_LEASE",
	"redis.timeout":   "LASTEVENT_REDIS_TIMEOUT",
	"redis.retention": "LASTEVENT_REDIS_RETENTION",
}

// configNames are the settings that belong under config: in values.yaml.
func configNames(t testing.TB) []string {
	return minus(variableNames(t), storeVars)
}

// passwordInURL matches a redis:// or rediss:// URL with user:password@.
var passwordInURL = regexp.MustCompile(`^rediss?://[^/@?#]*:[^/@?#]*@`)

// wantStoreEnv is what the chart should render from store and redis.*.
func wantStoreEnv(leValues map[string]any) map[string]corev1.EnvVar {
	str := func(path string) string { s, _ := lookup(leValues, path).(string); return s }
	store := str("store")
	if store == "" {
		store = "memory"
	}
	want := map[string]corev1.EnvVar{}
	plain := func(name, value string) { want[name] = corev1.EnvVar{Name: name, Value: value} }
	secret := func(name, ref string) {
		want[name] = corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: str(ref + ".name")}, Key: str(ref + ".key")}}}
	}
	plain("LASTEVENT_STORE", store)
	if store != "redis" {
		return want
	}
	if u := str("redis.url"); u != "" {
		plain("LASTEVENT_REDIS_URL", u)
	} else {
		secret("LASTEVENT_REDIS_URL", "redis.urlSecret")
	}
	if str("redis.passwordSecret.name") != "" {
		secret("LASTEVENT_REDIS_PASSWORD", "redis.passwordSecret")
	}
	cluster, _ := lookup(leValues, "redis.cluster").(bool)
	plain("LASTEVENT_REDIS_CLUSTER", strconv.FormatBool(cluster))
	plain("LASTEVENT_REDIS_LEASE", str("redis.lease"))
	plain("LASTEVENT_REDIS_TIMEOUT", str("redis.timeout"))
	plain("LASTEVENT_REDIS_RETENTION", str("redis.retention"))
	want["LASTEVENT_NODE_ID"] = corev1.EnvVar{Name: "LASTEVENT_NODE_ID",
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}
	return want
}

func readYAML(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestValuesMatchConfig holds values.yaml's config: and values.schema.json
// to proxy.Variables(): the same names, the same defaults, all strings.
// It needs no helm.
func TestValuesMatchConfig(t *testing.T) {
	root := repoRoot(t)
	want := map[string]string{}
	for _, v := range variables(t) {
		want[v.Key] = v.DefaultValue
	}
	values := readYAML(t, filepath.Join(root, "helm/lastevent/values.yaml"))
	config, ok := values["config"].(map[string]any)
	if !ok {
		t.Fatalf("values.yaml has no config: map")
	}
	if got := sortedKeys(config); !slices.Equal(got, configNames(t)) {
		t.Errorf("values.yaml config keys differ from proxy.Variables() without the store settings:\n missing %v\n unknown %v",
			minus(configNames(t), got), minus(got, configNames(t)))
	}
	for k, v := range config {
		s, isString := v.(string)
		if !isString {
			t.Errorf("values.yaml config.%s = %v (%T): quote it, env values are strings (and Helm turns big numbers into 1e+07)", k, v, v)
			continue
		}
		if d, known := want[k]; known && s != d {
			t.Errorf("values.yaml config.%s = %q, but the binary's default is %q", k, s, d)
		}
	}

	var schema struct {
		Properties struct {
			Config struct {
				Properties           map[string]map[string]any `json:"properties"`
				AdditionalProperties *bool                     `json:"additionalProperties"`
			} `json:"config"`
		} `json:"properties"`
	}
	data, err := os.ReadFile(filepath.Join(root, "helm/lastevent/values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	sc := schema.Properties.Config
	if sc.AdditionalProperties == nil || *sc.AdditionalProperties {
		t.Errorf("values.schema.json: config needs additionalProperties: false, so a misspelt setting fails the install")
	}
	if got := sortedKeys(sc.Properties); !slices.Equal(got, configNames(t)) {
		t.Errorf("values.schema.json config properties differ from proxy.Variables() without the store settings:\n missing %v\n unknown %v",
			minus(configNames(t), got), minus(got, configNames(t)))
	}
	for k, p := range sc.Properties {
		if p["type"] != "string" {
			t.Errorf("values.schema.json config.%s: type %v, want string", k, p["type"])
		}
		if d, known := want[k]; known && p["default"] != d {
			t.Errorf("values.schema.json config.%s: default %v, want %q", k, p["default"], d)
		}
	}

	// The store settings: defaults in values.yaml as in the binary, and the
	// variables known to the binary once its Redis settings exist.
	for path, name := range redisValues {
		got := fmt.Sprint(lookup(values, path))
		if d, known := want[name]; known && got != d {
			t.Errorf("values.yaml %s = %q, but the binary's default for %s is %q", path, got, name, d)
		}
	}
	if lookup(values, "store") != "memory" || lookup(values, "redis.url") != "" || lookup(values, "redis.urlSecret.name") != "" {
		t.Errorf("values.yaml: the default must be store memory with no Redis (store %v, redis.url %v)", lookup(values, "store"), lookup(values, "redis.url"))
	}
	t.Run("store-settings-known", func(t *testing.T) {
		if _, landed := want["LASTEVENT_STORE"]; !landed {
			t.Skip("proxy.Variables() has no LASTEVENT_STORE yet (the Redis settings of issue 6 are not merged)")
		}
		for _, name := range storeVars {
			if _, ok := want[name]; !ok {
				t.Errorf("the chart renders %s, which proxy.Variables() does not list", name)
			}
		}
	})

	chart := readYAML(t, filepath.Join(root, "helm/lastevent/Chart.yaml"))
	if chart["apiVersion"] != "v2" {
		t.Errorf("Chart.yaml apiVersion %v, want v2", chart["apiVersion"])
	}
	helpers, err := os.ReadFile(filepath.Join(root, "helm/lastevent/templates/_helpers.tpl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lastevent.container", "lastevent.env", "lastevent.ports", "lastevent.probes",
		"lastevent.lifecycle", "lastevent.appLifecycle", "lastevent.terminationGracePeriodSeconds", "lastevent.securityContext"} {
		if !bytes.Contains(helpers, []byte(`{{- define "`+name+`" -}}`)) {
			t.Errorf("_helpers.tpl does not define %s", name)
		}
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// --- helm -------------------------------------------------------------------

type helmEnv struct {
	bin  string
	dir  string // a copy of helm/, so dependency builds do not touch the tree
	home string
}

var (
	helmOnce sync.Once
	helmSet  *helmEnv
	helmErr  error
)

// needHelm finds helm on PATH (or $HELM) and prepares a scratch copy of the
// charts with the example's dependency built. Without helm it skips.
func needHelm(t *testing.T) *helmEnv {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("helm"); err != nil {
			t.Skip("helm is not on PATH: run test/helm/run.sh, which installs helm v4 into a cache directory (go install helm.sh/helm/v4/cmd/helm) and runs these tests")
		}
	}
	helmOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "lastevent-helm-test")
		if err != nil {
			helmErr = err
			return
		}
		h := &helmEnv{bin: bin, dir: filepath.Join(tmp, "helm"), home: filepath.Join(tmp, "home")}
		if err := os.CopyFS(h.dir, os.DirFS(filepath.Join(repoRoot(t), "helm"))); err != nil {
			helmErr = err
			return
		}
		// Not ours: a dependency build left in the tree would shadow the chart.
		os.RemoveAll(filepath.Join(h.dir, "examples/my-app/charts"))
		if out, err := h.run(filepath.Join(h.dir, "examples/my-app"), "dependency", "build"); err != nil {
			helmErr = fmt.Errorf("helm dependency build (examples/my-app): %v\n%s", err, out)
			return
		}
		helmSet = h
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmSet
}

func (h *helmEnv) run(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}

// chartCase is one chart rendered with one values file.
type chartCase struct {
	name   string // for the subtest
	chart  string // chart directory in the scratch copy
	values string // -f file ("" for none)
	parent bool   // the example parent chart (lastevent is a dependency)
}

func cases(t *testing.T, h *helmEnv) []chartCase {
	t.Helper()
	var out []chartCase
	le := filepath.Join(h.dir, "lastevent")
	files, _ := filepath.Glob(filepath.Join(le, "ci", "*.yaml"))
	for _, want := range []string{"default", "shared", "native-sidecar", "include", "redis-replicas"} {
		if !slices.Contains(files, filepath.Join(le, "ci", want+"-values.yaml")) {
			t.Errorf("helm/lastevent/ci/%s-values.yaml is missing", want)
		}
	}
	for _, f := range files {
		out = append(out, chartCase{name: "lastevent/" + filepath.Base(f), chart: le, values: f})
	}
	app := filepath.Join(h.dir, "examples/my-app")
	out = append(out, chartCase{name: "my-app/values.yaml", chart: app, parent: true})
	files, _ = filepath.Glob(filepath.Join(app, "ci", "*.yaml"))
	for _, f := range files {
		out = append(out, chartCase{name: "my-app/" + filepath.Base(f), chart: app, values: f, parent: true})
	}
	return out
}

func (c chartCase) args(cmd ...string) []string {
	if c.values != "" {
		cmd = append(cmd, "-f", c.values)
	}
	return cmd
}

// mergedValues is what the templates see as lastevent's .Values (and, for
// the parent chart, the parent's): defaults with the values files over them.
func (c chartCase) mergedValues(t *testing.T, h *helmEnv) (le, parent map[string]any) {
	t.Helper()
	le = readYAML(t, filepath.Join(h.dir, "lastevent/values.yaml"))
	var over map[string]any
	if c.values != "" {
		over = readYAML(t, c.values)
	}
	if !c.parent {
		return merge(le, over), nil
	}
	parent = merge(readYAML(t, filepath.Join(c.chart, "values.yaml")), over)
	sub, _ := parent["lastevent"].(map[string]any)
	return merge(le, sub), parent
}

func merge(dst, src map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range dst {
		out[k] = v
	}
	for k, v := range src {
		if dm, ok := out[k].(map[string]any); ok {
			if sm, ok := v.(map[string]any); ok {
				out[k] = merge(dm, sm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func lookup(m map[string]any, path string) any {
	var cur any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func TestChartLint(t *testing.T) {
	h := needHelm(t)
	for _, c := range cases(t, h) {
		t.Run(c.name, func(t *testing.T) {
			out, err := h.run(c.chart, c.args("lint", "--strict", ".")...)
			if err != nil {
				t.Fatalf("helm lint --strict: %v\n%s", err, out)
			}
		})
	}
}

// --- rendered manifests -------------------------------------------------------

// serviceMonitor is the part of the Prometheus Operator's
// monitoring.coreos.com/v1 ServiceMonitor that the chart writes, spelled as
// in its API; decoded strictly like the k8s.io types.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		JobLabel  string `json:"jobLabel,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*serviceMonitor
}

// decode splits helm template output into documents and decodes each
// strictly into its type: unknown or duplicate fields are errors.
func decode(t *testing.T, rendered []byte) manifests {
	t.Helper()
	var m manifests
	docs := regexp.MustCompile(`(?m)^---\s*$`).Split(string(rendered), -1)
	for _, doc := range docs {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		source := "?"
		if s := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(doc); s != nil {
			source = s[1]
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Errorf("%s: not YAML: %v", source, err)
			continue
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			m.deployments, obj = append(m.deployments, d), d
		case "v1 Service":
			s := &corev1.Service{}
			m.services, obj = append(m.services, s), s
		case "policy/v1 PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			m.pdbs, obj = append(m.pdbs, p), p
		case "monitoring.coreos.com/v1 ServiceMonitor":
			s := &serviceMonitor{}
			m.monitors, obj = append(m.monitors, s), s
		default:
			t.Errorf("%s: unexpected kind %s %s", source, tm.APIVersion, tm.Kind)
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Errorf("%s: strict decode into %s: %v", source, tm.Kind, err)
		}
	}
	return m
}

func render(t *testing.T, h *helmEnv, c chartCase, extra ...string) manifests {
	t.Helper()
	out, err := h.run(c.chart, append(c.args("template", "my-release", ".", "--namespace", "chart-test"), extra...)...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	return decode(t, out)
}

// sleepSeconds is the preStop sleep of a container (0 if none); exec hooks
// fail the test: distroless has no shell.
func sleepSeconds(t *testing.T, c *corev1.Container) int64 {
	t.Helper()
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return 0
	}
	p := c.Lifecycle.PreStop
	if p.Exec != nil && c.Name == containerName {
		t.Errorf("container %s: preStop exec %v: the distroless image has no shell or sleep binary", c.Name, p.Exec.Command)
	}
	if p.HTTPGet != nil && c.Name == containerName {
		t.Errorf("container %s: preStop httpGet %s: kubelet hooks only GET (POST /drain cannot be called this way)", c.Name, p.HTTPGet.Path)
	}
	if p.Sleep == nil {
		return 0
	}
	return p.Sleep.Seconds
}

func portOf(t *testing.T, name, addr string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s=%q: %v", name, addr, err)
		return -1
	}
	if host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1" {
		t.Errorf("%s=%q listens on loopback only: probes and Services reach the pod IP", name, addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Errorf("%s=%q: port %v", name, addr, err)
	}
	return int32(n)
}

// resolve gives the container port number a probe or Service port refers to.
func resolve(c *corev1.Container, p intstr.IntOrString) (int32, string) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, cp.Name
		}
	}
	return -1, ""
}

// sidecar is the lastevent container of a pod and what the pod says about it.
type sidecar struct {
	c           *corev1.Container
	native      bool
	env         map[string]string
	port, admin int32
}

func checkPod(t *testing.T, where string, pod *corev1.PodTemplateSpec, leValues map[string]any) *sidecar {
	spec := &pod.Spec
	var found []*sidecar
	for i := range spec.InitContainers {
		if c := &spec.InitContainers[i]; c.Name == containerName {
			found = append(found, &sidecar{c: c, native: true})
		}
	}
	for i := range spec.Containers {
		if c := &spec.Containers[i]; c.Name == containerName {
			found = append(found, &sidecar{c: c})
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d containers named %s, want exactly one", where, len(found), containerName)
	}
	sc := found[0]
	c := sc.c
	where += "/" + c.Name

	// Placement.
	placement, _ := leValues["placement"].(string)
	if sc.native != (placement == "nativeSidecar") {
		t.Errorf("%s: native sidecar %v, but placement is %q", where, sc.native, placement)
	}
	if sc.native && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
		t.Errorf("%s: a native sidecar needs restartPolicy: Always", where)
	}
	// Kubernetes starts the app after a native sidecar's startupProbe passes
	// (without one, as soon as the sidecar's process has started).
	if sp := c.StartupProbe; sc.native != (sp != nil && sp.HTTPGet != nil && sp.HTTPGet.Path == "/healthz") {
		t.Errorf("%s: startupProbe %+v; want one on /healthz exactly for a native sidecar", where, sp)
	}
	if !sc.native && c.RestartPolicy != nil {
		t.Errorf("%s: restartPolicy set on an ordinary container", where)
	}
	if c.Image == "" || !strings.Contains(c.Image, ":") {
		t.Errorf("%s: image %q has no tag", where, c.Image)
	}

	// Env: every config setting of proxy.Variables() as a plain value, plus
	// the store settings from store and redis.* (with store redis: the URL
	// plain or from a Secret, the password only from a Secret, the node id
	// from the pod name).
	storeEnv := wantStoreEnv(leValues)
	wantNames := configNames(t)
	for name := range storeEnv {
		wantNames = append(wantNames, name)
	}
	sort.Strings(wantNames)
	sc.env = map[string]string{}
	var names []string
	for _, e := range c.Env {
		if w, ok := storeEnv[e.Name]; ok {
			if !reflect.DeepEqual(e, w) {
				got, _ := json.Marshal(e)
				exp, _ := json.Marshal(w)
				t.Errorf("%s: env %s, want %s", where, got, exp)
			}
		} else if e.ValueFrom != nil {
			t.Errorf("%s: env %s uses valueFrom", where, e.Name)
		}
		if e.Name == "LASTEVENT_REDIS_PASSWORD" && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s: LASTEVENT_REDIS_PASSWORD must come from a Secret (secretKeyRef), never a plain value", where)
		}
		if passwordInURL.MatchString(e.Value) {
			t.Errorf("%s: env %s carries a password in plain text", where, e.Name)
		}
		if _, dup := sc.env[e.Name]; dup {
			t.Errorf("%s: env %s set twice", where, e.Name)
		}
		sc.env[e.Name] = e.Value
		names = append(names, e.Name)
	}
	sort.Strings(names)
	if !slices.Equal(names, wantNames) {
		t.Errorf("%s: env names differ from proxy.Variables() (config) and the store settings:\n missing %v\n unknown %v",
			where, minus(wantNames, names), minus(names, wantNames))
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom would bring in unchecked variables", where)
	}
	config, _ := leValues["config"].(map[string]any)
	for k, v := range config {
		want := fmt.Sprint(v)
		if k == "LASTEVENT_UPSTREAM_URL" && want == "" {
			want = fmt.Sprintf("http://127.0.0.1:%v", lookup(leValues, "upstreamPort"))
		}
		if got, ok := sc.env[k]; ok && got != want {
			t.Errorf("%s: env %s=%q, values say %q", where, k, got, want)
		}
	}

	// Ports follow the listen addresses.
	sc.port = portOf(t, "LASTEVENT_LISTEN_ADDR", sc.env["LASTEVENT_LISTEN_ADDR"])
	sc.admin = portOf(t, "LASTEVENT_ADMIN_ADDR", sc.env["LASTEVENT_ADMIN_ADDR"])
	if n, _ := resolve(c, intstr.FromString(portName)); n != sc.port {
		t.Errorf("%s: port %q is %d, LASTEVENT_LISTEN_ADDR says %d", where, portName, n, sc.port)
	}
	if n, _ := resolve(c, intstr.FromString(adminPortName)); n != sc.admin {
		t.Errorf("%s: port %q is %d, LASTEVENT_ADMIN_ADDR says %d", where, adminPortName, n, sc.admin)
	}
	if sc.port == sc.admin {
		t.Errorf("%s: client and admin share port %d", where, sc.port)
	}

	// Probes: liveness /healthz and readiness /readyz, on the admin port.
	for _, p := range []struct {
		kind, path string
		probe      *corev1.Probe
	}{{"livenessProbe", "/healthz", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: %s must be an httpGet probe", where, p.kind)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: %s path %q, want %s", where, p.kind, p.probe.HTTPGet.Path, p.path)
		}
		if n, _ := resolve(c, p.probe.HTTPGet.Port); n != sc.admin {
			t.Errorf("%s: %s port %s is %d, want the admin port %d", where, p.kind, p.probe.HTTPGet.Port.String(), n, sc.admin)
		}
		if p.probe.HTTPGet.Host != "" {
			t.Errorf("%s: %s sets host %q", where, p.kind, p.probe.HTTPGet.Host)
		}
	}
	if c.StartupProbe != nil && c.StartupProbe.HTTPGet != nil && c.StartupProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("%s: startupProbe %q: it must not depend on the upstream", where, c.StartupProbe.HTTPGet.Path)
	}

	// Security context.
	s := c.SecurityContext
	switch {
	case s == nil:
		t.Errorf("%s: no securityContext", where)
	default:
		if s.RunAsNonRoot == nil || !*s.RunAsNonRoot {
			t.Errorf("%s: runAsNonRoot must be true", where)
		}
		if s.RunAsUser == nil || *s.RunAsUser != nonRootUID {
			t.Errorf("%s: runAsUser must be %d", where, nonRootUID)
		}
		if s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem {
			t.Errorf("%s: readOnlyRootFilesystem must be true", where)
		}
		if s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", where)
		}
		if s.Privileged != nil && *s.Privileged {
			t.Errorf("%s: privileged", where)
		}
		if s.Capabilities == nil || !slices.Contains(s.Capabilities.Drop, "ALL") || len(s.Capabilities.Add) > 0 {
			t.Errorf("%s: capabilities must drop ALL and add none: %+v", where, s.Capabilities)
		}
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: no memory limit", where)
	}

	// Shutdown: the grace period covers lastevent's preStop and drain, and
	// the app outlives lastevent.
	grace, err := time.ParseDuration(sc.env["LASTEVENT_SHUTDOWN_GRACE"])
	if err != nil {
		t.Errorf("%s: LASTEVENT_SHUTDOWN_GRACE: %v", where, err)
	}
	graceS := int64(math.Ceil(grace.Seconds()))
	leSleep := sleepSeconds(t, c)
	if sc.native && leSleep != 0 {
		t.Errorf("%s: a native sidecar stops after the app: a preStop sleep would only delay the drain", where)
	}
	if !sc.native && leSleep == 0 {
		t.Errorf("%s: no preStop sleep: it would drain before the endpoints drop the pod", where)
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatalf("%s: terminationGracePeriodSeconds not set", where)
	}
	tgps := *spec.TerminationGracePeriodSeconds
	if tgps <= leSleep+graceS {
		t.Errorf("%s: terminationGracePeriodSeconds %d must exceed preStop %ds + LASTEVENT_SHUTDOWN_GRACE %ds", where, tgps, leSleep, graceS)
	}
	for i := range spec.Containers {
		app := &spec.Containers[i]
		if app.Name == containerName {
			continue
		}
		appSleep := sleepSeconds(t, app)
		if !sc.native && appSleep < leSleep+graceS {
			t.Errorf("%s: app container %s sleeps %ds in preStop, less than lastevent's preStop %ds + drain %ds: the upstream would go first", where, app.Name, appSleep, leSleep, graceS)
		}
		if tgps <= appSleep {
			t.Errorf("%s: terminationGracePeriodSeconds %d leaves app %s no time after its %ds preStop", where, tgps, app.Name, appSleep)
		}
		for _, p := range app.Ports {
			if p.ContainerPort == sc.port || p.ContainerPort == sc.admin {
				t.Errorf("%s: app %s uses lastevent's port %d", where, app.Name, p.ContainerPort)
			}
		}
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Errorf("%s: set enableServiceLinks: false (a Service named lastevent* would inject LASTEVENT_* variables)", where)
	}

	// Names Kubernetes would refuse.
	seen := map[string]bool{}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, ct := range cs {
			for _, msg := range validation.IsDNS1123Label(ct.Name) {
				t.Errorf("%s: container name %q: %s", where, ct.Name, msg)
			}
			for _, p := range ct.Ports {
				if p.Name == "" {
					continue
				}
				for _, msg := range validation.IsValidPortName(p.Name) {
					t.Errorf("%s: port name %q: %s", where, p.Name, msg)
				}
				if seen[p.Name] {
					t.Errorf("%s: port name %q used twice in the pod", where, p.Name)
				}
				seen[p.Name] = true
			}
		}
	}
	return sc
}

func checkManifests(t *testing.T, c chartCase, m manifests, leValues, parentValues map[string]any) {
	exampleOn, _ := lookup(leValues, "example.enabled").(bool)
	monitorOn, _ := lookup(leValues, "serviceMonitor.enabled").(bool)
	pdbOn, _ := lookup(leValues, "podDisruptionBudget.enabled").(bool)
	replicas, _ := lookup(leValues, "replicaCount").(float64)
	wantDeployments := 0
	if exampleOn {
		wantDeployments = 1
	}
	if c.parent {
		if exampleOn {
			t.Errorf("the parent example should set lastevent.example.enabled=false")
		}
		wantDeployments = 1
		replicas, _ = lookup(parentValues, "replicaCount").(float64)
	}
	if len(m.deployments) != wantDeployments {
		t.Fatalf("%d Deployments, want %d", len(m.deployments), wantDeployments)
	}
	wantPDB := 0
	if exampleOn && pdbOn && replicas > 1 {
		wantPDB = 1
	}
	if !c.parent && len(m.pdbs) != wantPDB {
		t.Errorf("%d PodDisruptionBudgets, want %d (replicas %v, enabled %v)", len(m.pdbs), wantPDB, replicas, pdbOn)
	}
	wantMonitors := 0
	if monitorOn {
		wantMonitors = 1
	}
	if len(m.monitors) != wantMonitors {
		t.Errorf("%d ServiceMonitors, want %d", len(m.monitors), wantMonitors)
	}

	type pod struct {
		labels labels.Set
		sc     *sidecar
	}
	var pods []pod
	for _, d := range m.deployments {
		where := "Deployment " + d.Name
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v does not select its pod template labels %v", where, d.Spec.Selector, d.Spec.Template.Labels)
		}
		if d.Spec.Replicas == nil || float64(*d.Spec.Replicas) != replicas {
			t.Errorf("%s: replicas %v, values say %v", where, d.Spec.Replicas, replicas)
		}
		pods = append(pods, pod{labels.Set(d.Spec.Template.Labels), checkPod(t, where, &d.Spec.Template, leValues)})
		for _, msg := range validation.IsDNS1123Subdomain(d.Name) {
			t.Errorf("%s: %s", where, msg)
		}
	}

	var metricsServices []*corev1.Service
	clientServices := 0
	for _, s := range m.services {
		where := "Service " + s.Name
		for _, msg := range validation.IsDNS1123Label(s.Name) {
			t.Errorf("%s: %s", where, msg)
		}
		metrics := s.Labels["app.kubernetes.io/component"] == "metrics"
		if metrics {
			metricsServices = append(metricsServices, s)
			if !exampleOn && !c.parent {
				// Selects the includer's pods, which this render does not have.
				want, _ := lookup(leValues, "serviceMonitor.podSelector").(map[string]any)
				if len(want) == 0 || len(s.Spec.Selector) != len(want) {
					t.Errorf("%s: selector %v, want serviceMonitor.podSelector %v", where, s.Spec.Selector, want)
				}
				for k, v := range want {
					if s.Spec.Selector[k] != fmt.Sprint(v) {
						t.Errorf("%s: selector %v, want serviceMonitor.podSelector %v", where, s.Spec.Selector, want)
					}
				}
				for _, p := range s.Spec.Ports {
					if p.TargetPort.String() != adminPortName {
						t.Errorf("%s: targetPort %s, want %s", where, p.TargetPort.String(), adminPortName)
					}
				}
				continue
			}
		} else {
			clientServices++
		}
		var matched []pod
		for _, p := range pods {
			if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(p.labels) {
				matched = append(matched, p)
			}
		}
		if len(matched) == 0 {
			t.Errorf("%s: selector %v matches no pod of this release", where, s.Spec.Selector)
			continue
		}
		for _, p := range matched {
			for _, sp := range s.Spec.Ports {
				n, _ := resolve(p.sc.c, sp.TargetPort)
				want, wantName := p.sc.port, portName
				if metrics {
					want, wantName = p.sc.admin, adminPortName
				}
				if n != want {
					t.Errorf("%s: port %s targets %s, which is not lastevent's %q port %d", where, sp.Name, sp.TargetPort.String(), wantName, want)
				}
			}
		}
		if !metrics {
			// memory: a reconnect must come back to the pod with the buffer
			// (unless the values say otherwise); redis: any pod resumes it.
			want, _ := lookup(leValues, "service.sessionAffinity").(string)
			if c.parent {
				want = "ClientIP"
				if lookup(leValues, "store") == "redis" {
					want = "None"
				}
			}
			if string(s.Spec.SessionAffinity) != want {
				t.Errorf("%s: sessionAffinity %q, want %q", where, s.Spec.SessionAffinity, want)
			}
		}
	}
	if (exampleOn || c.parent) && clientServices != 1 {
		t.Errorf("%d client Services, want 1", clientServices)
	}
	if len(metricsServices) != wantMonitors {
		t.Errorf("%d metrics Services, want %d (one per ServiceMonitor)", len(metricsServices), wantMonitors)
	}

	promDuration := regexp.MustCompile(`^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$`)
	for _, sm := range m.monitors {
		where := "ServiceMonitor " + sm.Name
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("%s: selector %v: %v", where, sm.Spec.Selector, err)
			continue
		}
		n := 0
		for _, s := range metricsServices {
			if sel.Matches(labels.Set(s.Labels)) {
				n++
			}
		}
		for _, s := range m.services {
			if s.Labels["app.kubernetes.io/component"] != "metrics" && sel.Matches(labels.Set(s.Labels)) {
				t.Errorf("%s: also selects the client Service %s", where, s.Name)
			}
		}
		if n != 1 {
			t.Errorf("%s: selects %d metrics Services, want 1", where, n)
		}
		if len(sm.Spec.Endpoints) != 1 {
			t.Fatalf("%s: %d endpoints, want 1", where, len(sm.Spec.Endpoints))
		}
		ep := sm.Spec.Endpoints[0]
		if ep.Port != adminPortName || ep.Path != "/metrics" {
			t.Errorf("%s: endpoint port %q path %q, want %s /metrics", where, ep.Port, ep.Path, adminPortName)
		}
		for _, s := range metricsServices {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				t.Errorf("%s: Service %s has no port named %s", where, s.Name, ep.Port)
			}
		}
		for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
			if d != "" && !promDuration.MatchString(d) {
				t.Errorf("%s: %q is not a Prometheus duration", where, d)
			}
		}
	}

	for _, p := range m.pdbs {
		where := "PodDisruptionBudget " + p.Name
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("%s: selector: %v", where, err)
			continue
		}
		if !slices.ContainsFunc(pods, func(pd pod) bool { return sel.Matches(pd.labels) }) {
			t.Errorf("%s: selects no pod of this release", where)
		}
		if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
			t.Errorf("%s: neither minAvailable nor maxUnavailable", where)
		}
	}
}

func TestChartTemplate(t *testing.T) {
	h := needHelm(t)
	for _, c := range cases(t, h) {
		t.Run(c.name, func(t *testing.T) {
			leValues, parentValues := c.mergedValues(t, h)
			checkManifests(t, c, render(t, h, c), leValues, parentValues)
		})
	}
}

// TestChartRefuses: values that would deploy a broken sidecar fail the render.
func TestChartRefuses(t *testing.T) {
	h := needHelm(t)
	c := chartCase{chart: filepath.Join(h.dir, "lastevent")}
	for _, bad := range []struct{ set, why string }{
		{"config.LASTEVENT_MOED=shared", "misspelt setting"},
		{"config.GOMAXPROCS=2", "not a LASTEVENT_* setting"},
		{"terminationGracePeriodSeconds=5", "grace period below preStop + LASTEVENT_SHUTDOWN_GRACE"},
		{"config.LASTEVENT_ADMIN_ADDR=127.0.0.1:8081", "admin port on loopback: probes cannot reach it"},
		{"config.LASTEVENT_LISTEN_ADDR=:0", "port 0 cannot be a containerPort"},
		{"config.LASTEVENT_SHUTDOWN_GRACE=10", "not a duration"},
		{"placement=sidecar", "unknown placement"},
	} {
		out, err := h.run(c.chart, "template", "x", ".", "--set-string", bad.set)
		if err == nil {
			t.Errorf("--set %s (%s) rendered without error", bad.set, bad.why)
		} else if !bytes.Contains(out, []byte("Error")) {
			t.Errorf("--set %s: %v\n%s", bad.set, err, out)
		}
	}
	// Ports the two containers of one pod would both listen on.
	for _, bad := range []struct{ set, want string }{
		{"upstreamPort=8080", "upstreamPort 8080 is also lastevent's port"},
		{"upstreamPort=8081", "upstreamPort 8081 is also lastevent's port"},
		{"config.LASTEVENT_ADMIN_ADDR=:8080", "LASTEVENT_LISTEN_ADDR and LASTEVENT_ADMIN_ADDR both use port 8080"},
		{"config.LASTEVENT_UPSTREAM_URL=http://127.0.0.1:8080", "is lastevent's own port in the pod"},
		{"config.LASTEVENT_UPSTREAM_URL=http://localhost:8081/api", "is lastevent's own port in the pod"},
	} {
		out, err := h.run(c.chart, "template", "x", ".", "--set", bad.set)
		if err == nil || !bytes.Contains(out, []byte(bad.want)) {
			t.Errorf("--set %s: want an error saying %q, got %v:\n%.600s", bad.set, bad.want, err, out)
		}
	}
	// The store settings: a clear message for each mistake, naming the value.
	for _, bad := range []struct {
		set  []string
		want string
	}{
		{[]string{"store=redis"}, "store=redis needs the address of an existing Redis: set redis.url"},
		{[]string{"store=redis", "redis.url=redis://:s3cret@redis:6379"}, "redis.url carries a password"},
		{[]string{"store=redis", "redis.url=redis://default:s3cret@redis:6379/0"}, "redis.url carries a password"},
		{[]string{"store=redis", "redis.url=redis:6379"}, `redis.url "redis:6379": want redis://`},
		{[]string{"store=redis", "redis.url=redis://redis:6379", "redis.urlSecret.name=redis"}, "set redis.url or redis.urlSecret.name, not both"},
		{[]string{"store=redis", "redis.url=redis://redis:6379", "redis.passwordSecret.name=redis", "redis.passwordSecret.key="}, "redis.passwordSecret.key is empty"},
		{[]string{"store=redis", "redis.urlSecret.name=redis", "redis.urlSecret.key="}, "redis.urlSecret.key is empty"},
		{[]string{"store=redis", "redis.url=redis://redis:6379", "redis.lease=6"}, `redis.lease "6": want a positive Go duration`},
		{[]string{"store=redis", "redis.url=redis://redis:6379", "redis.timeout=0s"}, `redis.timeout "0s": want a positive Go duration`},
		{[]string{"store=valkey"}, `store "valkey": want memory or redis`},
		{[]string{"service.sessionAffinity=Sticky"}, `service.sessionAffinity "Sticky": want ClientIP or None`},
	} {
		args := []string{"template", "x", "."}
		for _, s := range bad.set {
			args = append(args, "--set-string", s)
		}
		// Without the schema: the template's own checks must hold too (a
		// parent chart may skip validation, and the messages are clearer).
		out, err := h.run(c.chart, append(args, "--skip-schema-validation")...)
		if err == nil || !bytes.Contains(out, []byte(bad.want)) {
			t.Errorf("--set %v: want an error saying %q, got %v:\n%.600s", bad.set, bad.want, err, out)
		}
		if out, err := h.run(c.chart, args...); err == nil {
			t.Errorf("--set %v rendered with the schema on:\n%.300s", bad.set, out)
		}
	}
	// The chart renders these from store and redis.*; under config they
	// fail, so that no password ever stands in a plain env value.
	for _, name := range storeVars {
		out, err := h.run(c.chart, "template", "x", ".", "--skip-schema-validation", "--set-string", "config."+name+"=x")
		if err == nil || !bytes.Contains(out, []byte("config."+name+":")) {
			t.Errorf("config.%s: want an error naming it, got %v:\n%.600s", name, err, out)
		}
		if _, err := h.run(c.chart, "template", "x", ".", "--set-string", "config."+name+"=x"); err == nil {
			t.Errorf("config.%s rendered with the schema on", name)
		}
	}
	if out, err := h.run(c.chart, "template", "x", ".", "--set", "store=redis", "--set", "redis.url=redis://redis:6379", "--set-string", "redis.cluster=yes"); err == nil {
		t.Errorf("redis.cluster=yes (a string) rendered:\n%.300s", out)
	}
	// And the schema wants strings, as in the environment.
	if out, err := h.run(c.chart, "template", "x", ".", "--set", "config.LASTEVENT_BUFFER_FRAMES=10000000"); err == nil {
		t.Errorf("a number for config.LASTEVENT_BUFFER_FRAMES rendered (Helm would write 1e+07):\n%s", out)
	}
}

// TestChartGraceSeconds: the template's Go-duration parser agrees with
// time.ParseDuration, rounding up.
func TestChartGraceSeconds(t *testing.T) {
	h := needHelm(t)
	c := chartCase{chart: filepath.Join(h.dir, "lastevent")}
	values := readYAML(t, filepath.Join(h.dir, "lastevent/values.yaml"))
	sleep := int64(lookup(values, "lifecycle.preStopSleepSeconds").(float64))
	extra := int64(lookup(values, "lifecycle.extraGraceSeconds").(float64))
	for _, d := range []string{"10s", "1m30s", "500ms", "1.5s", "2h", "1h2m3s", "250ms", "90s", "1m0.2s"} {
		m := render(t, h, c, "--set-string", "config.LASTEVENT_SHUTDOWN_GRACE="+d)
		if len(m.deployments) != 1 {
			t.Fatalf("%s: %d Deployments", d, len(m.deployments))
		}
		dur, err := time.ParseDuration(d)
		if err != nil {
			t.Fatal(err)
		}
		want := sleep + int64(math.Ceil(dur.Seconds())) + extra
		if got := *m.deployments[0].Spec.Template.Spec.TerminationGracePeriodSeconds; got != want {
			t.Errorf("LASTEVENT_SHUTDOWN_GRACE=%s: terminationGracePeriodSeconds %d, want %d", d, got, want)
		}
	}
}

// lasteventEnv is the env of the lastevent container of the only Deployment.
func lasteventEnv(t *testing.T, m manifests) map[string]corev1.EnvVar {
	t.Helper()
	if len(m.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(m.deployments))
	}
	spec := m.deployments[0].Spec.Template.Spec
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if c.Name == containerName {
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			return env
		}
	}
	t.Fatalf("no %s container", containerName)
	return nil
}

// TestChartRedis renders the store cases and compares the store settings
// with literal expectations (checkPod derives them from the values; this
// pins them), plus what else the case changes.
func TestChartRedis(t *testing.T) {
	h := needHelm(t)
	le := filepath.Join(h.dir, "lastevent")
	app := filepath.Join(h.dir, "examples/my-app")
	plain := func(name, value string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: value} }
	fromSecret := func(name, secret, key string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key}}}
	}
	nodeID := corev1.EnvVar{Name: "LASTEVENT_NODE_ID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}
	for _, tc := range []struct {
		name     string
		chart    string
		file     string // a values file of the chart, or
		values   string // values written to a temporary file
		parent   bool
		want     []corev1.EnvVar // the store settings, exactly
		replicas int32
		affinity corev1.ServiceAffinity
		pdbs     int
	}{
		{name: "default: memory, no Redis", chart: le, file: "ci/default-values.yaml",
			want: []corev1.EnvVar{plain("LASTEVENT_STORE", "memory")}, replicas: 1, affinity: corev1.ServiceAffinityClientIP},
		{name: "3 replicas, plain Service, Redis (ci/redis-replicas-values.yaml)", chart: le, file: "ci/redis-replicas-values.yaml",
			want: []corev1.EnvVar{
				plain("LASTEVENT_STORE", "redis"),
				plain("LASTEVENT_REDIS_URL", "redis://redis-master.redis.svc.cluster.local:6379/0"),
				fromSecret("LASTEVENT_REDIS_PASSWORD", "redis", "redis-password"),
				plain("LASTEVENT_REDIS_CLUSTER", "false"),
				plain("LASTEVENT_REDIS_LEASE", "6s"),
				plain("LASTEVENT_REDIS_TIMEOUT", "500ms"),
				plain("LASTEVENT_REDIS_RETENTION", "1h"),
				nodeID,
			}, replicas: 3, affinity: corev1.ServiceAffinityNone, pdbs: 1},
		{name: "URL from a Secret, cluster, own timing", chart: le, values: `
store: redis
redis:
  urlSecret: {name: redis-url, key: url}
  cluster: true
  lease: 9s
  timeout: 1s
  retention: 30m
`,
			want: []corev1.EnvVar{
				plain("LASTEVENT_STORE", "redis"),
				fromSecret("LASTEVENT_REDIS_URL", "redis-url", "url"),
				plain("LASTEVENT_REDIS_CLUSTER", "true"),
				plain("LASTEVENT_REDIS_LEASE", "9s"),
				plain("LASTEVENT_REDIS_TIMEOUT", "1s"),
				plain("LASTEVENT_REDIS_RETENTION", "30m"),
				nodeID,
			}, replicas: 1, affinity: corev1.ServiceAffinityClientIP},
		{name: "native sidecar with Redis", chart: le, values: `
placement: nativeSidecar
replicaCount: 2
store: redis
redis:
  url: rediss://redis.example.com:6380
service:
  sessionAffinity: None
`,
			want: []corev1.EnvVar{
				plain("LASTEVENT_STORE", "redis"),
				plain("LASTEVENT_REDIS_URL", "rediss://redis.example.com:6380"),
				plain("LASTEVENT_REDIS_CLUSTER", "false"),
				plain("LASTEVENT_REDIS_LEASE", "6s"),
				plain("LASTEVENT_REDIS_TIMEOUT", "500ms"),
				plain("LASTEVENT_REDIS_RETENTION", "1h"),
				nodeID,
			}, replicas: 2, affinity: corev1.ServiceAffinityNone, pdbs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := chartCase{name: tc.name, chart: tc.chart, parent: tc.parent}
			if tc.file != "" {
				c.values = filepath.Join(tc.chart, tc.file)
			} else {
				// Not t.TempDir(): the subtest's name has commas, and helm
				// splits -f on commas.
				dir, err := os.MkdirTemp("", "lastevent-values")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				c.values = filepath.Join(dir, "values.yaml")
				if err := os.WriteFile(c.values, []byte(tc.values), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if out, err := h.run(c.chart, c.args("lint", "--strict", ".")...); err != nil {
				t.Fatalf("helm lint --strict: %v\n%s", err, out)
			}
			m := render(t, h, c)
			leValues, parentValues := c.mergedValues(t, h)
			checkManifests(t, c, m, leValues, parentValues)
			env := lasteventEnv(t, m)
			for _, w := range tc.want {
				if got, ok := env[w.Name]; !ok || !reflect.DeepEqual(got, w) {
					g, _ := json.Marshal(got)
					e, _ := json.Marshal(w)
					t.Errorf("env %s: got %s, want %s", w.Name, g, e)
				}
			}
			for _, name := range storeVars {
				if !slices.ContainsFunc(tc.want, func(e corev1.EnvVar) bool { return e.Name == name }) {
					if _, ok := env[name]; ok {
						t.Errorf("env %s rendered, want it absent", name)
					}
				}
			}
			if r := m.deployments[0].Spec.Replicas; r == nil || *r != tc.replicas {
				t.Errorf("replicas %v, want %d", r, tc.replicas)
			}
			for _, s := range m.services {
				if s.Labels["app.kubernetes.io/component"] != "metrics" && s.Spec.SessionAffinity != tc.affinity {
					t.Errorf("Service %s: sessionAffinity %q, want %q", s.Name, s.Spec.SessionAffinity, tc.affinity)
				}
			}
			if !tc.parent && len(m.pdbs) != tc.pdbs {
				t.Errorf("%d PodDisruptionBudgets, want %d", len(m.pdbs), tc.pdbs)
			}
		})
	}

	// The include path: my-app's own Deployment with lastevent.container and
	// with the piecewise lastevent.env, its Service without affinity.
	for _, extra := range [][]string{nil, {"--set", "piecewise=true"}} {
		c := chartCase{chart: app, values: filepath.Join(app, "ci/redis-values.yaml"), parent: true}
		m := render(t, h, c, extra...)
		env := lasteventEnv(t, m)
		want := []corev1.EnvVar{
			plain("LASTEVENT_STORE", "redis"),
			fromSecret("LASTEVENT_REDIS_URL", "my-app-redis", "url"),
			plain("LASTEVENT_REDIS_LEASE", "10s"),
			plain("LASTEVENT_REDIS_TIMEOUT", "1s"),
			nodeID,
		}
		for _, w := range want {
			if got := env[w.Name]; !reflect.DeepEqual(got, w) {
				g, _ := json.Marshal(got)
				e, _ := json.Marshal(w)
				t.Errorf("my-app %v: env %s: got %s, want %s", extra, w.Name, g, e)
			}
		}
		if _, ok := env["LASTEVENT_REDIS_PASSWORD"]; ok {
			t.Errorf("my-app %v: LASTEVENT_REDIS_PASSWORD rendered without redis.passwordSecret", extra)
		}
		for _, s := range m.services {
			if s.Labels["app.kubernetes.io/component"] != "metrics" && s.Spec.SessionAffinity != corev1.ServiceAffinityNone {
				t.Errorf("my-app %v: Service %s: sessionAffinity %q, want None", extra, s.Name, s.Spec.SessionAffinity)
			}
		}
	}
}
