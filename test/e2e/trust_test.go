//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/test/lab"
)

// TestPeerTrust: node3 is compromised (its agent stopped, its weft.dev/
// annotations written by the attacker) and publishes node1's VTEP MAC, then
// node2's address with an AS number of its own. In vxlan and in bgp mode the
// other nodes' pods keep talking (100 Hz ping node1 → node2, no loss), node3
// is reported pending in weftctl status and in an Event naming both nodes,
// and a node added meanwhile is programmed.
func TestPeerTrust(t *testing.T) {
	l := upBGP(t, topology("vxlan-3node.clab.yml"), "trust")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	bgpWaitMode(t, ctx, l, "vxlan", 90*time.Second)
	pods := bgpPods(t, ctx, l, "t")
	ann := func(node string) map[string]string {
		n, err := c.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Annotations
	}
	n1, n2, n3 := ann("node1"), ann("node2"), ann("node3")

	for i, tc := range []struct {
		mode    string
		attack  map[string]any // node3's annotations, as the attacker writes them
		pending string         // in node1's status of node3
	}{
		{"vxlan", map[string]any{"weft.dev/vtep-mac": n1["weft.dev/vtep-mac"]}, "node1"},
		{"vxlan", map[string]any{"weft.dev/node-ip": n2["weft.dev/node-ip"]}, "not among the node's InternalIPs"},
		{"bgp", map[string]any{"weft.dev/node-ip": n2["weft.dev/node-ip"], "weft.dev/bgp-asn": "65099"}, "not among the node's InternalIPs"},
	} {
		extra := fmt.Sprintf("node9%d", i) // added while node3 squats
		t.Run(tc.mode+"/"+strings.Join(keys(tc.attack), "+"), func(t *testing.T) {
			if st := agentStatus(t, ctx, l, "node1"); st.Mode != tc.mode {
				if err := l.SetMode(ctx, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			bgpWaitMode(t, ctx, l, tc.mode, 90*time.Second) // node3 healed, no extra node
			fl := startFlood(t, ctx, l, pods[0], pods[1].IPs[0])
			time.Sleep(time.Second)
			if err := l.AgentKill("node3"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// node3 is healed: its own annotations back, its agent again.
				restore := map[string]any{}
				for k := range tc.attack {
					restore[k] = nil
					if v, ok := n3[k]; ok {
						restore[k] = v
					}
				}
				patchAnnotations(t, ctx, c, "node3", restore)
				if err := l.AgentStart(ctx, "node3"); err != nil {
					t.Error(err)
				}
			})
			since := time.Now().Add(-time.Second)
			patchAnnotations(t, ctx, c, "node3", tc.attack)
			for _, n := range []string{"node1", "node2"} {
				eventually(t, 30*time.Second, n+" reports node3 pending", func() error {
					for _, p := range agentStatus(t, ctx, l, n).Peers {
						if p.Name == "node3" && !p.Programmed && strings.Contains(p.Pending, tc.pending) {
							return nil
						}
						if p.Name == "node3" {
							return fmt.Errorf("node3: programmed %t, pending %q", p.Programmed, p.Pending)
						}
					}
					return fmt.Errorf("node3 not among the peers")
				})
			}
			eventually(t, 30*time.Second, "a PeerPending Event naming node3", func() error {
				return findEvent(ctx, c, since, "peer node3 not programmed")
			})
			// A node added meanwhile is programmed.
			addNode(t, ctx, c, extra, tc.mode)
			eventually(t, 30*time.Second, "node1 programs "+extra+" meanwhile", func() error {
				for _, p := range agentStatus(t, ctx, l, "node1").Peers {
					if p.Name == extra && (p.Programmed || tc.mode == "bgp" && strings.Contains(p.Pending, "no BGP route")) {
						return nil // in bgp mode a node without an agent announces nothing
					}
					if p.Name == extra {
						return fmt.Errorf("%s pending: %s", extra, p.Pending)
					}
				}
				return fmt.Errorf("%s not among the peers", extra)
			})
			time.Sleep(2 * time.Second)
			fl.stopAndCheck(t)
		})
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, strings.TrimPrefix(k, "weft.dev/"))
	}
	return out
}

func patchAnnotations(t *testing.T, ctx context.Context, c kubernetes.Interface, node string, ann map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// addNode registers a Node without a host behind it (an address nothing
// answers on), as a kubelet would: the controller manager gives it a pod
// CIDR; in vxlan mode it also gets a VTEP MAC as its agent would publish.
func addNode(t *testing.T, ctx context.Context, c kubernetes.Interface, name, mode string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	if mode == "vxlan" {
		n.Annotations["weft.dev/vtep-mac"] = "02:00:00:00:09:09"
	}
	if _, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	st := []byte(`{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.99"}]}}`)
	if _, err := c.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, st, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}

// TestPeerTrustLeased: with pod CIDRs leased by weft, a compromised node3
// publishing node2's block, a more specific of it or a range covering every
// block is pending on the other nodes (its claim is not backed by a block
// Lease it holds), and node1 → node2 pods lose no packet meanwhile; in vxlan
// and in bgp mode.
func TestPeerTrustLeased(t *testing.T) {
	l := upBGP(t, testdata("vxlan-3node-leased.clab.yml"), "trustl")
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"vxlan", "bgp"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			if err := l.SetMode(ctx, mode); err != nil {
				t.Fatal(err)
			}
			bgpWaitMode(t, ctx, l, mode, 90*time.Second)
			leasedClaims(t, ctx, l, c, mode)
		})
	}
}

func leasedClaims(t *testing.T, ctx context.Context, l *lab.Lab, c kubernetes.Interface, mode string) {
	pods := bgpPods(t, ctx, l, "t"+mode[:1])
	n2, err := c.CoreV1().Nodes().Get(ctx, "node2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n3, err := c.CoreV1().Nodes().Get(ctx, "node3", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	block2, _, _ := strings.Cut(n2.Annotations["weft.dev/pod-cidrs"], ",") // node2's IPv4 block
	own3 := n3.Annotations["weft.dev/pod-cidrs"]
	if block2 == "" || own3 == "" {
		t.Fatalf("pod CIDRs not leased: node2 %q, node3 %q", block2, own3)
	}
	more := strings.TrimSuffix(block2, "/24") + "/25"

	fl := startFlood(t, ctx, l, pods[0], pods[1].IPs[0])
	time.Sleep(time.Second)
	if err := l.AgentKill("node3"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		patchAnnotations(t, ctx, c, "node3", map[string]any{"weft.dev/pod-cidrs": own3})
		if err := l.AgentStart(ctx, "node3"); err != nil {
			t.Error(err)
		}
	}()
	for _, tc := range []struct{ claim, pending string }{
		{block2, `held by "node2"`},
		{more, "is not a /24 block"},
		{"10.244.0.0/16", "is not a /24 block"},
	} {
		patchAnnotations(t, ctx, c, "node3", map[string]any{"weft.dev/pod-cidrs": tc.claim})
		for _, n := range []string{"node1", "node2"} {
			eventually(t, 30*time.Second, n+" reports node3 claiming "+tc.claim+" pending", func() error {
				for _, p := range agentStatus(t, ctx, l, n).Peers {
					if p.Name == "node3" && !p.Programmed && strings.Contains(p.Pending, tc.pending) {
						return nil
					}
					if p.Name == "node3" {
						return fmt.Errorf("node3: programmed %t, pending %q", p.Programmed, p.Pending)
					}
				}
				return fmt.Errorf("node3 not among the peers")
			})
		}
		t.Logf("%s: node3 claiming %s: pending on node1 and node2", mode, tc.claim)
	}
	time.Sleep(2 * time.Second)
	fl.stopAndCheck(t)
}
