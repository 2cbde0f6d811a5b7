package bgp

import (
	"cmp"
	"net/netip"
	"slices"
)

// Reason says why a learned route was rejected. The zero value means
// accepted. Reasons are few and fixed, so they can label counters.
type Reason string

// Rejection reasons.
const (
	Accepted        Reason = ""
	OutsideCluster  Reason = "outside-cluster"
	DefaultRoute    Reason = "default-route"
	MoreSpecific    Reason = "more-specific"
	OwnCIDR         Reason = "own-cidr"
	CoversUnderlay  Reason = "covers-underlay"
	BadNextHop      Reason = "bad-next-hop"
	MaxPrefixReason Reason = "max-prefix"
)

// Reasons lists every rejection reason, for pre-creating counters.
var Reasons = []Reason{OutsideCluster, DefaultRoute, MoreSpecific, OwnCIDR, CoversUnderlay, BadNextHop, MaxPrefixReason}

// AllowedPrefix is another node's pod CIDR. When NextHops is not empty, the
// route is accepted only via one of them (the node's own addresses): a node
// cannot pull another node's pods to itself. Leave it empty where a router
// rewrites next hops (eBGP to a top-of-rack switch with next-hop-self).
type AllowedPrefix struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// ImportPolicy decides which learned routes the agent may install.
//
// A route is checked in this order:
//  1. a default route (/0) is never accepted;
//  2. a next hop that is invalid, unspecified or of the other family is bad;
//  3. a prefix overlapping one of Own (our pod CIDRs) is never accepted;
//  4. a prefix overlapping one of Underlay (our node addresses as /32 or /128,
//     or the underlay subnets) is never accepted: it could divert the
//     underlay itself;
//  5. exactly one of Allowed is accepted (next hop checked, see AllowedPrefix);
//  6. a more-specific of one of Allowed is rejected;
//  7. a prefix inside one of Within (service or load-balancer ranges) is
//     accepted;
//  8. anything else is outside the cluster.
//
// MaxPrefixes (0 = no limit) caps the number of accepted prefixes; the
// lowest prefixes in sort order win, so the choice is stable.
type ImportPolicy struct {
	Allowed     []AllowedPrefix
	Within      []netip.Prefix
	Own         []netip.Prefix
	Underlay    []netip.Prefix
	MaxPrefixes int
}

// Check returns why the route prefix via nextHop is rejected, or Accepted.
// It does not apply MaxPrefixes (see Filter).
func (p ImportPolicy) Check(prefix netip.Prefix, nextHop netip.Addr) Reason {
	prefix = prefix.Masked()
	switch {
	case prefix.Bits() == 0:
		return DefaultRoute
	case !nextHop.IsValid() || nextHop.IsUnspecified() || nextHop.Is4() != prefix.Addr().Is4():
		return BadNextHop
	case overlapsAny(prefix, p.Own):
		return OwnCIDR
	case overlapsAny(prefix, p.Underlay):
		return CoversUnderlay
	}
	for _, a := range p.Allowed {
		if a.Prefix.Masked() != prefix {
			continue
		}
		if len(a.NextHops) == 0 || slices.Contains(a.NextHops, nextHop.WithZone("")) {
			return Accepted
		}
		return BadNextHop
	}
	for _, a := range p.Allowed {
		if a.Prefix.Bits() < prefix.Bits() && a.Prefix.Contains(prefix.Addr()) {
			return MoreSpecific
		}
	}
	for _, w := range p.Within {
		if w.Bits() <= prefix.Bits() && w.Contains(prefix.Addr()) {
			return Accepted
		}
	}
	return OutsideCluster
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if q.IsValid() && p.Overlaps(q) {
			return true
		}
	}
	return false
}

// Candidate is one path a peer sent us, before policy and path selection.
type Candidate struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr
	Stale   bool
	// Preference: the attributes multipath selection compares.
	LocalPref uint32
	ASPathLen int
	Origin    uint8
	MED       uint32
	External  bool // learned over eBGP
}

// NextHop is one way to reach a learned prefix.
type NextHop struct {
	Addr netip.Addr
	Peer netip.Addr // who told us
	// Stale is set while the peer is restarting (graceful restart): keep the
	// route, but expect the peer to refresh it before its End-of-RIB.
	Stale bool
}

// Learned is an accepted prefix with all its equal-cost next hops.
type Learned struct {
	Prefix   netip.Prefix
	NextHops []NextHop
}

// Rejected is a path the import policy refused.
type Rejected struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Peer    netip.Addr
	Reason  Reason
}

// Filter applies the policy to candidates and selects, per prefix, every
// path as good as the best one (equal local preference, AS path length,
// origin, MED and eBGP/iBGP: the multipath rule). The result is sorted by
// prefix, next hops by address.
func (p ImportPolicy) Filter(cands []Candidate) ([]Learned, []Rejected) {
	var rejected []Rejected
	byPrefix := make(map[netip.Prefix][]Candidate)
	for _, c := range cands {
		c.Prefix = c.Prefix.Masked()
		if r := p.Check(c.Prefix, c.NextHop); r != Accepted {
			rejected = append(rejected, Rejected{Prefix: c.Prefix, NextHop: c.NextHop, Peer: c.Peer, Reason: r})
			continue
		}
		byPrefix[c.Prefix] = append(byPrefix[c.Prefix], c)
	}
	prefixes := make([]netip.Prefix, 0, len(byPrefix))
	for pfx := range byPrefix {
		prefixes = append(prefixes, pfx)
	}
	slices.SortFunc(prefixes, comparePrefix)
	learned := make([]Learned, 0, len(prefixes))
	for _, pfx := range prefixes {
		group := byPrefix[pfx]
		if p.MaxPrefixes > 0 && len(learned) >= p.MaxPrefixes {
			for _, c := range group {
				rejected = append(rejected, Rejected{Prefix: pfx, NextHop: c.NextHop, Peer: c.Peer, Reason: MaxPrefixReason})
			}
			continue
		}
		learned = append(learned, Learned{Prefix: pfx, NextHops: multipath(group)})
	}
	slices.SortFunc(rejected, func(a, b Rejected) int {
		return cmp.Or(comparePrefix(a.Prefix, b.Prefix), a.Peer.Compare(b.Peer), a.NextHop.Compare(b.NextHop))
	})
	return learned, rejected
}

// multipath returns the next hops of the best-equal paths of one prefix.
func multipath(group []Candidate) []NextHop {
	best := slices.MaxFunc(group, comparePreference)
	var hops []NextHop
	for _, c := range group {
		if comparePreference(c, best) != 0 {
			continue
		}
		hop := NextHop{Addr: c.NextHop, Peer: c.Peer, Stale: c.Stale}
		// The same next hop from two peers (a reflector and the node) is one
		// next hop; prefer the fresh report and the lower peer address.
		if i := slices.IndexFunc(hops, func(h NextHop) bool { return h.Addr == hop.Addr }); i >= 0 {
			if hops[i].Stale && !hop.Stale || hops[i].Stale == hop.Stale && hop.Peer.Less(hops[i].Peer) {
				hops[i] = hop
			}
			continue
		}
		hops = append(hops, hop)
	}
	slices.SortFunc(hops, func(a, b NextHop) int { return a.Addr.Compare(b.Addr) })
	return hops
}

// comparePreference orders paths: > 0 when a is better than b.
func comparePreference(a, b Candidate) int {
	return cmp.Or(
		cmp.Compare(a.LocalPref, b.LocalPref),
		cmp.Compare(b.ASPathLen, a.ASPathLen),
		cmp.Compare(b.Origin, a.Origin),
		cmp.Compare(b.MED, a.MED),
		cmp.Compare(boolInt(a.External), boolInt(b.External)),
	)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
