package lab

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestShippedTopologiesLoad(t *testing.T) {
	files, err := filepath.Glob("../topologies/*.clab.yml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../e2e/testdata/*.clab.yml")
	files = append(files, more...)
	if len(files) < 5 {
		t.Fatalf("found %d topology files, want the 4 shipped ones and the test one", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			topo, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			// Every weft node has exactly one address per family (what the
			// control plane registers) and lab addresses stay private.
			for _, n := range topo.Nodes {
				for _, a := range n.NodeAddrs() {
					if !a.IsPrivate() {
						t.Errorf("node %s: address %s is not private", n.Name, a)
					}
				}
			}
			for _, n := range topo.NodesOf(KindWeft) {
				var v4, v6 int
				for _, a := range n.NodeAddrs() {
					if a.Is4() {
						v4++
					} else {
						v6++
					}
				}
				if v4 > 1 || v6 > 1 || v4+v6 == 0 {
					t.Errorf("node %s: %d IPv4 and %d IPv6 addresses, want at most one each", n.Name, v4, v6)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	const base = `
name: t1
topology:
  nodes:
    a: {kind: linux, weft: {addrs: {eth1: [172.30.9.1/24, "fd00:30:9::1/64"]}, routes: [{dst: default, via: 172.30.9.254}, {dst: "fd00:1::/64", via: "fd00:30:9::2"}]}}
    b: {kind: linux, weft: {addrs: {eth1: [172.30.9.2/24]}}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`
	topo, err := Parse([]byte(base), "/x")
	if err != nil {
		t.Fatal(err)
	}
	want := &Topology{
		Name: "t1", Dir: "/x",
		Cluster: Cluster{Mode: "vxlan", ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}, NodeMaskV4: 24, NodeMaskV6: 64, AllocateNodeCIDRs: true},
		Nodes: []Node{
			{Name: "a", Kind: KindLinux, Addrs: map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix("172.30.9.1/24"), netip.MustParsePrefix("fd00:30:9::1/64")}},
				Routes: []Route{
					{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("172.30.9.254")},
					{Dst: netip.MustParsePrefix("fd00:1::/64"), Via: netip.MustParseAddr("fd00:30:9::2")},
				}},
			{Name: "b", Kind: KindLinux, Addrs: map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix("172.30.9.2/24")}}},
		},
		Links: []Link{{A: Endpoint{"a", "eth1"}, B: Endpoint{"b", "eth1"}}},
	}
	if diff := cmp.Diff(want, topo, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad lab name", "name: T_1\ntopology: {nodes: {a: {kind: linux}}}", `lab name "T_1"`},
		{"unknown field", "name: t\nfoo: 1\ntopology: {nodes: {a: {kind: linux}}}", `unknown field "foo"`},
		{"typo in weft block", "name: t\ntopology: {nodes: {a: {kind: linux, weft: {adrs: {}}}}}", `unknown field "adrs"`},
		{"unknown kind", "name: t\ntopology: {nodes: {a: {kind: router}}}", `node "a": kind "router"`},
		{"no nodes", "name: t\ntopology: {}", "topology.nodes: empty"},
		{"bad node name", "name: t\ntopology: {nodes: {A: {kind: linux}}}", `topology.nodes "A"`},
		{"frr without config", "name: t\ntopology: {nodes: {r: {kind: frr}}}", `node "r": kind frr needs startup-config`},
		{"link to unknown node", "name: t\ntopology: {nodes: {a: {kind: linux}}, links: [{endpoints: [a:eth1, b:eth1]}]}", `no node "b"`},
		{"one endpoint", "name: t\ntopology: {nodes: {a: {kind: linux}}, links: [{endpoints: [a:eth1]}]}", "want 2 endpoints, have 1"},
		{"endpoint twice", "name: t\ntopology: {nodes: {a: {kind: linux}, b: {kind: linux}}, links: [{endpoints: [a:eth1, b:eth1]}, {endpoints: [a:eth1, b:eth2]}]}", `"a:eth1": endpoint used twice`},
		{"self link", "name: t\ntopology: {nodes: {a: {kind: linux}}, links: [{endpoints: [a:eth1, a:eth2]}]}", `both ends on node "a"`},
		{"long iface", "name: t\ntopology: {nodes: {a: {kind: linux}, b: {kind: linux}}, links: [{endpoints: [a:eth1234567890123, b:eth1]}]}", `interface "eth1234567890123"`},
		{"addr on no link", "name: t\ntopology: {nodes: {a: {kind: linux, weft: {addrs: {eth2: [10.0.0.1/24]}}}}}", `node "a": weft.addrs.eth2: no link`},
		{"bad addr", "name: t\ntopology: {nodes: {a: {kind: linux, weft: {addrs: {eth1: [10.0.0.300/24]}}}}}", `weft.addrs.eth1[0] "10.0.0.300/24"`},
		{"network as addr", "name: t\ntopology: {nodes: {a: {kind: linux, weft: {addrs: {eth1: [10.0.0.0/24]}}}}}", "want a host address"},
		{"route family mismatch", "name: t\ntopology: {nodes: {a: {kind: linux, weft: {routes: [{dst: 10.0.0.0/8, via: 'fd00::1'}]}}}}", "different families"},
		{"route host bits", "name: t\ntopology: {nodes: {a: {kind: linux, weft: {routes: [{dst: 10.0.0.1/8, via: 10.0.0.2}]}}}}", "host bits set"},
		{"bridge with addr", "name: t\ntopology: {nodes: {s: {kind: bridge, weft: {addrs: {eth1: [10.0.0.1/24]}}}}}", "a bridge takes no"},
		{"weft without cp", "name: t\ntopology: {nodes: {n: {kind: weft}}}", "weft nodes need a control-plane"},
		{"cp without addr", "name: t\ntopology: {nodes: {c: {kind: control-plane}}}", "needs an address"},
		{"bad mode", "name: t\nweft: {mode: ipip}\ntopology: {nodes: {a: {kind: linux}}}", `weft.mode "ipip"`},
		{"cidr host bits", "name: t\nweft: {clusterCIDRs: [10.244.1.0/16]}\ntopology: {nodes: {a: {kind: linux}}}", `weft.clusterCIDRs[0] "10.244.1.0/16": host bits`},
		{"two v4 cidrs", "name: t\nweft: {clusterCIDRs: [10.244.0.0/16, 10.245.0.0/16]}\ntopology: {nodes: {a: {kind: linux}}}", "second prefix of the same family"},
		{"mask too small", "name: t\nweft: {clusterCIDRs: [10.244.0.0/16], nodeMaskV4: 8}\ntopology: {nodes: {a: {kind: linux}}}", "weft.nodeMaskV4 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "/x")
			if err == nil {
				t.Fatalf("Parse: no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLabConflist(t *testing.T) {
	got, err := LabConflist([]netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:0:1::/64")}, "/n/var/lib/weft/ipam")
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "cniVersion": "1.1.0",
  "name": "weft",
  "plugins": [
    {
      "bridge": "weft0",
      "dataDir": "/n/var/lib/weft/ipam",
      "mtu": 1500,
      "podCIDRs": [
        "10.244.1.0/24",
        "fd00:244:0:1::/64"
      ],
      "type": "weft"
    }
  ]
}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("LabConflist (-want +got):\n%s", diff)
	}
}
