package overlay

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReconcileSequence applies configs one after another to the fake
// kernel and compares its dump after each step.
func TestReconcileSequence(t *testing.T) {
	ctx := context.Background()
	k := NewFake()
	static := Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.254"), Dev: "eth0"}}}
	k.AddForeignRoute(Route{Dst: netip.MustParsePrefix("172.16.0.0/12"), NextHops: static.NextHops}, 4)
	dp := New(k, 0, nil)

	direct := testDesired(3)
	direct.Routes = append(direct.Routes, Route{
		Dst:      netip.MustParsePrefix("10.244.4.0/24"),
		NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.4")}},
	})
	mtu := testDesired(3)
	mtu.Devices[0].MTU = 1400
	vni := testDesired(3)
	vni.Devices[0].VNI = 2

	steps := []struct {
		name string
		want Desired
		dump string
	}{
		{
			name: "1: two peers",
			want: testDesired(2, 3),
			dump: `device vxlan weft.vxlan vni 1 port 4789 local 192.168.0.1 mtu 1450 mac 02:00:00:00:00:01 addrs [10.244.0.0] up
fdb 02:00:00:00:00:02 dst 192.168.0.2 dev weft.vxlan
fdb 02:00:00:00:00:03 dst 192.168.0.3 dev weft.vxlan
neigh 10.244.2.0 lladdr 02:00:00:00:00:02 dev weft.vxlan
neigh 10.244.3.0 lladdr 02:00:00:00:00:03 dev weft.vxlan
route 10.244.2.0/24 via 10.244.2.0 dev weft.vxlan onlink proto 87
route 10.244.3.0/24 via 10.244.3.0 dev weft.vxlan onlink proto 87
route 172.16.0.0/12 via 192.168.0.254 dev eth0 proto 4
`,
		},
		{
			name: "2: peer 2 gone, peer 4 routed directly",
			want: direct,
			dump: `device vxlan weft.vxlan vni 1 port 4789 local 192.168.0.1 mtu 1450 mac 02:00:00:00:00:01 addrs [10.244.0.0] up
fdb 02:00:00:00:00:03 dst 192.168.0.3 dev weft.vxlan
neigh 10.244.3.0 lladdr 02:00:00:00:00:03 dev weft.vxlan
route 10.244.3.0/24 via 10.244.3.0 dev weft.vxlan onlink proto 87
route 10.244.4.0/24 via 192.168.0.4 dev eth0 proto 87
route 172.16.0.0/12 via 192.168.0.254 dev eth0 proto 4
`,
		},
		{
			name: "3: MTU changed in place",
			want: mtu,
			dump: `device vxlan weft.vxlan vni 1 port 4789 local 192.168.0.1 mtu 1400 mac 02:00:00:00:00:01 addrs [10.244.0.0] up
fdb 02:00:00:00:00:03 dst 192.168.0.3 dev weft.vxlan
neigh 10.244.3.0 lladdr 02:00:00:00:00:03 dev weft.vxlan
route 10.244.3.0/24 via 10.244.3.0 dev weft.vxlan onlink proto 87
route 172.16.0.0/12 via 192.168.0.254 dev eth0 proto 4
`,
		},
		{
			name: "4: VNI changed, device recreated with its entries",
			want: vni,
			dump: `device vxlan weft.vxlan vni 2 port 4789 local 192.168.0.1 mtu 1450 mac 02:00:00:00:00:01 addrs [10.244.0.0] up
fdb 02:00:00:00:00:03 dst 192.168.0.3 dev weft.vxlan
neigh 10.244.3.0 lladdr 02:00:00:00:00:03 dev weft.vxlan
route 10.244.3.0/24 via 10.244.3.0 dev weft.vxlan onlink proto 87
route 172.16.0.0/12 via 192.168.0.254 dev eth0 proto 4
`,
		},
		{
			name: "5: cleanup leaves only the foreign route",
			want: Desired{},
			dump: "route 172.16.0.0/12 via 192.168.0.254 dev eth0 proto 4\n",
		},
	}
	for _, st := range steps {
		if err := dp.Reconcile(ctx, st.want); err != nil {
			t.Fatalf("%s: Reconcile: %v", st.name, err)
		}
		if d := cmp.Diff(st.dump, k.Dump()); d != "" {
			t.Fatalf("%s: dump (-want +got):\n%s", st.name, d)
		}
		k.Ops()
		// A second pass over the same config writes nothing.
		if err := dp.Reconcile(ctx, st.want); err != nil {
			t.Fatalf("%s: second Reconcile: %v", st.name, err)
		}
		if ops := k.Ops(); len(ops) != 0 {
			t.Fatalf("%s: second pass wrote %q, want nothing", st.name, ops)
		}
	}
}

// TestReconcileOrder checks the order of kernel writes the fake recorded:
// neighbour → FDB → route when a peer comes, route → FDB → neighbour when it
// goes.
func TestReconcileOrder(t *testing.T) {
	ctx := context.Background()
	k := NewFake()
	dp := New(k, 0, nil)
	if err := dp.Reconcile(ctx, testDesired()); err != nil {
		t.Fatal(err)
	}
	k.Ops()
	if err := dp.Reconcile(ctx, testDesired(2)); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"set neigh 10.244.2.0 lladdr 02:00:00:00:00:02 dev weft.vxlan",
		"set fdb 02:00:00:00:00:02 dst 192.168.0.2 dev weft.vxlan",
		"set route 10.244.2.0/24 via 10.244.2.0 dev weft.vxlan onlink",
	}
	if d := cmp.Diff(want, k.Ops()); d != "" {
		t.Errorf("add ops (-want +got):\n%s", d)
	}
	if err := dp.Reconcile(ctx, testDesired()); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"del route 10.244.2.0/24 via 10.244.2.0 dev weft.vxlan onlink",
		"del fdb 02:00:00:00:00:02 dst 192.168.0.2 dev weft.vxlan",
		"del neigh 10.244.2.0 lladdr 02:00:00:00:00:02 dev weft.vxlan",
	}
	if d := cmp.Diff(want, k.Ops()); d != "" {
		t.Errorf("delete ops (-want +got):\n%s", d)
	}
}

// TestReconcileContinuesPastFailures makes one write fail: the others are
// still made, the error names the failed one, and the next pass repairs it.
func TestReconcileContinuesPastFailures(t *testing.T) {
	ctx := context.Background()
	k := NewFake()
	boom := errors.New("boom")
	k.Fail = func(op string) error {
		if strings.HasPrefix(op, "set fdb 02:00:00:00:00:02") {
			return boom
		}
		return nil
	}
	dp := New(k, 0, nil)
	err := dp.Reconcile(ctx, testDesired(2, 3))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "set fdb 02:00:00:00:00:02 dst 192.168.0.2") {
		t.Fatalf("Reconcile error = %v, want boom naming the FDB entry", err)
	}
	if !strings.Contains(k.Dump(), "route 10.244.3.0/24") || !strings.Contains(k.Dump(), "route 10.244.2.0/24") {
		t.Fatalf("writes after the failure were skipped:\n%s", k.Dump())
	}
	k.Fail = nil
	k.Ops()
	if err := dp.Reconcile(ctx, testDesired(2, 3)); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"set fdb 02:00:00:00:00:02 dst 192.168.0.2 dev weft.vxlan"}, k.Ops()); d != "" {
		t.Errorf("repair pass (-want +got):\n%s", d)
	}
}

func TestReconcileRejectsInvalid(t *testing.T) {
	k := NewFake()
	dp := New(k, 0, nil)
	bad := testDesired(2)
	bad.Devices[0].VNI = 0
	err := dp.Reconcile(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), "Devices[0].VNI 0") {
		t.Fatalf("Reconcile = %v, want an error naming Devices[0].VNI", err)
	}
	if ops := k.Ops(); len(ops) != 0 {
		t.Fatalf("invalid config wrote %q", ops)
	}
}

// TestWatch checks that changes to weft's objects notify and others do not.
func TestWatch(t *testing.T) {
	k := NewFake()
	dp := New(k, 0, nil)
	ctx, cancel := context.WithCancel(context.Background())
	notified := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- dp.Watch(ctx, func() { notified <- struct{}{} }) }()
	// Wait until the subscription is registered: a weft write must notify.
	deadline := time.After(10 * time.Second)
	for registered := false; !registered; {
		_ = k.DeleteRoute(ctx, testDesired(2).Routes[0], DefaultRouteProtocol)
		select {
		case <-notified:
			registered = true
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatal("Watch never subscribed")
		}
	}
	drain := func() int {
		n := 0
		for {
			select {
			case <-notified:
				n++
			default:
				return n
			}
		}
	}
	drain()
	_ = k.SetDevice(ctx, Device{Name: "other0", VNI: 1, Local: netip.MustParseAddr("192.168.0.1"), MTU: 1500})
	_ = k.SetRoute(ctx, Route{Dst: netip.MustParsePrefix("10.1.0.0/16"), NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.0.9")}}}, 4)
	if n := drain(); n != 0 {
		t.Errorf("foreign changes notified %d times, want 0", n)
	}
	_ = k.SetDevice(ctx, testDevice())
	_ = k.SetNeighbor(ctx, testDesired(2).Neighbors[0])
	_ = k.DeleteRoute(ctx, testDesired(2).Routes[0], DefaultRouteProtocol)
	if n := drain(); n != 3 {
		t.Errorf("weft's changes notified %d times, want 3", n)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestPodMTU(t *testing.T) {
	tests := []struct {
		name     string
		underlay int
		addr     string
		encap    bool
		want     int
		wantErr  bool
	}{
		{name: "vxlan over IPv4", underlay: 1500, addr: "192.168.0.1", encap: true, want: 1450},
		{name: "vxlan over IPv6", underlay: 1500, addr: "fd00::1", encap: true, want: 1430},
		{name: "jumbo vxlan over IPv4", underlay: 9000, addr: "192.168.0.1", encap: true, want: 8950},
		{name: "direct/BGP keeps the underlay MTU", underlay: 1500, addr: "192.168.0.1", want: 1500},
		{name: "direct over IPv6", underlay: 1500, addr: "fd00::1", want: 1500},
		{name: "IPv4-mapped IPv6 counts as IPv4", underlay: 1500, addr: "::ffff:192.168.0.1", encap: true, want: 1450},
		{name: "too small", underlay: 100, addr: "192.168.0.1", encap: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PodMTU(tt.underlay, netip.MustParseAddr(tt.addr), tt.encap)
			if (err != nil) != tt.wantErr {
				t.Fatalf("PodMTU err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("PodMTU = %d, want %d", got, tt.want)
			}
		})
	}
}
