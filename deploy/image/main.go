// Command image builds weft's container image as a docker-archive tar
// (what `docker save` writes; `kind load image-archive`, `ctr images import`
// and `docker load` read it) without a container engine:
//
//	go run . --bin=../../bin/image --out=../../bin/weft-image.tar
//
// Two layers:
//  1. Debian userspace: iptables (nft backend) and the libraries it needs,
//     resolved by apt-cache and unpacked from the .debs apt-get download
//     fetches (no maintainer scripts; what they would do — the iptables
//     alternatives symlinks, the CA bundle — is done here), CA certificates
//     and the loopback CNI plugin.
//  2. weft: the static binaries from --bin in /usr/local/bin and the CNI
//     plugins the install-cni init container copies to the node, in
//     /usr/lib/weft/cni.
//
// The Dockerfile at the repository root builds the same layout on
// debian:bookworm-slim for people with a container engine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Image layout, shared with the Dockerfile and the DaemonSet.
const (
	binDir  = "usr/local/bin"
	cniDir  = "usr/lib/weft/cni"
	pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// iptablesLinks are the commands Debian's alternatives point at the nft
// backend (update-alternatives --set iptables /usr/sbin/iptables-nft).
var iptablesLinks = []string{
	"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore",
}

type options struct {
	bin      string   // directory with the weft binaries
	bins     []string // commands for /usr/local/bin
	plugins  []string // CNI plugins from bin for /usr/lib/weft/cni
	out      string
	tag      string
	cache    string   // .deb cache
	packages []string // installed with their dependencies
	epoch    time.Time
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/image", "directory holding the static weft binaries")
	bins := flag.String("bins", "weft-agent,weftctl,weft-install", "comma-separated commands from --bin for /"+binDir)
	plugins := flag.String("plugins", "weft", "comma-separated CNI plugins from --bin for /"+cniDir)
	flag.StringVar(&o.out, "out", "bin/weft-image.tar", "archive to write")
	flag.StringVar(&o.tag, "tag", "weft.dev/weft:dev", "image reference recorded in the archive")
	flag.StringVar(&o.cache, "cache", ".cache/image/debs", "directory for downloaded .deb files")
	pkgs := flag.String("packages", "iptables", "comma-separated Debian packages installed with their dependencies")
	flag.Parse()
	o.bins, o.plugins, o.packages = split(*bins), split(*plugins), split(*pkgs)
	o.epoch = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "image: SOURCE_DATE_EPOCH=%q: %v\n", s, err)
			os.Exit(2)
		}
		o.epoch = time.Unix(sec, 0).UTC()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := build(ctx, log, o); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func split(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func build(ctx context.Context, log *slog.Logger, o options) error {
	ref, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", o.tag, err)
	}
	work, err := os.MkdirTemp("", "weft-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	base, err := baseLayer(ctx, log, o, work)
	if err != nil {
		return err
	}
	weft, err := weftLayer(o, work)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, base, weft)
	if err != nil {
		return fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goArch()
	cf.Created = v1.Time{Time: o.epoch}
	cf.Config.Entrypoint = []string{"/" + binDir + "/weft-agent"}
	cf.Config.Env = []string{pathEnv}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "weft",
		"org.opencontainers.image.description": "weft Kubernetes overlay network: agent, CNI plugin, weftctl",
		"org.opencontainers.image.source":      "https://weft.dev/weft",
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	tmp := o.out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if err := os.Rename(tmp, o.out); err != nil {
		return err
	}
	d, _ := img.Digest()
	fi, _ := os.Stat(o.out)
	log.Info("image written", "file", o.out, "tag", ref.String(), "digest", d.String(), "bytes", fi.Size())
	return nil
}

// baseLayer unpacks the Debian packages and their dependencies, plus the CA
// certificates and the loopback plugin, into one layer.
func baseLayer(ctx context.Context, log *slog.Logger, o options, work string) (v1.Layer, error) {
	pkgs, err := closure(ctx, o.packages)
	if err != nil {
		return nil, err
	}
	// Packages of which only a few files are taken (their dependencies
	// and maintainer scripts are not needed).
	// Path in the package → path in the image.
	partial := map[string]map[string]string{
		"ca-certificates":             {"usr/share/ca-certificates": "usr/share/ca-certificates"},
		"containernetworking-plugins": {"usr/lib/cni/loopback": cniDir + "/loopback"},
	}
	all := append([]string{}, pkgs...)
	for p := range partial {
		all = append(all, p)
	}
	debs, err := download(ctx, o.cache, all)
	if err != nil {
		return nil, err
	}
	log.Info("debian packages", "packages", strings.Join(all, " "))
	root := filepath.Join(work, "rootfs")
	for i, deb := range debs {
		if _, ok := partial[all[i]]; ok {
			continue
		}
		if err := extract(ctx, deb, root); err != nil {
			return nil, err
		}
	}
	scratch := filepath.Join(work, "partial")
	for i, deb := range debs {
		keep, ok := partial[all[i]]
		if !ok {
			continue
		}
		dir := filepath.Join(scratch, all[i])
		if err := extract(ctx, deb, dir); err != nil {
			return nil, err
		}
		for from, to := range keep {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(root, to)), 0o755); err != nil {
				return nil, err
			}
			if err := os.Rename(filepath.Join(dir, from), filepath.Join(root, to)); err != nil {
				return nil, fmt.Errorf("take %s from %s: %w", from, deb, err)
			}
		}
	}
	if err := prune(root); err != nil {
		return nil, err
	}
	if err := caBundle(root); err != nil {
		return nil, err
	}
	for _, l := range iptablesLinks {
		if err := os.Symlink("xtables-nft-multi", filepath.Join(root, "usr/sbin", l)); err != nil {
			return nil, fmt.Errorf("iptables alternative %s: %w", l, err)
		}
	}
	// Root's home, /tmp and /run as a container runtime expects them.
	for d, mode := range map[string]os.FileMode{"tmp": os.ModeSticky | 0o777, "run": 0o755, "root": 0o700, "var/lib": 0o755} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(filepath.Join(root, d), mode); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/usr/sbin/nologin\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		return nil, err
	}
	t := newTree()
	if err := t.addRoot(root); err != nil {
		return nil, err
	}
	return writeLayer(t, filepath.Join(work, "base.tar"), o.epoch)
}

// weftLayer holds weft's own binaries.
func weftLayer(o options, work string) (v1.Layer, error) {
	t := newTree()
	for _, b := range o.bins {
		if err := addBinary(t, filepath.Join(o.bin, b), binDir+"/"+b); err != nil {
			return nil, err
		}
	}
	for _, p := range o.plugins {
		if err := addBinary(t, filepath.Join(o.bin, p), cniDir+"/"+p); err != nil {
			return nil, err
		}
	}
	return writeLayer(t, filepath.Join(work, "weft.tar"), o.epoch)
}

func addBinary(t *tree, src, name string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("binary %s: %w (run `make image`, which builds them)", src, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("binary %s: not an executable file", src)
	}
	if err := checkStatic(src); err != nil {
		return err
	}
	return t.add(entry{name: name, mode: 0o755, src: src})
}

// checkStatic refuses a dynamically linked binary (an ELF file with a
// PT_INTERP program header): the weft layer must not depend on the base
// layer's libc.
func checkStatic(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	ok, err := isStatic(f)
	if err != nil {
		return fmt.Errorf("binary %s: %w", file, err)
	}
	if !ok {
		return fmt.Errorf("binary %s is dynamically linked; build it with CGO_ENABLED=0", file)
	}
	return nil
}

func writeLayer(t *tree, file string, mtime time.Time) (v1.Layer, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := t.write(f, mtime); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(file) })
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", file, err)
	}
	return l, nil
}

var errNotELF = errors.New("not an ELF file")
