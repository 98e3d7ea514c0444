// Command images builds the container images that toolgate's local cluster
// runs -- toolgate itself, the pod sandbox, and the Gateway API conformance
// echo server and DNS server -- from static Go binaries, FROM scratch, as
// tarballs that `ctr -n k8s.io images import` loads with their tags: the
// cluster pulls nothing.
//
//	go run ./hack/images --out DIR [--only toolgate,pause,echo-basic,coredns]
//
// It prints one line per image, "NAME TARBALL". toolgate and pause are
// built from the current checkout on every run (make release passes its
// own toolgate binary with --toolgate-binary and its tag with --tag);
// echo-basic and coredns, built through the Go module proxy at the
// versions the conformance manifests of go.mod's gateway-api name, are
// cached under ${TOOLGATE_CACHE:-$HOME/.cache/toolgate}/images.
package main

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// An image is one image this command builds.
type image struct {
	// name selects it with --only, names its tarball NAME.tar and its
	// binary /NAME in the image.
	name string
	user string
	// bindsLowPorts gives the binary the file capability
	// cap_net_bind_service, so that it can listen on ports below 1024 as
	// a user other than root.
	bindsLowPorts bool
	// caBundle adds this machine's CA certificates (Debian's
	// ca-certificates) as /etc/ssl/certs/ca-certificates.crt, where Go
	// finds them: toolgate verifies OpenID issuers over HTTPS.
	caBundle bool
	// build writes the static binary into dir and returns its path and
	// the tags of the image.
	build func(ctx context.Context, b *builder, dir string) (bin string, tags []string, err error)
}

// caBundlePath is where Debian keeps its CA certificates, and where the
// toolgate image keeps a copy.
const caBundlePath = "/etc/ssl/certs/ca-certificates.crt"

var images = []image{
	{
		name:     "toolgate",
		user:     nonroot,
		caBundle: true,
		build: func(ctx context.Context, b *builder, dir string) (string, []string, error) {
			// The default proxy image of controller/provision/params.go and
			// the image config/manager/manager.yaml names, unless --tag
			// names others (make release: the version).
			tags := b.toolgateTags
			if len(tags) == 0 {
				tags = []string{"ghcr.io/toolgate/toolgate:latest"}
			}
			if b.toolgateBinary != "" {
				// make release: the image holds the released binary.
				return b.toolgateBinary, tags, checkLinuxAMD64(b.toolgateBinary)
			}
			bin, err := b.goBuild(ctx, "github.com/toolgate/toolgate/cmd/toolgate", filepath.Join(dir, "toolgate"))
			return bin, tags, err
		},
	},
	{
		name: "pause",
		user: nonroot,
		build: func(ctx context.Context, b *builder, dir string) (string, []string, error) {
			// The cluster's containerd names this tag as its sandbox_image.
			bin, err := b.goBuild(ctx, "github.com/toolgate/toolgate/hack/images/pause", filepath.Join(dir, "pause"))
			return bin, []string{"toolgate.local/pause:1"}, err
		},
	},
	{
		name: "echo-basic",
		user: nonroot,
		build: func(ctx context.Context, b *builder, _ string) (string, []string, error) {
			return b.echoBasic(ctx)
		},
	},
	{
		// The conformance manifests' UDPRoute backend. Its Pod must be
		// ready before any conformance test runs. As upstream's image, it
		// runs as nonroot and binds port 53 through a file capability.
		name:          "coredns",
		user:          nonroot,
		bindsLowPorts: true,
		build: func(ctx context.Context, b *builder, _ string) (string, []string, error) {
			return b.coreDNS(ctx)
		},
	},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "folder to write one NAME.tar per image into (required)")
	only := fs.String("only", "", "comma-separated names of the images to build: "+strings.Join(names(), ","))
	toolgateBinary := fs.String("toolgate-binary", "", "a static linux/amd64 toolgate binary to put in the toolgate image instead of building one (make release)")
	var toolgateTags tagList
	fs.Var(&toolgateTags, "tag", "tag of the toolgate image, repeatable (default ghcr.io/toolgate/toolgate:latest)")
	gatewayAPI := fs.String("gateway-api", "", "version of sigs.k8s.io/gateway-api/conformance to build echo-basic from (default: the version of sigs.k8s.io/gateway-api that go.mod requires)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("usage: go run ./hack/images --out DIR [--only NAME,...]")
	}
	selected, err := selectImages(*only)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	outDir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	cache, err := cacheDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "toolgate-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	b := &builder{
		cache: filepath.Join(cache, "images"), gatewayAPI: *gatewayAPI, log: stderr, builds: names(),
		toolgateBinary: *toolgateBinary, toolgateTags: toolgateTags,
	}
	for _, img := range selected {
		tarball, err := buildImage(ctx, b, img, work, outDir)
		if err != nil {
			return fmt.Errorf("%s: %w", img.name, err)
		}
		fmt.Fprintln(stdout, img.name, tarball)
	}
	return nil
}

// buildImage builds img's binary and writes its tarball, outDir/NAME.tar.
func buildImage(ctx context.Context, b *builder, img image, work, outDir string) (string, error) {
	dir := filepath.Join(work, img.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin, tags, err := img.build(ctx, b, dir)
	if err != nil {
		return "", err
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var extra []file
	if img.caBundle {
		bundle, err := os.ReadFile(caBundlePath)
		if err != nil {
			return "", fmt.Errorf("the %s image needs this machine's CA certificates (apt-get install ca-certificates): %w", img.name, err)
		}
		extra = append(extra,
			file{path: "etc/ssl", mode: 0o755, dir: true},
			file{path: "etc/ssl/certs", mode: 0o755, dir: true},
			file{path: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: bundle})
	}
	v1img, err := newImage(img.name, binary, img.user, img.bindsLowPorts, extra...)
	if err != nil {
		return "", err
	}
	path := filepath.Join(outDir, img.name+".tar")
	if err := writeTarball(path, v1img, tags); err != nil {
		return "", err
	}
	digest, err := v1img.Digest()
	if err != nil {
		return "", err
	}
	b.logf("%s: %s %s", img.name, strings.Join(tags, " "), digest)
	return path, nil
}

// tagList is the value of a repeatable flag.
type tagList []string

func (l *tagList) String() string { return strings.Join(*l, ",") }

func (l *tagList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// checkLinuxAMD64 refuses a binary the linux/amd64 image cannot run.
func checkLinuxAMD64(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("--toolgate-binary %s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // read only
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("--toolgate-binary %s is built for %s: the image is linux/amd64 (GOOS=linux GOARCH=amd64)", path, f.Machine)
	}
	return nil
}

// selectImages returns the images --only names, in their usual order, or
// all of them when it is empty.
func selectImages(only string) ([]image, error) {
	if only == "" {
		return images, nil
	}
	want := strings.Split(only, ",")
	for _, n := range want {
		if !slices.Contains(names(), n) {
			return nil, fmt.Errorf("--only: no image %q; the images are %s", n, strings.Join(names(), ", "))
		}
	}
	var selected []image
	for _, img := range images {
		if slices.Contains(want, img.name) {
			selected = append(selected, img)
		}
	}
	return selected, nil
}

func names() []string {
	var ns []string
	for _, img := range images {
		ns = append(ns, img.name)
	}
	return ns
}

// cacheDir is the folder hack/testbin.sh and its siblings cache into.
func cacheDir() (string, error) {
	if dir := os.Getenv("TOOLGATE_CACHE"); dir != "" {
		return dir, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder: set TOOLGATE_CACHE: %w", err)
	}
	return filepath.Join(dir, "toolgate"), nil
}
