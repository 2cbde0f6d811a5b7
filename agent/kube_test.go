package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"weft.dev/weft/agent/kube"
	"weft.dev/weft/agent/lease"
	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/lab/controlplane/cptest"
	"weft.dev/weft/test/nstest"
	"weft.dev/weft/test/poll"
)

// startControlPlane runs a real etcd + kube-apiserver + kube-controller-manager
// in a namespace (skipping when not root or the binaries are missing), with
// deploy/kubernetes applied: the agent's RBAC, admission policies and ConfigMap.
func startControlPlane(t *testing.T, allocate bool) *controlplane.ControlPlane {
	t.Helper()
	nstest.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short: starts a real control plane")
	}
	cp := cptest.Start(t, "agcp", controlplane.Config{
		Addr:         netip.MustParseAddr("192.168.250.1"),
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, AllocateNodeCIDRs: allocate,
		// The garbage collector frees a deleted node's block Lease (owned
		// by the Node); no agent may delete another node's Lease.
		Controllers: append(slices.Clone(controlplane.DefaultControllers), "garbage-collector-controller"),
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.ApplyDeploy(ctx, filepath.Join(root, "deploy", "kubernetes")); err != nil {
		t.Fatalf("apply deploy/kubernetes: %v", err)
	}
	return cp
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		dir = parent
	}
}

// realAgent is an agent in this process talking to the real apiserver through
// kube.New, as weft-agent does, with its node-bound ServiceAccount token, over
// fakes for the kernel.
type realAgent struct {
	a      *Agent
	dp     *fakeDatapath
	dir    string
	cancel context.CancelFunc
	done   chan error
}

func startRealAgent(t *testing.T, cp *controlplane.ControlPlane, node string) *realAgent {
	t.Helper()
	ctx := context.Background()
	token, err := cp.AgentToken(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kube.New(cp.RESTConfigWithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	r := &realAgent{dp: &fakeDatapath{}, dir: t.TempDir(), done: make(chan error, 1)}
	r.a, err = New(Options{
		NodeName: node, StateDir: filepath.Join(r.dir, "state"), RunDir: filepath.Join(r.dir, "run"),
		CNIConfDir: filepath.Join(r.dir, "net.d"), Client: client, Datapath: r.dp, Firewall: &fakeFirewall{},
		Host: &fakeHost{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)).With("agent", node),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	go func() { r.done <- r.a.Run(rctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *realAgent) stop() {
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	poll.Until(t, timeout, 100*time.Millisecond, what, cond)
}

// TestAgentAgainstAPIServer runs three agents against a real apiserver with
// the controller-manager's CIDR allocation off: they lease distinct blocks
// through Lease objects, publish their annotations and condition through
// nodes/status with their own ServiceAccount tokens (RBAC and admission
// policies real), see each other as peers, follow ConfigMap changes live and
// free a deleted node's block.
func TestAgentAgainstAPIServer(t *testing.T) {
	cp := startControlPlane(t, false)
	ctx := context.Background()
	admin := cp.Client()
	nodes := []string{"wn1", "wn2", "wn3"}
	for i, n := range nodes {
		if err := cp.RegisterNode(ctx, n, []netip.Addr{netip.MustParseAddr(fmt.Sprintf("192.168.250.%d", 11+i))}, nil); err != nil {
			t.Fatal(err)
		}
	}
	agents := map[string]*realAgent{}
	for _, n := range nodes {
		agents[n] = startRealAgent(t, cp, n)
	}

	// Every agent is ready, with a leased block, and routes to both others.
	for _, n := range nodes {
		r := agents[n]
		waitFor(t, 60*time.Second, n+" ready with 2 programmed peers", func() (bool, string) {
			st := r.a.Status()
			prog := 0
			for _, p := range st.Peers {
				if p.Programmed {
					prog++
				}
			}
			return st.Ready && st.Leased && prog == 2, fmt.Sprintf("%+v", st)
		})
	}
	blocks := map[string]string{}
	for _, n := range nodes {
		node, err := admin.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(node.Spec.PodCIDRs) != 0 {
			t.Fatalf("node %s has spec.podCIDRs %v although allocation is off", n, node.Spec.PodCIDRs)
		}
		cidr := node.Annotations[AnnotationPodCIDRs]
		if other, dup := blocks[cidr]; dup || cidr == "" {
			t.Fatalf("node %s published pod CIDRs %q (also held by %q)", n, cidr, other)
		}
		blocks[cidr] = n
		if got := agents[n].a.Status().PodCIDRs; len(got) != 1 || got[0].String() != cidr {
			t.Errorf("node %s: agent uses %v, published %q", n, got, cidr)
		}
		if node.Annotations[AnnotationVTEPMAC] == "" || node.Annotations[AnnotationNodeIP] != fmt.Sprintf("192.168.250.%d", 11+indexOf(nodes, n)) {
			t.Errorf("node %s annotations = %v", n, node.Annotations)
		}
		if !networkAvailable(node) {
			t.Errorf("node %s conditions = %+v, want NetworkUnavailable=False (WeftReady)", n, node.Status.Conditions)
		}
		// The leased /24 holds the registered maxPods (110): the capacity
		// condition is there, False (admission lets the agent set it).
		if !slices.ContainsFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == ConditionPodCIDRTooSmall && c.Status == corev1.ConditionFalse && c.Reason == ReasonPodCIDRFits
		}) {
			t.Errorf("node %s conditions = %+v, want %s=False (%s)", n, node.Status.Conditions, ConditionPodCIDRTooSmall, ReasonPodCIDRFits)
		}
		le, err := admin.CoordinationV1().Leases("kube-system").Get(ctx, lease.Name(netip.MustParsePrefix(cidr)), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("lease of %s: %v", cidr, err)
		}
		if *le.Spec.HolderIdentity != n || len(le.OwnerReferences) != 1 || le.OwnerReferences[0].UID != node.UID {
			t.Errorf("lease %s: holder %s owners %+v, want %s (uid %s)", le.Name, *le.Spec.HolderIdentity, le.OwnerReferences, n, node.UID)
		}
	}
	t.Logf("leased blocks: %v", blocks)
	if want := fmt.Sprintf("route %s via", agents["wn2"].a.Status().PodCIDRs[0]); !strings.Contains(agents["wn1"].dp.dump(), want) {
		t.Errorf("wn1 datapath lacks %q:\n%s", want, agents["wn1"].dp.dump())
	}

	// The agent's token may not touch another node (admission policy). The
	// apiserver enforces a new policy only once it has loaded it, a moment
	// after it was applied, so first wait (with dry runs, which admission
	// sees too but which change nothing) until it refuses.
	wn1 := agents["wn1"].a.o.Client
	foreign := []byte(`{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:99"}}}`)
	waitFor(t, 30*time.Second, "admission policy enforced", func() (bool, string) {
		_, err := wn1.PatchNodeStatus(ctx, "wn2", types.StrategicMergePatchType, foreign,
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsForbidden(err), fmt.Sprint(err)
	})
	for _, pt := range []types.PatchType{types.StrategicMergePatchType, types.MergePatchType} {
		_, err := wn1.PatchNodeStatus(ctx, "wn2", pt, foreign, metav1.PatchOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("wn1 patching wn2's status (%s): %v, want Forbidden (deploy/kubernetes/admission.yaml)", pt, err)
		}
	}

	// A config change applies live; a bad one is rejected with an Event.
	cm, err := admin.CoreV1().ConfigMaps("kube-system").Get(ctx, "weft-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["config.yaml"] = "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {vni: 42}\n"
	if cm, err = admin.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "vni 42 on wn3", func() (bool, string) {
		d := agents["wn3"].dp.dump()
		return strings.Contains(d, "vni 42 "), d
	})
	cm.Data["config.yaml"] = "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {vni: 0}\n"
	if _, err = admin.CoreV1().ConfigMaps("kube-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "wn1 not ready on bad config", func() (bool, string) {
		st := agents["wn1"].a.Status()
		return !st.Ready && strings.Contains(st.ConfigError, "vxlan.vni"), fmt.Sprintf("%+v", st)
	})
	if d := agents["wn1"].dp.dump(); !strings.Contains(d, "vni 42 ") {
		t.Errorf("last good config not kept on wn1:\n%s", d)
	}
	waitFor(t, 30*time.Second, "ConfigInvalid event", func() (bool, string) {
		l, err := admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, e := range l.Items { // about the agent's own Node: admission allows no other
			if e.Reason == "ConfigInvalid" && e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "wn1" && strings.Contains(e.Message, "vxlan.vni") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(l.Items))
	})

	// Node wn3 goes away: its agent stops, the Node is deleted; the garbage
	// collector frees its block, and the peers drop its route.
	agents["wn3"].stop()
	var wn3Block string
	for c, n := range blocks {
		if n == "wn3" {
			wn3Block = c
		}
	}
	if err := cp.DeleteNode(ctx, "wn3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "lease of deleted wn3 released", func() (bool, string) {
		_, err := admin.CoordinationV1().Leases("kube-system").Get(ctx, lease.Name(netip.MustParsePrefix(wn3Block)), metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	waitFor(t, 30*time.Second, "wn1 drops the route to wn3", func() (bool, string) {
		d := agents["wn1"].dp.dump()
		return !strings.Contains(d, wn3Block), d
	})
	for _, n := range []string{"wn1", "wn2"} {
		if _, err := admin.CoordinationV1().Leases("kube-system").Get(ctx, lease.Name(agents[n].a.Status().PodCIDRs[0]), metav1.GetOptions{}); err != nil {
			t.Errorf("lease of live node %s: %v", n, err)
		}
	}
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}
