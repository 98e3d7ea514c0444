package charts_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/internal/testkube"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml, config/ and the chart's crds/ from the chart")

const (
	chartDir = "toolgate"
	// The release that renders config/ and the golden files.
	release   = "toolgate"
	namespace = "toolgate-system"
	// regenerate is what to run when config/ or a golden file is stale.
	regenerate = "make manifests (or go test ./charts -update)"
)

// configHeader opens every file of config/ rendered from the chart.
const configHeader = "# Generated from charts/toolgate by `make manifests` (helm template with the\n" +
	"# chart's default values); edit the chart, not this file.\n"

// configFiles say which file of config/ receives what each template of the
// chart renders with its default values; the kustomizations of config/ list
// these files.
var configFiles = map[string]string{
	"templates/serviceaccount.yaml":      "../config/rbac/service_account.yaml",
	"templates/clusterrolebinding.yaml":  "../config/rbac/service_account.yaml",
	"templates/clusterrole.yaml":         "../config/rbac/role.yaml",
	"templates/deployment.yaml":          "../config/manager/manager.yaml",
	"templates/service.yaml":             "../config/manager/manager.yaml",
	"templates/poddisruptionbudget.yaml": "../config/manager/manager.yaml",
	"templates/gatewayclass.yaml":        "../config/gatewayclass/gatewayclass.yaml",
}

// crdSource is where controller-gen writes the CRDs that the chart's crds/
// copies.
const crdSource = "../config/crd/bases"

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm runs the Helm binary of hack/helm/go.mod (a Go tool, built on first
// use) in the repository's root and returns its standard output.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	helmOnce.Do(func() {
		// go tool -n builds the tool into the build cache and prints its path.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, "go", "tool", "-n", "-modfile=hack/helm/go.mod", "helm")
		build.Dir = ".."
		out, err := build.Output()
		if err != nil {
			helmErr = fmt.Errorf("build helm (go tool -modfile=hack/helm/go.mod helm): %w", err)
			if exit, ok := err.(*exec.ExitError); ok {
				helmErr = fmt.Errorf("%w\n%s", helmErr, exit.Stderr)
			}
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmPath, args...)
	cmd.Dir = ".."
	// Helm keeps no state between runs here: no repositories, no cache.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// render runs helm template on the chart with the given values files
// (paths relative to this folder).
func render(t *testing.T, valuesFiles ...string) (string, error) {
	t.Helper()
	args := []string{"template", release, "charts/" + chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", abs)
	}
	return helm(t, args...)
}

// localValues are the values hack/cluster deploy installs the chart with.
const localValues = "../config/local/values.yaml"

// goldenCases returns the values file of each golden case by name:
// testdata/NAME.values.yaml, and "local" for localValues.
func goldenCases(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("testdata/*.values.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	cases := map[string]string{"local": localValues}
	for _, f := range files {
		cases[strings.TrimSuffix(filepath.Base(f), ".values.yaml")] = f
	}
	return cases
}

// TestLint lints the chart strictly, with its defaults and with each golden
// case's values.
func TestLint(t *testing.T) {
	args := []string{"lint", "--strict", "charts/" + chartDir}
	if out, err := helm(t, args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for name, values := range goldenCases(t) {
		abs, err := filepath.Abs(values)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := helm(t, append(args, "--values", abs)...); err != nil {
			t.Errorf("with the values of %s: %v\n%s", name, err, out)
		}
	}
}

// TestTemplate renders the chart with each golden case's values and
// compares the result with testdata/NAME.out.yaml. Run with -update to
// rewrite the golden files, then read the diff.
func TestTemplate(t *testing.T) {
	for name, values := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, values)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, "testdata/"+name+".out.yaml", got)
		})
	}
}

// TestValuesRefused renders values the chart must refuse, with a message
// that says what to change.
func TestValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		name, values, want string
	}{
		{
			name:   "two Redis at once",
			values: "redis: {url: redis://r:6379, cluster: {addrs: [a:6379]}}",
			want:   "redis: set one of url, sentinel.addrs and cluster.addrs",
		},
		{
			name:   "Sentinels without a master name",
			values: "redis: {sentinel: {addrs: [s:26379]}}",
			want:   "redis.sentinel.masterName: name the master",
		},
		{
			name:   "a password Secret without the default GatewayClass",
			values: "gatewayClass: {create: false}\nredis: {url: redis://r:6379, passwordSecret: {name: redis}}",
			want:   "set gatewayClass.create=true",
		},
		{
			name:   "a proxy flag with a space",
			values: "proxy: {extraArgs: [--trusted-hops 1]}",
			want:   `"--trusted-hops 1" holds a space`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(f, []byte(tc.values), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := render(t, f)
			if err == nil {
				t.Fatalf("rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// TestConfigIsRenderedFromChart checks that config/ holds what the chart
// renders with its default values, and that the chart's crds/ holds the
// CRDs controller-gen wrote into config/crd/bases.
func TestConfigIsRenderedFromChart(t *testing.T) {
	crds, err := filepath.Glob(filepath.Join(crdSource, "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs in %s: %v", crdSource, err)
	}
	if *update {
		old, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	var names []string
	for _, src := range crds {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(src))
		compare(t, filepath.Join(chartDir, "crds", filepath.Base(src)), string(want))
	}
	copies, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	for _, c := range copies {
		if !slices.Contains(names, filepath.Base(c)) {
			t.Errorf("%s is not in %s: run %s", c, crdSource, regenerate)
		}
	}

	out, err := render(t)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]string{}
	for doc := range strings.SplitSeq(out, "\n---\n") {
		doc = strings.TrimSpace(strings.TrimPrefix(doc, "---\n"))
		if doc == "" {
			continue
		}
		first, body, _ := strings.Cut(doc, "\n")
		source, ok := strings.CutPrefix(first, "# Source: "+chartDir+"/")
		if !ok {
			t.Fatalf("a rendered document does not start with its source:\n%s", doc)
		}
		file, ok := configFiles[source]
		if !ok {
			t.Fatalf("%s renders objects no file of config/ receives: add it to configFiles (and that file to a kustomization of config/)", source)
		}
		files[file] = append(files[file], body+"\n")
	}
	targets := map[string]bool{}
	for _, f := range configFiles {
		targets[f] = true
	}
	for _, file := range slices.Sorted(maps.Keys(targets)) {
		docs := files[file]
		if len(docs) == 0 {
			t.Errorf("the chart renders nothing for %s with its default values", file)
			continue
		}
		compare(t, file, configHeader+"---\n"+strings.Join(docs, "---\n"))
	}
}

// compare checks got against the file at path, or writes it there with
// -update.
func compare(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run %s", err, regenerate)
	}
	if string(want) != got {
		t.Errorf("%s is stale: run %s, then read the diff\n%s", path, regenerate, diff("committed", string(want), "rendered", got))
	}
}

// diff shows the first line where want and got differ, each under its label.
func diff(wantLabel, want, gotLabel, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  %-9s %q\n  %-9s %q", i+1, wantLabel+":", wl, gotLabel+":", gl)
		}
	}
	return ""
}

// rulesFile is the plain Prometheus rules file rendered from the chart's
// PrometheusRule with its default thresholds.
const rulesFile = "../config/prometheus/toolgate.rules.yaml"

// rulesHeader opens rulesFile.
const rulesHeader = "# toolgate's alerts as a Prometheus rules file (rule_files), generated from\n" +
	"# charts/toolgate/templates/prometheusrule.yaml with the chart's default\n" +
	"# values by `make manifests`; edit the chart, not this file.\n"

// TestRulesFileIsRenderedFromChart checks that rulesFile holds the groups
// of the chart's PrometheusRule, rendered with the default thresholds.
func TestRulesFileIsRenderedFromChart(t *testing.T) {
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("prometheusRule: {enabled: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := render(t, values)
	if err != nil {
		t.Fatal(err)
	}
	var groups any
	for _, obj := range objectsByKey(t, out) {
		if obj["kind"] == "PrometheusRule" {
			if groups != nil {
				t.Fatal("the chart renders more than one PrometheusRule")
			}
			spec, _ := obj["spec"].(map[string]any)
			groups = spec["groups"]
		}
	}
	if groups == nil {
		t.Fatal("the chart renders no PrometheusRule with prometheusRule.enabled=true")
	}
	got, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		t.Fatal(err)
	}
	compare(t, rulesFile, rulesHeader+string(got))
}

// TestLocalOverlayMatchesLocalValues checks that config/local (kustomize)
// and config/local/values.yaml (Helm) install the same objects, apart from
// what Helm leaves out of a rendering: the Namespace (--create-namespace)
// and the CRDs (crds/).
func TestLocalOverlayMatchesLocalValues(t *testing.T) {
	assets, err := testkube.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	kustomized, err := exec.CommandContext(ctx, filepath.Join(assets, "kubectl"), "kustomize", "../config/local").Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/local: %v", err)
	}
	rendered, err := render(t, localValues)
	if err != nil {
		t.Fatal(err)
	}
	want := objectsByKey(t, string(kustomized), "Namespace", "CustomResourceDefinition")
	got := objectsByKey(t, rendered)
	for _, key := range slices.Sorted(maps.Keys(want)) {
		if _, ok := got[key]; !ok {
			t.Errorf("config/local installs %s, config/local/values.yaml does not", key)
		} else if !reflect.DeepEqual(want[key], got[key]) {
			w, _ := yaml.Marshal(want[key])
			g, _ := yaml.Marshal(got[key])
			t.Errorf("%s differs: make config/local/kustomization.yaml and values.yaml alike\n%s", key, diff("kustomize", string(w), "helm", string(g)))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[key]; !ok {
			t.Errorf("config/local/values.yaml installs %s, config/local does not", key)
		}
	}
}

// objectsByKey parses a stream of YAML documents into objects keyed by kind,
// namespace and name, leaving out the given kinds.
func objectsByKey(t *testing.T, stream string, skipKinds ...string) map[string]map[string]any {
	t.Helper()
	objects := map[string]map[string]any{}
	for doc := range strings.SplitSeq(stream, "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if obj == nil {
			continue
		}
		kind, _ := obj["kind"].(string)
		if slices.Contains(skipKinds, kind) {
			continue
		}
		meta, _ := obj["metadata"].(map[string]any)
		key := fmt.Sprintf("%s %v/%v", kind, meta["namespace"], meta["name"])
		objects[key] = obj
	}
	return objects
}
