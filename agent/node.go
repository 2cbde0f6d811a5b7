package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"weft.dev/weft/agent/plan"
)

// Node annotations weft publishes (through nodes/status) and reads.
const (
	AnnotationVTEPMAC  = "weft.dev/vtep-mac"  // the node's VXLAN device MAC
	AnnotationNodeIP   = "weft.dev/node-ip"   // the node's underlay address (overrides InternalIP)
	AnnotationPodCIDRs = "weft.dev/pod-cidrs" // comma-separated; set only for blocks weft leased
)

// ConditionReason is the reason of the NetworkUnavailable=False condition.
const ConditionReason = "WeftReady"

// nodeIP returns a node's underlay address of the wanted family (any family
// when want is invalid): one of its InternalIPs in status.addresses, which
// the control plane (kubelet, cloud provider) owns. The weft.dev/node-ip
// annotation, which the node's agent writes, only chooses among them; when
// it names another address, refused says so and the first InternalIP of the
// family is returned.
func nodeIP(n *corev1.Node, want netip.Addr) (addr netip.Addr, refused string) {
	sameFamily := func(a netip.Addr) bool { return !want.IsValid() || a.Is4() == want.Is4() }
	var own []netip.Addr
	for _, ad := range n.Status.Addresses {
		if ad.Type != corev1.NodeInternalIP {
			continue
		}
		if a, err := netip.ParseAddr(ad.Address); err == nil && sameFamily(a.Unmap()) {
			own = append(own, a.Unmap())
		}
	}
	if s, ok := n.Annotations[AnnotationNodeIP]; ok {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		switch {
		case err == nil && slices.Contains(own, a.Unmap()):
			return a.Unmap(), ""
		case err == nil && !sameFamily(a.Unmap()):
			// of the other family: chooses nothing here
		default:
			refused = fmt.Sprintf("%s %q is not among the node's InternalIPs in status.addresses", AnnotationNodeIP, truncate(s, 64))
		}
	}
	if len(own) == 0 {
		return netip.Addr{}, refused
	}
	return own[0], refused
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// specPodCIDRs returns the pod CIDRs the controller-manager allocated.
func specPodCIDRs(n *corev1.Node) []netip.Prefix {
	src := n.Spec.PodCIDRs
	if len(src) == 0 && n.Spec.PodCIDR != "" {
		src = []string{n.Spec.PodCIDR}
	}
	return parsePrefixes(src)
}

// podCIDRs returns a node's pod CIDRs: allocated ones, else (leased) the
// blocks its agent published, which plan.Vet checks against the block
// Leases.
func podCIDRs(n *corev1.Node) (_ []netip.Prefix, leased bool) {
	if p := specPodCIDRs(n); len(p) > 0 {
		return p, false
	}
	s, ok := n.Annotations[AnnotationPodCIDRs]
	if !ok {
		return nil, false
	}
	return parsePrefixes(strings.Split(s, ",")), true
}

func parsePrefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

func joinPrefixes(ps []netip.Prefix) string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}

// peer converts a Node object into the plan's view, with its address of the
// underlay family of self.
func peer(n *corev1.Node, underlay netip.Addr) plan.Node {
	p := plan.Node{Name: n.Name, Created: n.CreationTimestamp.Time}
	p.IP, p.Refused = nodeIP(n, underlay)
	p.PodCIDRs, p.Leased = podCIDRs(n)
	if mac, err := plan.ParseMAC(n.Annotations[AnnotationVTEPMAC]); err == nil {
		p.VTEPMAC = mac
	}
	return p
}

// slimNode is the node informer's transform: it drops what weft never reads
// and what makes a Node large (managed fields, the kubelet's image list and
// volume lists), so the cache of a thousand-node cluster stays small. Other
// objects pass unchanged.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	n.ManagedFields = nil
	n.Status.Images = nil
	n.Status.VolumesInUse = nil
	n.Status.VolumesAttached = nil
	return n, nil
}
