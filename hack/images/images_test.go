package main

import (
	"archive/tar"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is what the test reads back of one file of a layer.
type entry struct {
	mode     int64
	uid, gid int
	data     string
	xattrs   map[string]string
}

func TestImageTarballReadsBackWithItsConfigAndFiles(t *testing.T) {
	program := "#!not really an ELF, but bytes all the same\n"
	for _, tc := range []struct {
		name          string
		binName       string
		tags          []string
		bindsLowPorts bool
		wantXattrs    map[string]string
	}{
		{
			name:    "an image with one tag holds its binary as plain file",
			binName: "toolgate",
			tags:    []string{"ghcr.io/toolgate/toolgate:latest"},
		},
		{
			name:          "an image that binds low ports gives its binary cap_net_bind_service",
			binName:       "coredns",
			tags:          []string{"registry.k8s.io/coredns/coredns:v1.12.2"},
			bindsLowPorts: true,
			wantXattrs:    map[string]string{"security.capability": capNetBindService},
		},
		{
			name:    "an image with several tags reads back under each of them",
			binName: "echo-basic",
			tags: []string{
				"registry.k8s.io/gateway-api/echo-basic:v1.5.1",
				"registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := newImage(tc.binName, []byte(program), nonroot, tc.bindsLowPorts)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), tc.binName+".tar")
			if err := writeTarball(path, img, tc.tags); err != nil {
				t.Fatal(err)
			}
			for _, ref := range tc.tags {
				tag, err := name.NewTag(ref)
				if err != nil {
					t.Fatal(err)
				}
				got, err := tarball.ImageFromPath(path, &tag)
				if err != nil {
					t.Fatalf("read %s back: %v", ref, err)
				}
				cfg, err := got.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				if cfg.OS != "linux" || cfg.Architecture != "amd64" {
					t.Errorf("platform = %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
				}
				if diff := cmp.Diff([]string{"/" + tc.binName}, cfg.Config.Entrypoint); diff != "" {
					t.Errorf("entrypoint (-want +got):\n%s", diff)
				}
				if cfg.Config.User != "65532:65532" || cfg.Config.WorkingDir != "/" {
					t.Errorf("user %q, working dir %q; want 65532:65532 and /", cfg.Config.User, cfg.Config.WorkingDir)
				}
				layers, err := got.Layers()
				if err != nil {
					t.Fatal(err)
				}
				if len(layers) != 1 {
					t.Fatalf("%d layers, want 1", len(layers))
				}
				files := readLayer(t, layers[0])
				want := map[string]entry{
					"etc/":          {mode: 0o755},
					"etc/passwd":    {mode: 0o644, data: "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
					"etc/group":     {mode: 0o644, data: "root:x:0:\nnonroot:x:65532:\n"},
					"home/":         {mode: 0o755},
					"home/nonroot/": {mode: 0o700, uid: 65532, gid: 65532},
					"tmp/":          {mode: 0o1777},
					tc.binName:      {mode: 0o755, data: program, xattrs: tc.wantXattrs},
				}
				if diff := cmp.Diff(want, files, cmp.AllowUnexported(entry{})); diff != "" {
					t.Errorf("layer files (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func readLayer(t *testing.T, layer v1.Layer) map[string]entry {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		e := entry{mode: hdr.Mode, uid: hdr.Uid, gid: hdr.Gid, data: string(data)}
		for k, v := range hdr.PAXRecords {
			if attr, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.xattrs == nil {
					e.xattrs = map[string]string{}
				}
				e.xattrs[attr] = v
			}
		}
		files[hdr.Name] = e
	}
}

func TestTheSameBinaryMakesTheSameImage(t *testing.T) {
	a, err := newImage("pause", []byte("pause"), nonroot, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newImage("pause", []byte("pause"), nonroot, false)
	if err != nil {
		t.Fatal(err)
	}
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Errorf("digests %s and %s differ", da, db)
	}
}

func TestCapNetBindServiceIsWhatSetcapWrites(t *testing.T) {
	// getfattr -e hex -n security.capability after setcap cap_net_bind_service=+ep
	const want = "0100000200040000000000000000000000000000"
	if got := hex.EncodeToString([]byte(capNetBindService)); got != want {
		t.Errorf("security.capability = %s, want %s", got, want)
	}
}

func TestManifestImagesListsEveryContainerImageOnce(t *testing.T) {
	fsys := fstest.MapFS{
		"base/manifests.yaml": {Data: []byte(`
spec:
  containers:
    - name: a
      image: registry.k8s.io/gateway-api/echo-basic:v1.5.1
    - image: "registry.k8s.io/coredns/coredns:v1.12.2"
      name: coredns
`)},
		"tests/tcproute.yml": {Data: []byte(`
        - image: registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2 # TCP echo
        - image: registry.k8s.io/gateway-api/echo-basic:v1.5.1
`)},
		"tests/notes.go": {Data: []byte(`// image: not/a-manifest:v1`)},
	}
	got, err := manifestImages(fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"registry.k8s.io/coredns/coredns:v1.12.2",
		"registry.k8s.io/gateway-api/echo-basic:v1.5.1",
		"registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

func TestRepoBaseAndTagOfSplitAReference(t *testing.T) {
	for _, tc := range []struct {
		ref, base, tag string
	}{
		{"registry.k8s.io/coredns/coredns:v1.12.2", "coredns", "v1.12.2"},
		{"localhost:5000/echo-basic", "echo-basic", ""},
		{"localhost:5000/echo-basic:v1@sha256:abcd", "echo-basic", "v1"},
	} {
		if base, tag := repoBase(tc.ref), tagOf(tc.ref); base != tc.base || tag != tc.tag {
			t.Errorf("%s: base %q tag %q, want %q %q", tc.ref, base, tag, tc.base, tc.tag)
		}
	}
}

func TestSelectImages(t *testing.T) {
	for _, tc := range []struct {
		name    string
		only    string
		want    []string
		wantErr bool
	}{
		{name: "no --only selects every image", only: "", want: names()},
		{name: "--only keeps the usual order", only: "echo-basic,toolgate", want: []string{"toolgate", "echo-basic"}},
		{name: "an unknown name is refused", only: "toolgate,envoy", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := selectImages(tc.only)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			var gotNames []string
			for _, img := range got {
				gotNames = append(gotNames, img.name)
			}
			if diff := cmp.Diff(tc.want, gotNames); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
		})
	}
}
