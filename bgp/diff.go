package bgp

import (
	"net/netip"
	"slices"
)

// peerPlan is what SetPeers must do, each list sorted by address.
type peerPlan struct {
	Add    []Peer
	Update []Peer
	Delete []netip.Addr
}

// diffPeers compares the desired peers with those GoBGP has (read back with
// peerFromAPI). A peer is updated only when a field we set differs. When
// the desired peer leaves LocalAddress to the kernel, the address GoBGP
// reports for the established session is not a difference.
func diffPeers(want, have map[netip.Addr]Peer) peerPlan {
	var plan peerPlan
	for addr, w := range want {
		h, ok := have[addr]
		switch {
		case !ok:
			plan.Add = append(plan.Add, w)
		case !samePeer(w, h):
			plan.Update = append(plan.Update, w)
		}
	}
	for addr := range have {
		if _, ok := want[addr]; !ok {
			plan.Delete = append(plan.Delete, addr)
		}
	}
	byAddr := func(a, b Peer) int { return a.Address.Compare(b.Address) }
	slices.SortFunc(plan.Add, byAddr)
	slices.SortFunc(plan.Update, byAddr)
	slices.SortFunc(plan.Delete, netip.Addr.Compare)
	return plan
}

func samePeer(want, have Peer) bool {
	if !want.LocalAddress.IsValid() {
		have.LocalAddress = netip.Addr{}
	}
	return want == have
}

// diffPaths returns the paths to announce (new or with a new next hop) and
// those to withdraw, each sorted by prefix.
func diffPaths(want, have map[netip.Prefix]netip.Addr) (add, del []Path) {
	for pfx, nh := range want {
		if cur, ok := have[pfx]; !ok || cur != nh {
			add = append(add, Path{Prefix: pfx, NextHop: nh})
		}
	}
	for pfx, nh := range have {
		if _, ok := want[pfx]; !ok {
			del = append(del, Path{Prefix: pfx, NextHop: nh})
		}
	}
	byPrefix := func(a, b Path) int { return comparePrefix(a.Prefix, b.Prefix) }
	slices.SortFunc(add, byPrefix)
	slices.SortFunc(del, byPrefix)
	return add, del
}
