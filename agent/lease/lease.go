// Package lease hands out pod CIDR blocks to nodes when the controller-manager
// allocates none, conflict-free across every agent in the cluster.
//
// The apiserver is the arbiter: each block is a coordination.k8s.io Lease in
// kube-system named after the block (weft-block-10-244-3-0-24), created with
// create-if-absent semantics — AlreadyExists means another node holds it. The
// holder is the node name, and the Lease has an owner reference to the Node,
// so the garbage collector removes it with the Node. An agent never deletes
// or updates another node's Lease (the admission policy weft-agent-leases
// refuses it): other nodes believe a node's leased pod CIDRs only while it
// holds their Leases, so taking a Lease would take the block's traffic.
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations on block Leases.
const (
	LabelBlock      = "weft.dev/pod-cidr-block" // value "true"; selects weft's block Leases
	AnnotationBlock = "weft.dev/block"          // the block as a CIDR
	namePrefix      = "weft-block-"
)

// Name is the Lease name of a block: "weft-block-" + the address with '.'
// and ':' turned into '-', + "-" + the prefix length.
func Name(block netip.Prefix) string {
	a := strings.NewReplacer(".", "-", ":", "-").Replace(block.Masked().Addr().String())
	return fmt.Sprintf("%s%s-%d", namePrefix, a, block.Bits())
}

// Client is what the allocator needs from the apiserver (kube.Client has
// it).
type Client interface {
	ListLeases(ctx context.Context, namespace string, opts metav1.ListOptions) (*coordv1.LeaseList, error)
	GetLease(ctx context.Context, namespace, name string) (*coordv1.Lease, error)
	CreateLease(ctx context.Context, namespace string, le *coordv1.Lease) (*coordv1.Lease, error)
	UpdateLease(ctx context.Context, namespace string, le *coordv1.Lease) (*coordv1.Lease, error)
	DeleteLease(ctx context.Context, namespace, name string, opts metav1.DeleteOptions) error
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
}

// Allocator leases blocks through the apiserver.
type Allocator struct {
	Client    Client
	Namespace string // kube-system
	Log       *slog.Logger
}

// Held is a block Lease as the allocator sees it.
type Held struct {
	Name     string
	Block    netip.Prefix
	Holder   string
	OwnerUID string
	UID      string
}

// List returns weft's block Leases.
func (a *Allocator) List(ctx context.Context) ([]Held, error) {
	l, err := a.Client.ListLeases(ctx, a.Namespace, metav1.ListOptions{LabelSelector: LabelBlock + "=true"})
	if err != nil {
		return nil, fmt.Errorf("list block leases in %s: %w", a.Namespace, err)
	}
	var out []Held
	for _, le := range l.Items {
		h := Held{Name: le.Name, UID: string(le.UID)}
		if le.Spec.HolderIdentity != nil {
			h.Holder = *le.Spec.HolderIdentity
		}
		if p, err := netip.ParsePrefix(le.Annotations[AnnotationBlock]); err == nil && Name(p) == le.Name {
			h.Block = p.Masked()
		}
		for _, o := range le.OwnerReferences {
			if o.Kind == "Node" && o.Name == h.Holder {
				h.OwnerUID = string(o.UID)
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// Acquire returns one block of the given size from each cluster CIDR for
// node, reusing blocks it already holds. avoid lists pod CIDRs in use that
// are not leased (allocated by the controller-manager).
func (a *Allocator) Acquire(ctx context.Context, node *corev1.Node, clusterCIDRs []netip.Prefix, size func(netip.Prefix) int, avoid []netip.Prefix) ([]netip.Prefix, error) {
	held, err := a.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, cl := range clusterCIDRs {
		b, err := a.acquireOne(ctx, node, cl, size(cl), held, avoid)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func (a *Allocator) acquireOne(ctx context.Context, node *corev1.Node, cl netip.Prefix, size int, held []Held, avoid []netip.Prefix) (netip.Prefix, error) {
	taken := map[netip.Prefix]bool{}
	for _, h := range held {
		if !h.Block.IsValid() || !cl.Contains(h.Block.Addr()) {
			continue
		}
		if h.Holder == node.Name && h.Block.Bits() == size {
			if h.OwnerUID != string(node.UID) {
				if err := a.adopt(ctx, h.Name, node); err != nil {
					return netip.Prefix{}, err
				}
			}
			return h.Block, nil
		}
		taken[h.Block] = true
	}
	overlaps := func(b netip.Prefix) bool {
		if taken[b] {
			return true
		}
		return slices.ContainsFunc(avoid, b.Overlaps)
	}
	tries := 0
	for b, ok := netip.PrefixFrom(cl.Masked().Addr(), size), size >= cl.Bits(); ok; b, ok = next(b, cl) {
		if overlaps(b) {
			continue
		}
		if tries++; tries > len(taken)+1024 {
			break
		}
		err := a.create(ctx, node, b)
		if err == nil {
			a.Log.Info("leased pod CIDR block", "node", node.Name, "prefix", b)
			return b, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return netip.Prefix{}, err
		}
	}
	return netip.Prefix{}, fmt.Errorf("lease a /%d block of %s for node %s: none free", size, cl, node.Name)
}

func (a *Allocator) create(ctx context.Context, node *corev1.Node, b netip.Prefix) error {
	holder := node.Name
	le := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:            Name(b),
			Namespace:       a.Namespace,
			Labels:          map[string]string{LabelBlock: "true"},
			Annotations:     map[string]string{AnnotationBlock: b.String()},
			OwnerReferences: ownerRefs(node),
		},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder},
	}
	if _, err := a.Client.CreateLease(ctx, a.Namespace, le); err != nil {
		return fmt.Errorf("create lease %s for node %s: %w", le.Name, node.Name, err)
	}
	return nil
}

// adopt points a block this node name already holds at the node's current
// UID (the Node was recreated), so the garbage collector does not take it.
func (a *Allocator) adopt(ctx context.Context, name string, node *corev1.Node) error {
	le, err := a.Client.GetLease(ctx, a.Namespace, name)
	if err != nil {
		return fmt.Errorf("get lease %s: %w", name, err)
	}
	le.OwnerReferences = ownerRefs(node)
	if _, err := a.Client.UpdateLease(ctx, a.Namespace, le); err != nil {
		return fmt.Errorf("adopt lease %s for node %s: %w", name, node.Name, err)
	}
	return nil
}

func ownerRefs(node *corev1.Node) []metav1.OwnerReference {
	if node.UID == "" {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
}

// next returns the block after b inside cl.
func next(b, cl netip.Prefix) (netip.Prefix, bool) {
	last := lastAddr(b)
	n := last.Next()
	if !n.IsValid() || !cl.Contains(n) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(n, b.Bits()), true
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}
