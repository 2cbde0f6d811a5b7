// Package overlay owns every kernel write weft-agent makes on a node, for both
// modes: the VXLAN device, its neighbour and FDB entries, the routes to other
// nodes' pod CIDRs (through the tunnel, directly via a peer's node address, or
// learned over BGP), and the firewall chains.
//
// Callers describe the whole wanted datapath as a Desired value (plain
// net/netip values, built by the agent's pure plan); Reconcile reads what is
// there — only what weft owns: its devices, its route protocol, its WEFT-
// chains — and applies the difference, adding before deleting, continuing
// past failures and returning errors.Join of them. Nothing is flushed on start
// or stop.
package overlay

import (
	"net"
	"net/netip"
)

// DefaultRouteProtocol marks weft's kernel routes (rtm_protocol), so weft finds
// and removes only its own. It is not used by the kernel, zebra (11, 17 in
// some stacks), BIRD (12) or the other well-known daemons.
const DefaultRouteProtocol = 87

// Device is a VXLAN device weft owns.
type Device struct {
	Name  string           // e.g. "weft.vxlan" or "weft.vxlan6"
	VNI   uint32           // 1 .. 2^24-1
	Port  uint16           // UDP destination port, default 4789
	Local netip.Addr       // tunnel source: this node's underlay address (its family picks v4/v6 underlay)
	MTU   int              // underlay MTU - 50 (IPv4 underlay) or - 70 (IPv6 underlay)
	MAC   net.HardwareAddr // stable across restarts; published as weft.dev/vtep-mac
	// Addrs are the device's own addresses (the VTEP IPs: the first address of
	// the node's pod CIDR per family, as a /32 or /128).
	Addrs []netip.Addr
}

// Neighbor is a permanent neighbour entry: a peer's VTEP IP → its VTEP MAC.
type Neighbor struct {
	Dev string
	IP  netip.Addr
	MAC net.HardwareAddr
}

// FDBEntry sends frames for a peer's VTEP MAC to its underlay address.
type FDBEntry struct {
	Dev string
	MAC net.HardwareAddr
	Dst netip.Addr
}

// NextHop is one way to reach a route's destination.
type NextHop struct {
	Gateway netip.Addr // peer VTEP IP (vxlan), peer node IP (direct/BGP)
	Dev     string     // empty: let the kernel resolve it through the underlay
	Onlink  bool       // gateway is on-link on Dev even without a covering route
}

// Route is a kernel route weft owns (marked with the route protocol). Several
// next hops make an ECMP (multipath) route.
type Route struct {
	Dst      netip.Prefix
	NextHops []NextHop
}

// Desired is the whole datapath one node should have. Empty slices mean
// "none": whatever weft owns beyond them is removed.
type Desired struct {
	Devices   []Device
	Neighbors []Neighbor
	FDB       []FDBEntry
	Routes    []Route
}
