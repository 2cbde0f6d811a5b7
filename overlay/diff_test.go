package overlay

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func testMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i)}
}

func testDevice() Device {
	return Device{
		Name: VXLANDevice, VNI: 1, Port: 4789, Local: netip.MustParseAddr("192.168.0.1"), MTU: 1450,
		MAC: testMAC(1), Addrs: []netip.Addr{netip.MustParseAddr("10.244.0.0")},
	}
}

// testPeer returns the neighbour, FDB entry and route for peer node i
// (node address 192.168.0.i, pod CIDR 10.244.i.0/24, VTEP MAC 02:..:i).
func testPeer(i int) (Neighbor, FDBEntry, Route) {
	vtep := netip.MustParseAddr(fmt.Sprintf("10.244.%d.0", i))
	return Neighbor{Dev: VXLANDevice, IP: vtep, MAC: testMAC(i)},
		FDBEntry{Dev: VXLANDevice, MAC: testMAC(i), Dst: netip.MustParseAddr(fmt.Sprintf("192.168.0.%d", i))},
		Route{Dst: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)), NextHops: []NextHop{{Gateway: vtep, Dev: VXLANDevice, Onlink: true}}}
}

// testDesired is this node (1) with VXLAN peers.
func testDesired(peers ...int) Desired {
	d := Desired{Devices: []Device{testDevice()}}
	for _, p := range peers {
		n, f, r := testPeer(p)
		d.Neighbors = append(d.Neighbors, n)
		d.FDB = append(d.FDB, f)
		d.Routes = append(d.Routes, r)
	}
	return d
}

// testState is what the kernel holds after testDesired(peers...).
func testState(peers ...int) State {
	d := testDesired(peers...)
	s := State{Neighbors: d.Neighbors, FDB: d.FDB, Routes: d.Routes}
	for _, dev := range d.Devices {
		s.Devices = append(s.Devices, DeviceState{Device: dev, Up: true, Kind: "vxlan"})
	}
	return s
}

func TestDiff(t *testing.T) {
	modify := func(s State, f func(*State)) State { f(&s); return s }
	n2, f2, r2 := testPeer(2)
	n3, f3, r3 := testPeer(3)
	dev := testDevice()
	tests := []struct {
		name string
		want Desired
		have State
		ops  []string
	}{
		{
			name: "empty to empty",
		},
		{
			name: "in sync",
			want: testDesired(2, 3),
			have: testState(2, 3),
		},
		{
			name: "fresh node: device, then neighbour, FDB, route",
			want: testDesired(2),
			ops: []string{
				"set device " + dev.String(),
				"set neigh " + n2.String(),
				"set fdb " + f2.String(),
				"set route " + r2.String(),
			},
		},
		{
			name: "two peers: sorted by text within each kind",
			want: testDesired(3, 2),
			have: testState(),
			ops: []string{
				"set neigh " + n2.String(), "set neigh " + n3.String(),
				"set fdb " + f2.String(), "set fdb " + f3.String(),
				"set route " + r2.String(), "set route " + r3.String(),
			},
		},
		{
			name: "peer removed: route, FDB, neighbour",
			want: testDesired(2),
			have: testState(2, 3),
			ops:  []string{"del route " + r3.String(), "del fdb " + f3.String(), "del neigh " + n3.String()},
		},
		{
			name: "peer added and one removed: adds first",
			want: testDesired(3),
			have: testState(2),
			ops: []string{
				"set neigh " + n3.String(), "set fdb " + f3.String(), "set route " + r3.String(),
				"del route " + r2.String(), "del fdb " + f2.String(), "del neigh " + n2.String(),
			},
		},
		{
			name: "peer MAC changed: neighbour and FDB replaced, stale FDB removed",
			want: func() Desired {
				d := testDesired(2)
				d.Neighbors[0].MAC = testMAC(9)
				d.FDB[0].MAC = testMAC(9)
				return d
			}(),
			have: testState(2),
			ops: []string{
				"set neigh 10.244.2.0 lladdr 02:00:00:00:00:09 dev weft.vxlan",
				"set fdb 02:00:00:00:00:09 dst 192.168.0.2 dev weft.vxlan",
				"del fdb " + f2.String(),
			},
		},
		{
			name: "peer node address changed: FDB replaced in place",
			want: func() Desired {
				d := testDesired(2)
				d.FDB[0].Dst = netip.MustParseAddr("192.168.7.2")
				return d
			}(),
			have: testState(2),
			ops:  []string{"set fdb 02:00:00:00:00:02 dst 192.168.7.2 dev weft.vxlan"},
		},
		{
			name: "MTU fixed in place",
			want: testDesired(2),
			have: modify(testState(2), func(s *State) { s.Devices[0].MTU = 1500 }),
			ops:  []string{"set device " + dev.String()},
		},
		{
			name: "device down is brought up in place",
			want: testDesired(2),
			have: modify(testState(2), func(s *State) { s.Devices[0].Up = false }),
			ops:  []string{"set device " + dev.String()},
		},
		{
			name: "extra address removed in place",
			want: testDesired(),
			have: modify(testState(), func(s *State) {
				s.Devices[0].Addrs = append(s.Devices[0].Addrs, netip.MustParseAddr("10.9.9.9"))
			}),
			ops: []string{"set device " + dev.String()},
		},
		{
			name: "VNI changed: device recreated first and everything on it re-added",
			want: testDesired(2),
			have: modify(testState(2), func(s *State) { s.Devices[0].VNI = 7 }),
			ops: []string{
				"del device weft.vxlan",
				"set device " + dev.String(),
				"set neigh " + n2.String(), "set fdb " + f2.String(), "set route " + r2.String(),
			},
		},
		{
			name: "port changed: recreated",
			want: testDesired(),
			have: modify(testState(), func(s *State) { s.Devices[0].Port = 8472 }),
			ops:  []string{"del device weft.vxlan", "set device " + dev.String()},
		},
		{
			name: "zero port means 4789",
			want: func() Desired { d := testDesired(); d.Devices[0].Port = 0; return d }(),
			have: testState(),
		},
		{
			name: "underlay family changed: recreated",
			want: func() Desired {
				d := testDesired()
				d.Devices[0].Local = netip.MustParseAddr("fd00::1")
				return d
			}(),
			have: testState(),
			ops: []string{
				"del device weft.vxlan",
				"set device weft.vxlan vni 1 port 4789 local fd00::1 mtu 1450 mac 02:00:00:00:00:01 addrs [10.244.0.0]",
			},
		},
		{
			name: "foreign kind with our name: recreated",
			want: testDesired(),
			have: modify(testState(), func(s *State) { s.Devices[0].Kind = "dummy" }),
			ops:  []string{"del device weft.vxlan", "set device " + dev.String()},
		},
		{
			name: "mode switch to direct routing: device gone, routes replaced via node IPs",
			want: Desired{Routes: []Route{{
				Dst:      netip.MustParsePrefix("10.244.2.0/24"),
				NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.2")}},
			}}},
			have: testState(2),
			ops: []string{
				"set route 10.244.2.0/24 via 192.168.0.2",
				"del device weft.vxlan",
			},
		},
		{
			name: "route without Dev matches whatever underlay device the kernel chose",
			want: Desired{Routes: []Route{{
				Dst:      netip.MustParsePrefix("10.244.2.0/24"),
				NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.2")}},
			}}},
			have: State{Routes: []Route{{
				Dst:      netip.MustParsePrefix("10.244.2.0/24"),
				NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.2"), Dev: "eth1"}},
			}}},
		},
		{
			name: "ECMP next hops compared as a set",
			want: Desired{Routes: []Route{{
				Dst: netip.MustParsePrefix("10.96.0.0/16"),
				NextHops: []NextHop{
					{Gateway: netip.MustParseAddr("192.168.0.3")},
					{Gateway: netip.MustParseAddr("192.168.0.2")},
				},
			}}},
			have: State{Routes: []Route{{
				Dst: netip.MustParsePrefix("10.96.0.0/16"),
				NextHops: []NextHop{
					{Gateway: netip.MustParseAddr("192.168.0.2"), Dev: "eth0"},
					{Gateway: netip.MustParseAddr("192.168.0.3"), Dev: "eth0"},
				},
			}}},
		},
		{
			name: "ECMP next hop added: route replaced",
			want: Desired{Routes: []Route{{
				Dst: netip.MustParsePrefix("10.96.0.0/16"),
				NextHops: []NextHop{
					{Gateway: netip.MustParseAddr("192.168.0.2")},
					{Gateway: netip.MustParseAddr("192.168.0.3")},
				},
			}}},
			have: State{Routes: []Route{{
				Dst:      netip.MustParsePrefix("10.96.0.0/16"),
				NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.2"), Dev: "eth0"}},
			}}},
			ops: []string{"set route 10.96.0.0/16 nexthop via 192.168.0.2 nexthop via 192.168.0.3"},
		},
		{
			name: "cleanup: routes, then the device takes its entries along",
			have: testState(2),
			ops:  []string{"del route " + r2.String(), "del device weft.vxlan"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, o := range diff(tt.want, tt.have) {
				got = append(got, o.String())
			}
			if d := cmp.Diff(tt.ops, got); d != "" {
				t.Errorf("ops (-want +got):\n%s", d)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bad := func(f func(*Desired)) Desired { d := testDesired(2); f(&d); return d }
	tests := []struct {
		name string
		in   Desired
		want string // substring of the error; "" for valid
	}{
		{name: "valid", in: testDesired(2, 3)},
		{name: "empty is valid", in: Desired{}},
		{name: "VNI zero", in: bad(func(d *Desired) { d.Devices[0].VNI = 0 }), want: "Devices[0].VNI 0"},
		{name: "VNI too big", in: bad(func(d *Desired) { d.Devices[0].VNI = 1 << 24 }), want: "Devices[0].VNI 16777216"},
		{name: "long name", in: bad(func(d *Desired) { d.Devices[0].Name = "weft.vxlan.toolong" }), want: `Devices[0].Name "weft.vxlan.toolong"`},
		{name: "no local", in: bad(func(d *Desired) { d.Devices[0].Local = netip.Addr{} }), want: "Devices[0].Local invalid IP"},
		{name: "tiny MTU", in: bad(func(d *Desired) { d.Devices[0].MTU = 10 }), want: "Devices[0].MTU 10"},
		{name: "multicast MAC", in: bad(func(d *Desired) { d.Devices[0].MAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} }), want: "Devices[0].MAC 01:00:00:00:00:01"},
		{name: "neighbour on unknown device", in: bad(func(d *Desired) { d.Neighbors[0].Dev = "eth0" }), want: `Neighbors[0].Dev "eth0"`},
		{name: "FDB without MAC", in: bad(func(d *Desired) { d.FDB[0].MAC = nil }), want: "FDB[0].MAC"},
		{name: "unmasked route", in: bad(func(d *Desired) { d.Routes[0].Dst = netip.MustParsePrefix("10.244.2.1/24") }), want: "Routes[0].Dst 10.244.2.1/24"},
		{name: "route without next hops", in: bad(func(d *Desired) { d.Routes[0].NextHops = nil }), want: "Routes[0].NextHops: empty"},
		{name: "gateway of other family", in: bad(func(d *Desired) { d.Routes[0].NextHops[0].Gateway = netip.MustParseAddr("fd00::2") }), want: "Routes[0].NextHops[0].Gateway fd00::2"},
		{name: "onlink without dev", in: bad(func(d *Desired) { d.Routes[0].NextHops[0].Dev = "" }), want: "Routes[0].NextHops[0].Onlink"},
		{name: "duplicate route", in: bad(func(d *Desired) { d.Routes = append(d.Routes, d.Routes[0]) }), want: "Routes[1].Dst 10.244.2.0/24: listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validate(tt.in)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("validate: no error, want one containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("validate: %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// BenchmarkDiff diffs a fresh node against 1000 peers (3000 writes to
// order), what the agent's first pass computes.
func BenchmarkDiff(b *testing.B) {
	want := Desired{Devices: []Device{testDevice()}}
	for i := range 1000 {
		vtep := netip.AddrFrom4([4]byte{10, 245 + byte(i>>8), byte(i), 0})
		mac := net.HardwareAddr{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
		want.Neighbors = append(want.Neighbors, Neighbor{Dev: VXLANDevice, IP: vtep, MAC: mac})
		want.FDB = append(want.FDB, FDBEntry{Dev: VXLANDevice, MAC: mac, Dst: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})})
		want.Routes = append(want.Routes, Route{Dst: netip.PrefixFrom(vtep, 24), NextHops: []NextHop{{Gateway: vtep, Dev: VXLANDevice, Onlink: true}}})
	}
	for b.Loop() {
		if ops := diff(want, State{}); len(ops) != 3001 {
			b.Fatalf("%d ops, want 3001", len(ops))
		}
	}
}
