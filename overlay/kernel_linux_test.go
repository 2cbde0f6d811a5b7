package overlay

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/test/nstest"
)

// counting wraps a Kernel and counts its writes.
type counting struct {
	Kernel
	writes atomic.Int64
}

// counted counts one write and passes its result on.
func (c *counting) counted(err error) error { c.writes.Add(1); return err }

func (c *counting) SetDevice(ctx context.Context, d Device) error {
	return c.counted(c.Kernel.SetDevice(ctx, d))
}
func (c *counting) DeleteDevice(ctx context.Context, n string) error {
	return c.counted(c.Kernel.DeleteDevice(ctx, n))
}
func (c *counting) SetNeighbor(ctx context.Context, n Neighbor) error {
	return c.counted(c.Kernel.SetNeighbor(ctx, n))
}
func (c *counting) DeleteNeighbor(ctx context.Context, n Neighbor) error {
	return c.counted(c.Kernel.DeleteNeighbor(ctx, n))
}
func (c *counting) SetFDB(ctx context.Context, f FDBEntry) error {
	return c.counted(c.Kernel.SetFDB(ctx, f))
}
func (c *counting) DeleteFDB(ctx context.Context, f FDBEntry) error {
	return c.counted(c.Kernel.DeleteFDB(ctx, f))
}
func (c *counting) SetRoute(ctx context.Context, r Route, p int) error {
	return c.counted(c.Kernel.SetRoute(ctx, r, p))
}
func (c *counting) DeleteRoute(ctx context.Context, r Route, p int) error {
	return c.counted(c.Kernel.DeleteRoute(ctx, r, p))
}

// node is one lab "node": a namespace with an underlay veth eth1
// (192.168.77.i/24, fd77::i/64), a device pod0 holding the first pod
// addresses (10.244.i.1/24, fd10:0:0:i::1/64) and a Datapath on it.
type node struct {
	i     int
	ns    *nstest.NS
	k     *Netlink
	c     *counting
	dp    *Datapath
	under netip.Addr // the underlay address the tunnel uses
}

func newNetlinkIn(t *testing.T, ns *nstest.NS) *Netlink {
	t.Helper()
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewNetlink(h)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close(); h.Close() })
	return k
}

// twoNodes makes nodes 1 and 2 joined by a veth; underlay6 picks the
// family the tunnel runs over.
func twoNodes(t *testing.T, underlay6 bool) (*node, *node) {
	t.Helper()
	a, b := nstest.New(t, "ova"), nstest.New(t, "ovb")
	a.MustRun(t, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", b.Name)
	var nodes []*node
	for i, ns := range []*nstest.NS{a, b} {
		i++
		ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("192.168.77.%d/24", i), "dev", "eth1")
		ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("fd77::%d/64", i), "dev", "eth1", "nodad")
		ns.MustRun(t, "ip", "link", "set", "eth1", "up")
		// No dummy module here: a veth pair kept inside the namespace.
		ns.MustRun(t, "ip", "link", "add", "pod0", "type", "veth", "peer", "name", "pod0p")
		ns.MustRun(t, "ip", "link", "set", "pod0p", "up")
		ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("10.244.%d.1/24", i), "dev", "pod0")
		ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("fd10:0:0:%d::1/64", i), "dev", "pod0", "nodad")
		ns.MustRun(t, "ip", "link", "set", "pod0", "up")
		n := &node{i: i, ns: ns, k: newNetlinkIn(t, ns), under: netip.MustParseAddr(fmt.Sprintf("192.168.77.%d", i))}
		if underlay6 {
			n.under = netip.MustParseAddr(fmt.Sprintf("fd77::%d", i))
		}
		n.c = &counting{Kernel: n.k}
		n.dp = New(n.c, 0, nil)
		nodes = append(nodes, n)
	}
	return nodes[0], nodes[1]
}

func (n *node) devName() string {
	if n.under.Is6() {
		return VXLAN6Device
	}
	return VXLANDevice
}

func vtep4(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.244.%d.0", i)) }
func vtep6(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd10:0:0:%d::", i)) }

// desired is node n's datapath with VXLAN peers.
func (n *node) desired(vni uint32, peers ...*node) Desired {
	mtu, _ := PodMTU(1500, n.under, true)
	dev := n.devName()
	d := Desired{Devices: []Device{{
		Name: dev, VNI: vni, Local: n.under, MTU: mtu, MAC: testMAC(n.i),
		Addrs: []netip.Addr{vtep4(n.i), vtep6(n.i)},
	}}}
	for _, p := range peers {
		d.FDB = append(d.FDB, FDBEntry{Dev: dev, MAC: testMAC(p.i), Dst: p.under})
		for _, v := range []netip.Addr{vtep4(p.i), vtep6(p.i)} {
			d.Neighbors = append(d.Neighbors, Neighbor{Dev: dev, IP: v, MAC: testMAC(p.i)})
			d.Routes = append(d.Routes, Route{
				Dst:      netip.PrefixFrom(v, map[bool]int{true: 24, false: 64}[v.Is4()]),
				NextHops: []NextHop{{Gateway: v, Dev: dev, Onlink: true}},
			})
		}
	}
	return d
}

func mustReconcile(t *testing.T, n *node, want Desired) {
	t.Helper()
	if err := n.dp.Reconcile(context.Background(), want); err != nil {
		t.Fatalf("node %d: Reconcile: %v", n.i, err)
	}
}

// ping pings node to's pod address from node from's, over IPv4 or IPv6,
// waiting up to 6 s for a reply (IPv6 neighbour discovery on the lab's
// underlay can take seconds).
func ping(from, to *node, v6 bool) error {
	return pingWait(from, to, v6, "6")
}

// noPing is ping for cases expected to fail: it waits one second.
func noPing(from, to *node, v6 bool) error {
	return pingWait(from, to, v6, "1")
}

func pingWait(from, to *node, v6 bool, wait string) error {
	src, dst := fmt.Sprintf("10.244.%d.1", from.i), fmt.Sprintf("10.244.%d.1", to.i)
	if v6 {
		src, dst = fmt.Sprintf("fd10:0:0:%d::1", from.i), fmt.Sprintf("fd10:0:0:%d::1", to.i)
	}
	_, err := from.ns.Run("ping", "-c", "1", "-w", wait, "-I", src, dst)
	return err
}

func TestTunnel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		underlay6 bool
	}{{"IPv4 underlay", false}, {"IPv6 underlay", true}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := twoNodes(t, tc.underlay6)
			mustReconcile(t, a, a.desired(42, b))
			mustReconcile(t, b, b.desired(42, a))
			for _, v6 := range []bool{false, true} {
				if err := ping(a, b, v6); err != nil {
					t.Fatalf("pod-to-pod over the tunnel (v6=%v): %v", v6, err)
				}
			}

			link := a.ns.MustRun(t, "ip", "-d", "link", "show", a.devName())
			for _, want := range []string{"vxlan id 42", "dstport 4789", "nolearning", "mtu " + fmt.Sprint(a.desired(42).Devices[0].MTU), "02:00:00:00:00:01", "UP"} {
				if !strings.Contains(link, want) {
					t.Errorf("ip -d link: missing %q in\n%s", want, link)
				}
			}
			if mtu, err := a.k.UnderlayMTU(a.under); err != nil || mtu != 1500 {
				t.Errorf("UnderlayMTU(%v) = %d, %v, want 1500", a.under, mtu, err)
			}

			// Idempotent: a second pass reads but writes nothing.
			before := a.c.writes.Load()
			mustReconcile(t, a, a.desired(42, b))
			if w := a.c.writes.Load() - before; w != 0 {
				t.Fatalf("second Reconcile made %d kernel writes, want 0", w)
			}

			// Peer b removed: its route, FDB entry and neighbours go.
			mustReconcile(t, a, a.desired(42))
			st, err := a.k.Observe(context.Background(), []string{a.devName()}, DefaultRouteProtocol)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Routes)+len(st.FDB)+len(st.Neighbors) != 0 || len(st.Devices) != 1 {
				t.Fatalf("after removing the peer: %+v, want only the device", st)
			}
			if err := noPing(a, b, false); err == nil {
				t.Fatal("ping still works with the peer removed")
			}
		})
	}
}

func TestWatchRestoresDeletedRoute(t *testing.T) {
	a, b := twoNodes(t, false)
	want := a.desired(42, b)
	mustReconcile(t, a, want)
	mustReconcile(t, b, b.desired(42, a))

	ctx, cancel := context.WithCancel(context.Background())
	notified := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- a.dp.Watch(ctx, func() {
			select {
			case notified <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after cancel")
		}
	}()
	// An unrelated route must not notify; deleting ours must. The
	// subscription starts asynchronously, so retry the deletion.
	a.ns.MustRun(t, "ip", "route", "add", "10.55.0.0/16", "via", "192.168.77.2", "proto", "static")
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		_, _ = a.ns.Run("ip", "route", "del", "10.244.2.0/24")
		select {
		case <-notified:
			got = true
		case <-time.After(100 * time.Millisecond):
			// Put it back so the next deletion produces an event again.
			mustReconcile(t, a, want)
			select {
			case <-notified:
			default:
			}
		case <-deadline:
			t.Fatal("no notification after deleting weft's route")
		}
	}
	if err := noPing(a, b, false); err == nil {
		t.Fatal("ping works without the route")
	}
	mustReconcile(t, a, want)
	if out := a.ns.MustRun(t, "ip", "route", "show", "proto", "87"); !strings.Contains(out, "10.244.2.0/24 via 10.244.2.0 dev weft.vxlan") {
		t.Fatalf("route not restored:\n%s", out)
	}
	if err := ping(a, b, false); err != nil {
		t.Fatalf("ping after restore: %v", err)
	}
}

func ifindex(t *testing.T, n *node, dev string) string {
	t.Helper()
	out := n.ns.MustRun(t, "cat", "/sys/class/net/"+dev+"/ifindex")
	return strings.TrimSpace(out)
}

func TestDeviceChanges(t *testing.T) {
	a, b := twoNodes(t, false)
	mustReconcile(t, a, a.desired(42, b))
	mustReconcile(t, b, b.desired(42, a))
	idx := ifindex(t, a, VXLANDevice)

	// MTU: fixed in place, same device.
	small := a.desired(42, b)
	small.Devices[0].MTU = 1400
	mustReconcile(t, a, small)
	if got := ifindex(t, a, VXLANDevice); got != idx {
		t.Fatalf("MTU change recreated the device (ifindex %s → %s)", idx, got)
	}
	if out := a.ns.MustRun(t, "ip", "link", "show", VXLANDevice); !strings.Contains(out, "mtu 1400") {
		t.Fatalf("MTU not changed:\n%s", out)
	}

	// MAC changed by hand: put back in place.
	a.ns.MustRun(t, "ip", "link", "set", VXLANDevice, "address", "02:00:00:00:00:99")
	a.ns.MustRun(t, "ip", "link", "set", VXLANDevice, "down")
	mustReconcile(t, a, small)
	if got := ifindex(t, a, VXLANDevice); got != idx {
		t.Fatalf("MAC fix recreated the device")
	}
	if out := a.ns.MustRun(t, "ip", "link", "show", VXLANDevice); !strings.Contains(out, "02:00:00:00:00:01") || !strings.Contains(out, ",UP") {
		t.Fatalf("MAC/up not fixed:\n%s", out)
	}

	// VNI: device recreated, entries re-added, tunnel works with the peer on
	// the new VNI too.
	mustReconcile(t, a, a.desired(43, b))
	mustReconcile(t, b, b.desired(43, a))
	if got := ifindex(t, a, VXLANDevice); got == idx {
		t.Fatalf("VNI change kept the device (ifindex %s)", got)
	}
	if out := a.ns.MustRun(t, "ip", "-d", "link", "show", VXLANDevice); !strings.Contains(out, "vxlan id 43") {
		t.Fatalf("VNI not changed:\n%s", out)
	}
	for _, v6 := range []bool{false, true} {
		if err := ping(a, b, v6); err != nil {
			t.Fatalf("ping after VNI change (v6=%v): %v", v6, err)
		}
	}
}

func TestCleanupKeepsForeignRoutes(t *testing.T) {
	a, b := twoNodes(t, false)
	a.ns.MustRun(t, "ip", "route", "add", "10.55.0.0/16", "via", "192.168.77.2", "proto", "static")
	a.ns.MustRun(t, "ip", "-6", "route", "add", "fd55::/64", "via", "fd77::2", "proto", "static")
	want := a.desired(42, b)
	want.Routes = append(want.Routes, Route{Dst: netip.MustParsePrefix("10.66.0.0/16"), NextHops: []NextHop{{Gateway: netip.MustParseAddr("192.168.77.2")}}})
	mustReconcile(t, a, want)
	if err := a.dp.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if out := a.ns.MustRun(t, "ip", "link", "show"); strings.Contains(out, "weft") {
		t.Errorf("devices left after Cleanup:\n%s", out)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := a.ns.MustRun(t, "ip", fam, "route", "show", "proto", "87"); strings.TrimSpace(out) != "" {
			t.Errorf("weft routes left after Cleanup:\n%s", out)
		}
	}
	if out := a.ns.MustRun(t, "ip", "route", "show", "proto", "static"); !strings.Contains(out, "10.55.0.0/16") {
		t.Errorf("static IPv4 route removed:\n%s", out)
	}
	if out := a.ns.MustRun(t, "ip", "-6", "route", "show", "proto", "static"); !strings.Contains(out, "fd55::/64") {
		t.Errorf("static IPv6 route removed:\n%s", out)
	}
	// Cleanup of a clean node is a no-op.
	before := a.c.writes.Load()
	if err := a.dp.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := a.c.writes.Load() - before; w != 0 {
		t.Errorf("second Cleanup made %d writes", w)
	}
}

func TestDirectRoutingAndECMP(t *testing.T) {
	a, b := twoNodes(t, false)
	// Direct routing: pod CIDRs via the peer's node address, resolved
	// through the underlay; no VXLAN device at all.
	route := func(dst, via string) Route {
		return Route{Dst: netip.MustParsePrefix(dst), NextHops: []NextHop{{Gateway: netip.MustParseAddr(via)}}}
	}
	ecmp4 := Route{Dst: netip.MustParsePrefix("10.96.0.0/16"), NextHops: []NextHop{
		{Gateway: netip.MustParseAddr("192.168.77.2")}, {Gateway: netip.MustParseAddr("192.168.77.3")},
	}}
	ecmp6 := Route{Dst: netip.MustParsePrefix("fd96::/64"), NextHops: []NextHop{
		{Gateway: netip.MustParseAddr("fd77::2")}, {Gateway: netip.MustParseAddr("fd77::3")},
	}}
	mustReconcile(t, a, Desired{Routes: []Route{route("10.244.2.0/24", "192.168.77.2"), route("fd10:0:0:2::/64", "fd77::2"), ecmp4, ecmp6}})
	mustReconcile(t, b, Desired{Routes: []Route{route("10.244.1.0/24", "192.168.77.1"), route("fd10:0:0:1::/64", "fd77::1")}})
	for _, v6 := range []bool{false, true} {
		if err := ping(a, b, v6); err != nil {
			t.Fatalf("direct routing ping (v6=%v): %v", v6, err)
		}
	}
	for _, c := range []struct{ fam, dst, hop1, hop2 string }{
		{"-4", "10.96.0.0/16", "nexthop via 192.168.77.2 dev eth1", "nexthop via 192.168.77.3 dev eth1"},
		{"-6", "fd96::/64", "nexthop via fd77::2 dev eth1", "nexthop via fd77::3 dev eth1"},
	} {
		out := a.ns.MustRun(t, "ip", c.fam, "route", "show", c.dst)
		if !strings.Contains(out, c.hop1) || !strings.Contains(out, c.hop2) || !strings.Contains(out, "proto 87") {
			t.Errorf("ECMP route %s:\n%s", c.dst, out)
		}
	}
	before := a.c.writes.Load()
	mustReconcile(t, a, Desired{Routes: []Route{route("10.244.2.0/24", "192.168.77.2"), route("fd10:0:0:2::/64", "fd77::2"), ecmp4, ecmp6}})
	if w := a.c.writes.Load() - before; w != 0 {
		t.Fatalf("second pass over direct and ECMP routes made %d writes", w)
	}
	// Dropping a next hop replaces the route.
	ecmp4.NextHops = ecmp4.NextHops[:1]
	mustReconcile(t, a, Desired{Routes: []Route{ecmp4}})
	out := a.ns.MustRun(t, "ip", "route", "show", "proto", "87")
	if strings.TrimSpace(out) != "10.96.0.0/16 via 192.168.77.2 dev eth1" { // ip omits the protocol it filters on
		t.Fatalf("after shrinking to one next hop:\n%s", out)
	}
}

// TestStaleDeviceIndex: the writes of a pass use the device indexes read by
// Observe. When the device was recreated since (here by hand, between
// Observe and the writes), each write finds the new device and lands on it.
func TestStaleDeviceIndex(t *testing.T) {
	nstest.RequireRoot(t)
	a, b := twoNodes(t, false)
	want := a.desired(42, b)
	mustReconcile(t, a, want)
	old := ifindex(t, a, VXLANDevice)
	if _, err := a.k.Observe(context.Background(), []string{VXLANDevice}, DefaultRouteProtocol); err != nil {
		t.Fatal(err)
	}
	a.ns.MustRun(t, "ip", "link", "del", VXLANDevice)
	a.ns.MustRun(t, "ip", "link", "add", VXLANDevice, "type", "vxlan", "id", "42", "local", a.under.String(), "dstport", "4789", "nolearning")
	a.ns.MustRun(t, "ip", "link", "set", VXLANDevice, "up")
	if got := ifindex(t, a, VXLANDevice); got == old {
		t.Fatalf("recreated device kept ifindex %s", got)
	}
	ctx := context.Background()
	for _, n := range want.Neighbors {
		if err := a.k.SetNeighbor(ctx, n); err != nil {
			t.Fatalf("SetNeighbor after recreation: %v", err)
		}
	}
	for _, f := range want.FDB {
		if err := a.k.SetFDB(ctx, f); err != nil {
			t.Fatalf("SetFDB after recreation: %v", err)
		}
	}
	for _, r := range want.Routes {
		if err := a.k.SetRoute(ctx, r, DefaultRouteProtocol); err != nil {
			t.Fatalf("SetRoute after recreation: %v", err)
		}
	}
	have, err := a.k.Observe(ctx, []string{VXLANDevice}, DefaultRouteProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if len(have.Neighbors) != len(want.Neighbors) || len(have.FDB) != len(want.FDB) || len(have.Routes) != len(want.Routes) {
		t.Fatalf("on the new device: %d neighbours, %d fdb, %d routes; want %d, %d, %d",
			len(have.Neighbors), len(have.FDB), len(have.Routes), len(want.Neighbors), len(want.FDB), len(want.Routes))
	}
	for _, r := range have.Routes {
		if r.NextHops[0].Dev != VXLANDevice {
			t.Errorf("route %v on %q, want %s", r, r.NextHops[0].Dev, VXLANDevice)
		}
	}
	// Deleting through a stale index works too (and a second delete is no error).
	a.ns.MustRun(t, "ip", "link", "set", VXLANDevice, "name", "weft.old")
	a.ns.MustRun(t, "ip", "link", "add", VXLANDevice, "type", "vxlan", "id", "42", "local", a.under.String(), "dstport", "4790", "nolearning")
	for range 2 {
		for _, n := range want.Neighbors {
			if err := a.k.DeleteNeighbor(ctx, n); err != nil {
				t.Fatalf("DeleteNeighbor: %v", err)
			}
		}
	}
}

// TestDeviceChecksums checks the outer UDP checksum settings weft asks for
// are the ones the kernel applies, over both underlay families: checksums
// on over IPv4 (udpcsum), zero-checksum TX/RX off over IPv6.
func TestDeviceChecksums(t *testing.T) {
	for _, underlay6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("underlay6=%v", underlay6), func(t *testing.T) {
			a, b := twoNodes(t, underlay6)
			mustReconcile(t, a, a.desired(42, b))
			out := a.ns.MustRun(t, "ip", "-d", "link", "show", a.devName())
			for _, want := range []string{" udpcsum ", " noudp6zerocsumtx ", " noudp6zerocsumrx "} {
				if !strings.Contains(out, want) {
					t.Errorf("%s lacks %q:\n%s", a.devName(), want, out)
				}
			}
		})
	}
}
