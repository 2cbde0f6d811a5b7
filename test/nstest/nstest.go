// Package nstest gives root-only tests throwaway network namespaces.
//
// Every namespace it makes is named with the prefix "wt-" plus a random
// suffix, so two test runs never collide, and is removed (with every process
// still inside it) in t.Cleanup, also when the test fails.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"weft.dev/weft/overlay/nsrun"
)

// Prefix starts the name of every namespace this package makes.
const Prefix = "wt-"

// RequireRoot skips t with a clear message unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (network namespaces, netlink); run `sudo make test`")
	}
}

// NS is a named network namespace under /run/netns.
type NS struct {
	Name string
	Path string
}

// Unique returns a short name with the package prefix, tag and a random
// suffix, at most 15 bytes so it also fits an interface name.
func Unique(tag string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	if len(tag) > 6 {
		tag = tag[:6]
	}
	return Prefix + tag + hex.EncodeToString(b[:])
}

// New makes a fresh namespace (skipping t when not root) with loopback up.
// It is deleted in t.Cleanup after the processes left in it are killed.
func New(t testing.TB, tag string) *NS {
	t.Helper()
	RequireRoot(t)
	name := Unique(tag)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() {
		if err := ns.Remove(); err != nil {
			t.Errorf("remove namespace %s: %v", name, err)
		}
	})
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Remove kills every process in the namespace and deletes it.
func (ns *NS) Remove() error {
	if out, err := exec.Command("ip", "netns", "pids", ns.Name).Output(); err == nil {
		self := strconv.Itoa(os.Getpid())
		for _, pid := range strings.Fields(string(out)) {
			// The test process itself shows up when one of its threads is
			// inside the namespace at this instant (ip netns pids reads the
			// main thread's namespace); it is never a leftover.
			if pid != self {
				_ = exec.Command("kill", "-9", pid).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		if _, statErr := os.Stat(ns.Path); os.IsNotExist(statErr) {
			return nil
		}
		return fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
	}
	return nil
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// MustRun is Run that fails t on error.
func (ns *NS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Do runs fn inside the namespace on a locked OS thread that is switched
// back afterwards; the process's main thread never enters (see nsrun).
func (ns *NS) Do(fn func() error) error { return nsrun.In(ns.Path, fn) }

// Handle opens a handle on the namespace; the caller closes it.
func (ns *NS) Handle() (netns.NsHandle, error) {
	return netns.GetFromPath(ns.Path)
}

// MustAddLink adds a veth link name whose peer stays in the namespace (up,
// as the kernel has no dummy links), puts addrs (CIDR notation, IPv6
// without duplicate address detection) on name and sets it up. It fails t
// on error.
func (ns *NS) MustAddLink(t testing.TB, name, peer string, addrs ...string) {
	t.Helper()
	ns.MustRun(t, "ip", "link", "add", name, "type", "veth", "peer", "name", peer)
	ns.MustRun(t, "ip", "link", "set", peer, "up")
	for _, a := range addrs {
		args := []string{"addr", "add", a, "dev", name}
		if strings.Contains(a, ":") {
			args = append(args, "nodad")
		}
		ns.MustRun(t, "ip", args...)
	}
	ns.MustRun(t, "ip", "link", "set", name, "up")
}

// RunTests re-runs the tests of this test binary matching pattern inside
// the namespace, with env added to the environment, and fails t unless
// they pass. For tests that cannot pin every goroutine into a namespace
// (GoBGP dials from its own): the caller marks the inner run through env
// so it does not recurse.
func (ns *NS) RunTests(t testing.TB, pattern string, timeout time.Duration, env ...string) {
	t.Helper()
	args := []string{"netns", "exec", ns.Name, os.Args[0], "-test.run", pattern, "-test.count=1", "-test.timeout=" + timeout.String()}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("inside %s:\n%s", ns.Name, out)
	if err != nil {
		t.Fatalf("tests inside %s failed: %v", ns.Name, err)
	}
	if !strings.Contains(string(out), "PASS") {
		t.Fatalf("tests inside %s did not report PASS", ns.Name)
	}
}
