package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// A builder builds the static linux/amd64 binaries the images hold.
type builder struct {
	cache      string // where binaries built outside this module are kept, by version
	gatewayAPI string // version of the conformance module; go.mod's gateway-api version when empty
	log        io.Writer
	builds     []string // names of the images this command can build

	toolgateBinary string   // a toolgate binary to use rather than build, when set
	toolgateTags   []string // the toolgate image's tags, when set

	conformance []string // the images the conformance manifests run, once read
}

func (b *builder) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "images: "+format+"\n", args...)
}

// staticEnv makes the go command build a static linux/amd64 binary.
var staticEnv = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"}

// moduleEnv makes the go command resolve a throwaway module through the
// module proxy, outside any workspace, as hack/testbin.sh does.
var moduleEnv = append([]string{"GOFLAGS=-mod=mod", "GOWORK=off"}, staticEnv...)

// buildFlags strip what makes two builds of the same source differ.
var buildFlags = []string{"-trimpath", "-ldflags=-s -w -buildid="}

// goBuild builds pkg of the module in the current folder (this checkout)
// into out.
func (b *builder) goBuild(ctx context.Context, pkg, out string) (string, error) {
	b.logf("building %s", pkg)
	args := append(append([]string{"build"}, buildFlags...), "-o", out, pkg)
	if err := b.goCmd(ctx, "", staticEnv, args...); err != nil {
		return "", fmt.Errorf("build %s (run this from the toolgate checkout): %w", pkg, err)
	}
	return out, nil
}

// cachedBuild builds pkg of module@version in a module of its own, as
// hack/testbin.sh builds kube-apiserver, so that this repository does not
// depend on it, and keeps the binary under the cache by name and version:
// a second run only finds it. replace, when set, is a -replace argument of
// go mod edit the module needs.
func (b *builder) cachedBuild(ctx context.Context, name, module, version, pkg, replace string) (string, error) {
	bin := filepath.Join(b.cache, name+"-"+version, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	b.logf("building %s of %s@%s (minutes on the first run, cached after)", pkg, module, version)
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "toolgate-"+name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	steps := [][]string{{"mod", "init", "toolgate.dev/images/" + name}}
	if replace != "" {
		steps = append(steps, []string{"mod", "edit", "-replace", replace})
	}
	steps = append(steps,
		[]string{"get", module + "@" + version},
		append(append([]string{"build"}, buildFlags...), "-o", bin+".tmp", pkg),
	)
	for _, args := range steps {
		if err := b.goCmd(ctx, work, moduleEnv, args...); err != nil {
			os.Remove(bin + ".tmp")
			return "", fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
	}
	return bin, os.Rename(bin+".tmp", bin)
}

// echoBasic builds the Gateway API conformance echo server and returns it
// with every tag the conformance manifests run it by.
func (b *builder) echoBasic(ctx context.Context) (string, []string, error) {
	version, err := b.gatewayAPIVersion(ctx)
	if err != nil {
		return "", nil, err
	}
	tags, err := b.conformanceTags(ctx, "echo-basic")
	if err != nil {
		return "", nil, err
	}
	// The conformance module requires gateway-api at a placeholder version
	// and replaces it with ../ in its own repository; point it at the
	// release of the same version instead.
	bin, err := b.cachedBuild(ctx, "echo-basic", "sigs.k8s.io/gateway-api/conformance", version,
		"sigs.k8s.io/gateway-api/conformance/echo-basic",
		"sigs.k8s.io/gateway-api=sigs.k8s.io/gateway-api@"+version)
	return bin, tags, err
}

// coreDNS builds the DNS server the conformance manifests run as the
// UDPRoute backend, at the version their tag names.
func (b *builder) coreDNS(ctx context.Context) (string, []string, error) {
	tags, err := b.conformanceTags(ctx, "coredns")
	if err != nil {
		return "", nil, err
	}
	var versions []string
	for _, t := range tags {
		versions = append(versions, tagOf(t))
	}
	if versions = slices.Compact(versions); len(versions) != 1 {
		return "", nil, fmt.Errorf("the conformance manifests run coredns at %d versions (%s); this command builds one", len(versions), strings.Join(tags, ", "))
	}
	bin, err := b.cachedBuild(ctx, "coredns", "github.com/coredns/coredns", versions[0], "github.com/coredns/coredns", "")
	return bin, tags, err
}

// gatewayAPIVersion is the version of the conformance module to build
// from: --gateway-api, or the version of sigs.k8s.io/gateway-api that this
// repository's go.mod requires.
func (b *builder) gatewayAPIVersion(ctx context.Context) (string, error) {
	if b.gatewayAPI == "" {
		v, err := b.goOutput(ctx, "", nil, "list", "-m", "-f", "{{.Version}}", "sigs.k8s.io/gateway-api")
		if err != nil {
			return "", fmt.Errorf("find the gateway-api version in go.mod (run this from the toolgate checkout, or pass --gateway-api): %w", err)
		}
		b.gatewayAPI = v
	}
	return b.gatewayAPI, nil
}

// conformanceTags returns the images the conformance manifests run whose
// repository is named base ("echo-basic" for
// registry.k8s.io/gateway-api/echo-basic:v1.5.1). The first call reads the
// manifests, and logs the images this command does not build.
func (b *builder) conformanceTags(ctx context.Context, base string) ([]string, error) {
	if b.conformance == nil {
		version, err := b.gatewayAPIVersion(ctx)
		if err != nil {
			return nil, err
		}
		out, err := b.goOutput(ctx, os.TempDir(), moduleEnv, "mod", "download", "-json", "sigs.k8s.io/gateway-api/conformance@"+version)
		if err != nil {
			return nil, err
		}
		var mod struct{ Dir string }
		if err := json.Unmarshal([]byte(out), &mod); err != nil || mod.Dir == "" {
			return nil, fmt.Errorf("go mod download sigs.k8s.io/gateway-api/conformance@%s said %q", version, out)
		}
		all, err := manifestImages(os.DirFS(mod.Dir))
		if err != nil {
			return nil, fmt.Errorf("read the conformance manifests in %s: %w", mod.Dir, err)
		}
		b.conformance = all
		for _, ref := range all {
			if !slices.Contains(b.builds, repoBase(ref)) {
				b.logf("the conformance manifests also run %s, which this command does not build", ref)
			}
		}
	}
	var tags []string
	for _, ref := range b.conformance {
		if repoBase(ref) == base {
			tags = append(tags, ref)
		}
	}
	if len(tags) == 0 {
		return nil, fmt.Errorf("no %s image in the conformance manifests of gateway-api %s", base, b.gatewayAPI)
	}
	return tags, nil
}

// imageLine matches the image of a container in a manifest.
var imageLine = regexp.MustCompile(`(?m)^[\s-]*image:\s*["']?([^\s"'#]+)`)

// manifestImages returns every image the YAML files under fsys name,
// sorted, each once.
func manifestImages(fsys fs.FS) ([]string, error) {
	var refs []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || (path.Ext(p) != ".yaml" && path.Ext(p) != ".yml") {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		for _, m := range imageLine.FindAllSubmatch(data, -1) {
			refs = append(refs, string(m[1]))
		}
		return nil
	})
	slices.Sort(refs)
	return slices.Compact(refs), err
}

// splitRef splits an image reference into its repository and its tag
// (empty when it has none); a digest is dropped.
func splitRef(ref string) (repo, tag string) {
	repo, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		return repo[:i], repo[i+1:]
	}
	return repo, ""
}

// repoBase is the last element of an image's repository: "coredns" for
// registry.k8s.io/coredns/coredns:v1.12.2.
func repoBase(ref string) string {
	repo, _ := splitRef(ref)
	return path.Base(repo)
}

// tagOf is the tag of an image reference.
func tagOf(ref string) string {
	_, tag := splitRef(ref)
	return tag
}

// goCmd runs the go command in dir (the current folder when empty) with
// env added to this process's environment; its output goes to the log.
func (b *builder) goCmd(ctx context.Context, dir string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = b.log, b.log
	return cmd.Run()
}

// goOutput runs the go command as goCmd does and returns what it printed.
func (b *builder) goOutput(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = b.log
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
