package bgpmode

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/bgp"
)

// Node annotations bgp mode reads.
const (
	// AnnotationASN overrides the cluster's AS number for one node.
	AnnotationASN = "weft.dev/bgp-asn"
	// AnnotationRouterID sets a node's BGP identifier (IPv4); default: its
	// first IPv4 address. Needed on IPv6-only nodes.
	AnnotationRouterID = "weft.dev/bgp-router-id"
)

// Node is one Kubernetes node as bgp mode sees it.
type Node struct {
	Name string
	// Addrs are the node's underlay addresses, the preferred one first
	// (the weft.dev/node-ip annotation, then its InternalIPs); BGP sessions
	// and next hops use the first one of each family.
	Addrs       []netip.Addr
	PodCIDRs    []netip.Prefix
	Labels      map[string]string
	Annotations map[string]string
}

// Addr returns the node's first address of the family of is4.
func (n Node) Addr(is4 bool) (netip.Addr, bool) {
	for _, a := range n.Addrs {
		if a.Is4() == is4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Self is the node the agent runs on.
type Self struct {
	Node
	// Underlay are the subnets of the node's addresses (on-link prefixes):
	// a learned route overlapping them is refused, it could divert the
	// underlay itself.
	Underlay []netip.Prefix
}

// Service is a Service's externally reachable addresses (load-balancer
// ingress IPs and externalIPs).
type Service struct {
	Name string // namespace/name
	IPs  []netip.Addr
}

// Input is everything one Update needs.
type Input struct {
	Config   config.BGPConfig
	Self     Self
	Nodes    []Node // every node of the cluster (Self may be among them)
	Services []Service
	// Passwords are the resolved passwordSecretRefs of Config.Peers (see
	// ResolvePasswords).
	Passwords map[config.SecretKeyRef]string
}

// Desired is the planned state of the speaker.
type Desired struct {
	// Global needs a speaker restart when it changes.
	Global bgp.Config
	Peers  []bgp.Peer
	Paths  []bgp.Path
	Policy bgp.ImportPolicy
	// MaxPrefixes caps the prefixes accepted from a peer (the soft,
	// per-peer part of the import policy; see capPerPeer).
	MaxPrefixes map[netip.Addr]int
	// Names maps a peer address to who it is ("node/<name>",
	// "peer/<address>") for status and events.
	Names map[netip.Addr]string
}

// Plan computes the speaker's configuration for in.Self. It is pure. It
// fails when the own node cannot speak BGP at all (no address, no router
// ID, bad annotation, missing password); a peer node without a usable
// address is left out.
func Plan(in Input) (Desired, error) {
	cfg, self := in.Config, in.Self
	if len(self.Addrs) == 0 {
		return Desired{}, fmt.Errorf("node %s: no underlay address", self.Name)
	}
	asn, err := nodeASN(cfg, self.Node)
	if err != nil {
		return Desired{}, err
	}
	rid, err := routerID(self.Node)
	if err != nil {
		return Desired{}, err
	}
	d := Desired{
		Global: bgp.Config{
			RouterID:   rid,
			ASN:        asn,
			ListenPort: int(cfg.ListenPort),
			GracefulRestart: bgp.GracefulRestart{
				Disabled:    !cfg.GracefulRestart.Enabled,
				RestartTime: cfg.GracefulRestart.RestartTime,
			},
		},
		MaxPrefixes: map[netip.Addr]int{},
		Names:       map[netip.Addr]string{},
	}
	d.Paths = plannedPaths(cfg, self, in.Services)

	external, strict, err := externalPeers(cfg, self.Node, asn, in.Passwords)
	if err != nil {
		return Desired{}, err
	}
	taken := map[netip.Addr]bool{}
	for _, p := range external {
		taken[p.Address] = true
		d.Names[p.Address] = p.Description
	}
	var mesh []bgp.Peer
	if cfg.NodeMesh {
		mesh = meshPeers(cfg, self.Node, asn, in.Nodes)
	}
	meshPassword := ""
	if ref := cfg.NodeMeshPasswordSecretRef; ref != nil {
		pw, ok := in.Passwords[*ref]
		if !ok {
			return Desired{}, &config.FieldError{Field: "bgp.nodeMeshPasswordSecretRef", Value: ref.String(), Reason: "password not resolved"}
		}
		meshPassword = pw
	}
	lim4, lim6 := meshLimits(cfg, in.Nodes, in.Services)
	for _, p := range mesh {
		if taken[p.Address] {
			continue // configured as an external peer: that wins
		}
		p.MaxPrefixesV4, p.MaxPrefixesV6 = lim4, lim6
		p.Password = meshPassword
		taken[p.Address] = true
		d.Names[p.Address] = p.Description
		d.Peers = append(d.Peers, p)
	}
	d.Peers = append(d.Peers, external...)
	slices.SortFunc(d.Peers, func(a, b bgp.Peer) int { return a.Address.Compare(b.Address) })
	for i, p := range cfg.Peers {
		if matches(p.NodeSelector, self.Labels) && p.MaxPrefixes > 0 {
			d.MaxPrefixes[cfg.Peers[i].Address] = int(p.MaxPrefixes)
		}
	}
	d.Policy = importPolicy(cfg, self, in.Nodes, strict)
	return d, nil
}

// nodeASN is the node's AS number: its annotation, else the cluster's.
func nodeASN(cfg config.BGPConfig, n Node) (uint32, error) {
	s, ok := n.Annotations[AnnotationASN]
	if !ok {
		return cfg.ASN, nil
	}
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, &config.FieldError{Field: "node " + n.Name + " annotation " + AnnotationASN, Value: s, Reason: "not a number"}
	}
	if why := config.CheckASN(v); why != "" {
		return 0, &config.FieldError{Field: "node " + n.Name + " annotation " + AnnotationASN, Value: s, Reason: why}
	}
	return uint32(v), nil
}

func routerID(n Node) (netip.Addr, error) {
	if s, ok := n.Annotations[AnnotationRouterID]; ok {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() {
			return netip.Addr{}, &config.FieldError{Field: "node " + n.Name + " annotation " + AnnotationRouterID, Value: s,
				Reason: "want an IPv4 address"}
		}
		return a, nil
	}
	if a, ok := n.Addr(true); ok {
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("node %s: no IPv4 address for the BGP router ID; set annotation %s", n.Name, AnnotationRouterID)
}

// plannedPaths are the node's pod CIDRs and (when advertised) the Service
// addresses, each via the node's address of its family.
func plannedPaths(cfg config.BGPConfig, self Self, services []Service) []bgp.Path {
	seen := map[netip.Prefix]bool{}
	var out []bgp.Path
	add := func(p netip.Prefix) {
		p = p.Masked()
		nh, ok := self.Addr(p.Addr().Is4())
		if !ok || seen[p] {
			return
		}
		seen[p] = true
		out = append(out, bgp.Path{Prefix: p, NextHop: nh})
	}
	for _, p := range self.PodCIDRs {
		add(p)
	}
	if cfg.AdvertiseServices {
		for _, s := range services {
			for _, ip := range s.IPs {
				ip = ip.Unmap().WithZone("")
				if ip.IsValid() && !ip.IsUnspecified() {
					add(netip.PrefixFrom(ip, ip.BitLen()))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b bgp.Path) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// meshPeers are the other nodes this node peers with. Without reflectors:
// every other node. With reflectors: a reflector peers with every other
// node (non-reflectors as its clients), any other node only with the
// reflectors. Sessions run over the addresses of the family of self's
// first address; the side with the lower address is passive, so both
// ends never dial at once and a restart never races.
func meshPeers(cfg config.BGPConfig, self Node, selfASN uint32, nodes []Node) []bgp.Peer {
	local := self.Addrs[0]
	rrSel := cfg.RouteReflectors.NodeSelector
	isRR := func(n Node) bool { return len(rrSel) > 0 && matches(rrSel, n.Labels) }
	anyRR := slices.ContainsFunc(nodes, isRR)
	selfRR := isRR(self)
	var out []bgp.Peer
	for _, n := range nodes {
		if n.Name == self.Name {
			continue
		}
		addr, ok := n.Addr(local.Is4())
		if !ok || addr == local {
			continue
		}
		if anyRR && !selfRR && !isRR(n) {
			continue // clients peer only with the reflectors
		}
		asn, err := nodeASN(cfg, n)
		if err != nil {
			continue // that node reports its own annotation error
		}
		p := bgp.Peer{
			Address:      addr,
			ASN:          asn,
			Port:         int(cfg.ListenPort),
			LocalAddress: local,
			Passive:      local.Less(addr),
			Description:  "node/" + n.Name,
		}
		if selfRR && !isRR(n) && asn == selfASN {
			p.RouteReflectorClient = true
			p.ClusterID = cfg.RouteReflectors.ClusterID
		}
		out = append(out, p)
	}
	return out
}

// externalPeers are the configured routers whose node selector matches
// self. strict reports whether next hops of node pod CIDRs can be checked:
// only when no eBGP router (which may rewrite next hops) is among them.
func externalPeers(cfg config.BGPConfig, self Node, selfASN uint32, passwords map[config.SecretKeyRef]string) ([]bgp.Peer, bool, error) {
	var out []bgp.Peer
	strict := true
	var errs []error
	for i, c := range cfg.Peers {
		if !matches(c.NodeSelector, self.Labels) {
			continue
		}
		p := bgp.Peer{
			Address:         c.Address,
			ASN:             cmp.Or(c.ASN, selfASN),
			Port:            int(c.Port),
			EBGPMultihopTTL: c.EBGPMultihop,
			HoldTime:        c.HoldTime,
			Keepalive:       c.KeepaliveTime,
			ConnectRetry:    c.ConnectRetryTime,
			Description:     "peer/" + c.Address.String(),
		}
		if a, ok := self.Addr(c.Address.Is4()); ok {
			p.LocalAddress = a
		}
		if c.MaxPrefixes > 0 { // else bgp.DefaultMaxPrefixes
			p.MaxPrefixesV4 = externalLimit(c.MaxPrefixes)
			p.MaxPrefixesV6 = p.MaxPrefixesV4
		}
		if ref := c.PasswordSecretRef; ref != nil {
			pw, ok := passwords[*ref]
			if !ok {
				errs = append(errs, &config.FieldError{Field: fmt.Sprintf("bgp.peers[%d].passwordSecretRef", i), Value: ref.String(),
					Reason: "no such Secret key in kube-system"})
				continue
			}
			p.Password = pw
		}
		if p.ASN != selfASN {
			strict = false
		}
		out = append(out, p)
	}
	return out, strict, errors.Join(errs...)
}

// importPolicy accepts exactly the other nodes' pod CIDRs (via their own
// addresses when strict), anything inside the external ranges, never our
// own pod CIDRs, our underlay or a default route.
//
// Why strict only without eBGP routers: over the node mesh and through
// iBGP reflectors (which never change next hops) a node's pod CIDR must
// come via that node's address, so a node cannot pull another node's pods
// to itself. An eBGP router (a top-of-rack switch in another AS) sets
// itself as next hop, so there the prefix alone is checked.
func importPolicy(cfg config.BGPConfig, self Self, nodes []Node, strict bool) bgp.ImportPolicy {
	p := bgp.ImportPolicy{Within: slices.Clone(cfg.ExternalRanges)}
	for _, c := range self.PodCIDRs {
		p.Own = append(p.Own, c.Masked())
	}
	p.Underlay = append(p.Underlay, self.Underlay...)
	for _, a := range self.Addrs {
		p.Underlay = append(p.Underlay, netip.PrefixFrom(a, a.BitLen()))
	}
	for _, n := range nodes {
		if n.Name == self.Name {
			continue
		}
		for _, c := range n.PodCIDRs {
			a := bgp.AllowedPrefix{Prefix: c.Masked()}
			if strict {
				for _, addr := range n.Addrs {
					if addr.Is4() == c.Addr().Is4() {
						a.NextHops = append(a.NextHops, addr)
					}
				}
			}
			p.Allowed = append(p.Allowed, a)
		}
	}
	slices.SortFunc(p.Allowed, func(a, b bgp.AllowedPrefix) int { return comparePrefix(a.Prefix, b.Prefix) })
	return p
}

// Session prefix limits: GoBGP closes a session whose peer announces more
// (bgp.PrefixLimit), which bounds what one peer can make the speaker hold.
//
// Over the mesh no peer can legitimately announce more than the cluster
// has: a pod CIDR per node and (when advertised) every Service address of
// the family, all of them through a route reflector. The limit is twice
// that, plus meshLimitSlack for nodes and Services added since the last
// plan (a limit change applies without resetting the session).
//
// An external router's limit is externalLimit(maxPrefixes): maxPrefixes
// is how many weft accepts (more are rejected and counted), the session
// closes only at twice that plus meshLimitSlack; without maxPrefixes it is
// bgp.DefaultMaxPrefixes.
const meshLimitSlack = 64

func meshLimits(cfg config.BGPConfig, nodes []Node, services []Service) (v4, v6 uint32) {
	count := map[bool]int{}
	for _, n := range nodes {
		for _, p := range n.PodCIDRs {
			count[p.Addr().Is4()]++
		}
	}
	if cfg.AdvertiseServices {
		for _, s := range services {
			for _, ip := range s.IPs {
				count[ip.Is4()]++
			}
		}
	}
	return uint32(2*count[true] + meshLimitSlack), uint32(2*count[false] + meshLimitSlack)
}

func externalLimit(maxPrefixes uint32) uint32 {
	return uint32(min(2*uint64(maxPrefixes)+meshLimitSlack, 1<<32-1))
}

// matches reports whether labels has every key=value of sel (an empty
// selector matches every node).
func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// defaultRestartTime is used when no configuration is known yet.
const defaultRestartTime = 120 * time.Second
