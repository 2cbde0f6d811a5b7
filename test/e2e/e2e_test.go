//go:build e2e

// Package e2e runs weft end to end in the netns lab (test/lab): a real
// control plane, nodes and pods in network namespaces, the real CNI binary.
// Run as root: go test -tags e2e ./test/e2e/
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"weft.dev/weft/test/lab"
	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/nstest"
)

var (
	root    string // repository root
	binDir  string // weft binaries built for this run
	k8sBin  string // Kubernetes binaries
	baseDir string // lab state dirs of this run
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, _ := os.Getwd()
	root = filepath.Join(wd, "..", "..")
	if os.Geteuid() != 0 {
		return m.Run() // every test skips with a message
	}
	var err error
	if binDir, err = os.MkdirTemp("", "weft-e2e-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(binDir)
	// The binaries of this tree, so the tests never run stale ones. A tree
	// whose agent does not build fails here: every lab needs it.
	for _, pkg := range []string{"./cmd/weft", "./cmd/weft-agent", "./test/cmd/weft-lab", "./test/cmd/pause"} {
		build := exec.Command("go", "build", "-o", binDir, pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
			return 1
		}
	}
	k8sBin = os.Getenv("WEFT_K8S_BIN")
	if k8sBin == "" {
		k8sBin, _ = controlplane.DefaultBinDir()
	}
	if baseDir, err = os.MkdirTemp("/run", "weft-e2e-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(baseDir)
	return m.Run()
}

func options(t testing.TB) lab.Options {
	return lab.Options{
		BaseDir:   baseDir,
		BinDir:    binDir,
		K8sBinDir: k8sBin,
		DeployDir: filepath.Join(root, "deploy", "kubernetes"),
		WeftImage: filepath.Join(root, "bin", "weft-image.tar"),
		Log:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// labName is unique per test run, so concurrent runs never collide.
func labName(tag string) string {
	return strings.TrimPrefix(nstest.Unique(tag), nstest.Prefix)
}

func topology(name string) string { return filepath.Join(root, "test", "topologies", name) }
func testdata(name string) string { return filepath.Join(root, "test", "e2e", "testdata", name) }

// requireK8s skips unless the Kubernetes binaries are built.
func requireK8s(t testing.TB) {
	t.Helper()
	if missing := controlplane.MissingBinaries(k8sBin, "/usr/bin/etcd"); len(missing) > 0 {
		t.Skipf("skipped: Kubernetes binaries missing in %s (%s): run `make k8s`", k8sBin, strings.Join(missing, ", "))
	}
}

// up brings a lab up and removes it in t.Cleanup, checking that nothing of
// it is left.
func up(t *testing.T, file, tag string) *lab.Lab {
	t.Helper()
	nstest.RequireRoot(t)
	return upWith(t, file, tag, options(t), 4*time.Minute)
}

// upWith is up with the given options and a bound on Up. On failure of a
// real-node lab it logs what the nodes and kubectl say before Down.
func upWith(t *testing.T, file, tag string, opts lab.Options, timeout time.Duration) *lab.Lab {
	t.Helper()
	name := labName(tag)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t0 := time.Now()
	l, err := opts.Up(ctx, file, name)
	if err != nil {
		t.Fatalf("up %s (real nodes: %v): %v", file, opts.Kubelets, err)
	}
	t.Logf("lab %s up in %s (real nodes: %v)", name, time.Since(t0).Round(time.Millisecond), opts.Kubelets)
	inodes := labInodes(t, l)
	t.Cleanup(func() {
		if t.Failed() && opts.Kubelets {
			realNodeLogs(t, l)
		}
		t0 := time.Now()
		if err := opts.Down(name); err != nil {
			t.Errorf("down %s: %v", name, err)
		}
		t.Logf("lab %s down in %s", name, time.Since(t0).Round(time.Millisecond))
		left := append(leftovers(opts, name, inodes), realNodeLeftovers(name)...)
		if len(left) > 0 {
			t.Errorf("lab %s left behind:\n%s", name, strings.Join(left, "\n"))
		}
	})
	return l
}

// labInodes are the network namespace inodes of a lab's nodes and pods.
func labInodes(t testing.TB, l *lab.Lab) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), lab.NSPrefix+l.Name+".") {
			continue
		}
		var st syscallStat
		if err := stat(filepath.Join("/run/netns", e.Name()), &st); err == nil {
			out[st.Ino] = e.Name()
		}
	}
	if len(out) == 0 {
		t.Fatalf("lab %s: no namespaces found", l.Name)
	}
	return out
}

// leftovers lists what of lab name still exists: namespaces, processes in
// its namespaces (by inode, so also unnamed ones), mounts, files, FRR
// pathspaces.
func leftovers(opts lab.Options, name string, inodes map[uint64]string) []string {
	var left []string
	prefix := lab.NSPrefix + name + "."
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			left = append(left, "namespace "+e.Name())
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var st syscallStat
		if err := stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st); err != nil {
			continue
		}
		if p.Name() == strconv.Itoa(os.Getpid()) {
			// A thread of this test process left in a lab namespace (a
			// dialer that could not switch back) keeps it alive until the
			// process exits; reported, not a lab leftover.
			if ns, ok := inodes[st.Ino]; ok {
				fmt.Fprintf(os.Stderr, "note: this test process's main thread is still in %s\n", ns)
			}
			continue
		}
		if ns, ok := inodes[st.Ino]; ok && !zombie(p.Name()) {
			cmd, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
			left = append(left, fmt.Sprintf("process %s (%s) in %s", p.Name(), bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}), ns))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, prefix) || strings.Contains(line, filepath.Join(opts.BaseDir, name)) {
			left = append(left, "mount "+line)
		}
	}
	if _, err := os.Stat(filepath.Join(opts.BaseDir, name)); err == nil {
		left = append(left, "dir "+filepath.Join(opts.BaseDir, name))
	}
	frr, _ := filepath.Glob("/var/run/frr/wl_" + name + "_*")
	for _, f := range frr {
		left = append(left, "frr pathspace "+f)
	}
	return left
}

func zombie(pid string) bool {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(data, ')')
	return i < 0 || i+2 >= len(data) || data[i+2] == 'Z' || data[i+2] == 'X'
}

// rootVeths counts veth devices in the root namespace (the lab must never
// make one there).
func rootVeths(t testing.TB) int {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range links {
		if l.Type() == "veth" {
			n++
		}
	}
	return n
}

// eventually retries f until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
