//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/agent/status"
	"weft.dev/weft/test/lab"
)

// TestVXLAN proves weft-agent's VXLAN mode on vxlan-3node (dual-stack, IPv4
// underlay) with two pods per node and the agents running. The subtests
// share one lab and run in order; later ones change the cluster (agent
// restarts, apiserver outage, bad configs, a node deleted last).
func TestVXLAN(t *testing.T) {
	requireK8s(t)
	requireAgent(t)
	l := up(t, topology("vxlan-3node.clab.yml"), "vxl")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	nodes := names(l.Topo.NodesOf(lab.KindWeft))
	for _, n := range nodes {
		waitReady(t, ctx, l, n, 60*time.Second)
	}
	var pods []lab.Pod
	for _, n := range nodes {
		for _, p := range []string{"a", "b"} {
			pod, err := l.PodAdd(ctx, n, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(pod.IPs) != 2 {
				t.Fatalf("pod %s/%s: IPs %v, want one IPv4 and one IPv6", n, p, pod.IPs)
			}
			pods = append(pods, pod)
		}
	}
	st := agentStatus(t, ctx, l, nodes[0])
	podMTU := st.PodMTU

	t.Run("matrix", func(t *testing.T) {
		// Every pod to every other pod, both families, same node and across.
		var checks []pingCheck
		for _, src := range pods {
			for _, dst := range pods {
				if src.NS == dst.NS {
					continue
				}
				for _, ip := range dst.IPs {
					checks = append(checks, pingCheck{from: podName(src), to: ip, what: podName(dst)})
				}
			}
			// pod → node and node → pod, every node, both families.
			for _, n := range l.Topo.NodesOf(lab.KindWeft) {
				for _, ip := range n.NodeAddrs() {
					checks = append(checks, pingCheck{from: podName(src), to: ip, what: "node " + n.Name})
				}
				for _, ip := range src.IPs {
					checks = append(checks, pingCheck{from: n.Name, to: ip, what: "pod " + podName(src)})
				}
			}
		}
		failed := pingAll(ctx, l, checks)
		for _, f := range failed {
			t.Error(f)
		}
		t.Logf("%d pings, %d failed", len(checks), len(failed))

		// pod → outside host: the outside host sees the node's address.
		out, _ := l.Topo.Node("outside")
		ln, err := l.Listen("outside", "tcp", ":7007")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go echoPeer(ln)
		for _, p := range pods {
			node, _ := l.Topo.Node(p.Node)
			for _, dst := range out.NodeAddrs() {
				want, _ := sameFamily(node.NodeAddrs(), dst)
				got, err := l.Exec(ctx, podName(p), "timeout", "5", "bash", "-c",
					fmt.Sprintf("exec 3<>/dev/tcp/%s/7007 && cat <&3", dst))
				if err != nil {
					t.Errorf("%s -> outside %s: %v", podName(p), dst, err)
					continue
				}
				if strings.TrimSpace(string(got)) != want.String() {
					t.Errorf("%s -> outside %s: outside saw %q, want the node's address %s", podName(p), dst, got, want)
				}
			}
		}
	})

	t.Run("mtu", func(t *testing.T) {
		if podMTU != 1450 {
			t.Errorf("pod MTU %d, want 1450 (underlay 1500 - 50 for VXLAN over IPv4)", podMTU)
		}
		src, dst := pods[0], pods[2] // node1/a → node2/a
		for _, ip := range dst.IPs {
			hdr := 28
			if ip.Is6() {
				hdr = 48
			}
			max := podMTU - hdr
			if _, err := l.Exec(ctx, podName(src), "ping", "-n", "-c1", "-W2", "-M", "do", "-s", strconv.Itoa(max), ip.String()); err != nil {
				t.Errorf("%s -> %s: %d-byte DF packet (payload %d) lost: %v", podName(src), ip, podMTU, max, err)
			}
			out, err := l.Exec(ctx, podName(src), "ping", "-n", "-c1", "-W2", "-M", "do", "-s", strconv.Itoa(max+1), ip.String())
			if err == nil {
				t.Errorf("%s -> %s: %d-byte DF packet passed, pod MTU is %d", podName(src), ip, podMTU+1, podMTU)
			} else if !strings.Contains(string(out), "message too long") {
				t.Errorf("%s -> %s: %d-byte DF packet failed, but not for its size: %s", podName(src), ip, podMTU+1, out)
			}
		}
	})

	t.Run("weftctl status", func(t *testing.T) {
		weftctl := buildWeftctl(t)
		for _, n := range nodes {
			out, err := l.Exec(ctx, n, weftctl, "status", "-socket", l.AgentStatusSocket(n))
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			text := string(out)
			cidrs, err := l.PodCIDRs(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{`Mode:\s+vxlan\n`, `Ready:\s+yes\n`, fmt.Sprintf(`Pod MTU:\s+%d\n`, podMTU),
				`Pod CIDRs:\s+` + regexp.QuoteMeta(fmt.Sprint(cidrs)) + `\n`} {
				if !regexp.MustCompile(want).MatchString(text) {
					t.Errorf("%s: weftctl status does not match %q:\n%s", n, want, text)
				}
			}
			for _, p := range cidrs {
				if !regexp.MustCompile(`IPAM ` + regexp.QuoteMeta(p.String()) + `:\s+2/\d+ used`).MatchString(text) {
					t.Errorf("%s: weftctl status does not show 2 addresses used in %s:\n%s", n, p, text)
				}
			}
			peers := map[string]string{}
			sc := bufio.NewScanner(strings.NewReader(text[strings.Index(text, "Peers"):]))
			for sc.Scan() {
				if f := strings.Fields(sc.Text()); len(f) == 5 && f[0] != "NODE" {
					peers[f[0]] = f[4]
				}
			}
			for _, o := range nodes {
				if o != n && peers[o] != "yes" {
					t.Errorf("%s: peer %s programmed %q, want yes:\n%s", n, o, peers[o], text)
				}
			}
			if len(peers) != len(nodes)-1 {
				t.Errorf("%s: %d peers listed, want %d:\n%s", n, len(peers), len(nodes)-1, text)
			}
			if n == nodes[0] {
				t.Logf("weftctl status on %s:\n%s", n, text)
			}
		}
	})

	t.Run("node status, annotations, conflist", func(t *testing.T) {
		for _, n := range nodes {
			node, err := c.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cond := "missing"
			for _, cd := range node.Status.Conditions {
				if cd.Type == corev1.NodeNetworkUnavailable {
					cond = string(cd.Status) + " (" + cd.Reason + ")"
				}
			}
			if cond != "False (WeftReady)" {
				t.Errorf("%s: NetworkUnavailable %s, want False (WeftReady)", n, cond)
			}
			mac := node.Annotations["weft.dev/vtep-mac"]
			dev, err := l.Exec(ctx, n, "cat", "/sys/class/net/weft.vxlan/address")
			if err != nil {
				t.Fatal(err)
			}
			if mac == "" || mac != strings.TrimSpace(string(dev)) {
				t.Errorf("%s: weft.dev/vtep-mac %q, weft.vxlan has %s", n, mac, dev)
			}
			data, err := os.ReadFile(filepath.Join(l.NodeDir(n), "etc", "cni", "net.d", "10-weft.conflist"))
			if err != nil {
				t.Fatalf("%s: conflist: %v", n, err)
			}
			var list struct {
				Name    string           `json:"name"`
				Plugins []map[string]any `json:"plugins"`
			}
			if err := json.Unmarshal(data, &list); err != nil {
				t.Fatalf("%s: conflist: %v\n%s", n, err, data)
			}
			if list.Name != "weft" || len(list.Plugins) == 0 || list.Plugins[0]["type"] != "weft" || list.Plugins[0]["mtu"] != float64(podMTU) {
				t.Errorf("%s: conflist is not weft's with mtu %d:\n%s", n, podMTU, data)
			}
		}
	})

	t.Run("vxlan only from nodes", func(t *testing.T) {
		target := nodes[0]
		tn, _ := l.Topo.Node(target)
		for _, from := range []string{"outside", nodes[1]} {
			fn, _ := l.Topo.Node(from)
			for _, dst := range tn.NodeAddrs() {
				src, _ := sameFamily(fn.NodeAddrs(), dst)
				// VXLAN rides the IPv4 underlay: only IPv4 node addresses are
				// VTEP sources, anything else to the port is dropped.
				wantAccept := from != "outside" && dst.Is4()
				cmd := "iptables"
				if dst.Is6() {
					cmd = "ip6tables"
				}
				before := inputCounters(t, ctx, l, target, cmd)
				if _, err := l.Exec(ctx, from, "bash", "-c", fmt.Sprintf("echo weft-e2e > /dev/udp/%s/4789", dst)); err != nil {
					t.Fatal(err)
				}
				verdict, other := "DROP", "ACCEPT"
				if wantAccept {
					verdict, other = other, verdict
				}
				eventually(t, 5*time.Second, fmt.Sprintf("%s (%s) -> %s:4789 counted by WEFT-INPUT %s", from, src, dst, verdict), func() error {
					after := inputCounters(t, ctx, l, target, cmd)
					if after[verdict] <= before[verdict] {
						return fmt.Errorf("%s counter %d, was %d", verdict, after[verdict], before[verdict])
					}
					return nil
				})
				if after := inputCounters(t, ctx, l, target, cmd); !wantAccept && after[other] != before[other] {
					t.Errorf("%s -> %s: %s counter moved %d -> %d", from, dst, other, before[other], after[other])
				}
			}
		}
	})

	t.Run("agent kill -9 and restart under 100 Hz ping", func(t *testing.T) {
		node := nodes[0]
		src, dst := pods[0], pods[2] // node1/a → node2/a
		mon := monitor(t, ctx, l, node)
		pings := []*flood{startFlood(t, ctx, l, src, dst.IPs[0]), startFlood(t, ctx, l, src, dst.IPs[1])}
		time.Sleep(time.Second) // traffic flowing before the crash
		before := agentStatus(t, ctx, l, node).LastReconcile
		if err := l.AgentKill(node); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		time.Sleep(time.Second) // down for a second, as a crash loop would be
		if err := l.AgentStart(ctx, node); err != nil {
			t.Fatal(err)
		}
		waitReconciled(t, ctx, l, node, before)
		t.Logf("agent on %s killed and reprogrammed in %s", node, time.Since(t0).Round(time.Millisecond))
		// And a graceful restart in the same flood.
		before = agentStatus(t, ctx, l, node).LastReconcile
		if err := l.AgentRestart(ctx, node); err != nil {
			t.Fatal(err)
		}
		waitReconciled(t, ctx, l, node, before)
		time.Sleep(time.Second) // keep flooding past the new agent's first passes
		for _, f := range pings {
			f.stopAndCheck(t)
		}
		mon.stopAndCheck(t)
	})

	// Before the outage: after it, an agent's ConfigMap informer may still
	// be in client-go's reconnect backoff (up to a minute), and this checks
	// how every agent takes a config change, not how fast it reconnects.
	t.Run("bad config kept out", func(t *testing.T) {
		good, err := l.Config(ctx)
		if err != nil {
			t.Fatal(err)
		}
		vx, _ := good["vxlan"].(map[string]any)
		badVXLAN := map[string]any{}
		for k, v := range vx {
			badVXLAN[k] = v
		}
		badVXLAN["vni"] = 0
		for _, bad := range []struct {
			set   map[string]any
			field string
		}{
			{map[string]any{"vxlan": badVXLAN}, "vxlan.vni"},
			{map[string]any{"mode": "foo"}, "mode"},
		} {
			before := map[string]string{}
			for _, n := range nodes {
				before[n] = datapathDump(t, ctx, l, n)
			}
			since := time.Now().Add(-time.Second).Truncate(time.Second)
			if err := l.SetConfig(ctx, bad.set); err != nil {
				t.Fatal(err)
			}
			eventually(t, 15*time.Second, "event naming "+bad.field, func() error {
				return findEvent(ctx, c, since, bad.field)
			})
			for _, n := range nodes {
				eventually(t, 10*time.Second, n+" /readyz not ready with "+bad.field+" bad", func() error {
					if code := httpCode(ctx, l, n, "/readyz"); code != "503" {
						return fmt.Errorf("/readyz %s", code)
					}
					return nil
				})
				if got := datapathDump(t, ctx, l, n); got != before[n] {
					t.Errorf("%s: datapath changed with %s bad:\nbefore:\n%s\nafter:\n%s", n, bad.field, before[n], got)
				}
			}
			for _, ip := range pods[2].IPs {
				if err := l.Ping(ctx, podName(pods[0]), ip); err != nil {
					t.Errorf("with %s bad: %s -> %s: %v", bad.field, podName(pods[0]), ip, err)
				}
			}
			// The fix makes every agent ready again.
			fix := map[string]any{}
			for k := range bad.set {
				fix[k] = good[k]
			}
			if err := l.SetConfig(ctx, fix); err != nil {
				t.Fatal(err)
			}
			for _, n := range nodes {
				eventually(t, 10*time.Second, n+" ready after fixing "+bad.field, func() error {
					if code := httpCode(ctx, l, n, "/readyz"); code != "200" {
						return fmt.Errorf("/readyz %s", code)
					}
					return nil
				})
			}
		}
	})

	t.Run("apiserver outage", func(t *testing.T) {
		src, dst := pods[0], pods[4] // node1/a → node3/a
		mon := monitor(t, ctx, l, nodes[0])
		f := startFlood(t, ctx, l, src, dst.IPs[0])
		if err := l.APIServerStop(); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		// The outage itself: agents keep the datapath without the apiserver.
		const outage = 30 * time.Second
		time.Sleep(outage)
		for _, n := range nodes {
			if code := httpCode(ctx, l, n, "/healthz"); code != "200" {
				t.Errorf("%s: /healthz %s during the outage, want 200", n, code)
			}
		}
		if err := l.APIServerStart(ctx); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		t.Logf("apiserver down for %s", back.Sub(t0).Round(time.Millisecond))
		f.stopAndCheck(t)
		mon.stopAndCheck(t)

		// A node registered after the apiserver returns is programmed everywhere.
		const extra = "node9"
		mac := "02:77:65:66:74:09"
		if _, err := c.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: extra, Annotations: map[string]string{"weft.dev/vtep-mac": mac, "weft.dev/node-ip": "172.30.1.99"},
		}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		defer func() { _ = c.CoreV1().Nodes().Delete(context.WithoutCancel(ctx), extra, metav1.DeleteOptions{}) }()
		// Its address, as its kubelet reports it: peers take a node's
		// address only from status.addresses (weft.dev/node-ip only
		// chooses among them).
		addrs := []byte(`{"status":{"addresses":[{"type":"InternalIP","address":"172.30.1.99"}]}}`)
		if _, err := c.CoreV1().Nodes().Patch(ctx, extra, types.StrategicMergePatchType, addrs, metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		// The controller manager's informers are in the same backoff: the
		// pod CIDR itself may take that long.
		cidrs, err := l.WaitPodCIDRs(ctx, extra, 90*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s given pod CIDRs %v by the controller manager %s after it was created", extra, cidrs, time.Since(t1).Round(time.Millisecond))
		want := peerEntries(cidrs, mac, "172.30.1.99")
		// client-go's informers (the agents' and the controller manager's)
		// come back after their reconnect backoff, which grows to
		// [30 s, 60 s) during a 30 s outage.
		for _, n := range nodes {
			eventually(t, 90*time.Second, fmt.Sprintf("%s programs %s", n, extra), func() error {
				return hasEntries(ctx, l, n, want, true)
			})
		}
		t.Logf("%s (%v) programmed on %d nodes %s after it was created (%s after the apiserver was ready)",
			extra, cidrs, len(nodes), time.Since(t1).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
		// Deleting it removes it everywhere.
		deleteNode(t, ctx, c, l, extra, want, nodes)
	})

	t.Run("node deleted", func(t *testing.T) {
		gone := nodes[2]
		node, err := c.CoreV1().Nodes().Get(ctx, gone, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cidrs, _ := l.PodCIDRs(ctx, gone)
		gn, _ := l.Topo.Node(gone)
		ip, _ := sameFamily(gn.NodeAddrs(), netip.IPv4Unspecified())
		want := peerEntries(cidrs, node.Annotations["weft.dev/vtep-mac"], ip.String())
		deleteNode(t, ctx, c, l, gone, want, slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == gone }))
	})
}

// requireAgent skips unless weft-agent is built.
func requireAgent(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(binDir, "weft-agent")); err != nil {
		t.Skipf("skipped: weft-agent did not build for this run (see the note at the start of the output): %v", err)
	}
}

var weftctlOnce = sync.OnceValues(func() (string, error) {
	cmd := exec.Command("go", "build", "-o", binDir, "./cmd/weftctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build weftctl: %w\n%s", err, out)
	}
	return filepath.Join(binDir, "weftctl"), nil
})

func buildWeftctl(t *testing.T) string {
	t.Helper()
	p, err := weftctlOnce()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func names(ns []lab.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

func podName(p lab.Pod) string { return p.Node + "/" + p.Name }

// sameFamily is the first address of as in the family of like.
func sameFamily(as []netip.Addr, like netip.Addr) (netip.Addr, bool) {
	for _, a := range as {
		if a.Is4() == like.Is4() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

type pingCheck struct {
	from string
	to   netip.Addr
	what string
}

// pingAll runs the checks, a few at a time, and returns the failures.
func pingAll(ctx context.Context, l *lab.Lab, checks []pingCheck) []string {
	var mu sync.Mutex
	var failed []string
	var g errgroup.Group
	g.SetLimit(6)
	for _, c := range checks {
		g.Go(func() error {
			// Three tries: a first packet may wait for neighbour resolution.
			var err error
			for range 3 {
				if _, err = l.Exec(ctx, c.from, "ping", "-n", "-q", "-c1", "-W1", c.to.String()); err == nil {
					return nil
				}
			}
			mu.Lock()
			failed = append(failed, fmt.Sprintf("%s -> %s %s: %v", c.from, c.what, c.to, err))
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	slices.Sort(failed)
	return failed
}

// echoPeer answers every connection with the peer's address.
func echoPeer(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		ap, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
		fmt.Fprintln(conn, ap.Addr().Unmap())
		conn.Close()
	}
}

// agentStatus reads a node's agent status from its socket.
func agentStatus(t *testing.T, ctx context.Context, l *lab.Lab, node string) status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := status.Get(ctx, l.AgentStatusSocket(node))
	if err != nil {
		t.Fatalf("%s: %v", node, err)
	}
	return st
}

// httpCode is the status code of the agent's HTTP path, asked inside the
// node's namespace; "000" when nothing answers.
func httpCode(ctx context.Context, l *lab.Lab, node, path string) string {
	out, _ := l.Exec(ctx, node, "curl", "-s", "-o", "/dev/null", "-m", "3", "-w", "%{http_code}",
		"http://"+lab.AgentHTTPAddr+path)
	return strings.TrimSpace(string(out))
}

func waitReady(t *testing.T, ctx context.Context, l *lab.Lab, node string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, node+" agent ready", func() error {
		if code := httpCode(ctx, l, node, "/readyz"); code != "200" {
			return fmt.Errorf("/readyz %s (log: %s)", code, filepath.Join(l.NodeDir(node), "agent.log"))
		}
		return nil
	})
}

// waitReconciled waits until a node's (new) agent finished a good pass
// after the time given.
func waitReconciled(t *testing.T, ctx context.Context, l *lab.Lab, node string, after time.Time) {
	t.Helper()
	eventually(t, 30*time.Second, node+" agent reconciled again", func() error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := status.Get(ctx, l.AgentStatusSocket(node))
		if err != nil {
			return err
		}
		if !st.Ready || !st.LastReconcile.After(after) {
			return fmt.Errorf("ready=%t last reconcile %s (not after %s): %v", st.Ready, st.LastReconcile, after, st.NotReady)
		}
		return nil
	})
}

// flood is a ~100 Hz ping running in the background.
type flood struct {
	cmd      *exec.Cmd
	out      strings.Builder
	from, to string
	start    time.Time
}

func startFlood(t *testing.T, ctx context.Context, l *lab.Lab, src lab.Pod, dst netip.Addr) *flood {
	t.Helper()
	f := &flood{from: podName(src), to: dst.String()}
	// -i 0.01 sends only about 60 a second on this kernel (timer
	// granularity, also on loopback); 0.007 gives at least 100.
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

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// stop interrupts the ping (it prints its summary) and returns the packets
// it sent and got back and how long it ran; ok is false without a summary.
func (f *flood) stop() (sent, got int, took time.Duration, ok bool) {
	// ip netns exec execs ping itself: the pid is ping's.
	_ = f.cmd.Process.Signal(syscall.SIGINT)
	_ = f.cmd.Wait()
	took = time.Since(f.start)
	m := pingSummary.FindStringSubmatch(f.out.String())
	if m == nil {
		return 0, 0, took, false
	}
	sent, _ = strconv.Atoi(m[1])
	got, _ = strconv.Atoi(m[2])
	return sent, got, took, true
}

// stopAndCheck stops the ping and fails the test unless every packet came
// back.
func (f *flood) stopAndCheck(t *testing.T) {
	t.Helper()
	sent, got, took, ok := f.stop()
	if !ok {
		t.Errorf("%s -> %s: no ping summary:\n%s", f.from, f.to, f.out.String())
		return
	}
	t.Logf("%s -> %s, ping -i 0.007 for %s: %d sent (%.0f/s), %d received, %d lost", f.from, f.to,
		took.Round(time.Millisecond), sent, float64(sent)/took.Seconds(), got, sent-got)
	if sent < 100 || got != sent {
		t.Errorf("%s -> %s: %d sent, %d received (want no loss):\n%s", f.from, f.to, sent, got, f.out.String())
	}
}

// stopGap stops the ping and returns the gap it saw: packets lost times
// the mean interval between packets.
func (f *flood) stopGap(t *testing.T) time.Duration {
	t.Helper()
	sent, got, took, ok := f.stop()
	if !ok {
		t.Fatalf("%s -> %s: no ping summary:\n%s", f.from, f.to, f.out.String())
	}
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

// routeMonitor records netlink route, neighbour and FDB changes in a node.
type routeMonitor struct {
	cmds []*exec.Cmd
	outs []*syncBuffer
	node string
}

func monitor(t *testing.T, ctx context.Context, l *lab.Lab, node string) *routeMonitor {
	t.Helper()
	m := &routeMonitor{node: node}
	for _, argv := range [][]string{{"ip", "-o", "monitor", "route", "neigh"}, {"bridge", "-o", "monitor", "fdb"}} {
		cmd, out := startMonitor(t, ctx, l, node, argv...)
		m.cmds, m.outs = append(m.cmds, cmd), append(m.outs, out)
	}
	waitSubscribed(t, ctx, l, node, m.outs...)
	return m
}

// syncBuffer collects a command's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startMonitor runs a netlink monitor (ip monitor, bridge monitor) in node,
// killed at the end of the test.
func startMonitor(t *testing.T, ctx context.Context, l *lab.Lab, node string, argv ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd, err := l.Command(ctx, node, argv...)
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, out
}

// Markers waitSubscribed makes in a node: a route in a table nothing else
// uses and an FDB entry on a veth pair of its own; none is weft's.
const (
	markRoute = "198.51.100.254"
	markTable = "4242"
	markMAC   = "02:00:00:00:42:42"
	markLink  = "weftmark0"
)

// waitSubscribed returns once every monitor writing to outs is subscribed:
// it adds a marker route and FDB entry in node until each output shows one
// of them (an "ip monitor route" sees the route, a "bridge monitor fdb" the
// entry), then removes them. A monitor that has not subscribed yet misses a
// marker, so the markers are made again until all have seen one.
func waitSubscribed(t *testing.T, ctx context.Context, l *lab.Lab, node string, outs ...*syncBuffer) {
	t.Helper()
	cleanup := func() {
		_, _ = l.Exec(ctx, node, "ip", "link", "del", markLink)
		_, _ = l.Exec(ctx, node, "ip", "route", "del", "unreachable", markRoute+"/32", "table", markTable)
	}
	defer cleanup()
	eventually(t, 10*time.Second, node+": netlink monitors subscribed", func() error {
		cleanup()
		for _, argv := range [][]string{
			{"ip", "link", "add", markLink, "type", "veth", "peer", "name", markLink + "p"},
			{"bridge", "fdb", "add", markMAC, "dev", markLink},
			{"ip", "route", "add", "unreachable", markRoute + "/32", "table", markTable},
		} {
			if out, err := l.Exec(ctx, node, argv...); err != nil {
				return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
			}
		}
		time.Sleep(20 * time.Millisecond) // the monitors print what they got
		for i, out := range outs {
			if s := out.String(); !strings.Contains(s, markRoute) && !strings.Contains(s, markMAC) {
				return fmt.Errorf("monitor %d has not seen a marker yet", i)
			}
		}
		return nil
	})
}

// stopAndCheck fails the test if weft's routes, neighbours or FDB entries on
// the VXLAN device were deleted (or replaced) meanwhile.
func (m *routeMonitor) stopAndCheck(t *testing.T) {
	t.Helper()
	for i, cmd := range m.cmds {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for _, line := range strings.Split(m.outs[i].String(), "\n") {
			// The kernel's own multicast neighbours (IPv6 MLD, lladdr
			// 33:33:..., NOARP) come and go; weft writes only unicast
			// PERMANENT neighbours.
			kernelMcast := strings.Contains(line, "lladdr 33:33:") || strings.Contains(line, "lladdr 01:00:5e:")
			if strings.Contains(line, "weft.vxlan") && strings.HasPrefix(strings.TrimSpace(line), "Deleted") && !kernelMcast {
				t.Errorf("%s: weft entry deleted meanwhile: %s", m.node, line)
			}
		}
	}
}

// inputCounters are the packet counters of WEFT-INPUT's rules by target.
func inputCounters(t *testing.T, ctx context.Context, l *lab.Lab, node, cmd string) map[string]int {
	t.Helper()
	out, err := l.Exec(ctx, node, cmd, "-w", "-L", "WEFT-INPUT", "-v", "-n", "-x")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && (f[2] == "ACCEPT" || f[2] == "DROP") {
			n, _ := strconv.Atoi(f[0])
			got[f[2]] += n
		}
	}
	if _, ok := got["DROP"]; !ok {
		t.Fatalf("%s: %s WEFT-INPUT has no DROP rule:\n%s", node, cmd, out)
	}
	return got
}

// entry is one thing a peer leaves in a node's kernel, with the command that
// lists it.
type entry struct {
	argv []string
	want string // a line of the output contains it
}

// peerEntries are a peer's neighbours (VTEP IP → MAC), FDB entry (MAC →
// node IP) and routes (pod CIDR via VTEP IP), per family.
func peerEntries(cidrs []netip.Prefix, mac, nodeIP string) []entry {
	out := []entry{{[]string{"bridge", "fdb", "show", "dev", "weft.vxlan"}, mac + " dst " + nodeIP}}
	for _, p := range cidrs {
		fam := "-4"
		if p.Addr().Is6() {
			fam = "-6"
		}
		vtep := p.Masked().Addr()
		out = append(out,
			entry{[]string{"ip", fam, "neigh", "show", "dev", "weft.vxlan"}, vtep.String() + " lladdr " + mac},
			entry{[]string{"ip", fam, "route", "show", "proto", "87"}, p.Masked().String() + " via " + vtep.String()})
	}
	return out
}

// hasEntries checks that all (present) or none (!present) of the entries
// are in a node's kernel.
func hasEntries(ctx context.Context, l *lab.Lab, node string, es []entry, present bool) error {
	for _, e := range es {
		out, err := l.Exec(ctx, node, e.argv...)
		if err != nil {
			return err
		}
		if strings.Contains(string(out), e.want) != present {
			return fmt.Errorf("%s: `%s` has %q: %t", node, strings.Join(e.argv, " "), e.want, !present)
		}
	}
	return nil
}

// deleteNode deletes a Node object and measures how long until its entries
// are gone from every node in on (polled every 50 ms); more than 2 s fails.
func deleteNode(t *testing.T, ctx context.Context, c kubernetes.Interface, l *lab.Lab, name string, want []entry, on []string) {
	t.Helper()
	for _, n := range on {
		if err := hasEntries(ctx, l, n, want, true); err != nil {
			t.Fatalf("before deleting %s: %v", name, err)
		}
	}
	if err := c.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var g errgroup.Group
	took := make([]time.Duration, len(on))
	for i, n := range on {
		g.Go(func() error {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				err := hasEntries(ctx, l, n, want, false)
				if err == nil {
					took[i] = time.Since(t0)
					return nil
				}
				if time.Since(t0) > 10*time.Second {
					return fmt.Errorf("%s still there after 10s: %w", name, err)
				}
				<-tick.C
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	worst := slices.Max(took)
	t.Logf("%s deleted: its neighbours, FDB entry and routes gone on %v after %v (worst %s)", name, on, took, worst.Round(time.Millisecond))
	if worst > 2*time.Second {
		t.Errorf("%s's entries took %s to go, want at most 2s", name, worst)
	}
}

// datapathDump is what weft programmed in a node: the VXLAN device's VNI,
// port and MTU, its neighbours and FDB entries, weft's routes, the bridge.
func datapathDump(t *testing.T, ctx context.Context, l *lab.Lab, node string) string {
	t.Helper()
	var b strings.Builder
	for _, argv := range [][]string{
		{"ip", "-d", "-o", "link", "show", "weft.vxlan"},
		{"ip", "-o", "link", "show", "weft0"},
		{"ip", "neigh", "show", "dev", "weft.vxlan"},
		{"bridge", "fdb", "show", "dev", "weft.vxlan"},
		{"ip", "-4", "route", "show", "proto", "87"},
		{"ip", "-6", "route", "show", "proto", "87"},
	} {
		out, err := l.Exec(ctx, node, argv...)
		if err != nil {
			t.Fatal(err)
		}
		// Drop counters and state that change on their own.
		s := regexp.MustCompile(`state \S+|qdisc \S+`).ReplaceAllString(string(out), "")
		lines := strings.Split(strings.TrimSpace(s), "\n")
		slices.Sort(lines)
		fmt.Fprintf(&b, "# %s\n%s\n", strings.Join(argv, " "), strings.Join(lines, "\n"))
	}
	return b.String()
}

// findEvent looks for a weft-agent Warning event since t whose message names
// field.
func findEvent(ctx context.Context, c kubernetes.Interface, since time.Time, field string) error {
	evs, err := c.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var seen []string
	for _, e := range evs.Items {
		if e.Source.Component != "weft-agent" || e.Type != corev1.EventTypeWarning {
			continue
		}
		last := e.LastTimestamp.Time
		if last.IsZero() {
			last = e.EventTime.Time
		}
		if last.Before(since) {
			continue
		}
		seen = append(seen, e.Reason+": "+e.Message)
		if strings.Contains(e.Message, field) {
			return nil
		}
	}
	return errors.New("no weft-agent warning naming " + field + "; recent: " + strings.Join(seen, " | "))
}
