//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"weft.dev/weft/test/lab"
)

// requireKubeProxy skips unless kube-proxy is built.
func requireKubeProxy(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(k8sBin, "kube-proxy")); err != nil {
		t.Skipf("skipped: no kube-proxy in %s: run `make k8s`", k8sBin)
	}
}

// TestServicesBGPMesh runs Services with a real kube-proxy (iptables and
// nftables) on vxlan-3node switched to bgp mode (iBGP full mesh, no VXLAN
// device): ClusterIP load balancing across nodes keeps the client address,
// hairpin, NodePort from the outside host, pod → outside masqueraded by
// weft, and agent restarts under 20 requests/s lose no request.
func TestServicesBGPMesh(t *testing.T) {
	requireKubeProxy(t)
	l := upBGP(t, topology("vxlan-3node.clab.yml"), "sbm")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if err := l.SetMode(ctx, "bgp"); err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "bgp", 90*time.Second)
	nodes := []string{"node1", "node2", "node3"}
	for _, n := range nodes {
		if out, err := l.Exec(ctx, n, "ip", "-d", "link", "show", "type", "vxlan"); err != nil || strings.Contains(string(out), "weft.vxlan") {
			t.Fatalf("%s: VXLAN device in bgp mode: %v\n%s", n, err, out)
		}
	}

	s := newSvcLab(t, ctx, l)

	for _, mode := range []string{lab.ProxyIPTables, lab.ProxyNFTables} {
		t.Run(mode, func(t *testing.T) {
			t0 := time.Now()
			if err := l.KubeProxyStartAll(ctx, mode); err != nil {
				t.Fatal(err)
			}
			t.Logf("kube-proxy %s healthy with its rules synced on %d nodes in %s (weft in bgp mode)", mode, len(nodes), time.Since(t0).Round(time.Millisecond))
			checkProxyRules(t, ctx, l, mode)

			t.Run("ClusterIP across nodes, client address kept", func(t *testing.T) { s.checkClusterIP(t, ctx) })
			t.Run("hairpin", func(t *testing.T) { s.checkHairpin(t, ctx) })
			t.Run("NodePort from the outside host", func(t *testing.T) { s.checkNodePort(t, ctx) })
			t.Run("pod to outside masqueraded by weft", func(t *testing.T) { s.checkPodToOutside(t, ctx) })

			// Graceful restart (on by default) keeps the peers' routes to
			// a restarting node's pods.
			t.Run("agent restarts under 20 requests/s", func(t *testing.T) {
				agentRestartsUnderLoad(t, ctx, l, s.clusterIP["node1"])
			})
		})
	}
}

// TestServicesBGPFRR runs bgp-frr-rr (the nodes peer only with the FRR
// top-of-rack router) with kube-proxy on every node, in iptables and in
// nftables mode: a LoadBalancer Service's ingress address is announced by
// the nodes to FRR, the outside host behind FRR reaches it through FRR and
// is answered by both backends, and deleting the Service withdraws the
// route from FRR.
func TestServicesBGPFRR(t *testing.T) {
	requireKubeProxy(t)
	l := upBGP(t, topology("bgp-frr-rr.clab.yml"), "sbf")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	const lbRange = "172.30.200.0/24"
	lbIP := netip.MustParseAddr("172.30.200.20")
	if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
		"asn": 64512, "nodeMesh": false,
		"peers":             []any{map[string]any{"address": "172.30.2.1"}},
		"advertiseServices": true,
		"externalRanges":    []any{lbRange},
	}}); err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "bgp", 90*time.Second)

	// The outside host reaches the cluster only through FRR.
	out, err := l.Exec(ctx, "outside", "ip", "-4", "route", "show", "default")
	if err != nil || !strings.Contains(string(out), "via 172.30.20.1 ") {
		t.Fatalf("outside: default route %q (%v), want via FRR 172.30.20.1", out, err)
	}
	if out, err := l.Exec(ctx, "outside", "ip", "-4", "route", "get", lbIP.String()); err != nil || !strings.Contains(string(out), "via 172.30.20.1 ") {
		t.Fatalf("outside: route to %s %q (%v), want via FRR", lbIP, out, err)
	}

	const port = 8080
	backends := []string{"node2", "node3"}
	var pods []lab.Pod
	for _, n := range backends {
		p, err := l.PodAdd(ctx, n, "web")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Serve(ctx, n+"/web", port); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	for _, mode := range []string{lab.ProxyIPTables, lab.ProxyNFTables} {
		t.Run(mode, func(t *testing.T) {
			t0 := time.Now()
			if err := l.KubeProxyStartAll(ctx, mode); err != nil {
				t.Fatal(err)
			}
			t.Logf("kube-proxy %s healthy with its rules synced on %d nodes in %s", mode, len(weft), time.Since(t0).Round(time.Millisecond))

			svc, err := l.ServiceApply(ctx, lab.ServiceSpec{Name: "lb", Type: corev1.ServiceTypeLoadBalancer, Port: 80, TargetPort: port,
				Backends: pods, IngressIPs: []netip.Addr{lbIP}})
			if err != nil {
				t.Fatal(err)
			}
			if ing := svc.Status.LoadBalancer.Ingress; len(ing) != 1 || ing[0].IP != lbIP.String() {
				t.Fatalf("service lb: status ingress %+v, want %s", ing, lbIP)
			}
			var want []string
			for _, n := range weft {
				want = append(want, bgpNodeAddr(n, true))
			}
			slices.Sort(want)
			prefix := netip.PrefixFrom(lbIP, 32).String()
			took := frrWaitNextHops(t, ctx, l, "tor", prefix, want)
			t.Logf("LoadBalancer %s announced by every node %s after the Service was applied; FRR next hops %v", lbIP, took, want)
			// bgpd has the paths; zebra puts the best into the tor's kernel a moment later.
			var route string
			eventually(t, 10*time.Second, "tor's kernel routes "+prefix+" via a node", func() error {
				out, err := l.Exec(ctx, "tor", "ip", "-4", "route", "show", prefix)
				route = strings.Join(strings.Fields(string(out)), " ") + " "
				if err != nil || !slices.ContainsFunc(want, func(a string) bool { return strings.Contains(route, "via "+a+" ") }) {
					return fmt.Errorf("kernel route %q (%v), want via one of %v", route, err, want)
				}
				return nil
			})
			t.Logf("tor kernel route: %s", route)

			url := fmt.Sprintf("http://%s/", lbIP)
			fetchEventually(t, ctx, l, "outside", url, 1, "first request outside -> "+url)
			res, err := l.Fetch(ctx, "outside", url, lab.FetchOptions{Count: 20})
			if err != nil {
				t.Fatal(err)
			}
			by, failed := lab.Spread(res)
			t.Logf("outside -> FRR -> %s: node2/web / node3/web = %d / %d, failed %d, backends saw clients %v",
				url, by["node2/web"], by["node3/web"], failed, clientAddrs(t, res))
			if failed > 0 || len(res) != 20 {
				t.Errorf("outside -> %s: %d of %d requests failed: %s", url, failed, len(res), firstErr(res))
			}
			for _, n := range backends {
				if by[n+"/web"] == 0 {
					t.Errorf("backend %s/web never answered (spread %v)", n, by)
				}
			}
			if len(by) != len(backends) {
				t.Errorf("answers from %v, want only %v", by, backends)
			}

			if err := l.ServiceDelete(ctx, "default", "lb"); err != nil {
				t.Fatal(err)
			}
			took = frrWaitWithdrawn(t, ctx, l, "tor", prefix)
			t.Logf("LoadBalancer %s withdrawn from FRR %s after the Service was deleted", lbIP, took)
			eventually(t, 10*time.Second, "tor's kernel drops "+prefix, func() error {
				if out, err := l.Exec(ctx, "tor", "ip", "-4", "route", "show", prefix); err != nil || strings.TrimSpace(string(out)) != "" {
					return fmt.Errorf("kernel route left after the withdrawal: %q (%v)", out, err)
				}
				return nil
			})
		})
	}
}
