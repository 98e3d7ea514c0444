package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"sigs.k8s.io/yaml"

	"github.com/toolgate/toolgate/internal/testgateway"
	"github.com/toolgate/toolgate/internal/testkube"
	"github.com/toolgate/toolgate/internal/testproc"
)

func TestMain(m *testing.M) { testproc.Main(m) }

const (
	testVersion = "v0.0.0-test"
	testCommit  = "0123456789abcdef0123456789abcdef01234567"
)

// TestReleaseWritesEveryArtifactOfItsVersion runs the whole release as
// make release does, for linux/amd64 only: a cross-compiled linux/arm64
// binary would cost make test minutes and differs only in GOARCH (make
// release builds it; TestDefaultPlatformsAreLinuxAMD64AndARM64 checks it
// is asked for).
func TestReleaseWritesEveryArtifactOfItsVersion(t *testing.T) {
	out := t.TempDir()
	r := &release{root: "../..", out: out, version: testVersion, commit: testCommit, platforms: []string{"linux/amd64"}, log: io.Discard}
	if testing.Verbose() {
		r.log = os.Stderr
	}
	if err := r.write(t.Context()); err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(out, "toolgate-linux-amd64")
	image := imageRepository + ":" + testVersion

	t.Run("the folder holds exactly the artifacts", func(t *testing.T) {
		entries, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		want := []string{"checksums.txt", "install.yaml", "toolgate-image-linux-amd64.tar", "toolgate-linux-amd64", "toolgate-v0.0.0-test.tgz"}
		if !slices.Equal(got, want) {
			t.Errorf("%s holds %q, want %q", out, got, want)
		}
	})

	t.Run("checksums.txt lists every other artifact in the format of sha256sum -c", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(out, checksumsFile))
		if err != nil {
			t.Fatal(err)
		}
		line := regexp.MustCompile(`^([0-9a-f]{64})  (\S+)$`)
		var names []string
		for l := range strings.Lines(string(data)) {
			m := line.FindStringSubmatch(strings.TrimSuffix(l, "\n"))
			if m == nil {
				t.Fatalf("line %q is not \"SHA256  NAME\"", l)
			}
			names = append(names, m[2])
			if sum, err := sha256File(filepath.Join(out, m[2])); err != nil || sum != m[1] {
				t.Errorf("%s: checksums.txt says %s, the file's is %s (%v)", m[2], m[1], sum, err)
			}
		}
		want := slices.DeleteFunc(r.artifacts(), func(f string) bool { return f == checksumsFile })
		slices.Sort(want)
		if !slices.Equal(names, want) {
			t.Errorf("checksums.txt lists %q, want %q", names, want)
		}
		cmd := exec.CommandContext(t.Context(), "sha256sum", "--check", "--strict", checksumsFile)
		cmd.Dir = out
		if got, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum --check: %v\n%s", err, got)
		}
	})

	t.Run("the binary is static, built with -trimpath, and names the version and commit", func(t *testing.T) {
		f, err := elf.Open(binary)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }() // read only
		if f.Machine != elf.EM_X86_64 {
			t.Errorf("machine %s, want EM_X86_64", f.Machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary has a dynamic loader (PT_INTERP): build it with CGO_ENABLED=0")
			}
		}
		info, err := buildinfo.ReadFile(binary)
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		for k, v := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux", "GOARCH": "amd64"} {
			if settings[k] != v {
				t.Errorf("build setting %s=%q, want %q", k, settings[k], v)
			}
		}
		if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
			t.Fatalf("this test runs the linux/amd64 binary, and runs on %s/%s", runtime.GOOS, runtime.GOARCH)
		}
		got, err := exec.CommandContext(t.Context(), binary, "version").Output()
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("toolgate %s (commit %s, %s)\n", testVersion, testCommit, info.GoVersion)
		if string(got) != want {
			t.Errorf("toolgate version printed %q, want %q", got, want)
		}
	})

	t.Run("the image holds the binary under the version's tag", func(t *testing.T) {
		tag, err := name.NewTag(image)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(filepath.Join(out, imageFile), &tag)
		if err != nil {
			t.Fatalf("the image tarball has no %s: %v", image, err)
		}
		manifest, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(filepath.Join(out, imageFile)) })
		if err != nil {
			t.Fatal(err)
		}
		if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{image}) {
			t.Errorf("the tarball's manifest is %+v, want one image tagged %s only", manifest, image)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cfg.Config.Entrypoint, []string{"/toolgate"}) || cfg.Architecture != "amd64" {
			t.Errorf("entrypoint %q on %s, want /toolgate on amd64", cfg.Config.Entrypoint, cfg.Architecture)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%d layers (%v), want 1", len(layers), err)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		inImage := tarFile(t, rc, "toolgate")
		released, err := os.ReadFile(binary)
		if err != nil {
			t.Fatal(err)
		}
		if string(inImage) != string(released) {
			t.Error("the image's /toolgate is not the released linux/amd64 binary")
		}
	})

	t.Run("the chart's version and appVersion are the version", func(t *testing.T) {
		f, err := os.Open(filepath.Join(out, chartFile(testVersion)))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = f.Close() }() // read only
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		var chart struct{ Name, Version, AppVersion string }
		if err := yaml.Unmarshal(tarFile(t, gz, "toolgate/Chart.yaml"), &chart); err != nil {
			t.Fatal(err)
		}
		if chart.Name != "toolgate" || chart.Version != testVersion || chart.AppVersion != testVersion {
			t.Errorf("Chart.yaml: name %q, version %q, appVersion %q; want toolgate, %s, %s", chart.Name, chart.Version, chart.AppVersion, testVersion, testVersion)
		}
	})

	t.Run("install.yaml installs what config/default does, on the version's image", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(out, installFile))
		if err != nil {
			t.Fatal(err)
		}
		installed := objects(t, string(data))
		assets, err := testkube.AssetsDir()
		if err != nil {
			t.Fatal(err)
		}
		kustomized, err := exec.CommandContext(t.Context(), filepath.Join(assets, "kubectl"), "kustomize", "../../config/default").Output()
		if err != nil {
			t.Fatalf("kubectl kustomize config/default: %v", err)
		}
		want := slices.Sorted(maps.Keys(objects(t, string(kustomized))))
		if got := slices.Sorted(maps.Keys(installed)); !slices.Equal(got, want) {
			t.Errorf("install.yaml installs\n  %q\nconfig/default installs\n  %q", got, want)
		}
		deployment := installed["Deployment toolgate-system/toolgate-controller"]
		containers, _ := dig(deployment, "spec", "template", "spec", "containers").([]any)
		if len(containers) != 1 {
			t.Fatalf("the controller Deployment has %d containers, want 1", len(containers))
		}
		c, _ := containers[0].(map[string]any)
		if c["image"] != image {
			t.Errorf("the controller runs %v, want %s", c["image"], image)
		}
		args, _ := c["args"].([]any)
		if !slices.Contains(args, any("--proxy-image="+image)) {
			t.Errorf("the controller's args %v do not make the proxies run %s", args, image)
		}
	})

	t.Run("the proxy's admin /metrics names the build", func(t *testing.T) {
		ports := testproc.FreePorts(t, 2)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(testgateway.Config(ports[0], "127.0.0.1:9", "")), 0o600); err != nil {
			t.Fatal(err)
		}
		admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		p := testproc.Start(t, "toolgate standalone", binary,
			"standalone", "--config", dir, "--listen-address", "127.0.0.1", "--admin-address", admin)
		p.WaitFor(t, "ready", testproc.AnswersOK("http://"+admin+"/readyz"))
		checkBuildInfo(t, "http://"+admin+"/metrics", info(t, binary))
	})

	t.Run("the controller's /metrics names the build", func(t *testing.T) {
		kube, err := testkube.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.Stop() })
		kubeconfig, err := kube.ServiceAccountKubeconfig(t.Context(), "toolgate-system", "toolgate-controller")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := kube.Kubectl("apply", "-k", "../../config/rbac"); err != nil {
			t.Fatalf("kubectl apply -k config/rbac: %v\n%s", err, out)
		}
		ports := testproc.FreePorts(t, 3)
		metrics := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
		health := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
		stream := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
		p := testproc.Start(t, "toolgate controller", binary,
			"controller", "--kubeconfig", kubeconfig, "--namespace", "toolgate-system", "--leader-elect=false",
			"--metrics-address", metrics, "--health-address", health,
			"--config-stream-address", stream, "--config-stream-url", "https://"+stream)
		p.WaitFor(t, "ready", testproc.AnswersOK("http://"+health+"/readyz"))
		checkBuildInfo(t, "http://"+metrics+"/metrics", info(t, binary))
	})
}

func TestDefaultPlatformsAreLinuxAMD64AndARM64(t *testing.T) {
	if defaultPlatforms != "linux/amd64,linux/arm64" {
		t.Errorf("make release builds %s, want linux/amd64,linux/arm64", defaultPlatforms)
	}
}

func TestReleaseRefusesWhatItCannotRelease(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    release
		want string
	}{
		{"a version that is not SemVer", release{version: "e83bad9-dirty", commit: testCommit, platforms: []string{"linux/amd64"}}, "not a SemVer version"},
		{"no commit", release{version: testVersion, platforms: []string{"linux/amd64"}}, "--commit is required"},
		{"an image platform other than linux/amd64", release{version: testVersion, commit: testCommit, platforms: []string{"linux/arm64"}}, "start with linux/amd64"},
		{"no chart", release{root: "nowhere", version: testVersion, commit: testCommit, platforms: []string{"linux/amd64"}}, "run this from the toolgate checkout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.out, tc.r.log = t.TempDir(), io.Discard
			err := tc.r.write(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one that says %q", err, tc.want)
			}
		})
	}
}

func TestChecksumsAreSortedSHA256Lines(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"b": "", "a": "abc"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeChecksums(dir, []string{"b", "a"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, checksumsFile))
	if err != nil {
		t.Fatal(err)
	}
	// sha256sum's own output for these two files.
	want := "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a\n" +
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  b\n"
	if string(got) != want {
		t.Errorf("checksums.txt:\n%s\nwant:\n%s", got, want)
	}
}

// info is what toolgate_build_info must say of binary.
func info(t *testing.T, binary string) string {
	t.Helper()
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`toolgate_build_info{commit=%q,goversion=%q,version=%q} 1`, testCommit, bi.GoVersion, testVersion)
}

// checkBuildInfo checks that the metrics at url have exactly the one
// toolgate_build_info sample want.
func checkBuildInfo(t *testing.T, url, want string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got []string
	s := bufio.NewScanner(res.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), metricBuildInfo) {
			got = append(got, s.Text())
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{want}) {
		t.Errorf("%s has %q, want %q", url, got, want)
	}
}

// metricBuildInfo is cmd/toolgate's build-info metric.
const metricBuildInfo = "toolgate_build_info"

// tarFile returns the contents of the file at path in the tar stream r.
func tarFile(t *testing.T, r io.Reader, path string) []byte {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("no %s in the tarball", path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(hdr.Name, "/") == path {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

// objects parses a stream of YAML documents into objects keyed by kind,
// namespace and name.
func objects(t *testing.T, stream string) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	for doc := range strings.SplitSeq(stream, "\n---") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if obj == nil {
			continue
		}
		meta, _ := obj["metadata"].(map[string]any)
		ns, _ := meta["namespace"].(string)
		objs[fmt.Sprintf("%s %s/%s", obj["kind"], ns, meta["name"])] = obj
	}
	return objs
}

// dig returns the value at path in obj, or nil.
func dig(obj map[string]any, path ...string) any {
	var v any = obj
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
