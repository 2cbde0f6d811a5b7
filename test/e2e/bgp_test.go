//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/test/lab"
)

// TestBGPMesh switches the running vxlan-3node cluster to bgp mode (iBGP
// full mesh between the nodes) and back, under a 100 Hz ping across nodes:
// every pod reaches every other pod over IPv4 and IPv6 in both modes, every
// session is established, the VXLAN device goes and comes back, and the
// connectivity gap of each switch is measured.
func TestBGPMesh(t *testing.T) {
	requireK8s(t)
	requireAgentBuilt(t)
	l := up(t, topology("vxlan-3node.clab.yml"), "bm")
	bgpLogsOnFailure(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	bgpWaitMode(t, ctx, l, "vxlan", 90*time.Second)
	pods := bgpPods(t, ctx, l, "m")
	bgpMatrix(t, ctx, l, pods)

	// vxlan → bgp under a 100 Hz ping node1 → node2.
	fl := bgpStartPing(t, ctx, l, pods[0], pods[1].IPs[0])
	time.Sleep(time.Second) // a baseline before the switch
	if err := l.SetMode(ctx, "bgp"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	bgpWaitMode(t, ctx, l, "bgp", 60*time.Second)
	t.Logf("vxlan → bgp: every agent ready with every peer routed over BGP %s after the ConfigMap update", time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // the tail of the gap, if any, is counted
	gapUp := fl.stop(t)
	t.Logf("vxlan → bgp connectivity gap: %s", gapUp)

	weftctl := bgpBuildWeftctl(t)
	for _, n := range weft {
		st := bgpStatus(t, ctx, weftctl, l, n.Name)
		if len(st.Peers) != len(weft)-1 {
			t.Errorf("%s: %d BGP peers, want %d: %+v", n.Name, len(st.Peers), len(weft)-1, st.Peers)
		}
		for _, p := range st.Peers {
			if !p.Up || p.State != "established" {
				t.Errorf("%s: peer %s (%s) state %s, want established", n.Name, p.Address, p.Name, p.State)
			}
		}
		out, err := exec.CommandContext(ctx, weftctl, "bgp", "peers", "-socket", l.AgentStatusSocket(n.Name)).CombinedOutput()
		if err != nil || strings.Count(string(out), "established") != len(weft)-1 {
			t.Errorf("%s: weftctl bgp peers: %v, want %d established:\n%s", n.Name, err, len(weft)-1, out)
		}
		t.Logf("%s: weftctl bgp peers:\n%s", n.Name, out)
		// The kernel: no VXLAN device, every other node's pod CIDRs via
		// its node address with weft's route protocol.
		if out, err := l.Exec(ctx, n.Name, "ip", "-d", "link", "show", "type", "vxlan"); err != nil || strings.Contains(string(out), "weft.vxlan") {
			t.Errorf("%s: VXLAN device in bgp mode: %v\n%s", n.Name, err, out)
		}
		routes := bgpKernelRoutes(t, ctx, l, n.Name)
		for _, o := range weft {
			if o.Name == n.Name {
				continue
			}
			for _, c := range bgpPodCIDRs(t, ctx, l, o.Name) {
				via := bgpNodeAddr(o, c.Addr().Is4())
				if want := fmt.Sprintf("%s via %s ", c, via); !strings.Contains(routes, want) {
					t.Errorf("%s: no route %q in:\n%s", n.Name, want, routes)
				}
			}
		}
	}
	bgpMatrix(t, ctx, l, pods)

	// bgp → vxlan.
	fl = bgpStartPing(t, ctx, l, pods[0], pods[1].IPs[0])
	time.Sleep(time.Second)
	if err := l.SetMode(ctx, "vxlan"); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	bgpWaitMode(t, ctx, l, "vxlan", 60*time.Second)
	t.Logf("bgp → vxlan: every agent ready with every peer over VXLAN %s after the ConfigMap update", time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	gapDown := fl.stop(t)
	t.Logf("bgp → vxlan connectivity gap: %s", gapDown)
	for _, n := range weft {
		routes := bgpKernelRoutes(t, ctx, l, n.Name)
		if strings.Contains(routes, "dev eth1") {
			t.Errorf("%s: BGP routes left after the switch to vxlan:\n%s", n.Name, routes)
		}
		if _, err := bgpStatusErr(ctx, weftctl, l, n.Name); err == nil || !strings.Contains(err.Error(), "does not run mode bgp") {
			t.Errorf("%s: weftctl bgp peers in vxlan mode: %v, want 'does not run mode bgp'", n.Name, err)
		}
	}
	bgpMatrix(t, ctx, l, pods)
	// The target is a gap under 3 s each way.
	for what, gap := range map[string]time.Duration{"vxlan → bgp": gapUp, "bgp → vxlan": gapDown} {
		if gap >= 3*time.Second {
			t.Errorf("%s: connectivity gap %s, want < 3s", what, gap)
		}
	}
}

func requireAgentBuilt(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(binDir, "weft-agent")); err != nil {
		t.Skipf("skipped: weft-agent not built: %v", err)
	}
}

// bgpWaitMode waits until every weft node's agent runs mode, is ready and
// has every other node programmed (over BGP in bgp mode).
func bgpWaitMode(t *testing.T, ctx context.Context, l *lab.Lab, mode string, timeout time.Duration) {
	t.Helper()
	weft := l.Topo.NodesOf(lab.KindWeft)
	eventually(t, timeout, "agents in mode "+mode, func() error {
		var waiting []string
		for _, n := range weft {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := status.Get(sctx, l.AgentStatusSocket(n.Name))
			cancel()
			if err != nil {
				waiting = append(waiting, n.Name+": "+err.Error())
				continue
			}
			prog := 0
			for _, p := range st.Peers {
				if p.Programmed && (mode != "bgp" || p.Via == "bgp") && (mode != "vxlan" || strings.Contains(p.Via, "vxlan")) {
					prog++
				}
			}
			if st.Mode != mode || !st.Ready || prog != len(weft)-1 {
				waiting = append(waiting, fmt.Sprintf("%s: mode %s ready %t, %d/%d peers programmed %+v %v (log %s)",
					n.Name, st.Mode, st.Ready, prog, len(weft)-1, st.Peers, st.NotReady, filepath.Join(l.NodeDir(n.Name), "agent.log")))
			}
		}
		if len(waiting) > 0 {
			return fmt.Errorf("%s", strings.Join(waiting, "\n"))
		}
		return nil
	})
}

// bgpPods makes one pod per weft node.
func bgpPods(t *testing.T, ctx context.Context, l *lab.Lab, prefix string) []lab.Pod {
	t.Helper()
	var pods []lab.Pod
	for i, n := range l.Topo.NodesOf(lab.KindWeft) {
		p, err := l.PodAdd(ctx, n.Name, fmt.Sprintf("%s%d", prefix, i))
		if err != nil {
			t.Fatalf("pod on %s: %v", n.Name, err)
		}
		pods = append(pods, p)
	}
	return pods
}

// bgpMatrix pings every address of every pod from every other pod.
func bgpMatrix(t *testing.T, ctx context.Context, l *lab.Lab, pods []lab.Pod) {
	t.Helper()
	ok, total := 0, 0
	for _, src := range pods {
		for _, dst := range pods {
			if src.Node == dst.Node {
				continue
			}
			for _, ip := range dst.IPs {
				total++
				if err := pingWithin(ctx, l, src.Node+"/"+src.Name, ip, 5*time.Second); err != nil {
					t.Errorf("%s/%s -> %s/%s %s: %v", src.Node, src.Name, dst.Node, dst.Name, ip, err)
					continue
				}
				ok++
			}
		}
	}
	t.Logf("pod matrix: %d/%d reachable", ok, total)
	if total == 0 {
		t.Error("pod matrix: no pairs")
	}
}

// bgpPing is a ~100 Hz ping running in the background.
type bgpPing struct {
	cmd      *exec.Cmd
	out      strings.Builder
	from, to string
	start    time.Time
}

func bgpStartPing(t *testing.T, ctx context.Context, l *lab.Lab, src lab.Pod, dst fmt.Stringer) *bgpPing {
	t.Helper()
	f := &bgpPing{from: src.Node + "/" + src.Name, to: dst.String()}
	// -i 0.01 sends only about 60 a second here (timer granularity);
	// 0.007 gives about 100.
	cmd, err := l.Command(ctx, f.from, "ping", "-n", "-q", "-i", "0.007", "-W", "1", f.to)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = &f.out, &f.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.cmd, f.start = cmd, time.Now()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return f
}

var bgpPingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// stop interrupts the ping and returns the gap it saw: packets lost times
// the mean interval between packets.
func (f *bgpPing) stop(t *testing.T) time.Duration {
	t.Helper()
	_ = f.cmd.Process.Signal(syscall.SIGINT)
	_ = f.cmd.Wait()
	took := time.Since(f.start)
	m := bgpPingSummary.FindStringSubmatch(f.out.String())
	if m == nil {
		t.Fatalf("%s -> %s: no ping summary:\n%s", f.from, f.to, f.out.String())
	}
	sent, _ := strconv.Atoi(m[1])
	got, _ := strconv.Atoi(m[2])
	if sent < 100 {
		t.Fatalf("%s -> %s: only %d sent in %s", f.from, f.to, sent, took)
	}
	interval := took / time.Duration(sent)
	gap := time.Duration(sent-got) * interval
	t.Logf("%s -> %s: %d sent in %s (%.0f/s), %d received, %d lost = %s gap (%d × 10 ms = %s)", f.from, f.to, sent,
		took.Round(time.Millisecond), float64(sent)/took.Seconds(), got, sent-got, gap.Round(time.Millisecond),
		sent-got, time.Duration(sent-got)*10*time.Millisecond)
	return gap
}

func bgpBuildWeftctl(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "weftctl")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/weftctl")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build weftctl: %v\n%s", err, b)
	}
	return out
}

func bgpStatusErr(ctx context.Context, weftctl string, l *lab.Lab, node string) (bgpmode.Status, error) {
	out, err := exec.CommandContext(ctx, weftctl, "bgp", "peers", "-json", "-socket", l.AgentStatusSocket(node)).CombinedOutput()
	if err != nil {
		return bgpmode.Status{}, fmt.Errorf("weftctl bgp peers on %s: %w: %s", node, err, out)
	}
	var st bgpmode.Status
	if err := json.Unmarshal(out, &st); err != nil {
		return bgpmode.Status{}, fmt.Errorf("weftctl bgp peers -json on %s: %w: %s", node, err, out)
	}
	return st, nil
}

// bgpStatus is bgp mode's status of a node's agent, read with weftctl.
func bgpStatus(t *testing.T, ctx context.Context, weftctl string, l *lab.Lab, node string) bgpmode.Status {
	t.Helper()
	st, err := bgpStatusErr(ctx, weftctl, l, node)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// bgpKernelRoutes lists a node's routes with weft's protocol (87), both
// families, one per line (ECMP next hops joined).
func bgpKernelRoutes(t *testing.T, ctx context.Context, l *lab.Lab, node string) string {
	t.Helper()
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		out, err := l.Exec(ctx, node, "ip", "-o", fam, "route", "show", "proto", "87")
		if err != nil {
			t.Fatal(err)
		}
		b.Write(out)
	}
	return b.String()
}

func bgpPodCIDRs(t *testing.T, ctx context.Context, l *lab.Lab, node string) []netip.Prefix {
	t.Helper()
	cidrs, err := l.PodCIDRs(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	return cidrs
}

// bgpNodeAddr is a topology node's first address of a family.
func bgpNodeAddr(n lab.Node, v4 bool) string {
	for _, a := range n.NodeAddrs() {
		if a.Is4() == v4 {
			return a.String()
		}
	}
	return "?"
}

// bgpLogsOnFailure prints the tail of every agent's log when the test
// failed (before the lab, and the logs with it, are removed).
func bgpLogsOnFailure(t *testing.T, l *lab.Lab) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range l.Topo.NodesOf(lab.KindWeft) {
			b, _ := os.ReadFile(filepath.Join(l.NodeDir(n.Name), "agent.log"))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			var keep []string
			for _, line := range lines {
				if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || strings.Contains(line, "bgp") {
					keep = append(keep, line)
				}
			}
			if len(keep) > 60 {
				keep = keep[len(keep)-60:]
			}
			t.Logf("%s agent log (errors, warnings, bgp; last 60):\n%s", n.Name, strings.Join(keep, "\n"))
		}
	})
}
