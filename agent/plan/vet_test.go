package plan

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/overlay"
)

// A node can publish anything in its own weft.dev/ annotations. What it
// claims that another node (or this one) already has, or what the control
// plane does not back, leaves that node pending; every other peer is
// planned as if the squatter were not there, whatever the informer order.
func TestPlanRefusesSquatters(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	older, newer := t0, t0.Add(time.Hour)
	// b and c are honest; z (the newest node) squats on their data.
	b := Node{Name: "b", Created: older, IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, VTEPMAC: mac(macB)}
	c := Node{Name: "c", Created: older, IP: ip("192.168.1.3"), PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24")}, VTEPMAC: mac(macC)}
	z := Node{Name: "z", Created: newer, IP: ip("192.168.1.26"), PodCIDRs: []netip.Prefix{pfx("10.244.26.0/24")}, VTEPMAC: mac("02:00:00:00:00:1a")}
	squat := func(mut func(*Node)) Node { n := z; n.PodCIDRs = slices.Clone(z.PodCIDRs); mut(&n); return n }
	leases := map[netip.Prefix]string{pfx("10.244.2.0/24"): "b", pfx("10.244.3.0/24"): "c", pfx("10.244.26.0/24"): "z"}

	tests := []struct {
		name  string
		peers []Node
		// pending: peer → a substring of its reason; every other peer must
		// be planned exactly as without the squatter.
		pending map[string]string
	}{
		{"honest", []Node{b, c, z}, nil},
		{"VTEP MAC of another node", []Node{b, c, squat(func(n *Node) { n.VTEPMAC = mac(macB) })},
			map[string]string{"z": "VTEP MAC 02:00:00:00:00:0b is node b's"}},
		{"VTEP MAC of this node", []Node{b, c, squat(func(n *Node) { n.VTEPMAC = mac(macA) })},
			map[string]string{"z": "node a's"}},
		{"address of another node", []Node{b, c, squat(func(n *Node) { n.IP = ip("192.168.1.2") })},
			map[string]string{"z": "node address 192.168.1.2 is node b's"}},
		{"address of this node", []Node{b, c, squat(func(n *Node) { n.IP = ip("192.168.1.1") })},
			map[string]string{"z": "node a's"}},
		{"exact pod CIDR of another node", []Node{b, c, squat(func(n *Node) { n.PodCIDRs = b.PodCIDRs })},
			map[string]string{"z": "pod CIDR 10.244.2.0/24 overlaps node b's 10.244.2.0/24"}},
		{"more specific pod CIDR", []Node{b, c, squat(func(n *Node) { n.PodCIDRs = []netip.Prefix{pfx("10.244.2.128/25")} })},
			map[string]string{"z": "overlaps node b's"}},
		{"covering pod CIDR", []Node{b, c, squat(func(n *Node) { n.PodCIDRs = []netip.Prefix{pfx("10.244.0.0/16")} })},
			map[string]string{"z": "overlaps node"}},
		{"a /32 of this node's pods", []Node{b, c, squat(func(n *Node) { n.PodCIDRs = []netip.Prefix{pfx("10.244.1.7/32")} })},
			map[string]string{"z": "overlaps node a's 10.244.1.0/24"}},
		{"refused while converted (node-ip not among status.addresses)", []Node{b, c, squat(func(n *Node) { n.Refused = "weft.dev/node-ip 192.168.1.2 is not among" })},
			map[string]string{"z": "not among"}},
		{"the older node wins, whoever squats (MAC)", []Node{c, squat(func(n *Node) { n.Created = t0.Add(-time.Hour); n.VTEPMAC = mac(macB) }), b},
			map[string]string{"b": "VTEP MAC 02:00:00:00:00:0b is node z's"}},
		{"the older node wins, whoever squats (pod CIDR)", []Node{c, squat(func(n *Node) { n.Created = t0.Add(-time.Hour); n.PodCIDRs = b.PodCIDRs }), b},
			map[string]string{"b": "overlaps node z's"}},
		{"same age: the name decides", []Node{c, b, squat(func(n *Node) { n.Created = older; n.Name = "a0"; n.IP = ip("192.168.1.2") })},
			map[string]string{"b": "node address 192.168.1.2 is node a0's"}},
		{"leased pod CIDRs backed by their leases", []Node{leasedNode(b), leasedNode(c), leasedNode(z)}, nil},
		{"leased pod CIDR whose lease another node holds", []Node{leasedNode(b), leasedNode(c), leasedNode(squat(func(n *Node) { n.PodCIDRs = []netip.Prefix{pfx("10.244.4.0/24")} }))},
			map[string]string{"z": "no block lease"}},
		{"leased pod CIDR: another node's block", []Node{leasedNode(b), c, leasedNode(squat(func(n *Node) { n.Created = t0.Add(-time.Hour); n.PodCIDRs = b.PodCIDRs }))},
			map[string]string{"z": `held by "b"`}},
		{"leased pod CIDR not of the block size", []Node{b, c, leasedNode(squat(func(n *Node) { n.PodCIDRs = []netip.Prefix{pfx("10.244.26.0/25")} }))},
			map[string]string{"z": "not a /24 block"}},
		{"two leased pod CIDRs of one family", []Node{b, c, leasedNode(squat(func(n *Node) {
			n.PodCIDRs = []netip.Prefix{pfx("10.244.26.0/24"), pfx("10.244.27.0/24")}
		}))}, map[string]string{"z": "more than one per family"}},
	}
	for _, mode := range []config.Mode{config.VXLAN, config.BGP} {
		conf := cfg(func(c *config.Config) { c.Mode = mode })
		self := selfV4()
		self.Leases = leases
		for _, n := range []Node{b, c, z} { // bgp: every peer's route learned
			self.Learned = append(self.Learned, overlay.Route{Dst: n.PodCIDRs[0], NextHops: []overlay.NextHop{{Gateway: n.IP}}})
		}
		honest, err := Plan(conf, self, []Node{b, c})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range tests {
			if strings.Contains(tc.name, "MAC") && mode == config.BGP {
				continue // bgp mode has no VTEP: a MAC means nothing there
			}
			t.Run(fmt.Sprintf("%s/%s", mode, tc.name), func(t *testing.T) {
				got, err := Plan(conf, self, tc.peers)
				if err != nil {
					t.Fatalf("Plan: %v (one peer must never stop the others)", err)
				}
				for _, pr := range got.Peers {
					want, isPending := tc.pending[pr.Name]
					switch {
					case isPending && (pr.Programmed || !strings.Contains(pr.Pending, want)):
						t.Errorf("peer %s: programmed %v, pending %q; want pending with %q", pr.Name, pr.Programmed, pr.Pending, want)
					case !isPending && !pr.Programmed:
						t.Errorf("peer %s: pending %q, want programmed", pr.Name, pr.Pending)
					}
				}
				// The honest peers' datapath is exactly what it is without
				// the squatter (plus the squatter's own, when it is honest).
				if _, zBad := tc.pending["z"]; zBad {
					if d := cmp.Diff(keep(honest.Desired, b, c), keep(got.Desired, b, c), opts); d != "" {
						t.Errorf("honest peers' datapath changed (-without squatter +with):\n%s", d)
					}
					if d := cmp.Diff(honest.Desired, got.Desired, opts); d != "" && mode == config.VXLAN {
						t.Errorf("the squatter added to the datapath (-without +with):\n%s", d)
					}
					if slices.Contains(got.Rules.VTEPSources, tc.peers[2].IP) && tc.peers[2].IP != b.IP {
						t.Errorf("refused peer's address %s is a VXLAN source: %v", tc.peers[2].IP, got.Rules.VTEPSources)
					}
				}
				// The same result whatever order the informer lists nodes in.
				for range 5 {
					shuffled := slices.Clone(tc.peers)
					rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
					again, err := Plan(conf, self, shuffled)
					if err != nil {
						t.Fatal(err)
					}
					if d := cmp.Diff(got, again, opts); d != "" {
						t.Fatalf("plan depends on the peers' order %v (-first +shuffled):\n%s", names(shuffled), d)
					}
				}
			})
		}
	}
}

func leasedNode(n Node) Node { n.Leased = true; return n }

func names(ns []Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

// keep is the part of d that reaches the given nodes (by pod CIDR, VTEP
// and node address).
func keep(d overlay.Desired, nodes ...Node) overlay.Desired {
	var out overlay.Desired
	for _, n := range nodes {
		for _, r := range d.Routes {
			if slices.Contains(n.PodCIDRs, r.Dst) {
				out.Routes = append(out.Routes, r)
			}
		}
		for _, f := range d.FDB {
			if f.Dst == n.IP {
				out.FDB = append(out.FDB, f)
			}
		}
		for _, nb := range d.Neighbors {
			if slices.ContainsFunc(n.PodCIDRs, func(p netip.Prefix) bool { return p.Contains(nb.IP) }) {
				out.Neighbors = append(out.Neighbors, nb)
			}
		}
	}
	return out
}

// Vet, which bgp mode's mesh and import policy use, agrees with the plan.
func TestVetAgreesWithPlan(t *testing.T) {
	b := Node{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24")}, VTEPMAC: mac(macB)}
	z := Node{Name: "z", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/25")}, VTEPMAC: mac(macB)}
	ok, refused := Vet(cfg(func(c *config.Config) { c.Mode = config.BGP }), selfV4(), []Node{z, b})
	if len(ok) != 1 || ok[0].Name != "b" {
		t.Errorf("believed %v, want only b", names(ok))
	}
	if !strings.Contains(refused["z"], "node address 192.168.1.2 is node b's") {
		t.Errorf("z refused for %q", refused["z"])
	}
}
