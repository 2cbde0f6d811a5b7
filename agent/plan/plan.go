// Package plan computes the datapath and firewall rules one node should have
// from the cluster configuration, the node itself and its peers.
//
// Plan is pure: plain values in, plain values out, no I/O. The agent runs it
// on every reconcile and hands the result to the overlay reconcilers, so
// whatever the kernel holds that is weft's but not planned (a peer deleted
// while the agent was down) is removed by the same pass that adds new peers.
package plan

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/overlay"
)

// Rules are the firewall rules of one node.
type Rules = overlay.Rules

// Node is one Kubernetes node as the plan sees it.
type Node struct {
	Name     string
	Created  time.Time        // creationTimestamp: the older node wins a conflict
	IP       netip.Addr       // underlay address (tunnel endpoint); invalid: unknown
	PodCIDRs []netip.Prefix   // at most one per family
	VTEPMAC  net.HardwareAddr // nil: not published yet
	// Leased: PodCIDRs are weft's leased blocks (weft.dev/pod-cidrs), not
	// the controller-manager's spec.podCIDRs; Vet checks them against
	// Self.Leases.
	Leased bool
	// Refused says why the node's published data was refused while
	// converting it (e.g. a weft.dev/node-ip not among its
	// status.addresses); "": nothing refused.
	Refused string
}

// Self is the node the agent runs on.
type Self struct {
	Node
	// Underlay is the subnet of IP on its interface (decides which peers are
	// on the same L2 segment for direct routing); invalid: unknown.
	Underlay netip.Prefix
	// UnderlayMTU is the MTU of the interface holding IP.
	UnderlayMTU int
	// Learned are the routes bgp mode wants in the kernel (the BGP
	// controller's learned, filtered table: ECMP next hops, gateways
	// resolved through the underlay); vxlan mode ignores them.
	Learned []overlay.Route
	// Leases are the pod CIDR block Leases: block → holder node name (nil:
	// not read; peers with leased pod CIDRs stay pending).
	Leases map[netip.Prefix]string
}

// Peer reports how one peer is (or is not) programmed.
type Peer struct {
	Name       string         `json:"name"`
	IP         netip.Addr     `json:"ip"`
	PodCIDRs   []netip.Prefix `json:"podCIDRs"`
	Via        string         `json:"via,omitempty"` // "vxlan", "direct" or "vxlan+direct"
	Programmed bool           `json:"programmed"`
	Pending    string         `json:"pending,omitempty"` // why not programmed
}

// Result is the whole plan for a node.
type Result struct {
	Desired  overlay.Desired
	Rules    Rules
	PodMTU   int
	Gateways []netip.Addr // the node's address in each pod CIDR (on the bridge)
	Peers    []Peer       // sorted by name
}

// Plan computes the desired datapath for self given its peers (self may be
// among them; it is skipped). It fails only when self cannot be planned at
// all; problems with a peer leave that peer pending.
func Plan(c config.Config, self Self, peers []Node) (Result, error) {
	if err := checkSelf(c, self); err != nil {
		return Result{}, err
	}
	switch c.Mode {
	case config.VXLAN:
		return planVXLAN(c, self, peers), nil
	case config.BGP:
		return planBGP(c, self, peers), nil
	default:
		return Result{}, fmt.Errorf("plan: unknown mode %q", c.Mode)
	}
}

func checkSelf(c config.Config, self Self) error {
	switch {
	case self.Name == "":
		return errors.New("plan: own node has no name")
	case !self.IP.IsValid():
		return fmt.Errorf("plan: node %s has no underlay address", self.Name)
	case len(self.PodCIDRs) == 0:
		return fmt.Errorf("plan: node %s has no pod CIDR yet", self.Name)
	case c.Mode == config.VXLAN && len(self.VTEPMAC) != 6:
		return fmt.Errorf("plan: node %s has no VTEP MAC", self.Name)
	case self.UnderlayMTU <= 0 && c.MTU == 0:
		return fmt.Errorf("plan: node %s: underlay MTU unknown and config mtu is 0", self.Name)
	}
	return c.CheckPodCIDRs("node "+self.Name+" podCIDRs", self.PodCIDRs)
}

func overhead(underlay netip.Addr) int {
	if underlay.Is4() {
		return overlay.VXLANOverhead4
	}
	return overlay.VXLANOverhead6
}

// Device is the VXLAN device's name for an underlay address's family.
func Device(underlay netip.Addr) string {
	if underlay.Is4() {
		return overlay.VXLANDevice
	}
	return overlay.VXLAN6Device
}

// vtepIP is a node's VXLAN endpoint address in one family: the first
// (network) address of its pod CIDR, which the pod IPAM never hands out.
func vtepIP(p netip.Prefix) netip.Addr { return p.Masked().Addr() }

// Gateway is a node's address in its pod CIDR, on the bridge: the address
// after the VTEP IP.
func Gateway(p netip.Prefix) netip.Addr { return p.Masked().Addr().Next() }

// newResult is what both modes' results start from: the pod MTU (the
// configured one, else podMTU) and the firewall rules every mode has.
func newResult(c config.Config, self Self, podMTU int) Result {
	return Result{
		PodMTU: cmp.Or(c.MTU, podMTU),
		Rules: Rules{
			ClusterCIDRs: slices.Clone(c.ClusterCIDRs),
			PodCIDRs:     slices.Clone(self.PodCIDRs),
			Masquerade:   c.Masquerade,
		},
	}
}

func planVXLAN(c config.Config, self Self, peers []Node) Result {
	devMTU := self.UnderlayMTU - overhead(self.IP)
	r := newResult(c, self, devMTU)
	r.Rules.VXLANPort = c.VXLAN.Port
	if self.UnderlayMTU <= 0 { // config MTU set: size the device for it
		devMTU = c.MTU
	}
	dev := overlay.Device{
		Name: Device(self.IP), VNI: c.VXLAN.VNI, Port: c.VXLAN.Port, Local: self.IP,
		MTU: devMTU, MAC: slices.Clone(self.VTEPMAC),
	}
	ownFamily := map[bool]bool{}
	for _, p := range self.PodCIDRs {
		dev.Addrs = append(dev.Addrs, vtepIP(p))
		r.Gateways = append(r.Gateways, Gateway(p))
		ownFamily[p.Addr().Is4()] = true
	}
	r.Desired.Devices = []overlay.Device{dev}

	for _, v := range vet(c, self, peers) {
		n := v.Node
		st := Peer{Name: n.Name, IP: n.IP, PodCIDRs: slices.Clone(n.PodCIDRs), Pending: v.problem}
		if v.problem != "" {
			r.Peers = append(r.Peers, st)
			continue // not believed: not even a VXLAN source
		}
		if n.IP.IsValid() && n.IP.Is4() == self.IP.Is4() && n.IP != self.IP {
			r.Rules.VTEPSources = append(r.Rules.VTEPSources, n.IP)
		}
		st.Pending = peerProblem(c, self, n)
		if st.Pending == "" {
			st.Via = addPeer(&r.Desired, c, self, n, ownFamily)
			st.Programmed = true
		}
		r.Peers = append(r.Peers, st)
	}
	slices.SortFunc(r.Rules.VTEPSources, netip.Addr.Compare)
	r.Rules.VTEPSources = slices.Compact(r.Rules.VTEPSources)
	return r
}

// planBGP plans bgp mode: no VXLAN device, no neighbours or FDB entries;
// the routes are the learned ones, pods use the underlay MTU. A peer is
// programmed once a route to each of its pod CIDRs (of a family this node
// has) was learned.
func planBGP(c config.Config, self Self, peers []Node) Result {
	r := newResult(c, self, self.UnderlayMTU)

	ownFamily := map[bool]bool{}
	for _, p := range self.PodCIDRs {
		r.Gateways = append(r.Gateways, Gateway(p))
		ownFamily[p.Addr().Is4()] = true
	}
	learned := map[netip.Prefix]bool{}
	for _, rt := range self.Learned {
		out := overlay.Route{Dst: rt.Dst.Masked()}
		for _, h := range rt.NextHops {
			out.NextHops = append(out.NextHops, overlay.NextHop{Gateway: h.Gateway})
		}
		r.Desired.Routes = append(r.Desired.Routes, out)
		learned[out.Dst] = true
	}
	for _, v := range vet(c, self, peers) {
		n := v.Node
		st := Peer{Name: n.Name, IP: n.IP, PodCIDRs: slices.Clone(n.PodCIDRs), Pending: v.problem}
		if st.Pending == "" {
			st.Pending = bgpPeerProblem(c, n, ownFamily, learned)
		}
		if st.Pending == "" {
			st.Via, st.Programmed = "bgp", true
		}
		r.Peers = append(r.Peers, st)
	}
	return r
}

// bgpPeerProblem says why n's pods are not reachable yet in bgp mode, or ""
// when they are.
func bgpPeerProblem(c config.Config, n Node, ownFamily map[bool]bool, learned map[netip.Prefix]bool) string {
	if len(n.PodCIDRs) == 0 {
		return "no pod CIDR"
	}
	if err := c.CheckPodCIDRs("node "+n.Name+" podCIDRs", n.PodCIDRs); err != nil {
		return err.Error()
	}
	var missing []string
	for _, p := range n.PodCIDRs {
		if ownFamily[p.Addr().Is4()] && !learned[p.Masked()] {
			missing = append(missing, p.Masked().String())
		}
	}
	if len(missing) > 0 {
		return "no BGP route learned yet for " + strings.Join(missing, ", ")
	}
	return ""
}

// peerProblem says why n cannot be programmed, or "" when it can.
func peerProblem(c config.Config, self Self, n Node) string {
	switch {
	case !n.IP.IsValid():
		return "no node address"
	case n.IP.Is4() != self.IP.Is4():
		return fmt.Sprintf("node address %s is not of the underlay family", n.IP)
	case n.IP == self.IP:
		return fmt.Sprintf("node address %s is this node's own address", n.IP)
	case len(n.PodCIDRs) == 0:
		return "no pod CIDR"
	}
	if err := c.CheckPodCIDRs("node "+n.Name+" podCIDRs", n.PodCIDRs); err != nil {
		return err.Error()
	}
	for _, p := range n.PodCIDRs {
		if !direct(c, self, n, p) && len(n.VTEPMAC) != 6 {
			return "no VTEP MAC published yet (weft.dev/vtep-mac)"
		}
	}
	return ""
}

// direct reports whether pod CIDR p of peer n is routed via n's node address
// rather than through the tunnel.
func direct(c config.Config, self Self, n Node, p netip.Prefix) bool {
	return c.VXLAN.DirectRouting && self.Underlay.IsValid() &&
		self.Underlay.Contains(n.IP) && p.Addr().Is4() == n.IP.Is4()
}

// addPeer appends n's neighbours, FDB entry and routes (in the order the
// kernel needs them) and returns how n is reached.
func addPeer(d *overlay.Desired, c config.Config, self Self, n Node, ownFamily map[bool]bool) string {
	var vias []string
	fdb := false
	for _, p := range n.PodCIDRs {
		if !ownFamily[p.Addr().Is4()] {
			continue // no address of this family here to route from
		}
		if direct(c, self, n, p) {
			d.Routes = append(d.Routes, overlay.Route{Dst: p, NextHops: []overlay.NextHop{{Gateway: n.IP}}})
			vias = append(vias, "direct")
			continue
		}
		gw, name := vtepIP(p), Device(self.IP)
		d.Neighbors = append(d.Neighbors, overlay.Neighbor{Dev: name, IP: gw, MAC: slices.Clone(n.VTEPMAC)})
		if !fdb {
			d.FDB = append(d.FDB, overlay.FDBEntry{Dev: name, MAC: slices.Clone(n.VTEPMAC), Dst: n.IP})
			fdb = true
		}
		d.Routes = append(d.Routes, overlay.Route{Dst: p, NextHops: []overlay.NextHop{{Gateway: gw, Dev: name, Onlink: true}}})
		vias = append(vias, "vxlan")
	}
	slices.Sort(vias)
	return strings.Join(slices.Compact(vias), "+")
}

// ParseMAC parses a VTEP MAC as published in weft.dev/vtep-mac; it accepts
// only 6-byte unicast addresses.
func ParseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("parse VTEP MAC %q: %w", s, err)
	}
	if len(mac) != 6 || mac[0]&1 == 1 || bytes.Equal(mac, make(net.HardwareAddr, 6)) {
		return nil, fmt.Errorf("parse VTEP MAC %q: want a 6-byte unicast address", s)
	}
	return mac, nil
}
