//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/test/lab"
)

// TestBGPCrossSubnet runs cross-subnet-bgp: four nodes in two subnets peer
// (eBGP) only with the FRR router joining the subnets, each with the
// router's address in its own subnet (bgp.peers with a nodeSelector per
// subnet). The router learns every pod CIDR from its node and hands it on
// with itself as next hop, every node installs
// the other nodes' pod CIDRs via the router address on its own link, and
// every pod reaches every pod on another node, across the router too, over
// IPv4 and IPv6.
func TestBGPCrossSubnet(t *testing.T) {
	l := upBGP(t, topology("cross-subnet-bgp.clab.yml"), "bx")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	// The router's address on each subnet, per family.
	gw := map[string]map[bool]string{
		"a": {true: "172.30.4.1", false: "fd00:30:4::1"},
		"b": {true: "172.30.5.1", false: "fd00:30:5::1"},
	}
	t0 := time.Now()
	if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
		"asn": 64512, "nodeMesh": false,
		"peers": []any{
			map[string]any{"address": gw["a"][true], "asn": 65000, "nodeSelector": map[string]any{"weft.dev/subnet": "a"}},
			map[string]any{"address": gw["b"][true], "asn": 65000, "nodeSelector": map[string]any{"weft.dev/subnet": "b"}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "bgp", 90*time.Second)
	weftctl := bgpBuildWeftctl(t)
	subnet := func(n lab.Node) string { return n.Labels["weft.dev/subnet"] }
	// Each node has exactly one peer, the router in its subnet, established.
	eventually(t, 30*time.Second, "every node peers only with the router in its subnet", func() error {
		var bad []string
		for _, n := range weft {
			st, err := bgpStatusErr(ctx, weftctl, l, n.Name)
			if err != nil {
				return err
			}
			want := gw[subnet(n)][true]
			if len(st.Peers) != 1 || st.Peers[0].Address.String() != want || !st.Peers[0].Up {
				bad = append(bad, fmt.Sprintf("%s: peers %+v, want only %s established", n.Name, st.Peers, want))
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s", strings.Join(bad, "\n"))
		}
		return nil
	})
	// The router learned every pod CIDR from its node.
	cidrs := map[string][]netip.Prefix{}
	for _, n := range weft {
		cidrs[n.Name] = bgpPodCIDRs(t, ctx, l, n.Name)
		if len(cidrs[n.Name]) != 2 {
			t.Fatalf("%s: pod CIDRs %v, want one per family", n.Name, cidrs[n.Name])
		}
	}
	frrWaitPodCIDRs(t, ctx, l, "router", "the router holds every pod CIDR via its node", weft, cidrs)
	// Every node routes every other node's pod CIDRs via the router's
	// address in its own subnet: one hop on its link, also for the nodes
	// behind the router.
	for _, n := range weft {
		eventually(t, 30*time.Second, n.Name+": kernel routes via the router", func() error {
			routes, err := bgpKernelRoutes(ctx, l, n.Name)
			if err != nil {
				return err
			}
			var missing []string
			for _, o := range weft {
				if o.Name == n.Name {
					continue
				}
				for _, c := range cidrs[o.Name] {
					want := fmt.Sprintf("%s via %s dev eth1 ", c, gw[subnet(n)][c.Addr().Is4()])
					if !strings.Contains(routes, want) {
						missing = append(missing, want)
					}
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("missing %q in:\n%s", missing, routes)
			}
			return nil
		})
	}
	t.Logf("bgp across two subnets: sessions up and every route installed %s after the ConfigMap update", time.Since(t0).Round(time.Millisecond))
	t.Logf("node1 routes (proto 87):\n%s", mustKernelRoutes(t, ctx, l, "node1"))

	pods := bgpPods(t, ctx, l, "x")
	bgpMatrix(t, ctx, l, pods)
	// The path from subnet a to subnet b crosses the router: the first hop
	// a packet to node3's pod takes from node1's pod's node is the router.
	for _, dst := range pods[2].IPs {
		out, err := l.Exec(ctx, "node1", "ip", "route", "get", dst.String())
		if err != nil {
			t.Fatalf("node1: ip route get %s: %v\n%s", dst, err, out)
		}
		if want := "via " + gw["a"][dst.Is4()] + " "; !strings.Contains(string(out), want) {
			t.Errorf("node1: ip route get %s: %q, want %q", dst, out, want)
		}
	}
}

// TestBGPECMP runs bgp-ecmp: node1 peers with two FRR routers that both
// announce the outside network with equal attributes, each as its own next
// hop. node1 installs one kernel route per family with both routers as next
// hops; a pod on node1 reaches the outside host over it; when one router
// withdraws the prefix the route keeps only the other next hop, and gets both
// back when it announces it again.
func TestBGPECMP(t *testing.T) {
	l := upBGP(t, topology("bgp-ecmp.clab.yml"), "be")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const r1, r2 = "172.30.8.2", "172.30.8.3"
	prefixes := []struct {
		dst      string
		v4       bool
		hop1     string // r1's next hop
		hop2     string // r2's next hop
		outside  string
		afi, fam string
	}{
		{"172.30.99.0/24", true, r1, r2, "172.30.99.100", "ipv4", "-4"},
		{"fd00:30:99::/64", false, "fd00:30:8::2", "fd00:30:8::3", "fd00:30:99::100", "ipv6", "-6"},
	}
	t0 := time.Now()
	if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
		"asn": 64512, "nodeMesh": false,
		"peers":          []any{map[string]any{"address": r1}, map[string]any{"address": r2}},
		"externalRanges": []any{prefixes[0].dst, prefixes[1].dst},
	}}); err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "bgp", 90*time.Second)
	weftctl := bgpBuildWeftctl(t)

	// route is node1's kernel route (weft's protocol) to p, one line.
	route := func(p string, fam string) (string, error) {
		out, err := l.Exec(ctx, "node1", "ip", "-o", fam, "route", "show", "proto", "87", "exact", p)
		return strings.TrimSpace(string(out)), err
	}
	// hops are the gateways of a route line: "nexthop via A dev eth1 weight
	// 1 nexthop via B ..." for a multipath route, "via A dev eth1" else.
	hops := func(line string) []string {
		var out []string
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "via" {
				out = append(out, f[i+1])
			}
		}
		slices.Sort(out)
		return out
	}
	waitHops := func(what string, want func(p int) []string) {
		t.Helper()
		t0 := time.Now()
		for i, p := range prefixes {
			eventually(t, 30*time.Second, "node1: "+p.dst+" "+what, func() error {
				line, err := route(p.dst, p.fam)
				if err != nil {
					return err
				}
				if got := hops(line); !slices.Equal(got, want(i)) {
					return fmt.Errorf("next hops %v, want %v: %q", got, want(i), line)
				}
				if len(want(i)) > 1 && strings.Count(line, "nexthop via") != len(want(i)) {
					return fmt.Errorf("not one multipath route: %q", line)
				}
				return nil
			})
		}
		t.Logf("node1: %s %s", what, time.Since(t0).Round(time.Millisecond))
	}

	both := func(i int) []string { return []string{prefixes[i].hop1, prefixes[i].hop2} }
	waitHops("installed with both routers as next hops", both)
	t.Logf("two equal paths installed %s after the ConfigMap update", time.Since(t0).Round(time.Millisecond))
	for _, p := range prefixes {
		line, _ := route(p.dst, p.fam)
		t.Logf("node1: ip %s route show proto 87 exact %s: %s", p.fam, p.dst, line)
	}
	st := bgpStatus(t, ctx, weftctl, l, "node1")
	if len(st.Peers) != 2 {
		t.Fatalf("node1: peers %+v, want r1 and r2", st.Peers)
	}
	for _, p := range st.Peers {
		// Each router's paths are installed: one route per family.
		if !p.Up || p.Installed != len(prefixes) {
			t.Errorf("node1: peer %s up %t with %d routes installed, want established with %d", p.Address, p.Up, p.Installed, len(prefixes))
		}
	}

	// A pod on node1 reaches the outside host over the multipath route.
	pod, err := l.PodAdd(ctx, "node1", "e0")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prefixes {
		if err := pingWithin(ctx, l, "node1/"+pod.Name, addr(p.outside), 10*time.Second); err != nil {
			t.Errorf("node1/%s -> outside %s: %v", pod.Name, p.outside, err)
		}
	}

	// r2 withdraws: only r1 is left; r2 announces again: both are back.
	frrNetwork := func(no string) {
		t.Helper()
		cmds := []string{"configure terminal", "router bgp 64512"}
		for _, p := range prefixes {
			cmds = append(cmds, "address-family "+p.afi+" unicast", no+"network "+p.dst, "exit-address-family")
		}
		if out, err := l.FRR(ctx, "r2", cmds...); err != nil {
			t.Fatalf("r2: vtysh: %v\n%s", err, out)
		}
	}
	frrNetwork("no ")
	waitHops("down to r1 alone after r2 withdrew", func(i int) []string { return []string{prefixes[i].hop1} })
	for _, p := range prefixes {
		if err := pingWithin(ctx, l, "node1/"+pod.Name, addr(p.outside), 10*time.Second); err != nil {
			t.Errorf("node1/%s -> outside %s over r1 alone: %v", pod.Name, p.outside, err)
		}
	}
	frrNetwork("")
	waitHops("back to both next hops after r2 announced again", both)
}
