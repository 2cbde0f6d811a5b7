//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/test/lab"
)

// The routers topology (no control plane): hosts talk over the bridge in
// both families, FRR and BIRD start and their eBGP session comes up and can
// be read from both sides.
func TestRouters(t *testing.T) {
	vethsBefore := rootVeths(t)
	l := up(t, testdata("routers.clab.yml"), "rt")
	ctx := context.Background()

	for _, dst := range []string{"172.30.7.2", "fd00:30:7::2"} {
		if err := l.Ping(ctx, "h1", addr(dst)); err != nil {
			t.Errorf("h1 -> %s: %v", dst, err)
		}
	}
	eventually(t, 30*time.Second, "FRR session to BIRD established", func() error {
		out, err := l.FRR(ctx, "frr", "show bgp summary json")
		if err != nil {
			return err
		}
		var sum struct {
			IPv4Unicast struct {
				Peers map[string]struct {
					State string `json:"state"`
				} `json:"peers"`
			} `json:"ipv4Unicast"`
		}
		if err := json.Unmarshal(out, &sum); err != nil {
			return fmt.Errorf("parse show bgp summary json: %w: %s", err, out)
		}
		if st := sum.IPv4Unicast.Peers["172.30.7.4"].State; st != "Established" {
			return fmt.Errorf("peer 172.30.7.4 state %q", st)
		}
		return nil
	})
	eventually(t, 30*time.Second, "BIRD protocol frr up", func() error {
		out, err := l.BIRD(ctx, "bird", "show", "protocols")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 6 && f[0] == "frr" && f[1] == "BGP" && f[5] == "Established" {
				return nil
			}
		}
		return fmt.Errorf("no established BGP protocol frr in:\n%s", out)
	})
	// BIRD learned FRR's route over the session.
	eventually(t, 10*time.Second, "BIRD learns 172.30.77.0/24 from FRR", func() error {
		out, err := l.BIRD(ctx, "bird", "show", "route", "for", "172.30.77.1")
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "172.30.77.0/24") {
			return fmt.Errorf("no route:\n%s", out)
		}
		return nil
	})

	// A second Up of the same lab keeps it (idempotent) and it still works.
	if _, err := options(t).Up(ctx, testdata("routers.clab.yml"), l.Name); err != nil {
		t.Fatalf("second up: %v", err)
	}
	if err := l.Ping(ctx, "h1", addr("172.30.7.2")); err != nil {
		t.Errorf("after second up: h1 -> h2: %v", err)
	}
	if got := rootVeths(t); got != vethsBefore {
		t.Errorf("root namespace veths: %d before, %d with the lab up", vethsBefore, got)
	}
}

// Cutting a link stops traffic over it; restoring it brings traffic back.
func TestLinkFault(t *testing.T) {
	l := up(t, testdata("routers.clab.yml"), "lk")
	ctx := context.Background()
	h2 := addr("172.30.7.2")
	if err := l.Ping(ctx, "h1", h2); err != nil {
		t.Fatalf("before cut: %v", err)
	}
	if err := l.LinkDown("h1", "eth1"); err != nil {
		t.Fatal(err)
	}
	if up, err := l.LinkIsUp("h1", "eth1"); err != nil || up {
		t.Fatalf("h1:eth1 up=%t err=%v after LinkDown", up, err)
	}
	if err := l.Ping(ctx, "h1", h2); err == nil {
		t.Fatal("h1 -> h2 answered with the link cut")
	}
	if err := l.LinkUp("h1", "eth1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "h1 -> h2 after restore", func() error { return l.Ping(ctx, "h1", h2) })
	if err := l.LinkDown("h1", "eth9"); err == nil {
		t.Error("LinkDown on an interface without a link: no error")
	}
}

// Twenty rounds of up and down leave nothing behind: no namespace, process,
// mount, veth (in the root namespace), file or FRR pathspace.
func TestUpDownRepeat(t *testing.T) {
	opts := options(t)
	ctx := context.Background()
	vethsBefore := rootVeths(t)
	tmpBefore := frrTmp()
	name := labName("rep")
	t0 := time.Now()
	const rounds = 20
	for i := range rounds {
		l, err := opts.Up(ctx, testdata("routers.clab.yml"), name)
		if err != nil {
			opts.Down(name)
			t.Fatalf("round %d: up: %v", i, err)
		}
		inodes := labInodes(t, l)
		if len(inodes) != 5 {
			t.Errorf("round %d: %d namespaces, want 5", i, len(inodes))
		}
		if err := l.Ping(ctx, "h1", addr("172.30.7.2")); err != nil {
			t.Errorf("round %d: h1 -> h2: %v", i, err)
		}
		if err := opts.Down(name); err != nil {
			t.Fatalf("round %d: down: %v", i, err)
		}
		if left := leftovers(opts, name, inodes); len(left) > 0 {
			t.Fatalf("round %d left behind:\n%s", i, strings.Join(left, "\n"))
		}
	}
	t.Logf("%d rounds of up+down in %s (%s per round)", rounds, time.Since(t0).Round(time.Millisecond), (time.Since(t0) / rounds).Round(time.Millisecond))
	if got := rootVeths(t); got != vethsBefore {
		t.Errorf("root namespace veths: %d before, %d after", vethsBefore, got)
	}
	if got := frrTmp(); len(got) > len(tmpBefore) {
		t.Errorf("/var/tmp/frr: %d entries before, %d after: %v", len(tmpBefore), len(got), got)
	}
}

// Down cleans up after a crash half-way through Up: namespaces and daemons
// exist, the state file says the lab never finished.
func TestDownAfterCrash(t *testing.T) {
	opts := options(t)
	ctx := context.Background()
	name := labName("crash")
	l, err := opts.Up(ctx, testdata("routers.clab.yml"), name)
	if err != nil {
		t.Fatal(err)
	}
	inodes := labInodes(t, l)
	// What a crash leaves: an incomplete state file, and the state dir gone
	// entirely for a second, worse case (only names are left to go by).
	st := filepath.Join(opts.BaseDir, name, "state.json")
	data, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st, []byte(strings.Replace(string(data), `"complete": true`, `"complete": false`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(opts.BaseDir, name)); err != nil {
		t.Fatal(err)
	}
	if err := opts.Down(name); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left := leftovers(opts, name, inodes); len(left) > 0 {
		t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
	// A lab that never existed: Down is not an error.
	if err := opts.Down(labName("none")); err != nil {
		t.Errorf("down of a lab that never existed: %v", err)
	}
}

func frrTmp() []string {
	m, _ := filepath.Glob("/var/tmp/frr/*")
	return m
}

// Bad input is refused with an error naming it, before anything is made.
func TestUpRefusesBadInput(t *testing.T) {
	opts := options(t)
	ctx := context.Background()
	if _, err := opts.Up(ctx, testdata("routers.clab.yml"), "Bad_Name"); err == nil || !strings.Contains(err.Error(), `"Bad_Name"`) {
		t.Errorf("up with a bad name: %v", err)
	}
	if _, err := opts.Up(ctx, testdata("missing.clab.yml"), ""); err == nil {
		t.Error("up of a missing file: no error")
	}
	if _, err := (lab.Options{BaseDir: opts.BaseDir}).Open(labName("none")); err == nil {
		t.Error("open of a lab that does not exist: no error")
	}
}
