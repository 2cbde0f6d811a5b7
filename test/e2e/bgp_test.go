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
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/bgp"
	"weft.dev/weft/test/lab"
)

// TestBGPMesh switches the running vxlan-3node cluster to bgp mode (iBGP
// full mesh between the nodes) and back, under a 100 Hz ping across nodes:
// every pod reaches every other pod over IPv4 and IPv6 in both modes, every
// session is established, the VXLAN device goes and comes back, and the
// connectivity gap of each switch is measured.
func TestBGPMesh(t *testing.T) {
	l := upBGP(t, topology("vxlan-3node.clab.yml"), "bm")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	bgpWaitMode(t, ctx, l, "vxlan", 90*time.Second)
	pods := bgpPods(t, ctx, l, "m")
	bgpMatrix(t, ctx, l, pods)

	// vxlan → bgp under a 100 Hz ping node1 → node2.
	fl := startFlood(t, ctx, l, pods[0], pods[1].IPs[0])
	time.Sleep(time.Second) // a baseline before the switch
	if err := l.SetMode(ctx, "bgp"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	bgpWaitMode(t, ctx, l, "bgp", 60*time.Second)
	t.Logf("vxlan → bgp: every agent ready with every peer routed over BGP %s after the ConfigMap update", time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // the tail of the gap, if any, is counted
	gapUp := fl.stopGap(t)
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
		// its node address with weft's route protocol. The status reports
		// the plan, which the same pass writes into the kernel: polled, so
		// a pass that retries a failed write does not fail the test.
		var want []string
		for _, o := range weft {
			if o.Name == n.Name {
				continue
			}
			for _, c := range bgpPodCIDRs(t, ctx, l, o.Name) {
				want = append(want, fmt.Sprintf("%s via %s ", c, bgpNodeAddr(o, c.Addr().Is4())))
			}
		}
		eventually(t, 10*time.Second, n.Name+": kernel in bgp mode", func() error {
			if out, err := l.Exec(ctx, n.Name, "ip", "-d", "link", "show", "type", "vxlan"); err != nil || strings.Contains(string(out), "weft.vxlan") {
				return fmt.Errorf("VXLAN device in bgp mode: %v\n%s", err, out)
			}
			routes, err := bgpKernelRoutes(ctx, l, n.Name)
			if err != nil {
				return err
			}
			for _, w := range want {
				if !strings.Contains(routes, w) {
					return fmt.Errorf("no route %q in:\n%s", w, routes)
				}
			}
			return nil
		})
	}
	bgpMatrix(t, ctx, l, pods)

	// bgp → vxlan.
	fl = startFlood(t, ctx, l, pods[0], pods[1].IPs[0])
	time.Sleep(time.Second)
	if err := l.SetMode(ctx, "vxlan"); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	bgpWaitMode(t, ctx, l, "vxlan", 60*time.Second)
	t.Logf("bgp → vxlan: every agent ready with every peer over VXLAN %s after the ConfigMap update", time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	gapDown := fl.stopGap(t)
	t.Logf("bgp → vxlan connectivity gap: %s", gapDown)
	for _, n := range weft {
		eventually(t, 10*time.Second, n.Name+": BGP routes removed after the switch to vxlan", func() error {
			routes, err := bgpKernelRoutes(ctx, l, n.Name)
			if err == nil && strings.Contains(routes, "dev eth1") {
				err = fmt.Errorf("left:\n%s", routes)
			}
			return err
		})
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

// upBGP brings up a lab from a topology file for a bgp-mode test: it skips
// unless the Kubernetes binaries and weft-agent are built, and prints the
// agents' logs when the test fails.
func upBGP(t *testing.T, file, tag string) *lab.Lab {
	t.Helper()
	requireK8s(t)
	requireAgentBuilt(t)
	l := up(t, file, tag)
	bgpLogsOnFailure(t, l)
	return l
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
func bgpKernelRoutes(ctx context.Context, l *lab.Lab, node string) (string, error) {
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		out, err := l.Exec(ctx, node, "ip", "-o", fam, "route", "show", "proto", "87")
		if err != nil {
			return "", fmt.Errorf("%s: ip %s route show proto 87: %w", node, fam, err)
		}
		b.Write(out)
	}
	return b.String(), nil
}

// mustKernelRoutes is bgpKernelRoutes outside a poll: an error ends the test.
func mustKernelRoutes(t *testing.T, ctx context.Context, l *lab.Lab, node string) string {
	t.Helper()
	routes, err := bgpKernelRoutes(ctx, l, node)
	if err != nil {
		t.Fatal(err)
	}
	return routes
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

// frrBGP is the part of FRR's `show bgp <afi> unicast json` the tests read.
type frrBGP struct {
	Routes map[string][]struct {
		Valid    bool `json:"valid"`
		Stale    bool `json:"stale"`
		Nexthops []struct {
			IP    string `json:"ip"`
			Scope string `json:"scope"`
		} `json:"nexthops"`
		Peer struct {
			PeerID string `json:"peerId"`
		} `json:"peer"`
	} `json:"routes"`
}

// frrTable reads FRR's BGP table of afi on router. It is called inside
// polls, so a failed vtysh run is retried rather than ending the test.
func frrTable(ctx context.Context, l *lab.Lab, router, afi string) (frrBGP, error) {
	var tb frrBGP
	out, err := l.FRR(ctx, router, "show bgp "+afi+" unicast json")
	if err != nil {
		return tb, fmt.Errorf("%s: show bgp %s unicast json: %w", router, afi, err)
	}
	if err := json.Unmarshal(out, &tb); err != nil {
		return tb, fmt.Errorf("%s: parse show bgp %s unicast json: %w\n%s", router, afi, err, out)
	}
	return tb, nil
}

// frrTables reads FRR's IPv4 and IPv6 tables on router.
func frrTables(ctx context.Context, l *lab.Lab, router string) (v4, v6 frrBGP, err error) {
	if v4, err = frrTable(ctx, l, router, "ipv4"); err == nil {
		v6, err = frrTable(ctx, l, router, "ipv6")
	}
	return v4, v6, err
}

// frrWaitNextHops waits until FRR on router holds the IPv4 prefix with
// exactly the next hops in want (sorted) and returns how long it waited.
func frrWaitNextHops(t *testing.T, ctx context.Context, l *lab.Lab, router, prefix string, want []string) time.Duration {
	t.Helper()
	t0 := time.Now()
	eventually(t, 20*time.Second, router+" learns "+prefix+" from every node", func() error {
		tb, err := frrTable(ctx, l, router, "ipv4")
		if err != nil {
			return err
		}
		if got := tb.nextHops(prefix); !slices.Equal(got, want) {
			return fmt.Errorf("next hops %v, want %v", got, want)
		}
		return nil
	})
	return time.Since(t0).Round(time.Millisecond)
}

// frrWaitWithdrawn waits until FRR on router holds no path for the IPv4
// prefix and returns how long it waited.
func frrWaitWithdrawn(t *testing.T, ctx context.Context, l *lab.Lab, router, prefix string) time.Duration {
	t.Helper()
	t0 := time.Now()
	eventually(t, 20*time.Second, router+" withdraws "+prefix, func() error {
		tb, err := frrTable(ctx, l, router, "ipv4")
		if err != nil {
			return err
		}
		if got := tb.Routes[prefix]; len(got) > 0 {
			return fmt.Errorf("still %d paths", len(got))
		}
		return nil
	})
	return time.Since(t0).Round(time.Millisecond)
}

// frrNextHops are the valid global next hops FRR holds for prefix.
func (tb frrBGP) nextHops(prefix string) []string {
	var out []string
	for _, p := range tb.Routes[prefix] {
		if !p.Valid || p.Stale {
			continue
		}
		for _, nh := range p.Nexthops {
			if nh.Scope == "" || nh.Scope == "global" {
				out = append(out, nh.IP)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// frrWaitPodCIDRs waits until FRR on router holds each node's pod CIDRs in
// cidrs with that node as the only next hop; what names the wait.
func frrWaitPodCIDRs(t *testing.T, ctx context.Context, l *lab.Lab, router, what string, weft []lab.Node, cidrs map[string][]netip.Prefix) {
	t.Helper()
	eventually(t, 30*time.Second, what, func() error {
		v4, v6, err := frrTables(ctx, l, router)
		if err != nil {
			return err
		}
		var bad []string
		for _, n := range weft {
			for _, c := range cidrs[n.Name] {
				tb := v4
				if c.Addr().Is6() {
					tb = v6
				}
				want := bgpNodeAddr(n, c.Addr().Is4())
				if got := tb.nextHops(c.String()); !slices.Equal(got, []string{want}) {
					bad = append(bad, fmt.Sprintf("%s (%s): next hops %v, want [%s]", c, n.Name, got, want))
				}
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
}

// TestBGPFRR runs bgp-frr-rr with the nodes peering only with the FRR
// top-of-rack router (nodeMesh off): FRR holds every node's pod CIDRs via
// the node, pods reach each other across nodes (v4+v6) through routes FRR
// reflects, hijack attempts from FRR are refused and counted, a
// LoadBalancer Service's address is announced and withdrawn, and a kill -9
// of an agent under a 100 Hz ping keeps every route (graceful restart).
func TestBGPFRR(t *testing.T) {
	l := upBGP(t, topology("bgp-frr-rr.clab.yml"), "bf")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	const lbRange, lbIP = "172.30.200.0/24", "172.30.200.10"
	if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
		"asn": 64512, "nodeMesh": false,
		"peers":             []any{map[string]any{"address": "172.30.2.1"}},
		"advertiseServices": true,
		"externalRanges":    []any{lbRange},
		"gracefulRestart":   map[string]any{"enabled": true, "restartTime": "60s"},
	}}); err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "bgp", 90*time.Second)
	weftctl := bgpBuildWeftctl(t)

	// FRR holds every node's pod CIDRs, each via that node.
	cidrs := map[string][]netip.Prefix{}
	for _, n := range weft {
		cidrs[n.Name] = bgpPodCIDRs(t, ctx, l, n.Name)
	}
	frrWaitPodCIDRs(t, ctx, l, "tor", "FRR holds every pod CIDR via its node", weft, cidrs)
	for _, n := range weft {
		st := bgpStatus(t, ctx, weftctl, l, n.Name)
		if len(st.Peers) != 1 || st.Peers[0].Address.String() != "172.30.2.1" || !st.Peers[0].Up {
			t.Errorf("%s: peers %+v, want only 172.30.2.1 established", n.Name, st.Peers)
		}
	}
	pods := bgpPods(t, ctx, l, "f")
	bgpMatrix(t, ctx, l, pods)

	t.Run("hijacks", func(t *testing.T) {
		node2CIDR := cidrs["node2"][0]
		moreSpecific := netip.PrefixFrom(node2CIDR.Addr(), node2CIDR.Bits()+1).String()
		attempts := map[string]string{
			"10.99.0.0/16":       "outside-cluster",
			"0.0.0.0/0":          "default-route",
			moreSpecific:         "more-specific",
			"172.30.2.64/26":     "covers-underlay",
			"fd00:99::/48":       "outside-cluster",
			"fd00:30:2:0:1::/80": "covers-underlay",
		}
		before := map[string]bgpmode.Status{}
		for _, n := range weft {
			before[n.Name] = bgpStatus(t, ctx, weftctl, l, n.Name)
		}
		cmds := []string{"configure terminal", "router bgp 64512", "no bgp network import-check"}
		for p := range attempts {
			afi := "ipv4"
			if strings.Contains(p, ":") {
				afi = "ipv6"
			}
			cmds = append(cmds, "address-family "+afi+" unicast", "network "+p, "exit-address-family")
		}
		if out, err := l.FRR(ctx, "tor", cmds...); err != nil {
			t.Fatalf("vtysh: %v\n%s", err, out)
		}
		// Every node sees each attempt and refuses it with its reason.
		for _, n := range weft {
			eventually(t, 20*time.Second, n.Name+" refuses every hijack", func() error {
				st, err := bgpStatusErr(ctx, weftctl, l, n.Name)
				if err != nil {
					return err
				}
				var missing []string
				for p, reason := range attempts {
					if p == moreSpecific && n.Name == "node2" {
						reason = "own-cidr" // node2's own pod CIDR
					}
					if !slices.ContainsFunc(st.Rejected, func(r bgp.Rejected) bool { return r.Prefix.String() == p && string(r.Reason) == reason }) {
						missing = append(missing, p+" "+reason)
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("not rejected (yet): %v; rejected: %+v", missing, st.Rejected)
				}
				// weftctl bgp peers counts them against FRR.
				if got, was := st.Peers[0].Rejected, before[n.Name].Peers[0].Rejected; sum(got)-sum(was) != len(attempts) {
					return fmt.Errorf("rejected counts from FRR %v (before %v), want %d more; rejected now: %+v", got, was, len(attempts), st.Rejected)
				}
				return nil
			})
			st := bgpStatus(t, ctx, weftctl, l, n.Name)
			routes := mustKernelRoutes(t, ctx, l, n.Name)
			for p := range attempts {
				if strings.HasPrefix(routes, p+" ") || strings.Contains(routes, "\n"+p+" ") || (p == "0.0.0.0/0" && strings.Contains(routes, "default")) {
					t.Errorf("%s: hijacked prefix %s installed:\n%s", n.Name, p, routes)
				}
			}
			t.Logf("%s: rejected by reason %v", n.Name, st.RejectedByReason)
		}
		out, _ := exec.CommandContext(ctx, weftctl, "bgp", "peers", "-socket", l.AgentStatusSocket("node1")).CombinedOutput()
		t.Logf("node1: weftctl bgp peers:\n%s", out)
		bgpMatrix(t, ctx, l, pods) // nothing diverted
	})

	t.Run("loadbalancer", func(t *testing.T) {
		c, err := l.Client()
		if err != nil {
			t.Fatal(err)
		}
		svcs := c.CoreV1().Services("default")
		svc, err := svcs.Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "bgp-lb"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP}}
		if _, err := svcs.UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, n := range weft {
			want = append(want, bgpNodeAddr(n, true))
		}
		slices.Sort(want)
		took := frrWaitNextHops(t, ctx, l, "tor", lbIP+"/32", want)
		t.Logf("LoadBalancer %s announced by every node %s after its status was set", lbIP, took)
		for _, n := range weft {
			if routes := mustKernelRoutes(t, ctx, l, n.Name); strings.Contains(routes, lbIP) {
				t.Errorf("%s: installed the Service address it announces itself:\n%s", n.Name, routes)
			}
		}
		if err := svcs.Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		took = frrWaitWithdrawn(t, ctx, l, "tor", lbIP+"/32")
		t.Logf("LoadBalancer %s withdrawn %s after the Service was deleted", lbIP, took)
	})

	t.Run("graceful-restart", func(t *testing.T) {
		victim := "node2"
		mon, monOut := startMonitor(t, ctx, l, "node1", "ip", "-o", "monitor", "route")
		waitSubscribed(t, ctx, l, "node1", monOut)
		fl := startFlood(t, ctx, l, pods[0], pods[1].IPs[0])
		time.Sleep(time.Second)
		if err := l.AgentKill(victim); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // the peers see the session drop meanwhile
		t0 := time.Now()
		if err := l.AgentStart(ctx, victim); err != nil {
			t.Fatal(err)
		}
		var back time.Duration
		eventually(t, 10*time.Second, victim+" session back and its routes re-advertised", func() error {
			st, err := bgpStatusErr(ctx, weftctl, l, victim)
			if err != nil {
				return err
			}
			if len(st.Peers) != 1 || !st.Peers[0].Up {
				return fmt.Errorf("peers %+v", st.Peers)
			}
			v4, v6, err := frrTables(ctx, l, "tor")
			if err != nil {
				return err
			}
			for _, c := range cidrs[victim] {
				tb := v4
				if c.Addr().Is6() {
					tb = v6
				}
				if got := tb.nextHops(c.String()); len(got) != 1 {
					return fmt.Errorf("FRR: %s fresh next hops %v (stale ones not counted)", c, got)
				}
			}
			back = time.Since(t0)
			return nil
		})
		t.Logf("%s: agent restarted; session established and routes re-advertised (not stale on FRR) %s after the start", victim, back.Round(time.Millisecond))
		time.Sleep(time.Second)
		gap := fl.stopGap(t)
		if gap != 0 {
			t.Errorf("%s -> %s across the restart of %s's agent: %s gap, want no loss", pods[0].Name, pods[1].Name, victim, gap)
		}
		_ = mon.Process.Kill()
		_ = mon.Wait()
		for _, line := range strings.Split(monOut.String(), "\n") {
			for _, c := range cidrs[victim] {
				if strings.HasPrefix(strings.TrimSpace(line), "Deleted") && strings.Contains(line, c.String()) {
					t.Errorf("node1: route to %s's pods removed during its restart: %s", victim, line)
				}
			}
		}
		t.Logf("node1 route changes during the restart: %q", monOut.String())
	})

	t.Run("md5", func(t *testing.T) {
		c, err := l.Client()
		if err != nil {
			t.Fatal(err)
		}
		const pw, bad = "weft-md5-lab", "not-the-password"
		if _, err := c.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "weft-bgp-passwords"},
			Data:       map[string][]byte{"tor": []byte(pw)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// FRR expects the password from node1 and node2, another one from node3.
		if out, err := l.FRR(ctx, "tor", "configure terminal", "router bgp 64512",
			"neighbor 172.30.2.11 password "+pw, "neighbor 172.30.2.12 password "+pw,
			"neighbor 172.30.2.13 password "+bad); err != nil {
			t.Fatalf("vtysh: %v\n%s", err, out)
		}
		since := time.Now()
		if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
			"asn": 64512, "nodeMesh": false,
			"peers": []any{map[string]any{"address": "172.30.2.1",
				"passwordSecretRef": map[string]any{"name": "weft-bgp-passwords", "key": "tor"}}},
			"gracefulRestart": map[string]any{"enabled": true, "restartTime": "60s"},
		}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 40*time.Second, "node1 and node2 establish with the password", func() error {
			for _, n := range []string{"node1", "node2"} {
				st, err := bgpStatusErr(ctx, weftctl, l, n)
				if err != nil {
					return err
				}
				if len(st.Peers) != 1 || !st.Peers[0].Up {
					return fmt.Errorf("%s: %+v", n, st.Peers)
				}
			}
			return nil
		})
		// node3 (wrong password on FRR's side) never does; its agent says so
		// with an Event on its Node.
		deadline := time.Now().Add(45 * time.Second)
		var event string
		for time.Now().Before(deadline) && event == "" {
			st := bgpStatus(t, ctx, weftctl, l, "node3")
			if len(st.Peers) == 1 && st.Peers[0].Up {
				t.Fatalf("node3 established with FRR despite the wrong password: %+v", st.Peers)
			}
			evs, err := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=node3,reason=BGPSessionDown"})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs.Items {
				if e.LastTimestamp.After(since) && strings.Contains(e.Message, "not established") {
					event = e.Message
				}
			}
			time.Sleep(time.Second)
		}
		if event == "" {
			t.Errorf("node3: no BGPSessionDown Event saying the session is not established within 45s")
		}
		t.Logf("node3 Event: %s", event)
		out, _ := exec.CommandContext(ctx, weftctl, "bgp", "peers", "-socket", l.AgentStatusSocket("node3")).CombinedOutput()
		t.Logf("node3: weftctl bgp peers:\n%s", out)
	})
}

func sum(m map[bgp.Reason]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestBGPBIRD runs bgp-bird with the nodes peering only with the BIRD 2
// route reflector: BIRD holds every node's pod CIDR via that node and pods
// reach each other across nodes through the routes it reflects.
func TestBGPBIRD(t *testing.T) {
	l := upBGP(t, topology("bgp-bird.clab.yml"), "bb")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
		"asn": 64512, "nodeMesh": false, "peers": []any{map[string]any{"address": "172.30.3.2"}},
	}}); err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "bgp", 90*time.Second)
	eventually(t, 30*time.Second, "BIRD holds every pod CIDR via its node", func() error {
		out, err := l.BIRD(ctx, "rr", "show", "route", "all")
		if err != nil {
			return err
		}
		for _, n := range weft {
			cidrs, err := l.PodCIDRs(ctx, n.Name)
			if err != nil {
				return err
			}
			for _, c := range cidrs {
				want := fmt.Sprintf("BGP.next_hop: %s", bgpNodeAddr(n, c.Addr().Is4()))
				i := strings.Index(string(out), c.String())
				if i < 0 || !strings.Contains(string(out[i:]), want) {
					return fmt.Errorf("no %s with %q in:\n%s", c, want, out)
				}
				// The entry's own attributes: up to the next prefix line.
				entry := string(out[i:])
				if j := strings.Index(entry[1:], "\n10."); j > 0 {
					entry = entry[:j+1]
				}
				if !strings.Contains(entry, want) {
					return fmt.Errorf("%s: entry lacks %q:\n%s", c, want, entry)
				}
			}
		}
		return nil
	})
	weftctl := bgpBuildWeftctl(t)
	for _, n := range weft {
		st := bgpStatus(t, ctx, weftctl, l, n.Name)
		if len(st.Peers) != 1 || !st.Peers[0].Up || st.Peers[0].Installed != len(weft)-1 {
			t.Errorf("%s: peers %+v, want BIRD established with %d routes installed", n.Name, st.Peers, len(weft)-1)
		}
	}
	bgpMatrix(t, ctx, l, bgpPods(t, ctx, l, "b"))
}
