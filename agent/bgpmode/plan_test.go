package bgpmode

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/bgp"
)

var (
	addr = netip.MustParseAddr
	pfx  = netip.MustParsePrefix
)

// testNode is node i: 10.0.0.i and fd00::i, pod CIDRs 10.244.i.0/24 and
// fd00:244:0:i::/64.
func testNode(i int, labels map[string]string) Node {
	return Node{
		Name:     fmt.Sprintf("n%d", i),
		Addrs:    []netip.Addr{addr(fmt.Sprintf("10.0.0.%d", i)), addr(fmt.Sprintf("fd00::%d", i))},
		PodCIDRs: []netip.Prefix{pfx(fmt.Sprintf("10.244.%d.0/24", i)), pfx(fmt.Sprintf("fd00:244:0:%d::/64", i))},
		Labels:   labels,
	}
}

func self(n Node) Self {
	return Self{Node: n, Underlay: []netip.Prefix{pfx("10.0.0.0/24"), pfx("fd00::/64")}}
}

func defaultCfg(mut func(*config.BGPConfig)) config.BGPConfig {
	c := config.BGPConfig{ASN: 64512, ListenPort: 179, NodeMesh: true,
		GracefulRestart: config.BGPGracefulRestart{Enabled: true, RestartTime: 120 * time.Second}}
	if mut != nil {
		mut(&c)
	}
	return c
}

// peerDump renders peers as one line each.
func peerDump(ps []bgp.Peer) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "%s as%d %s", p.Address, p.ASN, p.Description)
		if p.Passive {
			b.WriteString(" passive")
		}
		if p.RouteReflectorClient {
			fmt.Fprintf(&b, " rr-client(%s)", p.ClusterID)
		}
		if p.Password != "" {
			b.WriteString(" md5=" + p.Password)
		}
		if p.EBGPMultihopTTL > 0 {
			fmt.Fprintf(&b, " multihop=%d", p.EBGPMultihopTTL)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestPlanPeers(t *testing.T) {
	rr := map[string]string{"weft.dev/route-reflector": "true"}
	rack := func(r string) map[string]string { return map[string]string{"weft.dev/rack": r} }
	three := []Node{testNode(1, nil), testNode(2, nil), testNode(3, nil)}
	tests := []struct {
		name  string
		cfg   config.BGPConfig
		self  Node
		nodes []Node
		pw    map[config.SecretKeyRef]string
		want  string
	}{
		{
			name: "full mesh: the lower address is passive", cfg: defaultCfg(nil), self: testNode(2, nil), nodes: three,
			want: "10.0.0.1 as64512 node/n1\n10.0.0.3 as64512 node/n3 passive\n",
		},
		{
			name: "lowest node is passive towards everyone", cfg: defaultCfg(nil), self: testNode(1, nil), nodes: three,
			want: "10.0.0.2 as64512 node/n2 passive\n10.0.0.3 as64512 node/n3 passive\n",
		},
		{
			name: "mesh off, no peers", cfg: defaultCfg(func(c *config.BGPConfig) { c.NodeMesh = false }), self: testNode(1, nil), nodes: three,
			want: "",
		},
		{
			name: "node without an address of the family is skipped", cfg: defaultCfg(nil), self: testNode(1, nil),
			nodes: []Node{testNode(1, nil), {Name: "v6only", Addrs: []netip.Addr{addr("fd00::9")}}},
			want:  "",
		},
		{
			name: "per-node ASN annotation makes the session eBGP", cfg: defaultCfg(nil), self: testNode(1, nil),
			nodes: []Node{testNode(1, nil), func() Node {
				n := testNode(2, nil)
				n.Annotations = map[string]string{AnnotationASN: "65002"}
				return n
			}()},
			want: "10.0.0.2 as65002 node/n2 passive\n",
		},
		{
			name: "reflector client peers only with reflectors",
			cfg:  defaultCfg(func(c *config.BGPConfig) { c.RouteReflectors.NodeSelector = rr }),
			self: testNode(3, nil), nodes: []Node{testNode(1, rr), testNode(2, rr), testNode(3, nil), testNode(4, nil)},
			want: "10.0.0.1 as64512 node/n1\n10.0.0.2 as64512 node/n2\n",
		},
		{
			name: "reflector peers with everyone, clients marked, reflectors not",
			cfg: defaultCfg(func(c *config.BGPConfig) {
				c.RouteReflectors.NodeSelector = rr
				c.RouteReflectors.ClusterID = addr("1.1.1.1")
			}),
			self: testNode(1, rr), nodes: []Node{testNode(1, rr), testNode(2, rr), testNode(3, nil), testNode(4, nil)},
			want: "10.0.0.2 as64512 node/n2 passive\n10.0.0.3 as64512 node/n3 passive rr-client(1.1.1.1)\n10.0.0.4 as64512 node/n4 passive rr-client(1.1.1.1)\n",
		},
		{
			name: "no node matches the reflector selector: full mesh",
			cfg:  defaultCfg(func(c *config.BGPConfig) { c.RouteReflectors.NodeSelector = rr }),
			self: testNode(2, nil), nodes: three,
			want: "10.0.0.1 as64512 node/n1\n10.0.0.3 as64512 node/n3 passive\n",
		},
		{
			name: "external peers by node selector, password, multihop",
			cfg: defaultCfg(func(c *config.BGPConfig) {
				c.NodeMesh = false
				c.Peers = []config.BGPPeer{
					{Address: addr("10.0.1.1"), ASN: 65001, Port: 179, NodeSelector: rack("r1"), EBGPMultihop: 2,
						PasswordSecretRef: &config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "tor1"}},
					{Address: addr("10.0.2.1"), ASN: 65002, Port: 179, NodeSelector: rack("r2")},
					{Address: addr("10.0.9.9"), Port: 179},
				}
			}),
			self: testNode(1, rack("r1")), nodes: three,
			pw:   map[config.SecretKeyRef]string{{Name: "weft-bgp-passwords", Key: "tor1"}: "s3cret"},
			want: "10.0.1.1 as65001 peer/10.0.1.1 md5=s3cret multihop=2\n10.0.9.9 as64512 peer/10.0.9.9\n",
		},
		{
			name: "an external peer that is also a node wins over the mesh",
			cfg: defaultCfg(func(c *config.BGPConfig) {
				c.Peers = []config.BGPPeer{{Address: addr("10.0.0.3"), ASN: 65003, Port: 179}}
			}),
			self: testNode(2, nil), nodes: three,
			want: "10.0.0.1 as64512 node/n1\n10.0.0.3 as65003 peer/10.0.0.3\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Plan(Input{Config: tc.cfg, Self: self(tc.self), Nodes: tc.nodes, Passwords: tc.pw})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, peerDump(d.Peers)); diff != "" {
				t.Errorf("peers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMeshPassiveIsOneSided checks every pair of a mesh: exactly one side
// is passive.
func TestMeshPassiveIsOneSided(t *testing.T) {
	var nodes []Node
	for i := 1; i <= 5; i++ {
		nodes = append(nodes, testNode(i, nil))
	}
	passive := map[[2]string]int{}
	for _, n := range nodes {
		d, err := Plan(Input{Config: defaultCfg(nil), Self: self(n), Nodes: nodes})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Peers) != 4 {
			t.Fatalf("%s: %d peers, want 4", n.Name, len(d.Peers))
		}
		for _, p := range d.Peers {
			pair := [2]string{n.Addrs[0].String(), p.Address.String()}
			if pair[1] < pair[0] {
				pair[0], pair[1] = pair[1], pair[0]
			}
			if p.Passive {
				passive[pair]++
			} else {
				passive[pair] += 0
			}
		}
	}
	if len(passive) != 10 {
		t.Fatalf("%d pairs, want 10", len(passive))
	}
	for pair, n := range passive {
		if n != 1 {
			t.Errorf("pair %v: %d passive sides, want 1", pair, n)
		}
	}
}

func TestPlanPathsAndGlobal(t *testing.T) {
	cfg := defaultCfg(func(c *config.BGPConfig) { c.AdvertiseServices = true; c.ListenPort = 1179 })
	n := testNode(1, nil)
	n.Annotations = map[string]string{AnnotationASN: "65001"}
	svcs := []Service{
		{Name: "a/lb", IPs: []netip.Addr{addr("172.30.0.5"), addr("fd00:30::5")}},
		{Name: "a/dup", IPs: []netip.Addr{addr("172.30.0.5")}},
	}
	d, err := Plan(Input{Config: cfg, Self: self(n), Nodes: []Node{n}, Services: svcs})
	if err != nil {
		t.Fatal(err)
	}
	want := []bgp.Path{
		{Prefix: pfx("10.244.1.0/24"), NextHop: addr("10.0.0.1")},
		{Prefix: pfx("172.30.0.5/32"), NextHop: addr("10.0.0.1")},
		{Prefix: pfx("fd00:30::5/128"), NextHop: addr("fd00::1")},
		{Prefix: pfx("fd00:244:0:1::/64"), NextHop: addr("fd00::1")},
	}
	if diff := cmp.Diff(want, d.Paths, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if d.Global.ASN != 65001 || d.Global.RouterID != addr("10.0.0.1") || d.Global.ListenPort != 1179 || d.Global.GracefulRestart.Disabled {
		t.Errorf("global = %+v", d.Global)
	}
	// Services are not advertised unless asked.
	cfg.AdvertiseServices = false
	d, err = Plan(Input{Config: cfg, Self: self(n), Nodes: []Node{n}, Services: svcs})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Paths) != 2 {
		t.Errorf("paths without advertiseServices: %v", d.Paths)
	}
}

func TestPlanErrors(t *testing.T) {
	withAnn := func(k, v string) Node {
		n := testNode(1, nil)
		n.Annotations = map[string]string{k: v}
		return n
	}
	tests := []struct {
		name      string
		self      Node
		cfg       config.BGPConfig
		wantField string // "" : a plain error
	}{
		{name: "bad ASN annotation", self: withAnn(AnnotationASN, "64x"), cfg: defaultCfg(nil), wantField: "node n1 annotation weft.dev/bgp-asn"},
		{name: "reserved ASN annotation", self: withAnn(AnnotationASN, "23456"), cfg: defaultCfg(nil), wantField: "node n1 annotation weft.dev/bgp-asn"},
		{name: "bad router ID annotation", self: withAnn(AnnotationRouterID, "fd00::1"), cfg: defaultCfg(nil), wantField: "node n1 annotation weft.dev/bgp-router-id"},
		{name: "IPv6-only node without router ID", self: Node{Name: "v6", Addrs: []netip.Addr{addr("fd00::1")}}, cfg: defaultCfg(nil)},
		{name: "no address", self: Node{Name: "none"}, cfg: defaultCfg(nil)},
		{name: "missing secret", self: testNode(1, nil), cfg: defaultCfg(func(c *config.BGPConfig) {
			c.Peers = []config.BGPPeer{{Address: addr("10.0.1.1"), Port: 179, PasswordSecretRef: &config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "tor1"}}}
		}), wantField: "bgp.peers[0].passwordSecretRef"},
		{name: "missing mesh secret", self: testNode(1, nil), cfg: defaultCfg(func(c *config.BGPConfig) {
			c.NodeMeshPasswordSecretRef = &config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "mesh"}
		}), wantField: "bgp.nodeMeshPasswordSecretRef"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Plan(Input{Config: tc.cfg, Self: self(tc.self), Nodes: []Node{tc.self}})
			if err == nil {
				t.Fatal("Plan succeeded, want an error")
			}
			var fe *config.FieldError
			if tc.wantField != "" && (!errors.As(err, &fe) || fe.Field != tc.wantField) {
				t.Fatalf("Plan error %v, want a FieldError on %q", err, tc.wantField)
			}
		})
	}
	// With the router ID annotation an IPv6-only node works.
	v6 := Node{Name: "v6", Addrs: []netip.Addr{addr("fd00::1")}, Annotations: map[string]string{AnnotationRouterID: "192.0.2.1"}}
	if d, err := Plan(Input{Config: defaultCfg(nil), Self: self(v6)}); err != nil || d.Global.RouterID != addr("192.0.2.1") {
		t.Fatalf("IPv6-only node with router ID: %+v, %v", d.Global, err)
	}
}

// TestImportPolicyFromNodes checks the policy built from Node objects by
// asking it about the routes a peer might send.
func TestImportPolicyFromNodes(t *testing.T) {
	nodes := []Node{testNode(1, nil), testNode(2, nil), testNode(3, nil)}
	ext := func(asn uint32) func(*config.BGPConfig) {
		return func(c *config.BGPConfig) {
			c.ExternalRanges = []netip.Prefix{pfx("172.30.0.0/16")}
			c.Peers = []config.BGPPeer{{Address: addr("10.0.0.254"), ASN: asn, Port: 179}}
		}
	}
	tests := []struct {
		name   string
		cfg    config.BGPConfig
		prefix string
		nh     string
		want   bgp.Reason
	}{
		{"other node's CIDR via it", defaultCfg(nil), "10.244.2.0/24", "10.0.0.2", bgp.Accepted},
		{"other node's v6 CIDR via it", defaultCfg(nil), "fd00:244:0:2::/64", "fd00::2", bgp.Accepted},
		{"other node's CIDR via a third node (mesh: strict)", defaultCfg(nil), "10.244.2.0/24", "10.0.0.3", bgp.BadNextHop},
		{"iBGP router keeps next hops: still strict", defaultCfg(ext(64512)), "10.244.2.0/24", "10.0.0.3", bgp.BadNextHop},
		{"eBGP router rewrites next hops: prefix only", defaultCfg(ext(65001)), "10.244.2.0/24", "10.0.0.254", bgp.Accepted},
		{"own CIDR", defaultCfg(nil), "10.244.1.0/24", "10.0.0.2", bgp.OwnCIDR},
		{"more-specific of a node CIDR", defaultCfg(nil), "10.244.2.128/25", "10.0.0.2", bgp.MoreSpecific},
		{"default route", defaultCfg(nil), "0.0.0.0/0", "10.0.0.2", bgp.DefaultRoute},
		{"outside the cluster", defaultCfg(nil), "192.168.7.0/24", "10.0.0.2", bgp.OutsideCluster},
		{"covers the underlay", defaultCfg(nil), "10.0.0.0/16", "10.0.0.2", bgp.CoversUnderlay},
		{"inside an external range", defaultCfg(ext(65001)), "172.30.4.0/24", "10.0.0.254", bgp.Accepted},
		{"node deleted from the apiserver", defaultCfg(nil), "10.244.4.0/24", "10.0.0.4", bgp.OutsideCluster},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Plan(Input{Config: tc.cfg, Self: self(nodes[0]), Nodes: nodes})
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Policy.Check(pfx(tc.prefix), addr(tc.nh)); got != tc.want {
				t.Errorf("Check(%s via %s) = %q, want %q", tc.prefix, tc.nh, got, tc.want)
			}
		})
	}
}

func TestPlanMaxPrefixesPerPeer(t *testing.T) {
	cfg := defaultCfg(func(c *config.BGPConfig) {
		c.Peers = []config.BGPPeer{
			{Address: addr("10.0.1.1"), Port: 179, MaxPrefixes: 5},
			{Address: addr("10.0.2.1"), Port: 179, MaxPrefixes: 7, NodeSelector: map[string]string{"rack": "other"}},
		}
	})
	d, err := Plan(Input{Config: cfg, Self: self(testNode(1, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[netip.Addr]int{addr("10.0.1.1"): 5}, d.MaxPrefixes, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("caps (-want +got):\n%s", diff)
	}
}

// With a mesh password every session to another node carries it, and an
// external peer keeps its own.
func TestPlanMeshPassword(t *testing.T) {
	mesh := config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "mesh"}
	tor := config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "tor1"}
	cfg := defaultCfg(func(c *config.BGPConfig) {
		c.NodeMeshPasswordSecretRef = &mesh
		c.Peers = []config.BGPPeer{{Address: addr("10.0.1.1"), Port: 179, PasswordSecretRef: &tor}}
	})
	nodes := []Node{testNode(1, nil), testNode(2, nil), testNode(3, nil)}
	d, err := Plan(Input{Config: cfg, Self: self(nodes[0]), Nodes: nodes,
		Passwords: map[config.SecretKeyRef]string{mesh: "m3sh", tor: "t0r"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range d.Peers {
		got[p.Address.String()] = p.Password
	}
	want := map[string]string{"10.0.1.1": "t0r"}
	for _, n := range nodes[1:] {
		want[n.Addrs[0].String()] = "m3sh"
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("peer passwords (-want +got):\n%s", diff)
	}
}

// Every session has a prefix limit: over the mesh twice what the cluster can
// announce (a pod CIDR per node, the Service addresses) plus some slack; an
// external router twice its maxPrefixes plus slack, else bgp's default.
func TestPlanSessionPrefixLimits(t *testing.T) {
	cfg := defaultCfg(func(c *config.BGPConfig) {
		c.AdvertiseServices = true
		c.Peers = []config.BGPPeer{
			{Address: addr("10.0.1.1"), Port: 179, MaxPrefixes: 5},
			{Address: addr("10.0.1.2"), Port: 179},
		}
	})
	nodes := []Node{testNode(1, nil), testNode(2, nil), testNode(3, nil)}
	svcs := []Service{{Name: "default/lb", IPs: []netip.Addr{addr("172.30.0.1"), addr("172.30.0.2"), addr("fd00:30::1")}}}
	d, err := Plan(Input{Config: cfg, Self: self(nodes[0]), Nodes: nodes, Services: svcs})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range d.Peers {
		got = append(got, fmt.Sprintf("%s %s v4=%d v6=%d", p.Address, p.Description, p.MaxPrefixesV4, p.MaxPrefixesV6))
	}
	want := []string{
		"10.0.0.2 node/n2 v4=74 v6=72", // 2×(3 pod CIDRs + 2 LB) + 64, 2×(3 + 1) + 64
		"10.0.0.3 node/n3 v4=74 v6=72",
		"10.0.1.1 peer/10.0.1.1 v4=74 v6=74", // 2×5 + 64
		"10.0.1.2 peer/10.0.1.2 v4=0 v6=0",   // bgp.DefaultMaxPrefixes
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("session limits (-want +got):\n%s", diff)
	}
}
