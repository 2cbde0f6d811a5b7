package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/agent/plan"
)

func TestPeerFromNode(t *testing.T) {
	mk := func(ann map[string]string, spec []string, addrs ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: ann}}
		n.Spec.PodCIDRs = spec
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		n.Status.Addresses = append([]corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "203.0.113.9"}}, n.Status.Addresses...)
		return n
	}
	v4, v6 := netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("fd00::1")
	tests := []struct {
		name     string
		node     *corev1.Node
		underlay netip.Addr
		want     string // "ip cidrs mac"
	}{
		{"InternalIP of the underlay family", mk(nil, []string{"10.244.2.0/24"}, "fd00::2", "192.168.1.2"), v4, "192.168.1.2 [10.244.2.0/24] "},
		{"IPv6 underlay", mk(nil, []string{"10.244.2.0/24", "fd00:10:244:2::/64"}, "192.168.1.2", "fd00::2"), v6, "fd00::2 [10.244.2.0/24 fd00:10:244:2::/64] "},
		{"annotation chooses among the InternalIPs", mk(map[string]string{AnnotationNodeIP: "192.168.1.3"}, nil, "192.168.1.2", "192.168.1.3"), v4, "192.168.1.3 [] "},
		{"annotation naming another address refused", mk(map[string]string{AnnotationNodeIP: "192.168.9.9"}, nil, "192.168.1.2"), v4,
			`192.168.1.2 [] ; refused: weft.dev/node-ip "192.168.9.9" is not among the node's InternalIPs in status.addresses`},
		{"annotation naming the ExternalIP refused", mk(map[string]string{AnnotationNodeIP: "203.0.113.9"}, nil, "192.168.1.2"), v4,
			`192.168.1.2 [] ; refused: weft.dev/node-ip "203.0.113.9" is not among the node's InternalIPs in status.addresses`},
		{"annotation of other family ignored", mk(map[string]string{AnnotationNodeIP: "fd00::9"}, nil, "192.168.1.2"), v4, "192.168.1.2 [] "},
		{"no address of the family", mk(nil, nil, "fd00::2"), v4, "invalid IP [] "},
		{"leased CIDRs from annotation, MAC", mk(map[string]string{AnnotationPodCIDRs: "10.244.5.0/24,fd00:10:244:5::/64",
			AnnotationVTEPMAC: "02:00:00:00:00:05"}, nil, "192.168.1.5"), v4, "192.168.1.5 [10.244.5.0/24 fd00:10:244:5::/64] 02:00:00:00:00:05 (leased)"},
		{"spec wins over annotation", mk(map[string]string{AnnotationPodCIDRs: "10.244.5.0/24"}, []string{"10.244.6.0/24"}, "192.168.1.5"), v4, "192.168.1.5 [10.244.6.0/24] "},
		{"bad MAC ignored", mk(map[string]string{AnnotationVTEPMAC: "ff:ff:ff:ff:ff:ff"}, nil, "192.168.1.5"), v4, "192.168.1.5 [] "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := peer(tc.node, tc.underlay)
			if diff := cmp.Diff(tc.want, show(p)); diff != "" {
				t.Errorf("peer (-want +got):\n%s", diff)
			}
		})
	}
}

func show(p plan.Node) string {
	cidrs := "["
	for i, c := range p.PodCIDRs {
		if i > 0 {
			cidrs += " "
		}
		cidrs += c.String()
	}
	out := p.IP.String() + " " + cidrs + "] " + p.VTEPMAC.String()
	if p.Refused != "" {
		out += "; refused: " + p.Refused
	}
	if p.Leased {
		out += " (leased)"
	}
	return out
}

func TestUnderlayOfLoopback(t *testing.T) {
	p, mtu, err := underlayOf(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if p != netip.MustParsePrefix("127.0.0.0/8") || mtu <= 0 {
		t.Errorf("underlayOf(127.0.0.1) = %v, %d; want 127.0.0.0/8 and the loopback MTU", p, mtu)
	}
	if _, _, err := underlayOf(netip.MustParseAddr("192.0.2.77")); err == nil {
		t.Error("underlayOf of an address on no interface succeeded")
	}
}

func TestStableMAC(t *testing.T) {
	dir := t.TempDir()
	m1, err := stableMAC(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if m1[0]&1 != 0 || m1[0]&2 == 0 {
		t.Errorf("generated MAC %s is not locally administered unicast", m1)
	}
	m2, err := stableMAC(dir, "")
	if err != nil || m2.String() != m1.String() {
		t.Errorf("second stableMAC = %s, %v; want the persisted %s", m2, err, m1)
	}
	m3, err := stableMAC(dir, "02:aa:bb:cc:dd:ee")
	if err != nil || m3.String() != "02:aa:bb:cc:dd:ee" {
		t.Errorf("stableMAC with a published MAC = %s, %v; want the published one", m3, err)
	}
	m4, _ := stableMAC(dir, "")
	if m4.String() != "02:aa:bb:cc:dd:ee" {
		t.Errorf("published MAC not persisted: got %s", m4)
	}
}

func TestSlimNode(t *testing.T) {
	full := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: "n", Labels: map[string]string{"l": "1"}, Annotations: map[string]string{AnnotationVTEPMAC: "02:00:00:00:00:01"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}},
		},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}},
		Status: corev1.NodeStatus{
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.1.1"}},
			Conditions:      []corev1.NodeCondition{{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: ConditionReason}},
			Images:          []corev1.ContainerImage{{Names: []string{"registry.example/app:1"}, SizeBytes: 1 << 20}},
			VolumesInUse:    []corev1.UniqueVolumeName{"v"},
			VolumesAttached: []corev1.AttachedVolume{{Name: "v", DevicePath: "/dev/x"}},
		},
	}
	want := full.DeepCopy()
	want.ManagedFields, want.Status.Images, want.Status.VolumesInUse, want.Status.VolumesAttached = nil, nil, nil, nil
	got, err := slimNode(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("slimNode (-want +got):\n%s", diff)
	}
	// What the agent reads survives.
	if n := got.(*corev1.Node); peer(n, netip.Addr{}).IP != netip.MustParseAddr("192.168.1.1") || !networkAvailable(n) {
		t.Errorf("slimNode dropped what weft reads: %+v", n)
	}
	// Other objects (a tombstone) pass unchanged.
	tomb := "not a node"
	if got, err := slimNode(tomb); err != nil || got != tomb {
		t.Errorf("slimNode(%q) = %v, %v", tomb, got, err)
	}
}
