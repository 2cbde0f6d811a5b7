package plan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"weft.dev/weft/agent/config"
)

// Trust: what a peer publishes about itself (its weft.dev/ annotations) is
// believed only when it agrees with what the control plane owns and with
// every other node. Vet is the one gate both modes go through:
//
//   - The node address comes from the Node's status.addresses (the agent
//     converting the Node refuses a weft.dev/node-ip naming another
//     address: Node.Refused).
//   - A pod CIDR from spec.podCIDRs is the controller-manager's. A leased
//     one (weft.dev/pod-cidrs) counts only when its block Lease is held by
//     that node, it is exactly one block of the configured size inside the
//     cluster CIDRs, and the node has one per family.
//   - No two nodes may share a node address or a VTEP MAC, and no two nodes'
//     pod CIDRs may overlap (exact, more specific or covering). The own
//     node's data is this agent's own and always wins; among peers the
//     oldest Node (creationTimestamp, then name) wins, so every node decides
//     a conflict the same way whatever the informer order. The loser is
//     pending with a reason naming the winner; nothing else changes.
//
// A refused peer is left out of the datapath, the VXLAN source allow-list
// and the BGP mesh and import policy; every other peer is planned as usual.

// vetted is one peer after Vet: its data or why it is not believed.
type vetted struct {
	Node
	problem string
}

// Vet returns the peers whose published data this node believes (sorted by
// name, self left out) and, for every other peer, why not. It is pure and
// independent of the order of peers.
func Vet(c config.Config, self Self, peers []Node) (ok []Node, refused map[string]string) {
	refused = map[string]string{}
	for _, v := range vet(c, self, peers) {
		if v.problem != "" {
			refused[v.Name] = v.problem
		} else {
			ok = append(ok, v.Node)
		}
	}
	return ok, refused
}

// vet checks each peer alone, then the conflicts between them, oldest first,
// and returns every peer but self, sorted by name.
func vet(c config.Config, self Self, peers []Node) []vetted {
	var out []vetted
	for _, n := range peers {
		if n.Name == self.Name {
			continue
		}
		out = append(out, vetted{Node: n, problem: vetAlone(c, self, n)})
	}
	// Oldest first (name as tie-break): the order claims are granted in.
	slices.SortFunc(out, func(a, b vetted) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.Name, b.Name))
	})
	claims := newClaims(c)
	claims.add(self.Node)
	for i := range out {
		n := &out[i]
		if n.problem != "" {
			continue // believes nothing of it: claims nothing
		}
		if n.problem = claims.conflict(n.Node); n.problem == "" {
			claims.add(n.Node)
		}
	}
	slices.SortFunc(out, func(a, b vetted) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// vetAlone checks what one peer publishes against the control plane's data.
func vetAlone(c config.Config, self Self, n Node) string {
	if n.Refused != "" {
		return n.Refused
	}
	if !n.Leased {
		return ""
	}
	if err := c.CheckPodCIDRs("node "+n.Name+" podCIDRs", n.PodCIDRs); err != nil {
		return err.Error()
	}
	fam := map[bool]bool{}
	for _, p := range n.PodCIDRs {
		if fam[p.Addr().Is4()] {
			return fmt.Sprintf("leased pod CIDRs %s: more than one per family", joinPrefixes(n.PodCIDRs))
		}
		fam[p.Addr().Is4()] = true
		if size := c.BlockSize(p); p.Bits() != size {
			return fmt.Sprintf("leased pod CIDR %s is not a /%d block", p, size)
		}
		if self.Leases == nil {
			return "block leases not read yet"
		}
		switch holder, ok := self.Leases[p.Masked()]; {
		case !ok:
			return fmt.Sprintf("leased pod CIDR %s has no block lease", p)
		case holder != n.Name:
			return fmt.Sprintf("leased pod CIDR %s: its block lease is held by %q", p, holder)
		}
	}
	return ""
}

// claims are the addresses, MACs and pod CIDRs granted so far, by node.
type claims struct {
	vxlan bool
	addrs map[netip.Addr]string
	macs  map[string]string
	pods  []claimedPrefix
}

type claimedPrefix struct {
	p    netip.Prefix
	node string
}

func newClaims(c config.Config) *claims {
	return &claims{vxlan: c.Mode == config.VXLAN, addrs: map[netip.Addr]string{}, macs: map[string]string{}}
}

func (cl *claims) add(n Node) {
	if n.IP.IsValid() {
		cl.addrs[n.IP] = n.Name
	}
	if cl.vxlan && len(n.VTEPMAC) == 6 {
		cl.macs[n.VTEPMAC.String()] = n.Name
	}
	for _, p := range n.PodCIDRs {
		cl.pods = append(cl.pods, claimedPrefix{p.Masked(), n.Name})
	}
}

// conflict says which earlier claim n collides with, or "".
func (cl *claims) conflict(n Node) string {
	if other, ok := cl.addrs[n.IP]; ok && n.IP.IsValid() {
		return fmt.Sprintf("conflict: node address %s is node %s's", n.IP, other)
	}
	if cl.vxlan && len(n.VTEPMAC) == 6 {
		if other, ok := cl.macs[n.VTEPMAC.String()]; ok {
			return fmt.Sprintf("conflict: VTEP MAC %s is node %s's", n.VTEPMAC, other)
		}
	}
	for _, p := range n.PodCIDRs {
		for _, o := range cl.pods {
			if p.Masked().Overlaps(o.p) {
				return fmt.Sprintf("conflict: pod CIDR %s overlaps node %s's %s", p.Masked(), o.node, o.p)
			}
		}
	}
	return ""
}

func joinPrefixes(ps []netip.Prefix) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}
