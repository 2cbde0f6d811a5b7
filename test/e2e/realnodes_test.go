//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/test/lab"
	"weft.dev/weft/test/nstest"
)

// TestRealNodes runs weft the way its users do: every lab node runs
// containerd and a kubelet, weft is installed with kubectl apply (its
// DaemonSet's init container installs the plugin, the agent runs as a pod),
// kube-proxy and CoreDNS run, and the workloads are real Deployments, Pods
// and Services. Once in vxlan mode (deploy/kubernetes) and once in bgp mode
// (deploy/overlays/bgp).
func TestRealNodes(t *testing.T) {
	for _, tc := range []struct {
		mode, topo, deploy string
	}{
		{"vxlan", topology("vxlan-3node.clab.yml"), "deploy/kubernetes"},
		{"bgp", testdata("bgp-3node.clab.yml"), "deploy/overlays/bgp"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			l := upReal(t, tc.topo, "rn"+tc.mode[:1], filepath.Join(root, tc.deploy))
			realNodeChecks(t, l, tc.mode)
		})
	}
}

// upReal brings up a real-node lab; see up.
func upReal(t *testing.T, file, tag, deployDir string) *lab.Lab {
	t.Helper()
	nstest.RequireRoot(t)
	requireK8s(t)
	opts := options(t)
	opts.Kubelets = true
	opts.DeployDir = deployDir
	for _, f := range []string{opts.WeftImage, filepath.Join(k8sBin, "kubelet"), filepath.Join(runtimeBin(), "containerd")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("real nodes need %s (make image k8s runtime): %v", f, err)
		}
	}
	return upWith(t, file, tag, opts, 8*time.Minute)
}

func runtimeBin() string {
	if d := os.Getenv("WEFT_RUNTIME_BIN"); d != "" {
		return d
	}
	return filepath.Join(root, ".cache", "runtime")
}

// realNodeLeftovers lists the cgroups and node processes of lab name that
// still exist.
func realNodeLeftovers(name string) []string {
	var left []string
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/weft-lab." + name + ".*")
	for _, c := range cgs {
		left = append(left, "cgroup "+c)
	}
	return left
}

func realNodeLogs(t *testing.T, l *lab.Lab) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"get", "nodes,pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", "kube-system", "logs", "daemonset/weft-agent", "--tail=40"},
	} {
		out, err := l.Kubectl(ctx, args...)
		t.Logf("kubectl %s (%v):\n%s", strings.Join(args, " "), err, out)
	}
	for _, n := range l.Topo.NodesOf(lab.KindWeft) {
		for _, f := range []string{"kubelet.log", "containerd.log"} {
			data, _ := os.ReadFile(filepath.Join(l.NodeDir(n.Name), f))
			if len(data) > 3000 {
				data = data[len(data)-3000:]
			}
			t.Logf("%s %s (tail):\n%s", n.Name, f, data)
		}
	}
}

func realNodeChecks(t *testing.T, l *lab.Lab, mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	c, err := l.Client()
	if err != nil {
		t.Fatal(err)
	}
	nodes := l.Topo.NodesOf(lab.KindWeft)
	cidrs := map[string][]netip.Prefix{}
	for _, n := range nodes {
		ps, err := l.PodCIDRs(ctx, n.Name)
		if err != nil || len(ps) != 2 {
			t.Fatalf("node %s pod CIDRs %v, %v: want one per family", n.Name, ps, err)
		}
		cidrs[n.Name] = ps
	}

	t.Run("weft installed by its DaemonSet", func(t *testing.T) {
		for _, n := range nodes {
			node, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rt := node.Status.NodeInfo.ContainerRuntimeVersion; !strings.HasPrefix(rt, "containerd://2.") {
				t.Errorf("node %s runtime %q, want containerd 2.x", n.Name, rt)
			}
			// install-cni put the plugin into the node's CNI directory.
			if _, err := os.Stat(filepath.Join(l.NodeDir(n.Name), "opt", "cni", "bin", "weft")); err != nil {
				t.Errorf("node %s: weft plugin not installed: %v", n.Name, err)
			}
			data, err := os.ReadFile(filepath.Join(l.NodeDir(n.Name), "etc", "cni", "net.d", "10-weft.conflist"))
			if err != nil {
				t.Fatalf("node %s: conflist: %v", n.Name, err)
			}
			var cl struct {
				CNIVersion string `json:"cniVersion"`
				Plugins    []struct {
					Type string `json:"type"`
				} `json:"plugins"`
			}
			if err := json.Unmarshal(data, &cl); err != nil {
				t.Fatalf("node %s: conflist: %v", n.Name, err)
			}
			var types []string
			for _, p := range cl.Plugins {
				types = append(types, p.Type)
			}
			// portmap is chained for hostPort, at the newest version it
			// shares with weft (containerd 2.x takes up to 1.1.0).
			if want := portmapVersion(t); cl.CNIVersion != want || strings.Join(types, ",") != "weft,portmap" {
				t.Errorf("node %s conflist cniVersion %s plugins %v, want %s [weft portmap]", n.Name, cl.CNIVersion, types, want)
			}
		}
		agents, err := c.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=weft-agent"})
		if err != nil {
			t.Fatal(err)
		}
		on := map[string]bool{}
		for _, p := range agents.Items {
			ready := false
			for _, cond := range p.Status.Conditions {
				ready = ready || (cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue)
			}
			if !ready || !p.Spec.HostNetwork {
				t.Errorf("weft-agent pod %s on %s: ready %v, hostNetwork %v", p.Name, p.Spec.NodeName, ready, p.Spec.HostNetwork)
			}
			on[p.Spec.NodeName] = true
		}
		if len(on) != len(nodes) || len(agents.Items) != len(nodes) {
			t.Errorf("%d weft-agent pods on nodes %v, want one on each of %d", len(agents.Items), on, len(nodes))
		}
	})

	const replicas = 30
	var pods []lab.Pod
	t.Run("30 replicas spread, in their node's pod CIDRs, all pairs reachable", func(t *testing.T) {
		t0 := time.Now()
		if err := l.ApplyApp(ctx, "web", replicas, 4*time.Minute); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d replicas available in %s", replicas, time.Since(t0).Round(time.Millisecond))
		pods = checkAppPods(t, ctx, l, "web", replicas, cidrs)
		t0 = time.Now()
		checkAllPairs(t, ctx, l, pods)
		t.Logf("%d pairs × 2 families reachable in %s", len(pods)*(len(pods)-1), time.Since(t0).Round(time.Millisecond))
	})
	if t.Failed() {
		return
	}

	t.Run("scale to 0 and back 5 times: no leak, no duplicate", func(t *testing.T) {
		seen := map[netip.Addr]string{}
		for i := range 5 {
			if err := l.DetachPods(pods); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if err := l.ScaleApp(ctx, "web", 0, 3*time.Minute); err != nil {
				t.Fatal(err)
			}
			down := time.Since(t0)
			// No web pod is left, so each store holds only the addresses
			// of the other pods there (CoreDNS): none of web's leaked.
			for _, n := range nodes {
				eventually(t, 30*time.Second, fmt.Sprintf("round %d: node %s IPAM store after scale to 0 = its other pods' addresses", i, n.Name), func() error {
					return storeHoldsPods(t, ctx, l, n.Name)
				})
			}
			t0 = time.Now()
			if err := l.ScaleApp(ctx, "web", replicas, 4*time.Minute); err != nil {
				t.Fatal(err)
			}
			t.Logf("round %d: scaled to 0 in %s, back to %d in %s", i, down.Round(time.Millisecond), replicas, time.Since(t0).Round(time.Millisecond))
			pods = checkAppPods(t, ctx, l, "web", replicas, cidrs)
			// The store holds exactly the running pods' addresses, so its
			// emptiness after the next scale to 0 is a release, not a loss.
			for _, n := range nodes {
				eventually(t, 30*time.Second, fmt.Sprintf("round %d: node %s IPAM store = its pods' addresses", i, n.Name), func() error {
					return storeHoldsPods(t, ctx, l, n.Name)
				})
			}
			for _, p := range pods {
				for _, a := range p.IPs {
					seen[a] = p.Name
				}
			}
		}
		t.Logf("%d distinct addresses handed out over 5 rounds", len(seen))
		checkAllPairs(t, ctx, l, pods)
	})

	t.Run("hostPort reachable on its node's address", func(t *testing.T) {
		n := nodes[0]
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "hostport", Namespace: lab.PodNamespace},
			Spec: corev1.PodSpec{
				NodeName:                      n.Name,
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{
					Name: "netexec", Image: lab.AgnhostImage, ImagePullPolicy: corev1.PullNever,
					Args:  []string{"netexec", "--http-port=8080"},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080, HostPort: 18080, Protocol: corev1.ProtocolTCP}},
				}},
			},
		}
		if _, err := c.CoreV1().Pods(lab.PodNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer c.CoreV1().Pods(lab.PodNamespace).Delete(context.WithoutCancel(ctx), "hostport", metav1.DeleteOptions{})
		for _, v4 := range []bool{true, false} {
			a := nodeAddrOf(t, n, v4)
			url := "http://" + netip.AddrPortFrom(a, 18080).String() + "/hostname"
			eventually(t, 90*time.Second, "hostPort "+url+" from outside", func() error {
				body, err := l.HTTPGet(ctx, "outside", url)
				if err != nil {
					return err
				}
				if body != "hostport" {
					return fmt.Errorf("answered %q, want hostport", body)
				}
				return nil
			})
		}
	})

	t.Run("Service by DNS name from every node's pods", func(t *testing.T) {
		byNode := map[string]lab.Pod{}
		for _, p := range pods {
			byNode[p.Node] = p
		}
		for _, n := range nodes {
			p := byNode[n.Name]
			eventually(t, 60*time.Second, "web by name from "+p.Node+"/"+p.Name, func() error {
				out, err := l.KubectlExec(ctx, p.Name, "sh", "-c",
					`printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 3 web.default.svc.cluster.local 80 | tail -n 1`)
				if err != nil {
					return fmt.Errorf("%v: %s", err, out)
				}
				if !strings.HasPrefix(strings.TrimSpace(string(out)), "web-") {
					return fmt.Errorf("answer %q, want a web pod's name", out)
				}
				return nil
			})
		}
	})

	t.Run("kubelet restarted: pods keep their addresses and their network", func(t *testing.T) {
		n := nodes[1].Name
		before := map[string]string{}
		kps, _ := l.AppPods(ctx, "web")
		for _, kp := range kps {
			before[kp.Name] = kp.Status.PodIP
		}
		if err := l.KubeletStop(n); err != nil {
			t.Fatal(err)
		}
		if err := l.KubeletStart(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitRealCluster(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		kps, _ = l.AppPods(ctx, "web")
		for _, kp := range kps {
			if before[kp.Name] != kp.Status.PodIP {
				t.Errorf("pod %s: IP %s before, %s after the kubelet restart", kp.Name, before[kp.Name], kp.Status.PodIP)
			}
			for _, cs := range kp.Status.ContainerStatuses {
				if cs.RestartCount != 0 {
					t.Errorf("pod %s restarted %d times", kp.Name, cs.RestartCount)
				}
			}
		}
		checkAllPairs(t, ctx, l, onNode(pods, n, 4))
	})

	t.Run("DaemonSet rolled to a new image tag under 100 Hz ping: 0 lost", func(t *testing.T) {
		src, dst := crossNodePair(t, pods)
		pingers := startPingers(t, ctx, l, src, dst)
		time.Sleep(time.Second)
		if err := l.TagWeftImage(ctx, "weft.dev/weft:roll"); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if out, err := l.Kubectl(ctx, "-n", "kube-system", "set", "image", "daemonset/weft-agent",
			"weft-agent=weft.dev/weft:roll", "install-cni=weft.dev/weft:roll"); err != nil {
			t.Fatalf("kubectl set image: %v: %s", err, out)
		}
		if err := l.WaitRealCluster(ctx, 4*time.Minute); err != nil {
			t.Fatal(err)
		}
		ds, err := c.AppsV1().DaemonSets("kube-system").Get(ctx, "weft-agent", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != "weft.dev/weft:roll" {
			t.Fatalf("DaemonSet image %s", img)
		}
		t.Logf("DaemonSet rolled on %d nodes in %s", len(nodes), time.Since(t0).Round(time.Millisecond))
		time.Sleep(time.Second)
		for _, p := range pingers {
			sent, lost := p.stop(t)
			t.Logf("ping %s → %s: %d sent, %d lost", src.Name, p.dst, sent, lost)
			if sent < 100 || lost != 0 {
				t.Errorf("ping %s → %s during the roll: %d sent, %d lost; want 0 lost", src.Name, p.dst, sent, lost)
			}
		}
	})

	t.Run("node rebooted: new boot ID, stale reservations reclaimed, pods back", func(t *testing.T) {
		n := nodes[2].Name
		boot0, _ := l.BootID(n)
		if err := l.RebootNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		boot1, _ := l.BootID(n)
		if boot0 == boot1 || boot1 == "" {
			t.Fatalf("boot ID %q before, %q after", boot0, boot1)
		}
		eventually(t, time.Minute, "node "+n+" reports its new boot ID", func() error {
			node, err := c.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if node.Status.NodeInfo.BootID != boot1 {
				return fmt.Errorf("boot ID %s, want %s", node.Status.NodeInfo.BootID, boot1)
			}
			return nil
		})
		if err := l.WaitRealCluster(ctx, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitApp(ctx, "web", replicas, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
		// Every reservation on the node belongs to a pod running there now
		// (the kubelet may still be updating their status: compare again
		// until both agree).
		eventually(t, time.Minute, "node "+n+" IPAM store = its pods' addresses", func() error {
			return storeHoldsPods(t, ctx, l, n)
		})
		all, err := l.AttachApp(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		checkAllPairs(t, ctx, l, append(onNode(all, n, 3), onNode(all, nodes[0].Name, 3)...))
	})
}

// portmapVersion is the newest of 1.1.0 and 1.0.0 the machine's portmap
// plugin (what the lab's nodes have) speaks.
func portmapVersion(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("/usr/lib/cni/portmap")
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("portmap VERSION: %v", err)
	}
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("portmap VERSION %q: %v", out, err)
	}
	for _, want := range []string{"1.1.0", "1.0.0"} {
		for _, s := range v.Supported {
			if s == want {
				return want
			}
		}
	}
	t.Fatalf("portmap speaks neither 1.1.0 nor 1.0.0: %v", v.Supported)
	return ""
}

// checkAppPods checks every pod of Deployment app: Running, on a weft node,
// one address per family inside its node's pod CIDRs, no address twice; it
// names their namespaces and returns them.
func checkAppPods(t *testing.T, ctx context.Context, l *lab.Lab, app string, want int, cidrs map[string][]netip.Prefix) []lab.Pod {
	t.Helper()
	pods, err := l.AttachApp(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != want {
		t.Fatalf("%d pods of %s, want %d", len(pods), app, want)
	}
	owner := map[netip.Addr]string{}
	perNode := map[string]int{}
	for _, p := range pods {
		perNode[p.Node]++
		if len(p.IPs) != 2 {
			t.Errorf("pod %s/%s has IPs %v, want one per family", p.Node, p.Name, p.IPs)
		}
		for _, a := range p.IPs {
			if !containsAny(cidrs[p.Node], a) {
				t.Errorf("pod %s/%s IP %s outside its node's pod CIDRs %v", p.Node, p.Name, a, cidrs[p.Node])
			}
			if o, dup := owner[a]; dup {
				t.Errorf("address %s held by %s and %s", a, o, p.Name)
			}
			owner[a] = p.Name
		}
	}
	for n, k := range perNode {
		if k != want/len(cidrs) {
			t.Errorf("node %s runs %d pods, want %d (spread)", n, k, want/len(cidrs))
		}
	}
	return pods
}

// checkAllPairs pings every pod from every other pod, each family.
func checkAllPairs(t *testing.T, ctx context.Context, l *lab.Lab, pods []lab.Pod) {
	t.Helper()
	type job struct {
		from lab.Pod
		dst  netip.Addr
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			for j := range jobs {
				if err := pingWithin(ctx, l, j.from.Node+"/"+j.from.Name, j.dst, 5*time.Second); err != nil {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s/%s → %s", j.from.Node, j.from.Name, j.dst))
					mu.Unlock()
				}
			}
		})
	}
	n := 0
	for _, a := range pods {
		for _, b := range pods {
			if a.Name == b.Name {
				continue
			}
			for _, ip := range b.IPs {
				jobs <- job{a, ip}
				n++
			}
		}
	}
	close(jobs)
	wg.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d pings failed: %s", len(failed), n, strings.Join(failed[:min(len(failed), 20)], "; "))
	}
}

// ipamReservations lists the addresses weft's IPAM store on a node holds.
func ipamReservations(t *testing.T, l *lab.Lab, node string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(l.NodeDir(node), "var", "lib", "weft", "ipam", "addr"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// storeHoldsPods reports whether weft's IPAM store on node holds exactly
// the addresses of the pods running there (the web pods and any other,
// CoreDNS included; hostNetwork pods have none of weft's).
func storeHoldsPods(t *testing.T, ctx context.Context, l *lab.Lab, node string) error {
	c, err := l.Client()
	if err != nil {
		return err
	}
	kps, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return err
	}
	want := map[string]string{}
	for _, kp := range kps.Items {
		if kp.Spec.HostNetwork {
			continue
		}
		for _, ip := range kp.Status.PodIPs {
			want[netip.MustParseAddr(ip.IP).String()] = kp.Namespace + "/" + kp.Name
		}
	}
	got := ipamReservations(t, l, node)
	if len(got) != len(want) {
		return fmt.Errorf("%d reservations %v, want %d %v", len(got), got, len(want), want)
	}
	for _, a := range got {
		if want[a] == "" {
			return fmt.Errorf("reservation %s belongs to no running pod", a)
		}
	}
	return nil
}

func onNode(pods []lab.Pod, node string, max int) []lab.Pod {
	var out []lab.Pod
	for _, p := range pods {
		if p.Node == node && (max == 0 || len(out) < max) {
			out = append(out, p)
		}
	}
	return out
}

func crossNodePair(t *testing.T, pods []lab.Pod) (lab.Pod, lab.Pod) {
	t.Helper()
	for _, a := range pods {
		for _, b := range pods {
			if a.Node != b.Node {
				return a, b
			}
		}
	}
	t.Fatal("no two pods on different nodes")
	return lab.Pod{}, lab.Pod{}
}

func nodeAddrOf(t *testing.T, n lab.Node, v4 bool) netip.Addr {
	t.Helper()
	for _, a := range n.NodeAddrs() {
		if a.Is4() == v4 {
			return a
		}
	}
	t.Fatalf("node %s has no address of that family", n.Name)
	return netip.Addr{}
}

// pinger is a 100 Hz ping from a pod, stopped with SIGINT so it prints its
// count.
type pinger struct {
	dst  netip.Addr
	cmd  *exec.Cmd
	out  *strings.Builder
	done chan struct{}
}

func startPingers(t *testing.T, ctx context.Context, l *lab.Lab, src, dst lab.Pod) []*pinger {
	t.Helper()
	var out []*pinger
	for _, a := range dst.IPs {
		cmd, err := l.Command(ctx, src.Node+"/"+src.Name, "ping", "-n", "-q", "-i", "0.01", "-W", "1", a.String())
		if err != nil {
			t.Fatal(err)
		}
		p := &pinger{dst: a, cmd: cmd, out: &strings.Builder{}, done: make(chan struct{})}
		cmd.Stdout = p.out
		cmd.Stderr = p.out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		out = append(out, p)
	}
	return out
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

func (p *pinger) stop(t *testing.T) (sent, lost int) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("ping %s did not stop", p.dst)
	}
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	for sc.Scan() {
		if m := pingStats.FindStringSubmatch(sc.Text()); m != nil {
			s, _ := strconv.Atoi(m[1])
			r, _ := strconv.Atoi(m[2])
			return s, s - r
		}
	}
	t.Fatalf("ping %s: no statistics in %q", p.dst, p.out.String())
	return 0, 0
}
