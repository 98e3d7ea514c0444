package main

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// nonroot is the user every image runs as, named in its /etc/passwd as
// distroless' images name it.
const nonroot = "65532:65532"

// epoch stamps every file and the image config, so that the same binary
// always makes the same image digest.
var epoch = time.Unix(0, 0).UTC()

// A file is one entry of an image's only layer.
type file struct {
	path string // relative to /, without a leading slash
	mode int64  // permission bits, and sticky for /tmp
	dir  bool
	data []byte
	// xattrs are extended attributes, such as security.capability.
	xattrs map[string]string
}

// capNetBindService is the security.capability attribute that
// `setcap cap_net_bind_service=+ep` writes: a struct vfs_cap_data of
// revision 2 with the effective flag and CAP_NET_BIND_SERVICE (10)
// permitted.
var capNetBindService = func() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<10)          // permitted, low word
	return string(b)
}()

// baseFiles are what a static binary may look for on a distroless base: a
// passwd and group that name root and nonroot, a world-writable /tmp and a
// home for nonroot.
func baseFiles() []file {
	return []file{
		{path: "etc", mode: 0o755, dir: true},
		{path: "etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{path: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{path: "home", mode: 0o755, dir: true},
		{path: "home/nonroot", mode: 0o700, dir: true},
		{path: "tmp", mode: 0o1777, dir: true},
	}
}

// layerTar writes files into an uncompressed tar, parents before children,
// in the order given.
func layerTar(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{
			Name:    f.path,
			Mode:    f.mode,
			ModTime: epoch,
			Format:  tar.FormatPAX,
		}
		for k, v := range f.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			// The record GNU tar and containerd read extended attributes from.
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if f.path == "home/nonroot" {
			hdr.Uid, hdr.Gid = 65532, 65532
		}
		if f.dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header for %s: %w", f.path, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newImage builds a linux/amd64 image FROM scratch whose one layer holds
// the base files and program as /binName, run as user with /binName as the
// entrypoint. bindsLowPorts gives the binary cap_net_bind_service; extra
// files go in the same layer, after the base files.
func newImage(binName string, program []byte, user string, bindsLowPorts bool, extra ...file) (v1.Image, error) {
	bin := file{path: binName, mode: 0o755, data: program}
	if bindsLowPorts {
		bin.xattrs = map[string]string{"security.capability": capNetBindService}
	}
	files := append(append(baseFiles(), extra...), bin)
	layerBytes, err := layerTar(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer of %s: %w", binName, err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "hack/images: /" + binName},
	})
	if err != nil {
		return nil, fmt.Errorf("image of %s: %w", binName, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/" + binName}
	cfg.Config.User = user
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("config of %s: %w", binName, err)
	}
	return img, nil
}

// writeTarball writes img under every tag into one docker-archive tarball
// (the format of `docker save`, which `ctr images import` reads with its
// tags), atomically.
func writeTarball(path string, img v1.Image, tags []string) error {
	refs := make(map[name.Reference]v1.Image, len(tags))
	for _, t := range slices.Sorted(slices.Values(tags)) {
		tag, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("tag %q: %w", t, err)
		}
		refs[tag] = img
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tarball.MultiRefWrite(refs, tmp); err != nil {
		_ = tmp.Close() // the write failed already
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
