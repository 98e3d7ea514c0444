// Command release writes toolgate's release artifacts into one folder
// (make release VERSION=v0.9.0 writes dist/):
//
//	toolgate-linux-amd64, toolgate-linux-arm64   static binaries (CGO_ENABLED=0, -trimpath), stamped with the version and commit
//	toolgate-image-linux-amd64.tar                the image (hack/images) holding the amd64 binary, tagged ghcr.io/toolgate/toolgate:VERSION
//	toolgate-VERSION.tgz                          the Helm chart, version and appVersion (the default image tag) VERSION
//	install.yaml                                  the chart rendered with its defaults, its CRDs and the Namespace: kubectl apply -f
//	checksums.txt                                 SHA-256 of each file above, as sha256sum -c reads it
//
//	go run ./hack/release --version v0.9.0 --commit $(git rev-parse HEAD) --out dist
//
// Run it from the root of the checkout. It replaces the files it writes and
// leaves anything else in the folder alone.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
)

// imageRepository is the repository of the toolgate image, as the chart's
// values.yaml names it (image.repository).
const imageRepository = "ghcr.io/toolgate/toolgate"

// Names of the artifacts.
const (
	imageFile     = "toolgate-image-linux-amd64.tar"
	installFile   = "install.yaml"
	checksumsFile = "checksums.txt"
)

// defaultPlatforms are the GOOS/GOARCH of the released binaries; the image
// holds the first.
const defaultPlatforms = "linux/amd64,linux/arm64"

func binaryFile(platform string) string {
	return "toolgate-" + strings.ReplaceAll(platform, "/", "-")
}

func chartFile(version string) string { return "toolgate-" + version + ".tgz" }

// artifacts are the files the release writes, checksums.txt last.
func (r *release) artifacts() []string {
	var files []string
	for _, p := range r.platforms {
		files = append(files, binaryFile(p))
	}
	return append(files, imageFile, chartFile(r.version), installFile, checksumsFile)
}

// The chart, the release name and namespace config/ is rendered with (see
// charts/chart_test.go), and the Namespace object config/default applies.
const (
	chartDir      = "charts/toolgate"
	releaseName   = "toolgate"
	namespace     = "toolgate-system"
	namespaceFile = "config/manager/namespace.yaml"
)

// semverPattern is SemVer 2.0 with an optional leading v, which Helm
// requires of a chart version.
var semverPattern = regexp.MustCompile(`^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// A release writes the artifacts of one version.
type release struct {
	root    string // the checkout
	out     string // the folder to write into
	version string
	commit  string
	// platforms are GOOS/GOARCH pairs, linux/amd64 (the image's) first.
	platforms []string
	log       io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("release", flag.ContinueOnError)
	fs.SetOutput(stderr)
	version := fs.String("version", "", "the version to release, SemVer (v0.9.0) (required)")
	commit := fs.String("commit", "", "the commit the release is built from (required; make release passes git rev-parse HEAD)")
	out := fs.String("out", "dist", "folder to write the artifacts into")
	root := fs.String("root", ".", "the toolgate checkout")
	platformList := fs.String("platforms", defaultPlatforms, "comma-separated GOOS/GOARCH of the binaries, linux/amd64 (the image's) first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	r := &release{root: *root, out: *out, version: *version, commit: *commit, platforms: strings.Split(*platformList, ","), log: stderr}
	return r.write(ctx)
}

// write writes every artifact, checksums.txt last.
func (r *release) write(ctx context.Context) error {
	if !semverPattern.MatchString(r.version) {
		return fmt.Errorf("--version %q is not a SemVer version such as v0.9.0 (the chart's version must be one): make release VERSION=v0.9.0", r.version)
	}
	if len(r.platforms) == 0 || r.platforms[0] != "linux/amd64" {
		return fmt.Errorf("--platforms %s: start with linux/amd64, the image's platform", strings.Join(r.platforms, ","))
	}
	if r.commit == "" {
		return errors.New("--commit is required: the commit the binaries name (git rev-parse HEAD)")
	}
	if _, err := os.Stat(filepath.Join(r.root, chartDir, "Chart.yaml")); err != nil {
		return fmt.Errorf("no chart at %s (run this from the toolgate checkout, or pass --root): %w", chartDir, err)
	}
	out, err := filepath.Abs(r.out)
	if err != nil {
		return err
	}
	r.out = out
	if err := os.MkdirAll(r.out, 0o755); err != nil {
		return err
	}
	files := r.artifacts()
	for _, f := range files {
		if err := os.Remove(filepath.Join(r.out, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	for _, p := range r.platforms {
		if err := r.buildBinary(ctx, p); err != nil {
			return err
		}
	}
	if err := r.buildImage(ctx); err != nil {
		return err
	}
	if err := r.packageChart(ctx); err != nil {
		return err
	}
	if err := r.renderInstall(ctx); err != nil {
		return err
	}
	if err := writeChecksums(r.out, files[:len(files)-1]); err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(r.log, filepath.Join(r.out, f))
	}
	return nil
}

// ldflags stamp the version and commit that `toolgate version` and
// toolgate_build_info report, and strip the symbol table and DWARF.
func (r *release) ldflags() string {
	return fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s", r.version, r.commit)
}

// buildBinary builds cmd/toolgate for platform (GOOS/GOARCH), static.
func (r *release) buildBinary(ctx context.Context, platform string) error {
	goos, goarch, _ := strings.Cut(platform, "/")
	out := filepath.Join(r.out, binaryFile(platform))
	fmt.Fprintf(r.log, "release: building %s\n", out)
	return r.cmd(ctx, []string{"CGO_ENABLED=0", "GOOS=" + goos, "GOARCH=" + goarch},
		"go", "build", "-trimpath", "-ldflags", r.ldflags(), "-o", out, "./cmd/toolgate")
}

// buildImage writes the image of the linux/amd64 binary, tagged with the
// version, with hack/images.
func (r *release) buildImage(ctx context.Context) error {
	work, err := os.MkdirTemp("", "toolgate-release-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	err = r.cmd(ctx, nil, "go", "run", "./hack/images", "--only", "toolgate", "--out", work,
		"--toolgate-binary", filepath.Join(r.out, binaryFile(r.platforms[0])),
		"--tag", imageRepository+":"+r.version)
	if err != nil {
		return err
	}
	return moveFile(filepath.Join(work, "toolgate.tar"), filepath.Join(r.out, imageFile))
}

// packageChart packages the chart with the version as its version and
// appVersion; the chart's image.tag defaults to its appVersion.
func (r *release) packageChart(ctx context.Context) error {
	_, err := r.helm(ctx, "package", chartDir, "--version", r.version, "--app-version", r.version, "--destination", r.out)
	return err
}

// installHeader opens install.yaml.
const installHeader = `# toolgate %s, commit %s.
# Everything toolgate needs in a cluster, as config/default installs it: the
# Namespace, the CRDs, RBAC, the controller and the default GatewayClass,
# rendered from the chart toolgate-%s.tgz with its default values by
# make release. Install the Gateway API standard CRDs first, then:
#   kubectl apply --server-side -f install.yaml
`

// renderInstall renders the packaged chart with its default values, its
// CRDs included, after the Namespace that config/default applies (Helm
// users create it with --create-namespace instead).
func (r *release) renderInstall(ctx context.Context) error {
	ns, err := os.ReadFile(filepath.Join(r.root, namespaceFile))
	if err != nil {
		return err
	}
	rendered, err := r.helm(ctx, "template", releaseName, filepath.Join(r.out, chartFile(r.version)),
		"--namespace", namespace, "--include-crds")
	if err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, installHeader, r.version, r.commit, r.version)
	b.WriteString("---\n")
	b.Write(ns)
	if !strings.HasPrefix(rendered, "---") {
		b.WriteString("---\n")
	}
	b.WriteString(rendered)
	return os.WriteFile(filepath.Join(r.out, installFile), b.Bytes(), 0o644)
}

// helm runs the Helm of hack/helm/go.mod in the checkout, with no state of
// its own (no repositories, no cache), and returns its standard output.
func (r *release) helm(ctx context.Context, args ...string) (string, error) {
	home, err := os.MkdirTemp("", "toolgate-release-helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(home)
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "-modfile=hack/helm/go.mod", "helm"}, args...)...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, r.log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm %s: %w", strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// cmd runs name in the checkout with env added to this process's
// environment; its output goes to the log.
func (r *release) cmd(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}

// writeChecksums writes dir/checksums.txt: one line per file, sorted by
// name, "SHA-256 in hex, two spaces, name", which sha256sum -c checks in
// dir.
func writeChecksums(dir string, files []string) error {
	var b strings.Builder
	for _, f := range slices.Sorted(slices.Values(files)) {
		sum, err := sha256File(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", sum, f)
	}
	return os.WriteFile(filepath.Join(dir, checksumsFile), []byte(b.String()), 0o644)
}

func sha256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close() }() // read only
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// moveFile renames from to to, or copies it when they are on different
// file systems.
func moveFile(from, to string) error {
	if err := os.Rename(from, to); err == nil {
		return nil
	}
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o644)
}
