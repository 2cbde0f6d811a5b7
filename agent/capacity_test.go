package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCapacityArithmetic(t *testing.T) {
	p, a := netip.MustParsePrefix, netip.MustParseAddr
	for _, c := range []struct {
		name    string
		pods    []netip.Prefix
		gws     []netip.Addr
		maxPods int64
		usable  []uint64
		status  corev1.ConditionStatus
		message string // substring
	}{
		{"/24 holds the default 110", []netip.Prefix{p("10.244.1.0/24")}, []netip.Addr{a("10.244.1.1")}, 110,
			[]uint64{253}, corev1.ConditionFalse, "pod CIDRs hold maxPods 110: 10.244.1.0/24 has 253 usable ipv4 addresses"},
		{"/24 holds 253", []netip.Prefix{p("10.244.1.0/24")}, []netip.Addr{a("10.244.1.1")}, 253,
			[]uint64{253}, corev1.ConditionFalse, "hold maxPods 253"},
		{"/24 does not hold 254", []netip.Prefix{p("10.244.1.0/24")}, []netip.Addr{a("10.244.1.1")}, 254,
			[]uint64{253}, corev1.ConditionTrue, "10.244.1.0/24 has 253 usable ipv4 addresses, fewer than maxPods 254"},
		{"/26 does not hold 110", []netip.Prefix{p("10.244.1.64/26")}, []netip.Addr{a("10.244.1.65")}, 110,
			[]uint64{61}, corev1.ConditionTrue, "has 61 usable ipv4 addresses, fewer than maxPods 110"},
		{"/25 holds 110", []netip.Prefix{p("10.244.1.0/25")}, []netip.Addr{a("10.244.1.1")}, 110,
			[]uint64{125}, corev1.ConditionFalse, "125 usable"},
		{"dual stack: the IPv6 /120 is the small one", []netip.Prefix{p("10.244.0.0/23"), p("fd00:10:244::/120")},
			[]netip.Addr{a("10.244.0.1"), a("fd00:10:244::1")}, 300,
			[]uint64{509, 254}, corev1.ConditionTrue, "fd00:10:244::/120 has 254 usable ipv6 addresses, fewer than maxPods 300"},
		{"dual stack /24 + /64 at 110", []netip.Prefix{p("10.244.1.0/24"), p("fd00:10:244:1::/64")},
			[]netip.Addr{a("10.244.1.1"), a("fd00:10:244:1::1")}, 110,
			[]uint64{253, 1<<64 - 2}, corev1.ConditionFalse, "fd00:10:244:1::/64 has 18446744073709551614 usable ipv6"},
	} {
		t.Run(c.name, func(t *testing.T) {
			blocks := podCapacity(c.pods, c.gws, c.maxPods)
			if len(blocks) != len(c.usable) {
				t.Fatalf("%d blocks, want %d", len(blocks), len(c.usable))
			}
			for i, b := range blocks {
				if b.Usable != c.usable[i] {
					t.Errorf("%s: usable %d, want %d", b.Prefix, b.Usable, c.usable[i])
				}
			}
			cond := capacityCondition(blocks)
			if cond.Type != ConditionPodCIDRTooSmall || cond.Status != c.status || !strings.Contains(cond.Message, c.message) {
				t.Errorf("condition %s=%s (%s) %q, want %s containing %q", cond.Type, cond.Status, cond.Reason, cond.Message, c.status, c.message)
			}
			if (cond.Status == corev1.ConditionTrue) != (cond.Reason == ReasonPodCIDRTooSmall) {
				t.Errorf("status %s with reason %s", cond.Status, cond.Reason)
			}
		})
	}
}

func TestMaxPods(t *testing.T) {
	n := &corev1.Node{}
	if _, ok := maxPods(n); ok {
		t.Error("maxPods of a node without capacity: ok")
	}
	n.Status.Capacity = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("250")}
	if v, ok := maxPods(n); !ok || v != 250 {
		t.Errorf("maxPods = %d, %v; want 250", v, ok)
	}
}

func TestConditionPatch(t *testing.T) {
	then := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	now := metav1.NewTime(time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC))
	want := corev1.NodeCondition{Type: ConditionPodCIDRTooSmall, Status: corev1.ConditionTrue, Reason: ReasonPodCIDRTooSmall, Message: "m1"}
	n := &corev1.Node{}
	if c := conditionPatch(n, want, now); c == nil || !c.LastTransitionTime.Equal(&now) {
		t.Errorf("no condition yet: patch %+v, want one at now", c)
	}
	have := want
	have.LastTransitionTime, have.LastHeartbeatTime = then, then
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}, have}
	if c := conditionPatch(n, want, now); c != nil {
		t.Errorf("condition shown already: patch %+v, want none", c)
	}
	want.Message = "m2"
	if c := conditionPatch(n, want, now); c == nil || !c.LastTransitionTime.Equal(&then) {
		t.Errorf("new message, same status: patch %+v, want one keeping the transition time", c)
	}
	want.Status, want.Reason = corev1.ConditionFalse, ReasonPodCIDRFits
	if c := conditionPatch(n, want, now); c == nil || !c.LastTransitionTime.Equal(&now) {
		t.Errorf("status changed: patch %+v, want the transition at now", c)
	}
}

// The agent raises the condition, one Event and the metrics when its Node's
// maxPods exceeds the pod CIDR, and clears them when maxPods is lowered.
func TestAgentCapacityCondition(t *testing.T) {
	self := kubeNode("node-a", "192.168.1.1", "10.244.1.0/24", "")
	self.Status.Capacity = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("300")}
	h := start(t, self, kubeNode("node-b", "192.168.1.2", "10.244.2.0/24", "02:00:00:00:00:0b"), configMap(goodConfig))
	ctx := context.Background()
	cond := func() corev1.NodeCondition {
		n, err := h.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == ConditionPodCIDRTooSmall {
				return c
			}
		}
		return corev1.NodeCondition{}
	}
	h.eventually("WeftPodCIDRTooSmall=True", func() bool { return cond().Status == corev1.ConditionTrue })
	if c := cond(); c.Reason != ReasonPodCIDRTooSmall || !strings.Contains(c.Message, "10.244.1.0/24 has 253 usable ipv4 addresses, fewer than maxPods 300") {
		t.Errorf("condition %+v", c)
	}
	if got := testutil.ToFloat64(h.a.m.podCIDRTooSmall.WithLabelValues("ipv4")); got != 1 {
		t.Errorf("weft_pod_cidr_too_small{family=ipv4} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.a.m.maxPods); got != 300 {
		t.Errorf("weft_node_max_pods = %v, want 300", got)
	}
	events := func() int {
		l, err := h.client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range l.Items {
			if e.Reason == ReasonPodCIDRTooSmall && e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "node-a" && e.Type == corev1.EventTypeWarning {
				n += max(int(e.Count), 1)
			}
		}
		return n
	}
	h.eventually("a PodCIDRSmallerThanMaxPods Event", func() bool { return events() > 0 })

	// Passes go on (a peer changes); no second Event for the same finding.
	h.a.kick()
	time.Sleep(300 * time.Millisecond)
	if n := events(); n != 1 {
		t.Errorf("%d PodCIDRSmallerThanMaxPods events, want 1", n)
	}

	// maxPods lowered to what the /24 holds: the condition goes False.
	n, err := h.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Capacity[corev1.ResourcePods] = resource.MustParse("110")
	if _, err := h.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("WeftPodCIDRTooSmall=False", func() bool { return cond().Status == corev1.ConditionFalse })
	if c := cond(); c.Reason != ReasonPodCIDRFits || !strings.Contains(c.Message, "hold maxPods 110") {
		t.Errorf("condition %+v", c)
	}
	if got := testutil.ToFloat64(h.a.m.podCIDRTooSmall.WithLabelValues("ipv4")); got != 0 {
		t.Errorf("weft_pod_cidr_too_small{family=ipv4} = %v, want 0", got)
	}
}
