package lab

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"text/template"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/test/poll"
)

// corednsManifest is the cluster DNS add-on a kubeadm cluster runs: CoreDNS
// as a Deployment behind the kube-dns Service, at the address every kubelet
// has as clusterDNS.
//
//go:embed addons/coredns.yaml
var corednsManifest string

// PodNamespace is where the lab makes its pods on real nodes.
const PodNamespace = "default"

// upRealNodes brings up the real nodes of a lab whose control plane runs:
// weft's manifests applied as a user applies them, every node's containerd
// and kubelet, kube-proxy, then CoreDNS; it returns when every Node is
// Ready, weft's DaemonSet runs on each and CoreDNS answers.
func (l *Lab) upRealNodes(ctx context.Context) error {
	t0 := time.Now()
	nodes := l.Topo.NodesOf(KindWeft)
	if _, err := l.ensureImages(); err != nil {
		return err
	}
	if err := ensureHostMountPoints(l.opts.BaseDir); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			if err := l.ensureRealNode(ctx, n); err != nil {
				errs[i] = fmt.Errorf("node %s: %w", n.Name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	t1 := time.Now()
	if err := l.waitNodesRegistered(ctx, nodes, 60*time.Second); err != nil {
		return err
	}
	if l.Topo.Cluster.AllocateNodeCIDRs {
		for _, w := range nodes {
			cidrs, err := l.WaitPodCIDRs(ctx, w.Name, 30*time.Second)
			if err != nil {
				return err
			}
			if err := l.routeControlPlaneToPods(ctx, w, cidrs); err != nil {
				return err
			}
		}
	}
	for _, w := range nodes {
		if l.KubeProxyPid(w.Name) > 0 {
			continue
		}
		if err := l.KubeProxyStart(ctx, w.Name, ProxyIPTables); err != nil {
			return err
		}
	}
	if err := l.applyAddons(ctx); err != nil {
		return err
	}
	if err := l.WaitRealCluster(ctx, 3*time.Minute); err != nil {
		return err
	}
	l.log.Info("real nodes up", "nodes", len(nodes), "runtime", t1.Sub(t0).Round(time.Millisecond),
		"total", time.Since(t0).Round(time.Millisecond))
	return nil
}

// routeControlPlaneToPods routes node's pod CIDRs from the control-plane
// namespace through the node, as a control-plane node that runs weft
// reaches pods: the apiserver proxies to pods (pods/proxy, which the e2e
// suite's DNS tests read their results through).
func (l *Lab) routeControlPlaneToPods(ctx context.Context, node Node, cidrs []netip.Prefix) error {
	cp, ok := l.Topo.ControlPlane()
	if !ok {
		return nil
	}
	for _, p := range cidrs {
		via, ok := nodeAddr(node, p.Addr().Is4())
		if !ok {
			continue
		}
		if out, err := l.output(ctx, l.NS(cp.Name), "ip", "route", "replace", p.String(), "via", via.String()); err != nil {
			return fmt.Errorf("route %s via node %s: %w: %s", p, node.Name, err, out)
		}
	}
	return nil
}

// installWeft applies weft's manifests with kubectl, as a user installs
// weft (deploy/kubernetes is what deploy/weft.yaml renders).
func (l *Lab) installWeft(ctx context.Context) error {
	if out, err := l.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-k", l.opts.DeployDir); err != nil {
		return fmt.Errorf("kubectl apply -k %s: %w: %s", l.opts.DeployDir, err, out)
	}
	return nil
}

// applyAddons applies CoreDNS with the lab's cluster DNS address.
func (l *Lab) applyAddons(ctx context.Context) error {
	var buf bytes.Buffer
	t := template.Must(template.New("coredns").Parse(corednsManifest))
	if err := t.Execute(&buf, map[string]string{"ClusterIP": l.clusterDNS().String(), "Image": CoreDNSImage}); err != nil {
		return err
	}
	file := filepath.Join(l.Dir, "coredns.yaml")
	if err := writeFileAtomic(file, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if out, err := l.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-f", file); err != nil {
		return fmt.Errorf("kubectl apply coredns: %w: %s", err, out)
	}
	return nil
}

func (l *Lab) waitNodesRegistered(ctx context.Context, nodes []Node, timeout time.Duration) error {
	c := l.cp.Client()
	return poll.Err(ctx, timeout, 250*time.Millisecond, func() error {
		for _, n := range nodes {
			if _, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
		return nil
	})
}

// WaitRealCluster waits until every weft Node is Ready, weft's DaemonSet has
// a ready agent on each, and CoreDNS is available.
func (l *Lab) WaitRealCluster(ctx context.Context, timeout time.Duration) error {
	c := l.cp.Client()
	nodes := l.Topo.NodesOf(KindWeft)
	return poll.Err(ctx, timeout, 250*time.Millisecond, func() error {
		for _, n := range nodes {
			node, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !nodeReady(node) {
				return fmt.Errorf("node %s not Ready", n.Name)
			}
		}
		ds, err := c.AppsV1().DaemonSets("kube-system").Get(ctx, "weft-agent", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !daemonSetRolledOut(ds, len(nodes)) {
			return fmt.Errorf("DaemonSet weft-agent: %d/%d updated and ready", ds.Status.UpdatedNumberScheduled, len(nodes))
		}
		dep, err := c.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if dep.Status.AvailableReplicas < 1 {
			return errors.New("CoreDNS not available")
		}
		return nil
	})
}

func daemonSetRolledOut(ds *appsv1.DaemonSet, want int) bool {
	s := ds.Status
	return s.ObservedGeneration >= ds.Generation && int(s.DesiredNumberScheduled) == want &&
		int(s.UpdatedNumberScheduled) == want && int(s.NumberReady) == want && int(s.NumberAvailable) == want
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podAddReal makes a Pod (agnhost pause, nodeName set) through the
// apiserver, waits until it runs, and names its network namespace
// wl-<lab>.<node>.<pod> (ip netns attach to its sandbox process), so every
// lab tool that works in a pod's namespace works on it.
func (l *Lab) podAddReal(ctx context.Context, node, name string) (Pod, error) {
	c := l.cp.Client()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: PodNamespace,
			Labels: map[string]string{"weft-lab/pod": name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "agnhost", Image: AgnhostImage, Args: []string{"pause"},
				ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
	if _, err := c.CoreV1().Pods(PodNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return Pod{}, fmt.Errorf("create pod %s/%s: %w", node, name, err)
	}
	p, err := l.attachRealPod(ctx, node, name, 2*time.Minute)
	if err != nil {
		return Pod{}, err
	}
	return p, nil
}

// attachRealPod waits until Pod name runs and has its IPs, then names its
// network namespace and records it like any lab pod.
func (l *Lab) attachRealPod(ctx context.Context, node, name string, timeout time.Duration) (Pod, error) {
	c := l.cp.Client()
	var kp *corev1.Pod
	pid := 0
	// Running with IPs, and its sandbox process there: after a node's
	// reboot the Pod may still show its old status for a moment.
	if err := poll.Err(ctx, timeout, 250*time.Millisecond, func() error {
		got, err := c.CoreV1().Pods(PodNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.Phase != corev1.PodRunning || len(got.Status.PodIPs) == 0 {
			return fmt.Errorf("pod %s: phase %s, %d IPs", name, got.Status.Phase, len(got.Status.PodIPs))
		}
		if pid, err = l.sandboxPid(node, string(got.UID)); err != nil {
			return fmt.Errorf("pod %s: %w", name, err)
		}
		kp = got
		return nil
	}); err != nil {
		return Pod{}, err
	}
	p := Pod{Node: node, Name: name, NS: podNS(l.Name, node, name)}
	for _, ip := range kp.Status.PodIPs {
		a, err := netip.ParseAddr(ip.IP)
		if err != nil {
			return Pod{}, fmt.Errorf("pod %s: podIP %q: %w", name, ip.IP, err)
		}
		p.IPs = append(p.IPs, a)
	}
	if !nsExists(p.NS) {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "attach", p.NS, fmt.Sprint(pid)).CombinedOutput(); err != nil {
			return Pod{}, fmt.Errorf("pod %s: ip netns attach: %w: %s", name, err, bytes.TrimSpace(out))
		}
	}
	if err := os.MkdirAll(filepath.Dir(l.podFile(node, name)), 0o755); err != nil {
		return Pod{}, err
	}
	data, _ := json.MarshalIndent(p, "", "  ")
	return p, writeFileAtomic(l.podFile(node, name), data, 0o644)
}

// sandboxPid finds a pod's pause process: the /pause in the pod's cgroup
// (cgroupfs driver: .../pod<UID>/<container>/) under the node's cgroupRoot.
func (l *Lab) sandboxPid(node, uid string) (int, error) {
	root := filepath.Join("/sys/fs/cgroup/pids", l.cgroupName(node))
	dirs, _ := filepath.Glob(filepath.Join(root, "kubepods*", "pod"+uid))
	more, _ := filepath.Glob(filepath.Join(root, "kubepods*", "*", "pod"+uid))
	for _, d := range append(dirs, more...) {
		for _, pid := range cgroupPids(d) {
			cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && strings.TrimRight(string(cmd), "\x00") == "/pause" {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no pause process for pod UID %s under %s", uid, root)
}

// podDelReal deletes a Pod and waits until it is gone (the runtime has
// called CNI DEL), then drops the name of its namespace.
func (l *Lab) podDelReal(ctx context.Context, node, name string) error {
	c := l.cp.Client()
	var errs []error
	err := c.CoreV1().Pods(PodNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete pod %s: %w", name, err))
	}
	if err == nil {
		if err := poll.Err(ctx, 2*time.Minute, 250*time.Millisecond, func() error {
			_, err := c.CoreV1().Pods(PodNamespace).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("pod %s still there (%v)", name, err)
		}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeNS(podNS(l.Name, node, name), time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(l.podFile(node, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
