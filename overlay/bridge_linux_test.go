package overlay_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"weft.dev/weft/overlay"
	"weft.dev/weft/test/nstest"
)

func bridgeHandle(t *testing.T, ns *nstest.NS) *netlink.Handle {
	t.Helper()
	nsh, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func TestEnsureBridge(t *testing.T) {
	ns := nstest.New(t, "br")
	h := bridgeHandle(t, ns)
	b := overlay.Bridge{Name: "weft0", MTU: 1450, Gateways: []netip.Prefix{
		netip.MustParsePrefix("10.244.1.1/24"), netip.MustParsePrefix("fd00:10:244:1::1/64")}}
	check := func(step string) {
		t.Helper()
		link, err := h.LinkByName("weft0")
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		a := link.Attrs()
		if link.Type() != "bridge" || a.MTU != 1450 || a.HardwareAddr.String() != b.MAC().String() || a.Flags&1 == 0 {
			t.Errorf("%s: %s mtu %d mac %s flags %v; want bridge, mtu 1450, mac %s, up", step, link.Type(), a.MTU, a.HardwareAddr, a.Flags, b.MAC())
		}
		out := ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "weft0")
		for _, want := range []string{"inet 10.244.1.1/24", "inet6 fd00:10:244:1::1/64 scope global nodad"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: addresses lack %q:\n%s", step, want, out)
			}
		}
	}
	idx, err := overlay.EnsureBridge(h, b)
	if err != nil {
		t.Fatal(err)
	}
	check("created")
	// Idempotent: same index, nothing duplicated.
	idx2, err := overlay.EnsureBridge(h, b)
	if err != nil || idx2 != idx {
		t.Fatalf("second EnsureBridge: index %d, %v; want %d", idx2, err, idx)
	}
	check("again")
	// Drift is repaired: MTU, MAC, a removed address, down.
	ns.MustRun(t, "ip", "link", "set", "weft0", "down", "mtu", "9000", "address", "02:00:00:00:00:01")
	ns.MustRun(t, "ip", "addr", "del", "10.244.1.1/24", "dev", "weft0")
	if _, err := overlay.EnsureBridge(h, b); err != nil {
		t.Fatal(err)
	}
	check("repaired")
	// The MAC does not change as ports come and go.
	ns.MustRun(t, "ip", "link", "add", "p0", "master", "weft0", "type", "veth", "peer", "name", "p1")
	ns.MustRun(t, "ip", "link", "del", "p0")
	check("after a port came and went")

	// The node's pod CIDR changed: with Owned (the agent's call) the old
	// gateway goes, an address outside Owned stays; without Owned (the CNI
	// binary's) nothing is removed.
	ns.MustRun(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "weft0")
	moved := b
	moved.Gateways = []netip.Prefix{netip.MustParsePrefix("10.244.7.1/24"), b.Gateways[1]}
	if _, err := overlay.EnsureBridge(h, moved); err != nil {
		t.Fatal(err)
	}
	if out := ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "weft0"); !strings.Contains(out, "inet 10.244.1.1/24") {
		t.Errorf("without Owned the old gateway was removed:\n%s", out)
	}
	moved.Owned = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")}
	if _, err := overlay.EnsureBridge(h, moved); err != nil {
		t.Fatal(err)
	}
	out := ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "weft0")
	for _, want := range []string{"inet 10.244.7.1/24", "inet 192.0.2.1/24", "inet6 fd00:10:244:1::1/64"} {
		if !strings.Contains(out, want) {
			t.Errorf("with Owned: addresses lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "10.244.1.1/") {
		t.Errorf("with Owned: the old gateway 10.244.1.1/24 stayed:\n%s", out)
	}
}

func TestEnsureBridgeRefusesOtherType(t *testing.T) {
	ns := nstest.New(t, "brx")
	h := bridgeHandle(t, ns)
	ns.MustRun(t, "ip", "link", "add", "weft0", "type", "veth", "peer", "name", "x0")
	_, err := overlay.EnsureBridge(h, overlay.Bridge{Name: "weft0", MTU: 1500})
	if err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Errorf("EnsureBridge over a veth = %v, want a 'not a bridge' error", err)
	}
}

func TestBridgeMAC(t *testing.T) {
	a := overlay.Bridge{Name: "weft0", Gateways: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/24")}}
	b := overlay.Bridge{Name: "weft0", Gateways: []netip.Prefix{netip.MustParsePrefix("10.0.1.1/24")}}
	if a.MAC().String() != a.MAC().String() || a.MAC().String() == b.MAC().String() {
		t.Errorf("MAC not stable per bridge or equal across gateways: %s %s", a.MAC(), b.MAC())
	}
	if m := a.MAC(); m[0]&1 != 0 || m[0]&2 == 0 {
		t.Errorf("MAC %s: want unicast, locally administered", m)
	}
}

func TestEnsureForwarding(t *testing.T) {
	ns := nstest.New(t, "fwd")
	ns.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	err := ns.Do(func() error {
		return overlay.EnsureForwarding([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("fd00::/64")})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if out := strings.TrimSpace(ns.MustRun(t, "sysctl", "-n", p)); out != "1" {
			t.Errorf("%s = %s, want 1", p, out)
		}
	}
}
