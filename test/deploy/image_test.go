package deploy

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/test/nstest"
)

// archiveManifest is one entry of a docker-archive's manifest.json.
type archiveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// imageConfig is the part of the OCI image config the test checks.
type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		Entrypoint []string `json:"Entrypoint"`
		Env        []string `json:"Env"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// imageArchive returns the archive make image writes, or skips.
func imageArchive(t *testing.T) string {
	t.Helper()
	p := os.Getenv("WEFT_IMAGE_TAR")
	if p == "" {
		p = filepath.Join(repoRoot(t), "bin", "weft-image.tar")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("skipped: image archive %s missing; build it with `make image`", p)
	}
	return p
}

// readArchive returns the archive's files by name.
func readArchive(t *testing.T, file string) map[string][]byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s in %s: %v", h.Name, file, err)
		}
		files[h.Name] = b
	}
}

// uncompressed returns a layer blob's tar stream (layers may be gzipped).
func uncompressed(blob []byte) ([]byte, error) {
	if len(blob) > 2 && blob[0] == 0x1f && blob[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	}
	return blob, nil
}

// unpack extracts a layer tar into root: regular files, directories and
// symlinks; anything else, a whiteout or a path leaving root is an error.
func unpack(root string, layer []byte) error {
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		if strings.HasPrefix(filepath.Base(name), ".wh.") {
			return fmt.Errorf("whiteout %s in a layer of a two-layer image", h.Name)
		}
		p := filepath.Join(root, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|stickyBit(h.Mode)); err != nil {
				return err
			}
		case tar.TypeSymlink:
			os.Remove(p)
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected tar entry type %q", h.Name, h.Typeflag)
		}
	}
}

func stickyBit(mode int64) os.FileMode {
	if mode&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

// TestImageArchive reads back the archive `make image` wrote: its tag is the
// DaemonSet's image, its config names weft-agent as entrypoint, each layer
// matches its diff ID, and the unpacked root filesystem holds the weft
// binaries, the CNI plugins the init container installs, iptables and the CA
// bundle.
func TestImageArchive(t *testing.T) {
	root := unpackImage(t)
	for _, f := range []string{
		"usr/local/bin/weft-agent", "usr/local/bin/weftctl", "usr/local/bin/weft-install",
		"usr/lib/weft/cni/weft", "usr/lib/weft/cni/loopback", "usr/sbin/xtables-nft-multi",
	} {
		fi, err := os.Stat(filepath.Join(root, f))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			t.Errorf("/%s: not an executable file in the image (%v)", f, err)
		}
	}
	for _, l := range []string{"usr/sbin/iptables", "usr/sbin/ip6tables", "usr/sbin/iptables-restore"} {
		target, err := os.Readlink(filepath.Join(root, l))
		if err != nil || target != "xtables-nft-multi" {
			t.Errorf("/%s -> %q (%v), want the nft backend", l, target, err)
		}
	}
	for _, l := range []string{"lib", "bin", "sbin", "lib64"} {
		if target, err := os.Readlink(filepath.Join(root, l)); err != nil || target != "usr/"+l {
			t.Errorf("/%s -> %q (%v), want usr/%s (merged /usr)", l, target, err, l)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); err != nil ||
		bytes.Count(b, []byte("BEGIN CERTIFICATE")) < 50 {
		t.Errorf("CA bundle: %d certificates, err %v", bytes.Count(b, []byte("BEGIN CERTIFICATE")), err)
	}
}

// unpackImage checks the archive's manifest and config and returns the
// unpacked root filesystem (removed in t.Cleanup).
func unpackImage(t *testing.T) string {
	t.Helper()
	file := imageArchive(t)
	files := readArchive(t, file)
	var ms []archiveManifest
	if err := json.Unmarshal(files["manifest.json"], &ms); err != nil || len(ms) != 1 {
		t.Fatalf("manifest.json: %d images, err %v", len(ms), err)
	}
	m := ms[0]
	img := daemonSet(t).Spec.Template.Spec.Containers[0].Image
	if !slices.Contains(m.RepoTags, img) {
		t.Errorf("archive tags %v, want the DaemonSet's image %s", m.RepoTags, img)
	}
	var cfg imageConfig
	if err := json.Unmarshal(files[m.Config], &cfg); err != nil {
		t.Fatalf("config %s: %v", m.Config, err)
	}
	if cfg.OS != "linux" || cfg.RootFS.Type != "layers" {
		t.Errorf("config: os %q rootfs type %q", cfg.OS, cfg.RootFS.Type)
	}
	if d := cmp.Diff([]string{"/usr/local/bin/weft-agent"}, cfg.Config.Entrypoint); d != "" {
		t.Errorf("entrypoint (-want +got):\n%s", d)
	}
	if !slices.ContainsFunc(cfg.Config.Env, func(e string) bool {
		return strings.HasPrefix(e, "PATH=") && strings.Contains(e, "/usr/local/bin") && strings.Contains(e, "/usr/sbin")
	}) {
		t.Errorf("env %v: want a PATH with /usr/local/bin and /usr/sbin", cfg.Config.Env)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) || len(m.Layers) == 0 {
		t.Fatalf("%d layers, %d diff IDs", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	for i, l := range m.Layers {
		blob, ok := files[l]
		if !ok {
			t.Fatalf("layer %s missing from the archive", l)
		}
		layer, err := uncompressed(blob)
		if err != nil {
			t.Fatalf("layer %s: %v", l, err)
		}
		sum := sha256.Sum256(layer)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %s: diff ID %s, config says %s", l, got, cfg.RootFS.DiffIDs[i])
		}
		if err := unpack(root, layer); err != nil {
			t.Fatalf("unpack layer %s: %v", l, err)
		}
	}
	return root
}

// inRoot runs a command of the image with root as its root directory.
func inRoot(root string, argv ...string) ([]byte, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin"}
	return cmd.CombinedOutput()
}

// TestImageRuns runs the image's programs from its unpacked root filesystem
// (chroot, as root): the version flags, the install-cni step with the
// DaemonSet's own arguments, and iptables creating a chain in a fresh
// network namespace through the image's own libraries.
func TestImageRuns(t *testing.T) {
	nstest.RequireRoot(t)
	root := unpackImage(t)

	for _, tc := range []struct {
		argv []string
		want string
	}{
		// --version and --help run each binary inside the image's root.
		{[]string{"/usr/local/bin/weft-agent", "--version"}, "weft-agent"},
		{[]string{"/usr/local/bin/weft-agent", "--help"}, "-node-name"},
		{[]string{"/usr/local/bin/weftctl", "--help"}, "status"},
		{[]string{"/usr/local/bin/weftctl", "--version"}, "weftctl"},
		{[]string{"/usr/lib/weft/cni/weft", "--version"}, "weft "},
		{[]string{"/usr/local/bin/weft-install", "--version"}, "weft-install"},
		{[]string{"/usr/sbin/iptables", "--version"}, "(nf_tables)"},
		{[]string{"/usr/sbin/ip6tables", "--version"}, "(nf_tables)"},
	} {
		t.Run(filepath.Base(tc.argv[0]), func(t *testing.T) {
			out, err := inRoot(root, tc.argv...)
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("%q in the image: %v\n%s(want %q in the output)", tc.argv, err, out, tc.want)
			}
			t.Logf("%s", bytes.TrimSpace(out))
		})
	}

	t.Run("install-cni", func(t *testing.T) {
		init := daemonSet(t).Spec.Template.Spec.InitContainers[0]
		argv := []string{"/usr/local/bin/" + init.Command[0]}
		for _, a := range init.Args {
			if strings.HasPrefix(a, "--dst=") {
				a = "--dst=/tmp/node-cni-bin" // the node's /opt/cni/bin, here inside the unpacked root
			}
			argv = append(argv, a)
		}
		out, err := inRoot(root, argv...)
		if err != nil {
			t.Fatalf("%q: %v\n%s", argv, err, out)
		}
		for _, p := range []string{"weft", "loopback"} {
			want, err1 := os.ReadFile(filepath.Join(root, "usr/lib/weft/cni", p))
			got, err2 := os.ReadFile(filepath.Join(root, "tmp/node-cni-bin", p))
			if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
				t.Errorf("installed %s differs from the image's (%v, %v)", p, err1, err2)
			}
		}
	})

	t.Run("iptables in a namespace", func(t *testing.T) {
		ns := nstest.New(t, "img")
		chain := "WEFT-IMGTEST"
		for _, args := range [][]string{
			{"-w", "-t", "nat", "-N", chain},
			{"-w", "-t", "nat", "-A", chain, "-s", "10.244.0.0/16", "-m", "comment", "--comment", "weft", "-j", "MASQUERADE", "--random-fully"},
		} {
			argv := append([]string{"netns", "exec", ns.Name, "chroot", root, "/usr/sbin/iptables"}, args...)
			if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
				t.Fatalf("iptables %q in %s: %v\n%s", args, ns.Name, err, out)
			}
		}
		out := ns.MustRun(t, "iptables-nft", "-w", "-t", "nat", "-S", chain)
		if !strings.Contains(out, "-A "+chain+" -s 10.244.0.0/16") || !strings.Contains(out, "MASQUERADE") {
			t.Errorf("the namespace's nat table after the image's iptables:\n%s", out)
		}
	})
}
