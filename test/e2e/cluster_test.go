//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"weft.dev/weft/test/lab"
)

// The vxlan-3node lab with its real control plane: the apiserver answers
// inside every node namespace, the controller manager gives every node its
// own pod CIDRs, the agent's ServiceAccount has exactly its rights, pods on
// one node reach each other through the real CNI binary, and the apiserver
// can be stopped and started.
func TestCluster(t *testing.T) {
	requireK8s(t)
	l := up(t, topology("vxlan-3node.clab.yml"), "vx")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	weft := l.Topo.NodesOf(lab.KindWeft)
	cp, _ := l.Topo.ControlPlane()
	server := "https://" + netip.AddrPortFrom(cp.NodeAddrs()[0], 6443).String()

	t.Run("apiserver reachable from every node namespace", func(t *testing.T) {
		for _, n := range weft {
			// With the node's agent kubeconfig (token auth, lab CA).
			out, err := l.Exec(ctx, n.Name, filepath.Join(k8sBin, "kubectl"), "--kubeconfig", l.AgentKubeconfig(n.Name), "get", "--raw", "/readyz")
			if err != nil || strings.TrimSpace(string(out)) != "ok" {
				t.Errorf("%s: kubectl get --raw /readyz = %q, %v", n.Name, out, err)
			}
		}
		out, err := l.Exec(ctx, "outside", "curl", "-sk", "--max-time", "5", server+"/readyz")
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("outside: curl %s/readyz = %q, %v", server, out, err)
		}
	})

	t.Run("every node has its own pod CIDRs", func(t *testing.T) {
		seen := map[netip.Prefix]string{}
		for _, n := range weft {
			cidrs, err := l.WaitPodCIDRs(ctx, n.Name, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(cidrs) != len(l.Topo.Cluster.ClusterCIDRs) {
				t.Errorf("%s: pod CIDRs %v, want one per cluster CIDR %v", n.Name, cidrs, l.Topo.Cluster.ClusterCIDRs)
			}
			for _, p := range cidrs {
				for q, other := range seen {
					if p.Overlaps(q) {
						t.Errorf("%s's %s overlaps %s's %s", n.Name, p, other, q)
					}
				}
				seen[p] = n.Name
				in := false
				for _, c := range l.Topo.Cluster.ClusterCIDRs {
					if c.Contains(p.Addr()) && p.Bits() >= c.Bits() {
						in = true
					}
				}
				if !in {
					t.Errorf("%s: pod CIDR %s outside the cluster CIDRs", n.Name, p)
				}
			}
		}
	})

	t.Run("agent token may list and watch nodes but not read secrets", func(t *testing.T) {
		c := agentClient(t, l, weft[0].Name)
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list nodes: %v", err)
		}
		if len(nodes.Items) != len(weft) {
			t.Errorf("agent sees %d nodes, want %d", len(nodes.Items), len(weft))
		}
		if err := firstWatchEvent(t, ctx, c); err != nil {
			t.Error(err)
		}
		_, err = c.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("list secrets in kube-system: %v, want Forbidden", err)
		}
		_, err = c.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("list secrets in default: %v, want Forbidden", err)
		}
	})

	// A node whose kubelet allows more pods (status.capacity.pods) than its
	// /24 holds (253: network, broadcast and gateway excluded): its agent
	// raises WeftPodCIDRTooSmall, one Warning Event and the metrics, and
	// clears the condition when maxPods fits again.
	t.Run("pod CIDR smaller than maxPods raises condition, event and metric", func(t *testing.T) {
		if !l.AgentBuilt() {
			t.Skip("skipped: weft-agent not built")
		}
		admin, err := l.Client()
		if err != nil {
			t.Fatal(err)
		}
		node := weft[1].Name
		setMaxPods := func(n string) {
			t.Helper()
			patch := fmt.Sprintf(`{"status":{"capacity":{"pods":%q},"allocatable":{"pods":%q}}}`, n, n)
			if _, err := admin.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
				t.Fatalf("set %s maxPods %s: %v", node, n, err)
			}
		}
		t.Cleanup(func() { setMaxPods("110") })
		cidrs, err := l.WaitPodCIDRs(ctx, node, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var v4 netip.Prefix
		for _, p := range cidrs {
			if p.Addr().Is4() {
				v4 = p
			}
		}
		if v4.Bits() != 24 {
			t.Fatalf("%s: IPv4 pod CIDR %v, the test wants a /24 (253 usable)", node, cidrs)
		}
		condition := func() (corev1.NodeCondition, error) {
			n, err := admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return corev1.NodeCondition{}, err
			}
			for _, c := range n.Status.Conditions {
				if c.Type == "WeftPodCIDRTooSmall" {
					return c, nil
				}
			}
			return corev1.NodeCondition{}, errors.New("no WeftPodCIDRTooSmall condition")
		}
		metrics := func() (string, error) {
			return l.HTTPGet(ctx, node, "http://"+lab.AgentHTTPAddr+"/metrics")
		}
		eventually(t, 60*time.Second, node+" WeftPodCIDRTooSmall=False at maxPods 110", func() error {
			c, err := condition()
			if err == nil && c.Status != corev1.ConditionFalse {
				err = fmt.Errorf("condition %+v", c)
			}
			return err
		})

		setMaxPods("300")
		eventually(t, 60*time.Second, node+" WeftPodCIDRTooSmall=True at maxPods 300", func() error {
			c, err := condition()
			if err != nil {
				return err
			}
			want := v4.String() + " has 253 usable ipv4 addresses, fewer than maxPods 300"
			if c.Status != corev1.ConditionTrue || c.Reason != "PodCIDRSmallerThanMaxPods" || !strings.Contains(c.Message, want) {
				return fmt.Errorf("condition %+v, want True with %q", c, want)
			}
			return nil
		})
		eventually(t, 30*time.Second, node+" PodCIDRSmallerThanMaxPods event", func() error {
			evs, err := admin.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node})
			if err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Reason == "PodCIDRSmallerThanMaxPods" && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "maxPods 300") {
					return nil
				}
			}
			return fmt.Errorf("no PodCIDRSmallerThanMaxPods event among %d about %s", len(evs.Items), node)
		})
		eventually(t, 30*time.Second, node+" capacity metrics", func() error {
			m, err := metrics()
			if err != nil {
				return err
			}
			for _, want := range []string{"weft_node_max_pods 300\n", "weft_pod_cidr_too_small{family=\"ipv4\"} 1\n",
				"weft_pod_cidr_too_small{family=\"ipv6\"} 0\n", "weft_ipam_capacity{family=\"ipv4\"} 253\n"} {
				if !strings.Contains(m, want) {
					return fmt.Errorf("/metrics lacks %q", want)
				}
			}
			return nil
		})

		setMaxPods("110")
		eventually(t, 60*time.Second, node+" WeftPodCIDRTooSmall=False again at maxPods 110", func() error {
			c, err := condition()
			if err == nil && (c.Status != corev1.ConditionFalse || c.Reason != "PodCIDRHoldsMaxPods") {
				err = fmt.Errorf("condition %+v", c)
			}
			return err
		})
		eventually(t, 30*time.Second, node+" metric cleared", func() error {
			m, err := metrics()
			if err == nil && !strings.Contains(m, "weft_pod_cidr_too_small{family=\"ipv4\"} 0\n") {
				err = errors.New("weft_pod_cidr_too_small{family=\"ipv4\"} is not 0")
			}
			return err
		})
	})

	t.Run("lab config map carries the topology's mode", func(t *testing.T) {
		doc, err := l.Config(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if doc["mode"] != "vxlan" {
			t.Errorf("mode %v, want vxlan", doc["mode"])
		}
		if err := l.SetMode(ctx, "bgp"); err != nil {
			t.Fatal(err)
		}
		if doc, _ = l.Config(ctx); doc["mode"] != "bgp" {
			t.Errorf("after SetMode(bgp): mode %v", doc["mode"])
		}
		if err := l.SetMode(ctx, "vxlan"); err != nil {
			t.Fatal(err)
		}
		if err := l.SetMode(ctx, "ipip"); err == nil {
			t.Error("SetMode(ipip): no error")
		}
	})

	t.Run("pods on one node reach each other", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(binDir, "weft")); err != nil {
			t.Skipf("skipped: no weft CNI binary (cmd/weft not in this tree): %v", err)
		}
		node := weft[0].Name
		cidrs, err := l.PodCIDRs(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		a, err := l.PodAdd(ctx, node, "a")
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.PodAdd(ctx, node, "b")
		if err != nil {
			t.Fatal(err)
		}
		if len(a.IPs) != len(cidrs) {
			t.Errorf("pod a IPs %v, want one in each of %v", a.IPs, cidrs)
		}
		for _, ip := range a.IPs {
			if !containsAny(cidrs, ip) {
				t.Errorf("pod a IP %s not in the node's pod CIDRs %v", ip, cidrs)
			}
		}
		for _, ip := range b.IPs {
			if err := pingWithin(ctx, l, node+"/a", ip, 5*time.Second); err != nil {
				t.Errorf("a -> b %s: %v", ip, err)
			}
		}
		if _, err := l.PodAdd(ctx, node, "a"); err == nil {
			t.Error("second PodAdd of pod a: no error")
		}
		if err := l.PodDel(ctx, node, "b"); err != nil {
			t.Fatal(err)
		}
		for _, ip := range b.IPs {
			if err := l.Ping(ctx, node+"/a", ip); err == nil {
				t.Errorf("a -> deleted b %s still answers", ip)
			}
		}
		if err := l.PodDel(ctx, node, "b"); err != nil {
			t.Errorf("second PodDel of b: %v", err)
		}
		// The address of b is free again: a new pod may get it.
		c, err := l.PodAdd(ctx, node, "c")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Ping(ctx, node+"/a", c.IPs[0]); err != nil {
			t.Errorf("a -> c: %v", err)
		}
	})

	t.Run("status", func(t *testing.T) {
		s, err := l.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s.APIServer != "ready" {
			t.Errorf("apiserver %q", s.APIServer)
		}
		for _, n := range s.Nodes {
			if !n.Present {
				t.Errorf("node %s: namespace missing", n.Name)
			}
			if n.Kind == lab.KindWeft && len(n.PodCIDRs) == 0 {
				t.Errorf("node %s: no pod CIDRs in status", n.Name)
			}
		}
		t.Logf("\n%s", s)
	})

	t.Run("apiserver stop and start", func(t *testing.T) {
		if err := l.APIServerStop(); err != nil {
			t.Fatal(err)
		}
		if err := l.Readyz(ctx); err == nil {
			t.Fatal("apiserver answers after stop")
		}
		n := weft[1].Name
		if out, err := l.Exec(ctx, n, filepath.Join(k8sBin, "kubectl"), "--kubeconfig", l.AgentKubeconfig(n), "--request-timeout=3s", "get", "--raw", "/readyz"); err == nil {
			t.Errorf("%s: apiserver answers after stop: %s", n, out)
		}
		t0 := time.Now()
		if err := l.APIServerStart(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("apiserver back in %s", time.Since(t0).Round(time.Millisecond))
		if err := l.Readyz(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := l.Exec(ctx, n, filepath.Join(k8sBin, "kubectl"), "--kubeconfig", l.AgentKubeconfig(n), "get", "--raw", "/readyz")
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("%s after start: %q, %v", n, out, err)
		}
	})

	t.Run("agent tools", func(t *testing.T) {
		node := weft[0].Name
		if !l.AgentBuilt() {
			err := l.AgentStart(ctx, node)
			if !errors.Is(err, lab.ErrNoAgent) {
				t.Errorf("AgentStart without the binary: %v, want ErrNoAgent", err)
			}
			return
		}
		pid := l.AgentPid(node)
		if pid == 0 {
			t.Fatalf("%s: no agent running after up (see %s)", node, filepath.Join(l.NodeDir(node), "agent.log"))
		}
		if err := l.AgentKill(node); err != nil {
			t.Fatal(err)
		}
		if l.AgentPid(node) != 0 {
			t.Error("agent still running after AgentKill")
		}
		if err := l.AgentStart(ctx, node); err != nil {
			t.Fatal(err)
		}
		started := l.AgentPid(node)
		if started == 0 || started == pid {
			t.Errorf("AgentStart: pid %d (was %d)", started, pid)
		}
		if err := l.AgentRestart(ctx, node); err != nil {
			t.Fatal(err)
		}
		if got := l.AgentPid(node); got == 0 || got == started {
			t.Errorf("AgentRestart: pid %d (was %d)", got, started)
		}
	})
}

// The shipped BGP topologies: FRR and BIRD run as route reflectors with a
// session configured per weft node, readable as JSON / protocol list.
func TestBGPTopologies(t *testing.T) {
	requireK8s(t)
	ctx := context.Background()
	t.Run("frr", func(t *testing.T) {
		l := up(t, topology("bgp-frr-rr.clab.yml"), "fr")
		out, err := l.FRR(ctx, "tor", "show bgp summary json")
		if err != nil {
			t.Fatal(err)
		}
		var sum struct {
			IPv4Unicast struct {
				AS    int                        `json:"as"`
				Peers map[string]json.RawMessage `json:"peers"`
			} `json:"ipv4Unicast"`
		}
		if err := json.Unmarshal(out, &sum); err != nil {
			t.Fatalf("parse: %v\n%s", err, out)
		}
		if sum.IPv4Unicast.AS != 64512 || len(sum.IPv4Unicast.Peers) != 3 {
			t.Errorf("AS %d with %d peers, want 64512 with 3:\n%s", sum.IPv4Unicast.AS, len(sum.IPv4Unicast.Peers), out)
		}
		// The ToR routes: the outside host answers node1 through it.
		if err := l.Ping(ctx, "node1", addr("172.30.20.100")); err != nil {
			t.Errorf("node1 -> outside via tor: %v", err)
		}
		doc, err := l.Config(ctx)
		if err != nil || doc["mode"] != "bgp" {
			t.Errorf("config map mode %v (%v), want bgp", doc["mode"], err)
		}

		// Another process attaches to the running lab by name (as every
		// weft-lab command after up does) and drives the apiserver.
		o, err := options(t).Open(l.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Readyz(ctx); err != nil {
			t.Fatalf("attached: %v", err)
		}
		if err := o.APIServerStop(); err != nil {
			t.Fatal(err)
		}
		if err := o.Readyz(ctx); err == nil {
			t.Fatal("attached: apiserver answers after stop")
		}
		if err := o.APIServerStart(ctx); err != nil {
			t.Fatal(err)
		}
		if err := o.Readyz(ctx); err != nil {
			t.Fatalf("attached: after start: %v", err)
		}
		if cidrs, err := o.PodCIDRs(ctx, "node2"); err != nil || len(cidrs) != 2 {
			t.Errorf("attached: node2 pod CIDRs %v, %v", cidrs, err)
		}
		if out, err := o.Kubectl(ctx, "get", "nodes", "-o", "name"); err != nil || strings.Count(string(out), "node/") != 3 {
			t.Errorf("attached: kubectl get nodes = %q, %v", out, err)
		}
	})
	t.Run("bird", func(t *testing.T) {
		l := up(t, topology("bgp-bird.clab.yml"), "bd")
		out, err := l.BIRD(ctx, "rr", "show", "protocols")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"node1", "node2", "node3"} {
			if !strings.Contains(string(out), p+" ") {
				t.Errorf("no protocol %s in:\n%s", p, out)
			}
		}
	})
}

// cross-subnet: the control plane answers nodes in the other subnet through
// the FRR router.
func TestCrossSubnet(t *testing.T) {
	requireK8s(t)
	l := up(t, topology("cross-subnet.clab.yml"), "xs")
	ctx := context.Background()
	for _, n := range []string{"node3", "node4"} {
		out, err := l.Exec(ctx, n, filepath.Join(k8sBin, "kubectl"), "--kubeconfig", l.AgentKubeconfig(n), "get", "--raw", "/readyz")
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Errorf("%s: /readyz across the router = %q, %v", n, out, err)
		}
	}
	if err := l.Ping(ctx, "node1", addr("fd00:30:5::12")); err != nil {
		t.Errorf("node1 -> node4 over IPv6 across the router: %v", err)
	}
}

// agentClient is a clientset authenticated as the node's agent (the token in
// its kubeconfig), dialing from the root namespace.
func agentClient(t *testing.T, l *lab.Lab, node string) kubernetes.Interface {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(l.AgentKubeconfig(node))
	if err != nil {
		t.Fatal(err)
	}
	var token string
	for _, a := range kc.AuthInfos {
		token = a.Token
	}
	if token == "" {
		t.Fatalf("%s: no token in %s", node, l.AgentKubeconfig(node))
	}
	admin, err := l.RESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(admin)
	cfg.CertData, cfg.KeyData, cfg.BearerToken = nil, nil, token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// firstWatchEvent watches nodes as the agent's token and wants an ADDED
// event, the way clients wait for the watch cache: a watch from "now"
// (no resourceVersion) that ends in an ERROR the apiserver means to be
// retried (410 Gone / Expired, "Too large resource version" while the watch
// cache catches up after a start, 429, 5xx) is logged with its status and
// started again, until 60 s pass. Any other ERROR (Forbidden) fails at once.
func firstWatchEvent(t *testing.T, ctx context.Context, c kubernetes.Interface) error {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		err := func() error {
			w, err := c.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
			if err != nil {
				return fmt.Errorf("watch nodes: %w", err)
			}
			defer w.Stop()
			select {
			case ev, ok := <-w.ResultChan():
				switch {
				case !ok:
					return apierrors.NewServiceUnavailable("watch closed before its first event")
				case ev.Type == watch.Error:
					return fmt.Errorf("first watch event ERROR: %w", apierrors.FromObject(ev.Object))
				case ev.Type != watch.Added:
					return fmt.Errorf("first watch event %s, want ADDED (no retry)", ev.Type)
				}
				return nil
			case <-time.After(10 * time.Second):
				return apierrors.NewTimeoutError("watch nodes: no event in 10s", 0)
			}
		}()
		if err == nil {
			if attempt > 1 {
				t.Logf("watch nodes: ADDED on attempt %d", attempt)
			}
			return nil
		}
		retry := apierrors.IsGone(err) || apierrors.IsResourceExpired(err) || apierrors.IsTimeout(err) ||
			apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err) ||
			apierrors.IsInternalError(err)
		if !retry || time.Now().After(deadline) {
			return fmt.Errorf("attempt %d: %w", attempt, err)
		}
		t.Logf("watch nodes, attempt %d: %v (status %s); watching again", attempt, err, apierrors.ReasonForError(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
