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
	"context"
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

// Names of the VXLAN devices weft makes: Reconcile and Cleanup treat devices
// with these names as weft's even when Desired no longer mentions them.
const (
	VXLANDevice  = "weft.vxlan"
	VXLAN6Device = "weft.vxlan6"
)

// DefaultVXLANPort is the IANA VXLAN port, used when Device.Port is zero.
const DefaultVXLANPort = 4789

// DeviceState is a device as found in the kernel.
type DeviceState struct {
	Device
	Up bool
	// Kind is the kernel link type ("vxlan"); a device with one of weft's
	// names but another kind is replaced.
	Kind string
}

// State is what weft owns in the kernel: its devices, the permanent
// neighbour and FDB entries on them, and the main-table routes marked with
// its route protocol. Next hops always carry the device the kernel resolved.
type State struct {
	Devices   []DeviceState
	Neighbors []Neighbor
	FDB       []FDBEntry
	Routes    []Route
}

// ChangeKind says what kind of kernel object a Change is about.
type ChangeKind int

const (
	LinkChange ChangeKind = iota + 1
	NeighborChange
	RouteChange
)

// Change is one kernel notification, reduced to what tells whether it
// concerns weft.
type Change struct {
	Kind     ChangeKind
	Dev      string // link and neighbour changes: the device's name ("" when unknown)
	Protocol int    // route changes: the route protocol
	Deleted  bool
}

// Kernel is the side of the node's network stack weft's datapath writes to.
// Every Set is idempotent (create or replace); every Delete treats "already
// gone" as success. The netlink adapter implements it for one network
// namespace; Fake implements it in memory.
type Kernel interface {
	// Observe reads the named devices (absent ones are left out), the
	// permanent neighbour and FDB entries on them, and all main-table routes
	// marked with proto.
	Observe(ctx context.Context, devices []string, proto int) (State, error)
	// SetDevice creates the device or fixes its mutable attributes (MTU,
	// MAC, up, addresses) in place. It fails for an existing device whose
	// immutable attributes (VNI, port, local address) differ.
	SetDevice(ctx context.Context, d Device) error
	DeleteDevice(ctx context.Context, name string) error
	SetNeighbor(ctx context.Context, n Neighbor) error
	DeleteNeighbor(ctx context.Context, n Neighbor) error
	SetFDB(ctx context.Context, f FDBEntry) error
	DeleteFDB(ctx context.Context, f FDBEntry) error
	SetRoute(ctx context.Context, r Route, proto int) error
	DeleteRoute(ctx context.Context, r Route, proto int) error
	// Subscribe calls fn for each link, neighbour and route change until ctx
	// is done (then it returns nil) or the subscription breaks (an error).
	Subscribe(ctx context.Context, fn func(Change)) error
}
