package deploy

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/lab/controlplane/cptest"
)

const nodeNameKey = "authentication.kubernetes.io/node-name"

// startControlPlane runs a real control plane in a fresh namespace whose
// underlay link (a veth with its peer in the same namespace) holds
// 192.0.2.10, and stops it in t.Cleanup.
func startControlPlane(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	return cptest.Start(t, "dp", controlplane.Config{
		Addr:              netip.MustParseAddr("192.0.2.10"),
		ClusterCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		AllocateNodeCIDRs: true,
	})
}

// clientFor loads a kubeconfig written for processes in the lab namespace
// and dials through the lab namespace from this (root namespace) process.
func clientFor(t *testing.T, cp *controlplane.ControlPlane, path string) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	rc.Dial = cp.Dialer()
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestManifestsOnAPIServer applies deploy/weft.yaml to a real apiserver
// (dry run first, then for real) and exercises the agent's rights with a
// token bound to node-a, as the DaemonSet pod on node-a gets: everything
// the agent needs works; another node, foreign annotations, labels, other
// conditions, other Secrets, Pods and other Leases are refused.
func TestManifestsOnAPIServer(t *testing.T) {
	cp := startControlPlane(t)
	admin := cp.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, n := range []string{"node-a", "node-b"} {
		if err := cp.RegisterNode(ctx, n, []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(21 + i)})}, nil); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(repoRoot(t), "deploy", "weft.yaml")
	objs := weftYAML(t)

	t.Run("ServerDryRun", func(t *testing.T) {
		out, err := cp.Kubectl(ctx, "apply", "--dry-run=server", "--server-side", "--field-manager=weft-test", "-f", file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != len(objs) {
			t.Errorf("dry run reported %d objects, the file has %d:\n%s", len(lines), len(objs), out)
		}
		for _, l := range lines {
			if !strings.HasSuffix(l, "serverside-applied (server dry run)") {
				t.Errorf("dry run: %q", l)
			}
		}
		// A dry run creates nothing.
		if _, err := admin.AppsV1().DaemonSets("kube-system").Get(ctx, "weft-agent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("DaemonSet after dry run: err %v, want NotFound", err)
		}
	})

	out, err := cp.Kubectl(ctx, "apply", "--server-side", "--field-manager=weft-test", "-f", file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl apply:\n%s", out)
	for _, o := range objs {
		ns := cmp.Or(o.GetNamespace(), "kube-system") // the events Role lives in "default"
		if _, err := cp.Kubectl(ctx, "get", strings.ToLower(o.GetKind()), "-n", ns, o.GetName()); err != nil {
			t.Errorf("after apply: %v", err)
		}
	}

	// What the agent may read but does not own, made by the admin.
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"weft-bgp-passwords", "other-secret"} {
		_, err := admin.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: map[string]string{"peer": "pw"},
		}, metav1.CreateOptions{})
		mustCreate(err)
	}
	holder := "kube-scheduler-x"
	_, err = admin.CoordinationV1().Leases("kube-system").Create(ctx, &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-scheduler"}, Spec: coordv1.LeaseSpec{HolderIdentity: &holder},
	}, metav1.CreateOptions{})
	mustCreate(err)

	kc := filepath.Join(t.TempDir(), "agent.kubeconfig")
	if err := cp.AgentKubeconfig(ctx, "node-a", kc); err != nil {
		t.Fatal(err)
	}
	agent := clientFor(t, cp, kc)
	who, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := who.Status.UserInfo; u.Username != "system:serviceaccount:kube-system:weft-agent" ||
		!slices.Equal(u.Extra[nodeNameKey], []string{"node-a"}) {
		t.Fatalf("agent identity %s extra %v, want the weft-agent ServiceAccount on node-a", u.Username, u.Extra)
	}

	// Admission policies take effect once the apiserver has loaded them.
	waitDenied(t, ctx, func() error {
		return patchStatus(ctx, agent, "node-b", `{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:0b"}}}`)
	})

	leaseName := "weft-block-10-244-200-0-24"
	nodeA, err := admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blockLease := func(name, holder string) *coordv1.Lease {
		return &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"weft.dev/pod-cidr-block": "true"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "node-a", UID: nodeA.UID}}},
			Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(holder)},
		}
	}
	leases := agent.CoordinationV1().Leases("kube-system")
	// node-b's block, made by the admin as node-b's agent would.
	nodeBLease := "weft-block-10-244-202-0-24"
	_, err = admin.CoordinationV1().Leases("kube-system").Create(ctx, &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: nodeBLease, Labels: map[string]string{"weft.dev/pod-cidr-block": "true"}},
		Spec:       coordv1.LeaseSpec{HolderIdentity: ptr.To("node-b")},
	}, metav1.CreateOptions{})
	mustCreate(err)
	event := func(ns string, about corev1.ObjectReference) error {
		_, err := agent.CoreV1().Events(ns).Create(ctx, &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "weft."}, InvolvedObject: about,
			Reason: "PeerPending", Message: "test", Type: corev1.EventTypeWarning,
			Source: corev1.EventSource{Component: "weft-agent", Host: "node-a"},
		}, metav1.CreateOptions{})
		return err
	}

	t.Run("Allowed", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			do   func() error
		}{
			{"list nodes", func() error { _, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); return err }},
			{"watch nodes", func() error {
				w, err := agent.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
				if err == nil {
					w.Stop()
				}
				return err
			}},
			{"annotate own node", func() error {
				return patchStatus(ctx, agent, "node-a", `{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:0a","weft.dev/node-ip":"192.0.2.21"}}}`)
			}},
			{"set own NetworkUnavailable", func() error {
				return patchStatusSMP(ctx, agent, "node-a", `{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"WeftReady","message":"weft is ready"}]}}`)
			}},
			{"set own WeftPodCIDRTooSmall", func() error {
				return patchStatusSMP(ctx, agent, "node-a", `{"status":{"conditions":[{"type":"WeftPodCIDRTooSmall","status":"True","reason":"PodCIDRSmallerThanMaxPods","message":"test"}]}}`)
			}},
			{"remove own weft annotation", func() error {
				return patchStatus(ctx, agent, "node-a", `{"metadata":{"annotations":{"weft.dev/node-ip":null}}}`)
			}},
			{"get weft-config", func() error {
				_, err := agent.CoreV1().ConfigMaps("kube-system").Get(ctx, "weft-config", metav1.GetOptions{})
				return err
			}},
			{"watch weft-config by name", func() error {
				w, err := agent.CoreV1().ConfigMaps("kube-system").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=weft-config"})
				if err == nil {
					w.Stop()
				}
				return err
			}},
			{"get bgp passwords", func() error {
				_, err := agent.CoreV1().Secrets("kube-system").Get(ctx, "weft-bgp-passwords", metav1.GetOptions{})
				return err
			}},
			{"create event", func() error {
				_, err := agent.CoreV1().Events("default").Create(ctx, &corev1.Event{
					ObjectMeta:     metav1.ObjectMeta{GenerateName: "node-a."},
					InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "node-a", UID: nodeA.UID},
					Reason:         "WeftReady", Message: "test", Type: corev1.EventTypeNormal,
					Source: corev1.EventSource{Component: "weft-agent", Host: "node-a"},
				}, metav1.CreateOptions{})
				return err
			}},
			{"list services and endpointslices", func() error {
				if _, err := agent.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
					return err
				}
				_, err := agent.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
				return err
			}},
			{"create own block lease", func() error {
				_, err := leases.Create(ctx, blockLease(leaseName, "node-a"), metav1.CreateOptions{})
				return err
			}},
			{"update own block lease", func() error {
				le, err := leases.Get(ctx, leaseName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				le.Annotations = map[string]string{"weft.dev/block": "10.244.200.0/24"}
				_, err = leases.Update(ctx, le, metav1.UpdateOptions{})
				return err
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := tc.do(); err != nil {
					t.Errorf("%s: %v", tc.name, err)
				}
			})
		}
		n, err := admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Annotations["weft.dev/vtep-mac"] != "02:00:00:00:00:0a" || n.Annotations["weft.dev/node-ip"] != "" {
			t.Errorf("node-a annotations %v", n.Annotations)
		}
		if c := condition(n, "NetworkUnavailable"); c == nil || c.Status != corev1.ConditionFalse || c.Reason != "WeftReady" {
			t.Errorf("node-a NetworkUnavailable %+v", c)
		}
		if c := condition(n, "WeftPodCIDRTooSmall"); c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("node-a WeftPodCIDRTooSmall %+v", c)
		}
		if c := condition(n, corev1.NodeReady); c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("node-a Ready %+v: the agent's patch changed it", c)
		}
	})

	t.Run("Denied", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			do   func() error
			want string // in the error message ("" for an RBAC refusal)
		}{
			{"annotate another node", func() error {
				return patchStatus(ctx, agent, "node-b", `{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:0b"}}}`)
			}, "may not change node node-b"},
			{"foreign annotation on own node", func() error {
				return patchStatus(ctx, agent, "node-a", `{"metadata":{"annotations":{"example.com/x":"y"}}}`)
			}, "only weft.dev/ annotations"},
			{"label own node", func() error {
				return patchStatus(ctx, agent, "node-a", `{"metadata":{"labels":{"weft.dev/x":"y"}}}`)
			}, "labels"},
			{"fake own Ready condition", func() error {
				return patchStatusSMP(ctx, agent, "node-a", `{"status":{"conditions":[{"type":"Ready","status":"False"}]}}`)
			}, "only the NetworkUnavailable and WeftPodCIDRTooSmall conditions"},
			{"fake another node's WeftPodCIDRTooSmall", func() error {
				return patchStatusSMP(ctx, agent, "node-b", `{"status":{"conditions":[{"type":"WeftPodCIDRTooSmall","status":"False","reason":"PodCIDRHoldsMaxPods","message":"x"}]}}`)
			}, "may not change node node-b"},
			{"change own addresses", func() error {
				return patchStatusSMP(ctx, agent, "node-a", `{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.99"}]}}`)
			}, "no node status"},
			{"taint own node", func() error {
				_, err := agent.CoreV1().Nodes().Patch(ctx, "node-a", types.MergePatchType,
					[]byte(`{"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}}`), metav1.PatchOptions{})
				return err
			}, ""},
			{"delete a node", func() error { return agent.CoreV1().Nodes().Delete(ctx, "node-b", metav1.DeleteOptions{}) }, ""},
			{"get another secret", func() error {
				_, err := agent.CoreV1().Secrets("kube-system").Get(ctx, "other-secret", metav1.GetOptions{})
				return err
			}, ""},
			{"list secrets", func() error {
				_, err := agent.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
				return err
			}, ""},
			{"list pods", func() error { _, err := agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err }, ""},
			{"update weft-config", func() error {
				cm, err := agent.CoreV1().ConfigMaps("kube-system").Get(ctx, "weft-config", metav1.GetOptions{})
				if err != nil {
					return err
				}
				_, err = agent.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{})
				return err
			}, ""},
			{"take over the scheduler's lease", func() error {
				le, err := leases.Get(ctx, "kube-scheduler", metav1.GetOptions{})
				if err != nil {
					return err
				}
				le.Spec.HolderIdentity = ptr.To("node-a")
				_, err = leases.Update(ctx, le, metav1.UpdateOptions{})
				return err
			}, "only weft-block-*"},
			{"create a block lease for another node", func() error {
				_, err := leases.Create(ctx, blockLease("weft-block-10-244-201-0-24", "node-b"), metav1.CreateOptions{})
				return err
			}, "may hold only its own block leases"},
			{"delete a non-block lease", func() error { return leases.Delete(ctx, "kube-scheduler", metav1.DeleteOptions{}) }, "only weft-block-*"},
			{"delete another node's block lease (to take the block)", func() error {
				return leases.Delete(ctx, nodeBLease, metav1.DeleteOptions{})
			}, "may not delete lease " + nodeBLease + " held by node-b"},
			{"take over another node's block lease", func() error {
				le, err := leases.Get(ctx, nodeBLease, metav1.GetOptions{})
				if err != nil {
					return err
				}
				le.Spec.HolderIdentity = ptr.To("node-a")
				le.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "node-a", UID: nodeA.UID}}
				_, err = leases.Update(ctx, le, metav1.UpdateOptions{})
				return err
			}, "may not update lease " + nodeBLease + " held by node-b"},
			{"create an own block lease owned by another node", func() error {
				le := blockLease("weft-block-10-244-203-0-24", "node-a")
				le.OwnerReferences[0].Name = "node-b"
				_, err := leases.Create(ctx, le, metav1.CreateOptions{})
				return err
			}, "must own its block leases by its own Node"},
			{"event about another node", func() error {
				return event("default", corev1.ObjectReference{Kind: "Node", Name: "node-b"})
			}, "events only about its own Node"},
			{"event about a pod", func() error {
				return event("default", corev1.ObjectReference{Kind: "Pod", Namespace: "default", Name: "node-a"})
			}, "events only about its own Node"},
			{"event in another namespace", func() error {
				return event("kube-system", corev1.ObjectReference{Kind: "Node", Name: "node-a"})
			}, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.do()
				if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
					t.Fatalf("err %v, want a refusal", err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err %q, want it to say %q", err, tc.want)
				}
				t.Logf("refused: %v", err)
			})
		}
	})

	t.Run("UnboundTokenChangesNoNode", func(t *testing.T) {
		tr, err := admin.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "weft-agent",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600))}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rc := cp.RESTConfigWithToken(tr.Status.Token)
		unbound, err := kubernetes.NewForConfig(rc)
		if err != nil {
			t.Fatal(err)
		}
		err = patchStatus(ctx, unbound, "node-a", `{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:0c"}}}`)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "not bound to a node") {
			t.Errorf("unbound token annotating node-a: %v, want refused as not bound to a node", err)
		}
		if _, err := unbound.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("unbound token listing nodes (RBAC allows it): %v", err)
		}
	})

	t.Run("DeleteOwnBlockLease", func(t *testing.T) {
		if err := leases.Delete(ctx, leaseName, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete block lease: %v", err)
		}
	})
}

func patchStatus(ctx context.Context, c kubernetes.Interface, node, patch string) error {
	_, err := c.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	return err
}

func patchStatusSMP(ctx context.Context, c kubernetes.Interface, node, patch string) error {
	_, err := c.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	return err
}

func condition(n *corev1.Node, typ corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// waitDenied retries do until the apiserver refuses it (the admission
// policies are loaded asynchronously after they are created).
func waitDenied(t *testing.T, ctx context.Context, do func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := do()
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("admission policies never took effect: last result %v", fmt.Sprint(err))
		case <-tick.C:
		}
	}
}
