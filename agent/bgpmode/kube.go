package bgpmode

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"weft.dev/weft/agent/config"
)

// AnnotationNodeIP is the agent's override of a node's underlay address.
const AnnotationNodeIP = "weft.dev/node-ip"

// NodeFromAPI converts a Node object: its addresses are its InternalIPs
// (status.addresses, which the control plane owns), the one the
// weft.dev/node-ip annotation names first; an annotation naming another
// address is ignored. podCIDRs are the node's pod CIDRs as the agent
// determined them (allocated, or leased and checked).
func NodeFromAPI(n *corev1.Node, podCIDRs []netip.Prefix) Node {
	out := Node{Name: n.Name, PodCIDRs: slices.Clone(podCIDRs), Labels: n.Labels, Annotations: n.Annotations}
	for _, ad := range n.Status.Addresses {
		if ad.Type != corev1.NodeInternalIP {
			continue
		}
		if a, err := netip.ParseAddr(strings.TrimSpace(ad.Address)); err == nil && !slices.Contains(out.Addrs, a.Unmap()) {
			out.Addrs = append(out.Addrs, a.Unmap())
		}
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(n.Annotations[AnnotationNodeIP])); err == nil {
		if i := slices.Index(out.Addrs, a.Unmap()); i > 0 {
			out.Addrs = slices.Insert(slices.Delete(out.Addrs, i, i+1), 0, a.Unmap())
		}
	}
	return out
}

// ServiceFromAPI returns a Service's load-balancer ingress IPs and
// externalIPs.
func ServiceFromAPI(s *corev1.Service) Service {
	out := Service{Name: s.Namespace + "/" + s.Name}
	add := func(str string) {
		if a, err := netip.ParseAddr(strings.TrimSpace(str)); err == nil && !slices.Contains(out.IPs, a.Unmap()) {
			out.IPs = append(out.IPs, a.Unmap())
		}
	}
	for _, ing := range s.Status.LoadBalancer.Ingress {
		add(ing.IP)
	}
	for _, ip := range s.Spec.ExternalIPs {
		add(ip)
	}
	return out
}

// ResolvePasswords reads the node mesh's password and that of every peer
// with a passwordSecretRef through get (which returns a Secret's data of
// kube-system, or an error when it does not exist). A missing Secret or
// key is a FieldError naming the peer.
func ResolvePasswords(cfg config.BGPConfig, get func(name string) (map[string][]byte, error)) (map[config.SecretKeyRef]string, error) {
	out := map[config.SecretKeyRef]string{}
	refs := map[string]*config.SecretKeyRef{}
	fields := []string{}
	if cfg.NodeMeshPasswordSecretRef != nil {
		refs["bgp.nodeMeshPasswordSecretRef"] = cfg.NodeMeshPasswordSecretRef
		fields = append(fields, "bgp.nodeMeshPasswordSecretRef")
	}
	for i, p := range cfg.Peers {
		if p.PasswordSecretRef != nil {
			f := fmt.Sprintf("bgp.peers[%d].passwordSecretRef", i)
			refs[f] = p.PasswordSecretRef
			fields = append(fields, f)
		}
	}
	for _, field := range fields {
		ref := refs[field]
		data, err := get(ref.Name)
		if err != nil {
			return nil, &config.FieldError{Field: field, Value: ref.String(), Reason: fmt.Sprintf("Secret kube-system/%s: %v", ref.Name, err)}
		}
		v, ok := data[ref.Key]
		if !ok || len(v) == 0 {
			return nil, &config.FieldError{Field: field, Value: ref.String(), Reason: fmt.Sprintf("Secret kube-system/%s has no key %q", ref.Name, ref.Key)}
		}
		if len(v) > 80 {
			return nil, &config.FieldError{Field: field, Value: ref.String(), Reason: "password longer than 80 bytes (TCP MD5 limit)"}
		}
		out[*ref] = string(v)
	}
	return out, nil
}
