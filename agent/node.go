package agent

import (
	"net/netip"
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

// nodeIP returns a node's underlay address: the weft.dev/node-ip annotation
// when set and valid, else its first InternalIP of the wanted family (any
// family when want is invalid).
func nodeIP(n *corev1.Node, want netip.Addr) netip.Addr {
	sameFamily := func(a netip.Addr) bool { return !want.IsValid() || a.Is4() == want.Is4() }
	if a, err := netip.ParseAddr(strings.TrimSpace(n.Annotations[AnnotationNodeIP])); err == nil && sameFamily(a.Unmap()) {
		return a.Unmap()
	}
	for _, ad := range n.Status.Addresses {
		if ad.Type != corev1.NodeInternalIP {
			continue
		}
		if a, err := netip.ParseAddr(ad.Address); err == nil && sameFamily(a.Unmap()) {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// specPodCIDRs returns the pod CIDRs the controller-manager allocated.
func specPodCIDRs(n *corev1.Node) []netip.Prefix {
	src := n.Spec.PodCIDRs
	if len(src) == 0 && n.Spec.PodCIDR != "" {
		src = []string{n.Spec.PodCIDR}
	}
	return parsePrefixes(src)
}

// podCIDRs returns a node's pod CIDRs: allocated ones, else leased ones
// published by its agent.
func podCIDRs(n *corev1.Node) []netip.Prefix {
	if p := specPodCIDRs(n); len(p) > 0 {
		return p
	}
	return parsePrefixes(strings.Split(n.Annotations[AnnotationPodCIDRs], ","))
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
	p := plan.Node{Name: n.Name, IP: nodeIP(n, underlay), PodCIDRs: podCIDRs(n)}
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
