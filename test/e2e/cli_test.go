//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"weft.dev/weft/test/nstest"
)

// weft-lab, the CLI, over the routers topology.
func TestCLI(t *testing.T) {
	nstest.RequireRoot(t)
	bin := filepath.Join(binDir, "weft-lab")
	name := labName("cli")
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "WEFT_BIN=" + binDir, "WEFT_K8S_BIN=" + k8sBin}
	wl := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := wl(args...)
		if err != nil {
			t.Fatalf("weft-lab %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// The CLI keeps its labs in the default base dir; remove this one
	// whatever happens.
	t.Cleanup(func() {
		if out, err := wl("down", name); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
		if out, _ := wl("list"); strings.Contains(out, name) {
			t.Errorf("lab %s still listed after down:\n%s", name, out)
		}
	})
	if out := must("up", "-f", testdata("routers.clab.yml"), "--name", name); strings.TrimSpace(out) != name {
		t.Errorf("up printed %q, want the lab name", out)
	}
	if out := must("status", name); !strings.Contains(out, "wl-"+name+".frr") || !strings.Contains(out, "172.30.7.1") {
		t.Errorf("status:\n%s", out)
	}
	if out := must("list"); !strings.Contains(out, name) {
		t.Errorf("list does not show %s:\n%s", name, out)
	}
	must("exec", name, "h1", "--", "ping", "-c1", "-W1", "172.30.7.2")
	must("link", "down", name, "h1", "eth1")
	if out, err := wl("exec", name, "h1", "--", "ping", "-c1", "-W1", "172.30.7.2"); err == nil {
		t.Errorf("ping over a cut link worked:\n%s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		// ping exits 2 on "Network is unreachable"; exec passes it through.
		t.Errorf("exec exit status %v, want ping's 2", err)
	}
	must("link", "up", name, "h1", "eth1")
	must("exec", name, "h1", "--", "ping", "-c1", "-W3", "172.30.7.2")

	for _, bad := range [][]string{
		{},
		{"nonsense"},
		{"up"},
		{"pod", "add", name},
		{"exec", name, "h1", "ping"},
		{"status", "no-such-lab"},
		{"link", "down", name, "h1", "eth7"},
		{"pod", "add", name, "h1", "p"}, // h1 is not a weft node
		{"kubectl", name, "--", "get", "nodes"},
	} {
		if out, err := wl(bad...); err == nil {
			t.Errorf("weft-lab %s: no error:\n%s", strings.Join(bad, " "), out)
		}
	}
}
