package lab

import (
	"net/netip"
	"strings"
	"testing"

	"weft.dev/weft/test/nstest"
)

// ensureVeth makes a pair straight between two namespaces, keeps a complete
// pair, repairs a half one, and never makes anything in the root namespace.
func TestEnsureVeth(t *testing.T) {
	a, b := nstest.New(t, "va"), nstest.New(t, "vb")
	before := rootLinks(t)
	for i := range 2 {
		if err := ensureVeth(a.Name, "eth1", b.Name, "eth7", 1400); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if err := ensureAddrs(a.Name, map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix("172.30.99.1/24"), netip.MustParsePrefix("fd00:30:99::1/64")}}); err != nil {
		t.Fatal(err)
	}
	if err := ensureAddrs(b.Name, map[string][]netip.Prefix{"eth7": {netip.MustParsePrefix("172.30.99.2/24"), netip.MustParsePrefix("fd00:30:99::2/64")}}); err != nil {
		t.Fatal(err)
	}
	// Twice: replace semantics.
	for range 2 {
		if err := ensureRoutes(a.Name, []Route{{Dst: netip.MustParsePrefix("172.30.98.0/24"), Via: netip.MustParseAddr("172.30.99.2")}}); err != nil {
			t.Fatal(err)
		}
	}
	a.MustRun(t, "ping", "-c1", "-W2", "172.30.99.2")
	a.MustRun(t, "ping", "-c1", "-W2", "fd00:30:99::2")
	if out := a.MustRun(t, "ip", "route", "show", "172.30.98.0/24"); !strings.Contains(out, "via 172.30.99.2 dev eth1") {
		t.Errorf("route: %q", out)
	}
	if out := a.MustRun(t, "ip", "link", "show", "eth1"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("mtu: %q", out)
	}

	// A crash left half a pair: b's end gone (deleting one end deletes
	// both, so make a lone veth in a under the same name).
	if err := delLink(a.Name, "eth1"); err != nil {
		t.Fatal(err)
	}
	a.MustRun(t, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "tmp0")
	if err := ensureVeth(a.Name, "eth1", b.Name, "eth7", 1400); err != nil {
		t.Fatalf("repair: %v", err)
	}
	if !linkExists(b.Name, "eth7") {
		t.Error("repair: no eth7 in b")
	}
	if linkExists(a.Name, "tmp0") {
		t.Error("repair: old half pair still there")
	}
	if after := rootLinks(t); after != before {
		t.Errorf("root namespace links changed: %q -> %q", before, after)
	}
	// Link cut and restore.
	if err := setDown(a.Name, "eth1"); err != nil {
		t.Fatal(err)
	}
	if up, err := linkAdminUp(a.Name, "eth1"); err != nil || up {
		t.Errorf("after setDown: up=%t err=%v", up, err)
	}
	if _, err := a.Run("ping", "-c1", "-W1", "172.30.99.2"); err == nil {
		t.Error("ping over a down link worked")
	}
}

func TestEnsureBridge(t *testing.T) {
	sw, h1, h2 := nstest.New(t, "sw"), nstest.New(t, "h1"), nstest.New(t, "h2")
	for i, h := range []*nstest.NS{h1, h2} {
		port := []string{"p1", "p2"}[i]
		if err := ensureVeth(h.Name, "eth1", sw.Name, port, 1500); err != nil {
			t.Fatal(err)
		}
		addr := []string{"172.30.97.1/24", "172.30.97.2/24"}[i]
		if err := ensureAddrs(h.Name, map[string][]netip.Prefix{"eth1": {netip.MustParsePrefix(addr)}}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := ensureBridge(sw.Name, "br0", []string{"p1", "p2"}); err != nil {
			t.Fatal(err)
		}
	}
	h1.MustRun(t, "ping", "-c1", "-W2", "172.30.97.2")
}

func TestSetForwarding(t *testing.T) {
	ns := nstest.New(t, "fw")
	root := readSysctl(t, "/proc/sys/net/ipv4/ip_forward")
	if err := setForwarding(ns.Name); err != nil {
		t.Fatal(err)
	}
	if out := ns.MustRun(t, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "1" {
		t.Errorf("ip_forward in the namespace: %q", out)
	}
	if after := readSysctl(t, "/proc/sys/net/ipv4/ip_forward"); after != root {
		t.Errorf("root ip_forward changed: %q -> %q", root, after)
	}
}
