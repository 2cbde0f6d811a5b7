package bgpmode

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

// hopKey names one next hop of one learned prefix.
type hopKey struct {
	Prefix netip.Prefix
	Peer   netip.Addr
	Addr   netip.Addr
}

// view is the pure part of turning the speaker's table into kernel routes.
type view struct {
	// Table is the speaker's latest learned table.
	Table bgp.Table
	// Caps are the per-peer prefix limits.
	Caps map[netip.Addr]int
	// Announced are our own paths: a prefix we announce is never
	// installed (a Service address every node announces).
	Announced map[netip.Prefix]bool
	// StaleSince is when each stale next hop was first seen stale.
	StaleSince map[hopKey]time.Time
	// StaleTimeout drops stale next hops older than this (the peer did not
	// come back within the graceful restart time and the speaker kept them).
	StaleTimeout time.Duration
	// Retained are the routes kept from before a restart, installed for
	// prefixes the table does not have until every peer sent End-of-RIB.
	Retained []overlay.Route
}

// result is what a view yields.
type result struct {
	Routes []overlay.Route
	Capped []bgp.Rejected // next hops dropped by a per-peer cap
	// Installed counts, per peer, the routes with a next hop it reported.
	Installed  map[netip.Addr]int
	StaleSince map[hopKey]time.Time
}

// compute applies the per-peer caps, ages stale next hops and merges the
// retained routes, at time now.
func (v view) compute(now time.Time) result {
	res := result{StaleSince: map[hopKey]time.Time{}, Installed: map[netip.Addr]int{}}
	counts := map[netip.Addr]int{}
	byPrefix := map[netip.Prefix]overlay.Route{}
	for _, l := range v.Table.Routes {
		if v.Announced[l.Prefix] {
			continue
		}
		var hops []overlay.NextHop
		from := map[netip.Addr]bool{}
		counted := map[netip.Addr]bool{}
		for _, h := range l.NextHops {
			if limit, ok := v.Caps[h.Peer]; ok && !counted[h.Peer] {
				if counts[h.Peer] >= limit {
					res.Capped = append(res.Capped, bgp.Rejected{Prefix: l.Prefix, NextHop: h.Addr, Peer: h.Peer, Reason: bgp.MaxPrefixReason})
					continue
				}
				counts[h.Peer]++
				counted[h.Peer] = true
			}
			if h.Stale {
				k := hopKey{l.Prefix, h.Peer, h.Addr}
				since, ok := v.StaleSince[k]
				if !ok {
					since = now
				}
				res.StaleSince[k] = since
				if v.StaleTimeout > 0 && now.Sub(since) >= v.StaleTimeout {
					continue
				}
			}
			hop := overlay.NextHop{Gateway: h.Addr}
			if !slices.Contains(hops, hop) {
				hops = append(hops, hop)
			}
			from[h.Peer] = true
		}
		if len(hops) > 0 {
			byPrefix[l.Prefix] = overlay.Route{Dst: l.Prefix, NextHops: hops}
			for p := range from {
				res.Installed[p]++
			}
		}
	}
	for _, r := range v.Retained {
		if _, ok := byPrefix[r.Dst]; !ok && !v.Announced[r.Dst] {
			byPrefix[r.Dst] = r
		}
	}
	for _, pfx := range slices.SortedFunc(maps.Keys(byPrefix), comparePrefix) {
		res.Routes = append(res.Routes, byPrefix[pfx])
	}
	return res
}

// allEndOfRIB reports whether every one of peers sent End-of-RIB on its
// current session (true when there are no peers).
func allEndOfRIB(t bgp.Table, peers []bgp.Peer) bool {
	for _, p := range peers {
		if !t.EndOfRIB[p.Address] {
			return false
		}
	}
	return true
}

// toRetained keeps routes as they are, sorted, with only the gateway as
// next hop (the kernel's device is resolved again when they are installed).
func toRetained(routes []overlay.Route) []overlay.Route {
	out := make([]overlay.Route, 0, len(routes))
	for _, r := range routes {
		var hops []overlay.NextHop
		for _, h := range r.NextHops {
			if h.Gateway.IsValid() {
				hops = append(hops, overlay.NextHop{Gateway: h.Gateway})
			}
		}
		if len(hops) > 0 && r.Dst.IsValid() {
			out = append(out, overlay.Route{Dst: r.Dst.Masked(), NextHops: hops})
		}
	}
	slices.SortFunc(out, func(a, b overlay.Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out
}
