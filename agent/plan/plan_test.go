package plan

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/overlay"
)

var (
	ip   = netip.MustParseAddr
	pfx  = netip.MustParsePrefix
	opts = cmp.Options{
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
		cmpopts.EquateEmpty(),
	}
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func cfg(mut func(*config.Config)) config.Config {
	c := config.Config{
		Mode:         config.VXLAN,
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/56")},
		BlockSizeV4:  24, BlockSizeV6: 64,
		Masquerade: true,
		Resync:     30 * time.Second,
		VXLAN:      config.VXLANConfig{VNI: 1, Port: 4789},
	}
	if mut != nil {
		mut(&c)
	}
	return c
}

const dv = overlay.VXLANDevice

const (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
	macC = "02:00:00:00:00:0c"
)

func selfV4() Self {
	return Self{
		Node:     Node{Name: "a", IP: ip("192.168.1.1"), PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")}, VTEPMAC: mac(macA)},
		Underlay: pfx("192.168.1.0/24"), UnderlayMTU: 1500,
	}
}

func dev(local string, mtu int, addrs ...string) overlay.Device {
	d := overlay.Device{Name: dv, VNI: 1, Port: 4789, Local: ip(local), MTU: mtu, MAC: mac(macA)}
	for _, a := range addrs {
		d.Addrs = append(d.Addrs, ip(a))
	}
	return d
}

const dv6 = overlay.VXLAN6Device

func dev6(local string, mtu int, addrs ...string) overlay.Device {
	d := dev(local, mtu, addrs...)
	d.Name = dv6
	return d
}

func tunnel6(dst, gw string) overlay.Route {
	r := tunnel(dst, gw)
	r.NextHops[0].Dev = dv6
	return r
}

func tunnel(dst, gw string) overlay.Route {
	return overlay.Route{Dst: pfx(dst), NextHops: []overlay.NextHop{{Gateway: ip(gw), Dev: dv, Onlink: true}}}
}

func TestPlanVXLAN(t *testing.T) {
	peerB := Node{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, VTEPMAC: mac(macB)}
	peerC := Node{Name: "c", IP: ip("192.168.2.3"), PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24")}, VTEPMAC: mac(macC)}
	rules := func(srcs ...string) Rules {
		r := Rules{ClusterCIDRs: cfg(nil).ClusterCIDRs, PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")}, Masquerade: true, VXLANPort: 4789}
		for _, s := range srcs {
			r.VTEPSources = append(r.VTEPSources, ip(s))
		}
		return r
	}
	tests := []struct {
		name  string
		cfg   config.Config
		self  Self
		peers []Node
		want  Result
	}{
		{
			name: "no peers",
			cfg:  cfg(nil), self: selfV4(), peers: []Node{selfV4().Node},
			want: Result{
				Desired:  overlay.Desired{Devices: []overlay.Device{dev("192.168.1.1", 1450, "10.244.1.0")}},
				Rules:    rules(),
				PodMTU:   1450,
				Gateways: []netip.Addr{ip("10.244.1.1")},
			},
		},
		{
			name: "two peers through the tunnel, sorted",
			cfg:  cfg(nil), self: selfV4(), peers: []Node{peerC, selfV4().Node, peerB},
			want: Result{
				Desired: overlay.Desired{
					Devices: []overlay.Device{dev("192.168.1.1", 1450, "10.244.1.0")},
					Neighbors: []overlay.Neighbor{
						{Dev: dv, IP: ip("10.244.2.0"), MAC: mac(macB)},
						{Dev: dv, IP: ip("10.244.3.0"), MAC: mac(macC)},
					},
					FDB: []overlay.FDBEntry{
						{Dev: dv, MAC: mac(macB), Dst: ip("192.168.1.2")},
						{Dev: dv, MAC: mac(macC), Dst: ip("192.168.2.3")},
					},
					Routes: []overlay.Route{tunnel("10.244.2.0/24", "10.244.2.0"), tunnel("10.244.3.0/24", "10.244.3.0")},
				},
				Rules:    rules("192.168.1.2", "192.168.2.3"),
				PodMTU:   1450,
				Gateways: []netip.Addr{ip("10.244.1.1")},
				Peers: []Peer{
					{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: peerB.PodCIDRs, Via: "vxlan", Programmed: true},
					{Name: "c", IP: ip("192.168.2.3"), PodCIDRs: peerC.PodCIDRs, Via: "vxlan", Programmed: true},
				},
			},
		},
		{
			name: "direct routing: same subnet direct, other subnet tunnel",
			cfg:  cfg(func(c *config.Config) { c.VXLAN.DirectRouting = true; c.MTU = 1400 }), self: selfV4(),
			peers: []Node{peerB, peerC},
			want: Result{
				Desired: overlay.Desired{
					Devices:   []overlay.Device{dev("192.168.1.1", 1450, "10.244.1.0")},
					Neighbors: []overlay.Neighbor{{Dev: dv, IP: ip("10.244.3.0"), MAC: mac(macC)}},
					FDB:       []overlay.FDBEntry{{Dev: dv, MAC: mac(macC), Dst: ip("192.168.2.3")}},
					Routes: []overlay.Route{
						{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.2")}}},
						tunnel("10.244.3.0/24", "10.244.3.0"),
					},
				},
				Rules:    rules("192.168.1.2", "192.168.2.3"),
				PodMTU:   1400,
				Gateways: []netip.Addr{ip("10.244.1.1")},
				Peers: []Peer{
					{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: peerB.PodCIDRs, Via: "direct", Programmed: true},
					{Name: "c", IP: ip("192.168.2.3"), PodCIDRs: peerC.PodCIDRs, Via: "vxlan", Programmed: true},
				},
			},
		},
		{
			name: "direct routing peer needs no MAC",
			cfg:  cfg(func(c *config.Config) { c.VXLAN.DirectRouting = true }), self: selfV4(),
			peers: []Node{{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}}},
			want: Result{
				Desired: overlay.Desired{
					Devices: []overlay.Device{dev("192.168.1.1", 1450, "10.244.1.0")},
					Routes:  []overlay.Route{{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.2")}}}},
				},
				Rules: rules("192.168.1.2"), PodMTU: 1450, Gateways: []netip.Addr{ip("10.244.1.1")},
				Peers: []Peer{{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, Via: "direct", Programmed: true}},
			},
		},
		{
			name: "peer without MAC, without CIDR, without address, outside cluster: pending",
			cfg:  cfg(nil), self: selfV4(),
			peers: []Node{
				{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}},
				{Name: "c", IP: ip("192.168.1.3"), VTEPMAC: mac(macC)},
				{Name: "d", PodCIDRs: []netip.Prefix{pfx("10.244.4.0/24")}, VTEPMAC: mac("02:00:00:00:00:0d")},
				{Name: "e", IP: ip("192.168.1.5"), PodCIDRs: []netip.Prefix{pfx("10.99.0.0/24")}, VTEPMAC: mac("02:00:00:00:00:0e")},
				{Name: "f", IP: ip("fd00::6"), PodCIDRs: []netip.Prefix{pfx("10.244.6.0/24")}, VTEPMAC: mac("02:00:00:00:00:0f")},
			},
			want: Result{
				Desired: overlay.Desired{Devices: []overlay.Device{dev("192.168.1.1", 1450, "10.244.1.0")}},
				Rules:   rules("192.168.1.2", "192.168.1.3", "192.168.1.5"), PodMTU: 1450, Gateways: []netip.Addr{ip("10.244.1.1")},
				Peers: []Peer{
					{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, Pending: "no VTEP MAC published yet (weft.dev/vtep-mac)"},
					{Name: "c", IP: ip("192.168.1.3"), Pending: "no pod CIDR"},
					{Name: "d", PodCIDRs: []netip.Prefix{pfx("10.244.4.0/24")}, Pending: "no node address"},
					{Name: "e", IP: ip("192.168.1.5"), PodCIDRs: []netip.Prefix{pfx("10.99.0.0/24")},
						Pending: `config field node e podCIDRs="10.99.0.0/24": pod CIDR outside the cluster CIDRs [10.244.0.0/16 fd00:10:244::/56]`},
					{Name: "f", IP: ip("fd00::6"), PodCIDRs: []netip.Prefix{pfx("10.244.6.0/24")}, Pending: "node address fd00::6 is not of the underlay family"},
				},
			},
		},
		{
			name: "dual-stack pods over an IPv6 underlay",
			cfg:  cfg(nil),
			self: Self{
				Node: Node{Name: "a", IP: ip("fd00:1::1"), VTEPMAC: mac(macA),
					PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")}},
				Underlay: pfx("fd00:1::/64"), UnderlayMTU: 9000,
			},
			peers: []Node{{Name: "b", IP: ip("fd00:1::2"), VTEPMAC: mac(macB),
				PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}}},
			want: Result{
				Desired: overlay.Desired{
					Devices: []overlay.Device{dev6("fd00:1::1", 8930, "10.244.1.0", "fd00:10:244:1::")},
					Neighbors: []overlay.Neighbor{
						{Dev: dv6, IP: ip("10.244.2.0"), MAC: mac(macB)},
						{Dev: dv6, IP: ip("fd00:10:244:2::"), MAC: mac(macB)},
					},
					FDB:    []overlay.FDBEntry{{Dev: dv6, MAC: mac(macB), Dst: ip("fd00:1::2")}},
					Routes: []overlay.Route{tunnel6("10.244.2.0/24", "10.244.2.0"), tunnel6("fd00:10:244:2::/64", "fd00:10:244:2::")},
				},
				Rules: Rules{ClusterCIDRs: cfg(nil).ClusterCIDRs, PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24"), pfx("fd00:10:244:1::/64")},
					Masquerade: true, VXLANPort: 4789, VTEPSources: []netip.Addr{ip("fd00:1::2")}},
				PodMTU:   8930,
				Gateways: []netip.Addr{ip("10.244.1.1"), ip("fd00:10:244:1::1")},
				Peers: []Peer{{Name: "b", IP: ip("fd00:1::2"), Via: "vxlan", Programmed: true,
					PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}}},
			},
		},
		{
			name: "dual-stack peer, single-stack self: only the shared family is routed",
			cfg:  cfg(nil), self: selfV4(),
			peers: []Node{{Name: "b", IP: ip("192.168.1.2"), VTEPMAC: mac(macB),
				PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}}},
			want: Result{
				Desired: overlay.Desired{
					Devices:   []overlay.Device{dev("192.168.1.1", 1450, "10.244.1.0")},
					Neighbors: []overlay.Neighbor{{Dev: dv, IP: ip("10.244.2.0"), MAC: mac(macB)}},
					FDB:       []overlay.FDBEntry{{Dev: dv, MAC: mac(macB), Dst: ip("192.168.1.2")}},
					Routes:    []overlay.Route{tunnel("10.244.2.0/24", "10.244.2.0")},
				},
				Rules: rules("192.168.1.2"), PodMTU: 1450, Gateways: []netip.Addr{ip("10.244.1.1")},
				Peers: []Peer{{Name: "b", IP: ip("192.168.1.2"), Via: "vxlan", Programmed: true,
					PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.cfg, tc.self, tc.peers)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, opts); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
		})
	}
}

// A node deleted from the cluster disappears from the plan, so the overlay
// reconciler removes its neighbour, FDB entry and route.
func TestPlanNodeDeleted(t *testing.T) {
	b := Node{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, VTEPMAC: mac(macB)}
	c := Node{Name: "c", IP: ip("192.168.1.3"), PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24")}, VTEPMAC: mac(macC)}
	before, err := Plan(cfg(nil), selfV4(), []Node{b, c})
	if err != nil {
		t.Fatal(err)
	}
	after, err := Plan(cfg(nil), selfV4(), []Node{b})
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Desired.Routes) != 2 || len(after.Desired.Routes) != 1 {
		t.Fatalf("routes before/after = %d/%d, want 2/1", len(before.Desired.Routes), len(after.Desired.Routes))
	}
	for _, r := range after.Desired.Routes {
		if r.Dst == pfx("10.244.3.0/24") {
			t.Errorf("route to deleted node c still planned: %+v", r)
		}
	}
	for _, f := range after.Desired.FDB {
		if f.Dst == ip("192.168.1.3") {
			t.Errorf("FDB entry of deleted node c still planned: %+v", f)
		}
	}
	for _, n := range after.Desired.Neighbors {
		if n.IP == ip("10.244.3.0") {
			t.Errorf("neighbour of deleted node c still planned: %+v", n)
		}
	}
	if diff := cmp.Diff([]netip.Addr{ip("192.168.1.2")}, after.Rules.VTEPSources, opts); diff != "" {
		t.Errorf("VTEP sources after delete (-want +got):\n%s", diff)
	}
}

func TestPlanSelfErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.Config
		mut  func(*Self)
		is   error
	}{
		{name: "no address", cfg: cfg(nil), mut: func(s *Self) { s.IP = netip.Addr{} }},
		{name: "no pod CIDR", cfg: cfg(nil), mut: func(s *Self) { s.PodCIDRs = nil }},
		{name: "no MAC", cfg: cfg(nil), mut: func(s *Self) { s.VTEPMAC = nil }},
		{name: "pod CIDR outside cluster", cfg: cfg(nil), mut: func(s *Self) { s.PodCIDRs = []netip.Prefix{pfx("10.1.0.0/24")} }},
		{name: "bgp: no pod CIDR", cfg: cfg(func(c *config.Config) { c.Mode = config.BGP }), mut: func(s *Self) { s.PodCIDRs = nil }},
		{name: "bgp: MTU unknown", cfg: cfg(func(c *config.Config) { c.Mode = config.BGP }), mut: func(s *Self) { s.UnderlayMTU = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := selfV4()
			tc.mut(&s)
			_, err := Plan(tc.cfg, s, nil)
			if err == nil {
				t.Fatal("Plan succeeded, want an error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("Plan error = %v, want %v", err, tc.is)
			}
		})
	}
}

func TestParseMAC(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"02:00:00:00:00:0a", true},
		{" 0a:58:0a:f4:01:00 ", true},
		{"01:00:5e:00:00:01", false}, // multicast
		{"00:00:00:00:00:00", false},
		{"02:00:00:00:00:00:00:01", false},
		{"nope", false},
	} {
		_, err := ParseMAC(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseMAC(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestPlanBGP(t *testing.T) {
	bgp := func(mut func(*config.Config)) config.Config {
		return cfg(func(c *config.Config) {
			c.Mode = config.BGP
			if mut != nil {
				mut(c)
			}
		})
	}
	dual := func() Self {
		s := selfV4()
		s.PodCIDRs = append(s.PodCIDRs, pfx("fd00:10:244:1::/64"))
		s.VTEPMAC = nil // bgp mode needs none
		return s
	}
	peerB := Node{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("fd00:10:244:2::/64")}}
	peerC := Node{Name: "c", IP: ip("192.168.1.3"), PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24"), pfx("fd00:10:244:3::/64")}}
	learnedB := []overlay.Route{
		{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.2"), Dev: "eth1"}}},
		{Dst: pfx("fd00:10:244:2::/64"), NextHops: []overlay.NextHop{{Gateway: ip("fd00::2")}}},
	}
	tests := []struct {
		name    string
		cfg     config.Config
		self    func() Self
		peers   []Node
		learned []overlay.Route
		want    Result
	}{
		{
			name: "nothing learned yet: no routes, peers pending, underlay MTU",
			cfg:  bgp(nil), self: dual, peers: []Node{peerB},
			want: Result{
				PodMTU:   1500,
				Rules:    Rules{ClusterCIDRs: cfg(nil).ClusterCIDRs, PodCIDRs: dual().PodCIDRs, Masquerade: true},
				Gateways: []netip.Addr{ip("10.244.1.1"), ip("fd00:10:244:1::1")},
				Peers: []Peer{{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: peerB.PodCIDRs,
					Pending: "no BGP route learned yet for 10.244.2.0/24, fd00:10:244:2::/64"}},
			},
		},
		{
			name: "learned routes installed without device, peer programmed, ECMP kept",
			cfg:  bgp(func(c *config.Config) { c.MTU = 1400 }), self: dual, peers: []Node{peerC, peerB},
			learned: append(slices.Clone(learnedB), overlay.Route{Dst: pfx("10.244.3.0/24"),
				NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.3")}, {Gateway: ip("192.168.1.9")}}}),
			want: Result{
				PodMTU:   1400,
				Rules:    Rules{ClusterCIDRs: cfg(nil).ClusterCIDRs, PodCIDRs: dual().PodCIDRs, Masquerade: true},
				Gateways: []netip.Addr{ip("10.244.1.1"), ip("fd00:10:244:1::1")},
				Desired: overlay.Desired{Routes: []overlay.Route{
					{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.2")}}},
					{Dst: pfx("fd00:10:244:2::/64"), NextHops: []overlay.NextHop{{Gateway: ip("fd00::2")}}},
					{Dst: pfx("10.244.3.0/24"), NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.3")}, {Gateway: ip("192.168.1.9")}}},
				}},
				Peers: []Peer{
					{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: peerB.PodCIDRs, Via: "bgp", Programmed: true},
					{Name: "c", IP: ip("192.168.1.3"), PodCIDRs: peerC.PodCIDRs,
						Pending: "no BGP route learned yet for fd00:10:244:3::/64"},
				},
			},
		},
		{
			name: "IPv4-only node: a peer's IPv6 pod CIDR is not waited for",
			cfg:  bgp(nil), self: selfV4, peers: []Node{peerB}, learned: learnedB[:1],
			want: Result{
				PodMTU:   1500,
				Rules:    Rules{ClusterCIDRs: cfg(nil).ClusterCIDRs, PodCIDRs: selfV4().PodCIDRs, Masquerade: true},
				Gateways: []netip.Addr{ip("10.244.1.1")},
				Desired: overlay.Desired{Routes: []overlay.Route{
					{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: ip("192.168.1.2")}}},
				}},
				Peers: []Peer{{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: peerB.PodCIDRs, Via: "bgp", Programmed: true}},
			},
		},
		{
			name: "peer without pod CIDR pending",
			cfg:  bgp(nil), self: selfV4, peers: []Node{{Name: "d", IP: ip("192.168.1.4")}},
			want: Result{
				PodMTU:   1500,
				Rules:    Rules{ClusterCIDRs: cfg(nil).ClusterCIDRs, PodCIDRs: selfV4().PodCIDRs, Masquerade: true},
				Gateways: []netip.Addr{ip("10.244.1.1")},
				Peers:    []Peer{{Name: "d", IP: ip("192.168.1.4"), Pending: "no pod CIDR"}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.self()
			s.Learned = tc.learned
			got, err := Plan(tc.cfg, s, tc.peers)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, opts); diff != "" {
				t.Errorf("Plan (-want +got):\n%s", diff)
			}
			if len(got.Desired.Devices)+len(got.Desired.Neighbors)+len(got.Desired.FDB) != 0 || got.Rules.VXLANPort != 0 {
				t.Errorf("bgp plan has VXLAN objects: %+v / port %d", got.Desired, got.Rules.VXLANPort)
			}
		})
	}
}
