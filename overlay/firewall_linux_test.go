package overlay

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"weft.dev/weft/overlay/nsrun"
	"weft.dev/weft/test/nstest"
)

// receiver collects the source addresses of UDP datagrams to port in ns.
type receiver struct {
	mu   sync.Mutex
	from map[netip.Addr]string // source → payload
}

func listenUDP(t *testing.T, ns *nstest.NS, port int) *receiver {
	t.Helper()
	var conn net.PacketConn
	err := nsrun.In(ns.Path, func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}) // dual-stack [::]:port
		return err
	})
	if err != nil {
		t.Fatalf("listen udp %d in %s: %v", port, ns.Name, err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &receiver{from: map[netip.Addr]string{}}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			ap := addr.(*net.UDPAddr).AddrPort()
			r.mu.Lock()
			r.from[ap.Addr().Unmap()] = string(buf[:n])
			r.mu.Unlock()
		}
	}()
	return r
}

// got returns the payload from src, waiting up to wait for it.
func (r *receiver) got(src netip.Addr, wait time.Duration) (string, bool) {
	deadline := time.Now().Add(wait)
	for {
		r.mu.Lock()
		p, ok := r.from[src]
		r.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return p, ok
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendUDP sends payload from src (bound) to dst:port from inside ns, a few
// times (the first may wait on neighbour discovery).
func sendUDP(t *testing.T, ns *nstest.NS, src, dst netip.Addr, port int, payload string) {
	t.Helper()
	err := nsrun.In(ns.Path, func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, &net.UDPAddr{IP: dst.AsSlice(), Port: port})
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 {
			if _, err := c.Write([]byte(payload)); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send %v → %v:%d in %s: %v", src, dst, port, ns.Name, err)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestFirewall builds node ── peer and node ── pod namespaces:
//
//	pod (10.244.0.5, fd10::5) ─ pod0 ─ node (192.168.78.1, fd78::1) ─ eth1 ─ peer
//
// The peer holds a node address (.2, ::2), a stranger's address (.3, ::3)
// and an address inside the cluster CIDR (another node's pod, 10.244.1.1,
// fd10:0:0:1::1). The node forwards with FORWARD policy DROP.
func TestFirewall(t *testing.T) {
	node, peer, pod := nstest.New(t, "fwn"), nstest.New(t, "fwp"), nstest.New(t, "fwq")
	node.MustRun(t, "ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", peer.Name)
	node.MustRun(t, "ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", pod.Name)
	for _, c := range [][]string{
		{"ip", "addr", "add", "192.168.78.1/24", "dev", "eth1"},
		{"ip", "addr", "add", "fd78::1/64", "dev", "eth1", "nodad"},
		{"ip", "addr", "add", "10.244.0.1/24", "dev", "pod0"},
		{"ip", "addr", "add", "fd10::1/64", "dev", "pod0", "nodad"},
		{"ip", "link", "set", "eth1", "up"},
		{"ip", "link", "set", "pod0", "up"},
		{"ip", "route", "add", "10.244.1.0/24", "via", "192.168.78.2"},
		{"ip", "route", "add", "fd10:0:0:1::/64", "via", "fd78::2"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"},
		{"iptables", "-P", "FORWARD", "DROP"},
		{"ip6tables", "-P", "FORWARD", "DROP"},
	} {
		node.MustRun(t, c[0], c[1:]...)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", "192.168.78.2/24", "dev", "eth1"},
		{"ip", "addr", "add", "192.168.78.3/24", "dev", "eth1"},
		{"ip", "addr", "add", "10.244.1.1/32", "dev", "eth1"},
		{"ip", "addr", "add", "fd78::2/64", "dev", "eth1", "nodad"},
		{"ip", "addr", "add", "fd78::3/64", "dev", "eth1", "nodad"},
		{"ip", "addr", "add", "fd10:0:0:1::1/128", "dev", "eth1", "nodad"},
		{"ip", "link", "set", "eth1", "up"},
		{"ip", "route", "add", "10.244.0.0/24", "via", "192.168.78.1"},
		{"ip", "route", "add", "fd10::/64", "via", "fd78::1"},
	} {
		peer.MustRun(t, c[0], c[1:]...)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", "10.244.0.5/24", "dev", "eth0"},
		{"ip", "addr", "add", "fd10::5/64", "dev", "eth0", "nodad"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", "10.244.0.1"},
		{"ip", "route", "add", "default", "via", "fd10::1"},
	} {
		pod.MustRun(t, c[0], c[1:]...)
	}

	fw, err := NewFirewall(node.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fw.Close)
	ctx := context.Background()
	rules := Rules{
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd10::/48")},
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24"), netip.MustParsePrefix("fd10::/64")},
		VXLANPort:    4789,
		VTEPSources:  []netip.Addr{addr("192.168.78.2"), addr("fd78::2")},
		Masquerade:   true,
	}
	if err := fw.Reconcile(ctx, rules); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}

	// Chains and jumps, the jumps first in their parent chains.
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, c := range []struct{ table, parent, chain string }{
			{"nat", "POSTROUTING", ChainPostrouting}, {"filter", "FORWARD", ChainForward}, {"filter", "INPUT", ChainInput},
		} {
			out := node.MustRun(t, cmd, "-t", c.table, "-S", c.parent)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) < 2 || lines[1] != "-A "+c.parent+" -j "+c.chain {
				t.Errorf("%s -t %s -S %s: jump to %s not first:\n%s", cmd, c.table, c.parent, c.chain, out)
			}
		}
	}
	if out := node.MustRun(t, "ipset", "list", "weft-nodes4"); !strings.Contains(out, "192.168.78.2") {
		t.Errorf("ipset weft-nodes4:\n%s", out)
	}

	// Idempotent: a second pass writes nothing.
	before := fw.writes
	if err := fw.Reconcile(ctx, rules); err != nil {
		t.Fatal(err)
	}
	if w := fw.writes - before; w != 0 {
		t.Fatalf("second Reconcile made %d firewall writes, want 0", w)
	}

	// Sync with the same rules runs no iptables: a rule deleted by hand is
	// left to the next Reconcile, which puts it back.
	masq := []string{"-t", "nat", "-C", ChainPostrouting, "-s", "10.244.0.0/24", "-j", "MASQUERADE", "--random-fully"}
	node.MustRun(t, "iptables", append([]string{"-t", "nat", "-D"}, masq[3:]...)...)
	checks := fw.checks
	if err := fw.Sync(ctx, rules); err != nil {
		t.Fatal(err)
	}
	if c := fw.checks - checks; c != 0 {
		t.Errorf("Sync with unchanged rules checked %d chains, want 0", c)
	}
	if err := fw.Reconcile(ctx, rules); err != nil {
		t.Fatal(err)
	}
	node.MustRun(t, "iptables", masq...) // fails the test when still missing

	// VXLAN port: accepted from node addresses only.
	vx := listenUDP(t, node, 4789)
	for _, c := range []struct {
		src, dst string
		accept   bool
	}{
		{"192.168.78.2", "192.168.78.1", true},
		{"192.168.78.3", "192.168.78.1", false},
		{"fd78::2", "fd78::1", true},
		{"fd78::3", "fd78::1", false},
	} {
		sendUDP(t, peer, addr(c.src), addr(c.dst), 4789, "vxlan from "+c.src)
		wait := 6 * time.Second
		if !c.accept {
			wait = time.Second
		}
		if _, ok := vx.got(addr(c.src), wait); ok != c.accept {
			t.Errorf("VXLAN from %s: received=%v, want %v", c.src, ok, c.accept)
		}
	}

	// Pod traffic: masqueraded to the outside, kept to the cluster CIDRs,
	// forwarded despite FORWARD policy DROP.
	out := listenUDP(t, peer, 9000)
	for _, c := range []struct {
		src, dst, seenFrom string
	}{
		{"10.244.0.5", "192.168.78.2", "192.168.78.1"},
		{"10.244.0.5", "10.244.1.1", "10.244.0.5"},
		{"fd10::5", "fd78::2", "fd78::1"},
		{"fd10::5", "fd10:0:0:1::1", "fd10::5"},
	} {
		payload := "pod to " + c.dst
		sendUDP(t, pod, addr(c.src), addr(c.dst), 9000, payload)
		if p, ok := out.got(addr(c.seenFrom), 6*time.Second); !ok || p != payload {
			out.mu.Lock()
			t.Errorf("%s → %s: want it seen from %s; received %v", c.src, c.dst, c.seenFrom, out.from)
			out.mu.Unlock()
		}
	}

	// Members change one by one: the stranger becomes a node, the old node
	// leaves; the set is the same set (its rule keeps matching).
	rules.VTEPSources = []netip.Addr{addr("192.168.78.3"), addr("fd78::2")}
	before, checks = fw.writes, fw.checks
	if err := fw.Sync(ctx, rules); err != nil {
		t.Fatal(err)
	}
	if w, c := fw.writes-before, fw.checks-checks; w != 2 || c != 0 {
		t.Errorf("membership change made %d writes and %d chain checks, want 2 (one add, one delete) and 0", w, c)
	}
	set := node.MustRun(t, "ipset", "list", "weft-nodes4")
	if !strings.Contains(set, "192.168.78.3") || strings.Contains(set, "192.168.78.2\n") {
		t.Errorf("ipset after membership change:\n%s", set)
	}
	vx.reset()
	sendUDP(t, peer, addr("192.168.78.3"), addr("192.168.78.1"), 4789, "now a node")
	if p, ok := vx.got(addr("192.168.78.3"), 6*time.Second); !ok || p != "now a node" {
		t.Errorf("VXLAN from the new node address not received")
	}

	// Cleanup removes jumps, chains and sets, and is itself idempotent.
	for range 2 {
		if err := fw.Cleanup(ctx); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
	}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		if out := node.MustRun(t, cmd); strings.Contains(out, "WEFT") {
			t.Errorf("%s after Cleanup:\n%s", cmd, out)
		}
	}
	if out := node.MustRun(t, "ipset", "list", "-n"); strings.Contains(out, "weft") {
		t.Errorf("ipsets after Cleanup: %s", out)
	}
	// Cleanup forgets what was verified: a Sync puts everything back.
	if err := fw.Sync(ctx, rules); err != nil {
		t.Fatal(err)
	}
	node.MustRun(t, "iptables", masq...)
}

// reset forgets what r received so far.
func (r *receiver) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.from)
}
