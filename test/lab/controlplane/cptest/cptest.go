// Package cptest starts a real control plane (etcd, kube-apiserver,
// kube-controller-manager) for a test, in a network namespace of its own.
package cptest

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/nstest"
)

// BinDir is where the Kubernetes binaries are: $WEFT_K8S_BIN, else
// controlplane.DefaultBinDir.
func BinDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("WEFT_K8S_BIN"); d != "" {
		return d
	}
	d, err := controlplane.DefaultBinDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Start runs a control plane from cfg in a fresh namespace (tag names it)
// whose underlay link ul0 holds cfg.Addr (/24 for IPv4, /64 for IPv6),
// and stops it in t.Cleanup. It
// skips t unless root and the Kubernetes binaries are built. It sets
// cfg.Netns, and cfg.BinDir (BinDir) and cfg.Dir (a temporary directory)
// when empty.
func Start(t *testing.T, tag string, cfg controlplane.Config) *controlplane.ControlPlane {
	t.Helper()
	nstest.RequireRoot(t)
	if cfg.BinDir == "" {
		cfg.BinDir = BinDir(t)
	}
	if m := controlplane.MissingBinaries(cfg.BinDir, "/usr/bin/etcd"); len(m) > 0 {
		t.Skipf("skipped: Kubernetes binaries missing (%s); build them with `make k8s` (etcd: `make deps`)",
			strings.Join(m, ", "))
	}
	ns := nstest.New(t, tag)
	bits := 24
	if cfg.Addr.Is6() {
		bits = 64
	}
	ns.MustAddLink(t, "ul0", "ul1", netip.PrefixFrom(cfg.Addr, bits).String())
	cfg.Netns = ns.Name
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "cp")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}
