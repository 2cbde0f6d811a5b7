package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"weft.dev/weft/test/nstest"
)

// requireBinaries skips t unless root and the Kubernetes binaries are built.
func requireBinaries(t *testing.T) string {
	t.Helper()
	nstest.RequireRoot(t)
	dir := os.Getenv("WEFT_K8S_BIN")
	if dir == "" {
		var err error
		if dir, err = DefaultBinDir(); err != nil {
			t.Fatal(err)
		}
	}
	if m := MissingBinaries(dir, "/usr/bin/etcd"); len(m) > 0 {
		t.Skipf("skipped: Kubernetes binaries missing (%s); build them with `make k8s` "+
			"(etcd: `make deps`)", strings.Join(m, ", "))
	}
	return dir
}

// underlay makes a namespace with a link "ul0" holding addrs, the control
// plane's lab underlay. The kernel here has no dummy links, so ul0 is a veth
// whose peer ul1 stays in the same namespace.
func underlay(t *testing.T, addrs ...string) *nstest.NS {
	t.Helper()
	ns := nstest.New(t, "cp")
	ns.MustAddLink(t, "ul0", "ul1", addrs...)
	return ns
}

// startCP starts a control plane for the test and stops it in t.Cleanup.
func startCP(t *testing.T, cfg Config) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	cp, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %s", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return cp
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// waitPodCIDRs waits until every node has spec.podCIDRs and returns them.
func waitPodCIDRs(t *testing.T, ctx context.Context, c kubernetes.Interface, names []string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, n := range names {
			node, err := c.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get node %s: %v", n, err)
			}
			if len(node.Spec.PodCIDRs) > 0 {
				got[n] = node.Spec.PodCIDRs
			}
		}
		if len(got) == len(names) {
			return got
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod CIDRs after %v: %v (want all of %v)", ctx.Err(), got, names)
		case <-tick.C:
		}
	}
}

// checkPodCIDRs checks one CIDR per cluster CIDR family, inside it, of the
// node mask size, and no CIDR given to two nodes.
func checkPodCIDRs(t *testing.T, got map[string][]string, cluster []netip.Prefix, masks [2]int) {
	t.Helper()
	owner := map[netip.Prefix]string{}
	for node, cidrs := range got {
		if len(cidrs) != len(cluster) {
			t.Errorf("node %s: pod CIDRs %v, want one per cluster CIDR %v", node, cidrs, cluster)
			continue
		}
		for i, s := range cidrs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				t.Fatalf("node %s: pod CIDR %q: %v", node, s, err)
			}
			want := cluster[i]
			if !want.Contains(p.Addr()) || p.Bits() != masks[familyIndex(p.Addr())] {
				t.Errorf("node %s: pod CIDR %s, want a /%d inside %s", node, p, masks[familyIndex(p.Addr())], want)
			}
			if other, dup := owner[p]; dup {
				t.Errorf("pod CIDR %s given to both %s and %s", p, other, node)
			}
			owner[p] = node
		}
	}
}

func repoDeployDir(t *testing.T) string {
	t.Helper()
	bin, err := DefaultBinDir() // <repo>/.cache/k8s/v1.37.2
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(filepath.Dir(filepath.Dir(filepath.Dir(bin))), "deploy", "kubernetes")
}

// TestControlPlane runs one single-stack control plane through the whole
// API: readiness from the root namespace, kubectl in the lab namespace, node
// registration and CIDR allocation, the agent's RBAC, an apiserver restart,
// and Stop.
func TestControlPlane(t *testing.T) {
	binDir := requireBinaries(t)
	ns := underlay(t, "192.0.2.10/24")
	dir := filepath.Join(t.TempDir(), "cp")
	cfg := Config{
		Netns:             ns.Name,
		Addr:              netip.MustParseAddr("192.0.2.10"),
		Dir:               dir,
		BinDir:            binDir,
		ClusterCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		ServiceCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		AllocateNodeCIDRs: true,
	}
	cp := startCP(t, cfg)
	c := cp.Client()

	t.Run("ReadyzFromRootNamespace", func(t *testing.T) {
		ctx := testCtx(t)
		if err := cp.Readyz(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := c.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != "v1.37.2" {
			t.Errorf("server version %s, want v1.37.2", v.GitVersion)
		}
		// The default/kubernetes Service got the first service IP, which
		// the serving certificate names.
		svc, err := c.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if svc.Spec.ClusterIP != "10.96.0.1" {
			t.Errorf("kubernetes service IP %s, want 10.96.0.1", svc.Spec.ClusterIP)
		}
	})

	t.Run("KubectlInLabNamespace", func(t *testing.T) {
		ctx := testCtx(t)
		out, err := cp.Kubectl(ctx, "get", "--raw", "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != "ok" {
			t.Errorf("kubectl get --raw /readyz = %q, want ok", out)
		}
		out, err = cp.Kubectl(ctx, "auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "system:masters") {
			t.Errorf("admin kubeconfig groups %s, want system:masters", out)
		}
	})

	nodes := []string{"node-a", "node-b", "node-c"}
	t.Run("RegisterNodesGetDistinctPodCIDRs", func(t *testing.T) {
		ctx := testCtx(t)
		for i, n := range nodes {
			addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(21 + i)})
			if err := cp.RegisterNode(ctx, n, []netip.Addr{addr}, map[string]string{"weft.dev/lab": "x"}); err != nil {
				t.Fatal(err)
			}
		}
		got := waitPodCIDRs(t, ctx, c, nodes)
		checkPodCIDRs(t, got, cfg.ClusterCIDRs, [2]int{24, 64})

		// What a kubelet would have reported.
		node, err := c.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantAddrs := []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.0.2.22"},
			{Type: corev1.NodeHostName, Address: "node-b"},
		}
		if d := cmp.Diff(wantAddrs, node.Status.Addresses); d != "" {
			t.Errorf("node-b addresses (-want +got):\n%s", d)
		}
		if !nodeReady(node) {
			t.Errorf("node-b conditions %+v, want Ready=True", node.Status.Conditions)
		}
		if node.Labels["weft.dev/lab"] != "x" || node.Labels["kubernetes.io/hostname"] != "node-b" {
			t.Errorf("node-b labels %v", node.Labels)
		}
		if len(node.Spec.Taints) != 0 {
			t.Errorf("node-b taints %v, want none", node.Spec.Taints)
		}

		// Registering again (a kubelet restart) changes nothing but labels.
		if err := cp.RegisterNode(ctx, "node-b", []netip.Addr{netip.MustParseAddr("192.0.2.22")},
			map[string]string{"weft.dev/lab": "y"}); err != nil {
			t.Fatalf("register again: %v", err)
		}
		again, err := c.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(node.Spec.PodCIDRs, again.Spec.PodCIDRs); d != "" {
			t.Errorf("pod CIDRs changed on re-register (-before +after):\n%s", d)
		}
		if again.Labels["weft.dev/lab"] != "y" || !nodeReady(again) {
			t.Errorf("after re-register: labels %v, conditions %+v", again.Labels, again.Status.Conditions)
		}
	})

	t.Run("AgentTokenHasOnlyManifestRights", func(t *testing.T) {
		ctx := testCtx(t)
		if err := cp.ApplyDeploy(ctx, repoDeployDir(t)); err != nil {
			t.Fatal(err)
		}
		// Applying twice is fine (server-side apply).
		if err := cp.ApplyDeploy(ctx, repoDeployDir(t)); err != nil {
			t.Fatalf("apply again: %v", err)
		}
		path := filepath.Join(t.TempDir(), "agent.kubeconfig")
		if err := cp.AgentKubeconfig(ctx, "node-a", path); err != nil {
			t.Fatal(err)
		}
		rc, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("load %s: %v", path, err)
		}
		if rc.Host != cp.Server() || rc.BearerToken == "" || len(rc.CertData) != 0 {
			t.Fatalf("agent kubeconfig: host %s, token %t, client cert %t", rc.Host, rc.BearerToken != "", len(rc.CertData) != 0)
		}
		rc.Dial = cp.Dialer() // the file is for processes in the lab; this test is in the root ns
		agent, err := kubernetes.NewForConfig(rc)
		if err != nil {
			t.Fatal(err)
		}

		who, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if who.Status.UserInfo.Username != "system:serviceaccount:kube-system:weft-agent" {
			t.Errorf("agent token user %q", who.Status.UserInfo.Username)
		}
		if got := who.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]; !slices.Equal(got, []string{"node-a"}) {
			t.Errorf("agent token node-name %v, want [node-a] (token bound to the node)", got)
		}

		for _, tc := range []struct {
			name string
			attr authorizationv1.ResourceAttributes
			want bool
		}{
			{"list nodes", authorizationv1.ResourceAttributes{Verb: "list", Resource: "nodes"}, true},
			{"watch nodes", authorizationv1.ResourceAttributes{Verb: "watch", Resource: "nodes"}, true},
			{"patch nodes/status", authorizationv1.ResourceAttributes{Verb: "patch", Resource: "nodes", Subresource: "status"}, true},
			{"patch nodes", authorizationv1.ResourceAttributes{Verb: "patch", Resource: "nodes"}, false},
			{"delete nodes", authorizationv1.ResourceAttributes{Verb: "delete", Resource: "nodes"}, false},
			{"get weft-config", authorizationv1.ResourceAttributes{Verb: "get", Resource: "configmaps", Namespace: "kube-system", Name: "weft-config"}, true},
			{"get other configmap", authorizationv1.ResourceAttributes{Verb: "get", Resource: "configmaps", Namespace: "kube-system", Name: "kube-root-ca.crt"}, false},
			{"update weft-config", authorizationv1.ResourceAttributes{Verb: "update", Resource: "configmaps", Namespace: "kube-system", Name: "weft-config"}, false},
			{"create lease in kube-system", authorizationv1.ResourceAttributes{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system"}, true},
			{"update kubelet lease", authorizationv1.ResourceAttributes{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-node-lease"}, false},
			{"create event", authorizationv1.ResourceAttributes{Verb: "create", Resource: "events", Namespace: "default"}, true},
			{"watch endpointslices", authorizationv1.ResourceAttributes{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"}, true},
			{"list services", authorizationv1.ResourceAttributes{Verb: "list", Resource: "services"}, true},
			{"list secrets", authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets"}, false},
			{"get other secret in kube-system", authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "kube-system", Name: "x"}, false},
			{"get bgp passwords", authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "kube-system", Name: "weft-bgp-passwords"}, true},
			{"list pods", authorizationv1.ResourceAttributes{Verb: "list", Resource: "pods"}, false},
			{"create pods", authorizationv1.ResourceAttributes{Verb: "create", Resource: "pods", Namespace: "default"}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r, err := agent.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
					&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
						ResourceAttributes: &tc.attr}}, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if r.Status.Allowed != tc.want {
					t.Errorf("allowed = %t, want %t (%s)", r.Status.Allowed, tc.want, r.Status.Reason)
				}
			})
		}

		// The same rights, exercised for real.
		list, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("agent list nodes: %v", err)
		}
		if len(list.Items) != len(nodes) {
			t.Errorf("agent sees %d nodes, want %d", len(list.Items), len(nodes))
		}
		w, err := agent.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			t.Fatalf("agent watch nodes: %v", err)
		}
		defer w.Stop()
		patch := []byte(`{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:0a"}}}`)
		if _, err := agent.CoreV1().Nodes().Patch(ctx, "node-a", types.MergePatchType, patch,
			metav1.PatchOptions{}, "status"); err != nil {
			t.Fatalf("agent patch node-a status: %v", err)
		}
		waitAnnotation(t, ctx, w, "node-a", "weft.dev/vtep-mac", "02:00:00:00:00:0a")
		// RBAC allows nodes/status of every node; the admission policies
		// from the same manifests narrow it to the agent's own node and to
		// weft.dev/ annotations.
		for name, p := range map[string]struct{ node, patch string }{
			"annotate another node": {"node-b", `{"metadata":{"annotations":{"weft.dev/vtep-mac":"02:00:00:00:00:0b"}}}`},
			"label its own node":    {"node-a", `{"metadata":{"labels":{"weft.dev/x":"y"}}}`},
			"fake its Ready status": {"node-a", `{"status":{"conditions":[{"type":"Ready","status":"False"}]}}`},
		} {
			if _, err := agent.CoreV1().Nodes().Patch(ctx, p.node, types.StrategicMergePatchType, []byte(p.patch),
				metav1.PatchOptions{}, "status"); !apierrors.IsForbidden(err) {
				t.Errorf("agent %s: err %v, want Forbidden", name, err)
			}
		}
		if _, err := agent.CoreV1().Nodes().Patch(ctx, "node-a", types.MergePatchType,
			[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("agent patch node-a spec: err %v, want Forbidden", err)
		}
		cm, err := agent.CoreV1().ConfigMaps("kube-system").Get(ctx, "weft-config", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("agent get weft-config: %v", err)
		}
		if !strings.Contains(cm.Data["config.yaml"], "mode: vxlan") {
			t.Errorf("weft-config config.yaml = %q", cm.Data["config.yaml"])
		}
		if _, err := agent.CoreV1().ConfigMaps("kube-system").List(ctx, metav1.ListOptions{
			FieldSelector: "metadata.name=weft-config"}); err != nil {
			t.Errorf("agent list weft-config by field selector: %v", err)
		}
		for name, call := range map[string]func() error{
			"list secrets": func() error {
				_, err := agent.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
				return err
			},
			"list pods": func() error {
				_, err := agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
				return err
			},
			"list configmaps in kube-system": func() error {
				_, err := agent.CoreV1().ConfigMaps("kube-system").List(ctx, metav1.ListOptions{})
				return err
			},
			"delete node": func() error {
				return agent.CoreV1().Nodes().Delete(ctx, "node-c", metav1.DeleteOptions{})
			},
		} {
			if err := call(); !apierrors.IsForbidden(err) {
				t.Errorf("agent %s: err %v, want Forbidden", name, err)
			}
		}
	})

	t.Run("APIServerRestartKeepsData", func(t *testing.T) {
		ctx := testCtx(t)
		_, err := c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "survivor"}, Data: map[string]string{"k": "v"},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		before := cp.Pids()
		if err := cp.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		if processExists(before[apiserverName]) {
			t.Errorf("kube-apiserver pid %d still exists after StopAPIServer", before[apiserverName])
		}
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = c.CoreV1().Nodes().List(short, metav1.ListOptions{})
		cancel()
		if err == nil {
			t.Fatal("list nodes with the apiserver stopped: no error")
		}
		t.Logf("with the apiserver stopped: %v", err)
		if !processExists(before[etcdName]) || !processExists(before[kcmName]) {
			t.Errorf("etcd or controller manager gone after StopAPIServer: pids %v", before)
		}

		t0 := time.Now()
		if err := cp.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("StartAPIServer took %s", time.Since(t0).Round(time.Millisecond))
		got, err := c.CoreV1().ConfigMaps("default").Get(ctx, "survivor", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("configmap after restart: %v", err)
		}
		if got.Data["k"] != "v" {
			t.Errorf("configmap after restart: %v", got.Data)
		}
		list, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != len(nodes) {
			t.Errorf("%d nodes after restart, want %d", len(list.Items), len(nodes))
		}
		// The controller manager kept running and still allocates.
		if err := cp.RegisterNode(ctx, "node-d", []netip.Addr{netip.MustParseAddr("192.0.2.24")}, nil); err != nil {
			t.Fatal(err)
		}
		all := waitPodCIDRs(t, ctx, c, append(slices.Clone(nodes), "node-d"))
		checkPodCIDRs(t, all, cfg.ClusterCIDRs, [2]int{24, 64})
		if err := cp.DeleteNode(ctx, "node-d"); err != nil {
			t.Fatal(err)
		}
		if err := cp.DeleteNode(ctx, "node-d"); err != nil {
			t.Errorf("delete a deleted node: %v", err)
		}
		if _, err := c.CoreV1().Nodes().Get(ctx, "node-d", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("node-d after DeleteNode: err %v, want NotFound", err)
		}
	})

	t.Run("StopKillsEverythingAndRemovesDir", func(t *testing.T) {
		pids := cp.Pids()
		if len(pids) != 3 {
			t.Fatalf("running daemons %v, want etcd, kube-apiserver, kube-controller-manager", pids)
		}
		if err := cp.Stop(); err != nil {
			t.Fatal(err)
		}
		for name, pid := range pids {
			if processExists(pid) {
				t.Errorf("%s pid %d still exists after Stop", name, pid)
			}
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("Dir %s after Stop: %v, want it gone", dir, err)
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if out := nsPids(t, ns); out != "" {
			t.Errorf("processes left in %s: %s", ns.Name, out)
		}
	})
}

// TestDualStack checks that the controller manager gives every node one IPv4
// and one IPv6 pod CIDR when both cluster CIDRs are configured.
func TestDualStack(t *testing.T) {
	binDir := requireBinaries(t)
	ns := underlay(t, "192.0.2.10/24", "2001:db8::10/64")
	cfg := Config{
		Netns:  ns.Name,
		Addr:   netip.MustParseAddr("2001:db8::10"),
		Dir:    filepath.Join(t.TempDir(), "cp"),
		BinDir: binDir,
		ClusterCIDRs: []netip.Prefix{
			netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56"),
		},
		// The apiserver wants the primary service family to be Addr's.
		ServiceCIDRs: []netip.Prefix{
			netip.MustParsePrefix("fd00:96::/112"), netip.MustParsePrefix("10.96.0.0/16"),
		},
		AllocateNodeCIDRs: true,
	}
	cp := startCP(t, cfg)
	ctx := testCtx(t)
	if got, want := cp.Server(), "https://[2001:db8::10]:6443"; got != want {
		t.Errorf("Server() = %s, want %s", got, want)
	}
	nodes := []string{"node-a", "node-b", "node-c"}
	for i, n := range nodes {
		addrs := []netip.Addr{
			netip.AddrFrom4([4]byte{192, 0, 2, byte(21 + i)}),
			netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", 0x21+i)),
		}
		if err := cp.RegisterNode(ctx, n, addrs, nil); err != nil {
			t.Fatal(err)
		}
	}
	got := waitPodCIDRs(t, ctx, cp.Client(), nodes)
	checkPodCIDRs(t, got, cfg.ClusterCIDRs, [2]int{24, 64})
	t.Logf("pod CIDRs: %v", got)

	out, err := cp.Kubectl(ctx, "get", "service", "kubernetes", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var svc corev1.Service
	if err := json.Unmarshal(out, &svc); err != nil {
		t.Fatalf("decode kubectl output: %v", err)
	}
	if svc.Spec.ClusterIP != "fd00:96::1" {
		t.Errorf("kubernetes service IP %s, want fd00:96::1", svc.Spec.ClusterIP)
	}
}

// TestIPv6NoNodeCIDRs runs a single-stack IPv6 control plane without node
// CIDR allocation (the agents lease their own blocks): the controller
// manager skips node IPAM and a registered node keeps no pod CIDRs.
func TestIPv6NoNodeCIDRs(t *testing.T) {
	binDir := requireBinaries(t)
	ns := underlay(t, "2001:db8::10/64")
	cfg := Config{
		Netns:        ns.Name,
		Addr:         netip.MustParseAddr("2001:db8::10"),
		Dir:          filepath.Join(t.TempDir(), "cp"),
		BinDir:       binDir,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:96::/112")},
	}
	cp := startCP(t, cfg)
	ctx := testCtx(t)
	if err := cp.RegisterNode(ctx, "node-a", []netip.Addr{netip.MustParseAddr("2001:db8::21")}, nil); err != nil {
		t.Fatal(err)
	}
	// The controller manager answers /healthz before it starts its
	// controllers; wait until it has passed node IPAM by.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		log, err := os.ReadFile(cp.LogFile(kcmName))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(log), `"Warning: skipping controller" controller="node-ipam-controller"`) {
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("controller manager log does not show node IPAM skipped:\n%s", logTail(cp.Dir(), kcmName))
		}
	}
	// Give a (wrongly) running node IPAM time to act, then look.
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	node, err := cp.Client().CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Spec.PodCIDRs) != 0 || node.Spec.PodCIDR != "" {
		t.Errorf("node-a pod CIDRs %v with AllocateNodeCIDRs false, want none", node.Spec.PodCIDRs)
	}
	svc, err := cp.Client().CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.ClusterIP != "fd00:96::1" {
		t.Errorf("kubernetes service IP %s, want fd00:96::1", svc.Spec.ClusterIP)
	}
}

// TestStartFailureCleansUp starts a control plane whose apiserver cannot
// bind (Addr is not on any link in the namespace): Start must fail with the
// apiserver's log in the error, leave no process and remove Dir.
func TestStartFailureCleansUp(t *testing.T) {
	binDir := requireBinaries(t)
	ns := underlay(t, "192.0.2.10/24")
	dir := filepath.Join(t.TempDir(), "cp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Start(ctx, Config{
		Netns: ns.Name, Addr: netip.MustParseAddr("192.0.2.99"), Dir: dir, BinDir: binDir,
	})
	if err == nil {
		t.Fatal("Start with an address not in the namespace: no error")
	}
	t.Logf("Start error: %v", err)
	if !strings.Contains(err.Error(), "kube-apiserver exited") || !strings.Contains(err.Error(), "last lines of") {
		t.Errorf("error does not name the daemon and carry its log: %v", err)
	}
	if _, statErr := os.Stat(dir); !os.IsNotExist(statErr) {
		t.Errorf("Dir %s after failed Start: %v, want it gone", dir, statErr)
	}
	if out := nsPids(t, ns); out != "" {
		t.Errorf("processes left in %s: %s", ns.Name, out)
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func waitAnnotation(t *testing.T, ctx context.Context, w watch.Interface, node, key, val string) {
	t.Helper()
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed before %s got %s=%s", node, key, val)
			}
			if n, isNode := ev.Object.(*corev1.Node); isNode && n.Name == node && n.Annotations[key] == val {
				return
			}
		case <-ctx.Done():
			t.Fatalf("watch: %s never got %s=%s: %v", node, key, val, ctx.Err())
		}
	}
}

// processExists reports whether pid names a process that has not exited
// (a zombie counts as gone).
func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	return !zombie(pid)
}
