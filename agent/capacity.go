package agent

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/ipam"
)

// ConditionPodCIDRTooSmall is the Node condition an agent keeps on its own
// Node: True when a pod CIDR of the node holds fewer usable addresses than
// the kubelet's maxPods (status.capacity.pods), so the scheduler may place
// pods there that the CNI cannot address (they hang in ContainerCreating
// instead of staying Pending); False when every pod CIDR holds maxPods.
const ConditionPodCIDRTooSmall corev1.NodeConditionType = "WeftPodCIDRTooSmall"

// Reasons of ConditionPodCIDRTooSmall.
const (
	ReasonPodCIDRTooSmall = "PodCIDRSmallerThanMaxPods"
	ReasonPodCIDRFits     = "PodCIDRHoldsMaxPods"
)

// blockCapacity is one pod CIDR's usable addresses against maxPods.
type blockCapacity struct {
	Prefix  netip.Prefix
	Usable  uint64 // what the IPAM store hands out at most (ipam.Usable)
	MaxPods int64
}

func (b blockCapacity) family() string { return family(b.Prefix.Addr()) }

// tooSmall reports whether the block runs out before maxPods pods.
func (b blockCapacity) tooSmall() bool { return b.MaxPods > 0 && b.Usable < uint64(b.MaxPods) }

func family(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// maxPods is the kubelet's maxPods as the Node reports it
// (status.capacity.pods); ok is false when the Node reports none.
func maxPods(n *corev1.Node) (_ int64, ok bool) {
	q, has := n.Status.Capacity[corev1.ResourcePods]
	if !has {
		return 0, false
	}
	v, exact := q.AsInt64()
	return v, exact && v > 0
}

// podCapacity returns each pod CIDR's capacity: the addresses the CNI's
// IPAM can hand out (all but network, IPv4 broadcast and the gateway in
// gws) against maxPods. A pod takes one address of every family, so the
// smallest block bounds the node.
func podCapacity(pods []netip.Prefix, gws []netip.Addr, maxPods int64) []blockCapacity {
	out := make([]blockCapacity, len(pods))
	for i, p := range pods {
		out[i] = blockCapacity{Prefix: p, Usable: ipam.Usable(p, gws), MaxPods: maxPods}
	}
	return out
}

// capacityCondition is ConditionPodCIDRTooSmall for the blocks, with the
// arithmetic and the remedy in its message.
func capacityCondition(blocks []blockCapacity) corev1.NodeCondition {
	c := corev1.NodeCondition{Type: ConditionPodCIDRTooSmall, Status: corev1.ConditionFalse, Reason: ReasonPodCIDRFits}
	var small, all []string
	mp := int64(0)
	for _, b := range blocks {
		mp = b.MaxPods
		s := fmt.Sprintf("%s has %s usable %s addresses", b.Prefix, count(b.Usable), b.family())
		all = append(all, s)
		if b.tooSmall() {
			small = append(small, s)
		}
	}
	if len(small) == 0 {
		c.Message = fmt.Sprintf("pod CIDRs hold maxPods %d: %s", mp, strings.Join(all, "; "))
		return c
	}
	c.Status, c.Reason = corev1.ConditionTrue, ReasonPodCIDRTooSmall
	c.Message = fmt.Sprintf("%s, fewer than maxPods %d (status.capacity.pods): pods beyond that fail in ContainerCreating; "+
		"give nodes larger pod CIDRs (kube-controller-manager --node-cidr-mask-size, or weft's blockSizeV4/blockSizeV6) "+
		"or lower the kubelet's maxPods", strings.Join(small, "; "), mp)
	return c
}

func count(n uint64) string {
	if n == ^uint64(0) {
		return "2^64 or more"
	}
	return fmt.Sprint(n)
}

// conditionPatch returns the condition to patch onto n, or nil when n
// shows it already (same status, reason and message). The transition time
// moves only when the status changes.
func conditionPatch(n *corev1.Node, want corev1.NodeCondition, now metav1.Time) *corev1.NodeCondition {
	want.LastHeartbeatTime, want.LastTransitionTime = now, now
	for _, c := range n.Status.Conditions {
		if c.Type != want.Type {
			continue
		}
		if c.Status == want.Status && c.Reason == want.Reason && c.Message == want.Message {
			return nil
		}
		if c.Status == want.Status {
			want.LastTransitionTime = c.LastTransitionTime
		}
	}
	return &want
}

// capacity compares the node's pod CIDRs with its maxPods, sets the
// capacity metrics and returns the condition the Node should show (nil
// while the Node reports no maxPods).
func (a *Agent) capacity(self *corev1.Node, pods []netip.Prefix, gws []netip.Addr) *corev1.NodeCondition {
	a.m.podCIDRTooSmall.Reset()
	mp, ok := maxPods(self)
	if !ok || len(pods) == 0 {
		a.m.maxPods.Set(0)
		return nil
	}
	a.m.maxPods.Set(float64(mp))
	blocks := podCapacity(pods, gws, mp)
	for _, b := range blocks {
		v := 0.0
		if b.tooSmall() {
			v = 1
		}
		a.m.podCIDRTooSmall.WithLabelValues(b.family()).Set(v)
	}
	c := capacityCondition(blocks)
	return &c
}

// reportCapacity records a capacity condition the agent just set on its
// Node: a Warning Event when it became (or stays, with new numbers) True,
// a log line either way.
func (a *Agent) reportCapacity(self *corev1.Node, c corev1.NodeCondition) {
	if c.Status != corev1.ConditionTrue {
		a.log.Info("pod CIDRs hold maxPods", "condition", c.Type, "message", c.Message)
		a.capWarned = ""
		return
	}
	a.log.Warn("pod CIDR smaller than maxPods", "condition", c.Type, "message", c.Message)
	if c.Message != a.capWarned {
		// Once: a pass that runs before the informer shows the patched
		// Node patches it again.
		a.recorder.Event(nodeRef(self), corev1.EventTypeWarning, ReasonPodCIDRTooSmall, c.Message)
		a.capWarned = c.Message
	}
}
