package overlay

import (
	"fmt"
	"net/netip"
	"slices"
)

// Rules are the firewall rules of one node, for both IP families.
type Rules struct {
	ClusterCIDRs []netip.Prefix // pod CIDRs of the whole cluster: pod → these is not masqueraded
	PodCIDRs     []netip.Prefix // this node's pod CIDRs: the sources to masquerade
	VXLANPort    uint16         // 0: no VXLAN device, no VXLAN rule
	VTEPSources  []netip.Addr   // node addresses VXLAN is accepted from
	Masquerade   bool
}

// weft's chains and the built-in chains they are jumped to from.
const (
	ChainPostrouting = "WEFT-POSTROUTING"
	ChainForward     = "WEFT-FORWARD"
	ChainInput       = "WEFT-INPUT"
)

// kubeProxyMasqMark is the mark kube-proxy sets on packets it masquerades
// itself; weft leaves those alone.
const kubeProxyMasqMark = "0x4000/0x4000"

// chain is one of weft's chains with the rules it should hold, each in the
// canonical form `iptables -S` prints (without the "-A CHAIN " prefix).
type chain struct {
	table, parent, name string
	rules               []string
}

func (c chain) equal(o chain) bool {
	return c.table == o.table && c.parent == o.parent && c.name == o.name && slices.Equal(c.rules, o.rules)
}

// ipFamily parameterises the one code path both families share.
type ipFamily struct {
	v6   bool
	name string // "IPv4", "IPv6"
	set  string // ipset of the node addresses VXLAN is accepted from
}

var ipFamilies = []ipFamily{
	{v6: false, name: "IPv4", set: "weft-nodes4"},
	{v6: true, name: "IPv6", set: "weft-nodes6"},
}

func (f ipFamily) has(a netip.Addr) bool { return a.Unmap().Is6() == f.v6 }

// chains returns weft's chains for one family. It is pure; the iptables
// adapter compares them with what `iptables -S` lists.
func (r Rules) chains(fam ipFamily) []chain {
	var cluster, pods []netip.Prefix
	for _, p := range r.ClusterCIDRs {
		if fam.has(p.Addr()) {
			cluster = append(cluster, p.Masked())
		}
	}
	for _, p := range r.PodCIDRs {
		if fam.has(p.Addr()) {
			pods = append(pods, p.Masked())
		}
	}

	post := chain{table: "nat", parent: "POSTROUTING", name: ChainPostrouting}
	post.rules = append(post.rules, "-m mark --mark "+kubeProxyMasqMark+" -j RETURN")
	for _, p := range pods {
		for _, c := range cluster {
			post.rules = append(post.rules, fmt.Sprintf("-s %v -d %v -j RETURN", p, c))
		}
	}
	if r.Masquerade {
		for _, p := range pods {
			post.rules = append(post.rules, fmt.Sprintf("-s %v -j MASQUERADE --random-fully", p))
		}
	}

	fwd := chain{table: "filter", parent: "FORWARD", name: ChainForward}
	for _, c := range cluster {
		fwd.rules = append(fwd.rules, fmt.Sprintf("-s %v -j ACCEPT", c), fmt.Sprintf("-d %v -j ACCEPT", c))
	}

	in := chain{table: "filter", parent: "INPUT", name: ChainInput}
	if r.VXLANPort != 0 {
		in.rules = append(in.rules,
			fmt.Sprintf("-p udp -m udp --dport %d -m set --match-set %s src -j ACCEPT", r.VXLANPort, fam.set),
			fmt.Sprintf("-p udp -m udp --dport %d -j DROP", r.VXLANPort))
	}
	return []chain{post, fwd, in}
}

// sources returns the VXLAN sources of one family.
func (r Rules) sources(fam ipFamily) []netip.Addr {
	var out []netip.Addr
	for _, a := range r.VTEPSources {
		if fam.has(a) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func (r Rules) validate() error {
	for i, p := range r.ClusterCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("ClusterCIDRs[%d] %v: invalid", i, p)
		}
	}
	for i, p := range r.PodCIDRs {
		if !p.IsValid() {
			return fmt.Errorf("PodCIDRs[%d] %v: invalid", i, p)
		}
	}
	for i, a := range r.VTEPSources {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("VTEPSources[%d] %v: want an address without zone", i, a)
		}
	}
	return nil
}
