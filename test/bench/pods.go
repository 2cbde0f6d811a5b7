package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"weft.dev/weft/test/lab"
	"weft.dev/weft/test/nstest"
	"weft.dev/weft/test/poll"
)

// podsPerRound are created at once (spread evenly over the nodes) and then
// deleted at once, in every round.
const (
	podsPerRound = 30
	podRounds    = 3
)

// referenceConflist is the reference plugins' network on a node: the bridge
// plugin with host-local IPAM (its store on the node's own disk, under
// /var/lib/weft, which the lab mounts per node) and portmap, as weft's
// chain has it. Its name sorts before weft's, so containerd uses it while
// it exists. Its ranges are apart from weft's: only ADD and DEL are timed.
const referenceConflist = `{
  "cniVersion": "1.0.0",
  "name": "reference",
  "plugins": [
    {"type": "bridge", "bridge": "ref0", "isGateway": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "/var/lib/weft/reference-ipam",
              "ranges": [[{"subnet": "%s"}], [{"subnet": "%s"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

// runPods measures pods on the lab's real nodes (containerd + kubelet,
// weft installed as its DaemonSet): 30 Pods created at once → all Ready,
// then deleted at once → all gone from the apiserver (each kubelet has torn
// down its sandboxes, CNI DEL included), with weft's network and with the
// reference bridge + host-local plugins configured on the same kubelets,
// alternating, podRounds rounds each; medians and their ratio.
func runPods(ctx context.Context, out *strings.Builder) error {
	topo, err := filepath.Abs(filepath.Join("test", "topologies", "vxlan-3node.clab.yml"))
	if err != nil {
		return err
	}
	name := "bpd" + strings.TrimPrefix(nstest.Unique(""), nstest.Prefix)
	opts := lab.Options{Kubelets: true, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	fmt.Fprintln(os.Stderr, "  bringing up lab", name, "(vxlan-3node, real nodes)")
	t0 := time.Now()
	l, err := opts.Up(ctx, topo, name)
	if err != nil {
		return err
	}
	upTook := time.Since(t0)
	defer func() {
		if err := opts.Down(name); err != nil {
			fmt.Fprintln(os.Stderr, "  lab down:", err)
		}
	}()
	c, err := l.Client()
	if err != nil {
		return err
	}
	nodes := l.Topo.NodesOf(lab.KindWeft)
	setReference := func(on bool) error {
		for i, n := range nodes {
			f := filepath.Join(l.NodeDir(n.Name), "etc", "cni", "net.d", "05-reference.conflist")
			if !on {
				if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				continue
			}
			v4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, byte(i), 0}), 24)
			v6 := netip.MustParsePrefix(fmt.Sprintf("fd00:250:0:%x::/64", i))
			if err := os.WriteFile(f, fmt.Appendf(nil, referenceConflist, v4, v6), 0o644); err != nil {
				return err
			}
		}
		// containerd watches the directory; give it a moment to reload.
		time.Sleep(3 * time.Second)
		return nil
	}
	type sample struct{ up, down []time.Duration }
	res := map[string]*sample{"weft": {}, "reference": {}}
	for round := range podRounds {
		for _, which := range []string{"weft", "reference"} {
			if err := setReference(which == "reference"); err != nil {
				return err
			}
			up, down, err := podRound(ctx, c, nodes, fmt.Sprintf("b%d%s", round, which[:1]))
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, which, err)
			}
			fmt.Fprintf(os.Stderr, "  round %d %-9s: %d Pods Ready in %s, gone in %s\n", round, which, podsPerRound, up.Round(time.Millisecond), down.Round(time.Millisecond))
			res[which].up = append(res[which].up, up)
			res[which].down = append(res[which].down, down)
		}
	}
	if err := setReference(false); err != nil {
		return err
	}
	w, r := res["weft"], res["reference"]
	fmt.Fprintf(out, "### Pods on real nodes (containerd + kubelet)\n\n")
	fmt.Fprintf(out, "Lab vxlan-3node with real nodes (containerd v2.4.2 + kubelet v1.37.2 per node, weft as its DaemonSet; up in %s). "+
		"%d Pods (agnhost pause, image present, %d per node) created at once → all Ready, then deleted at once → all gone from the apiserver; "+
		"weft's network vs the reference bridge + host-local (+ portmap) plugins configured on the same kubelets, alternating, %d rounds each. Median (max), seconds.\n\n",
		upTook.Round(time.Second), podsPerRound, podsPerRound/len(nodes), podRounds)
	fmt.Fprintf(out, "| measure | weft | reference | weft / reference |\n|---|---|---|---|\n")
	for _, row := range []struct {
		what string
		w, r []time.Duration
	}{
		{fmt.Sprintf("%d Pods created → all Ready", podsPerRound), w.up, r.up},
		{fmt.Sprintf("%d Pods deleted → all gone", podsPerRound), w.down, r.down},
	} {
		mw, mr := quantile(row.w, 0.5), quantile(row.r, 0.5)
		fmt.Fprintf(out, "| %s | %.2f (%.2f) | %.2f (%.2f) | %.2f |\n", row.what,
			mw.Seconds(), quantile(row.w, 1).Seconds(), mr.Seconds(), quantile(row.r, 1).Seconds(), mw.Seconds()/mr.Seconds())
	}
	fmt.Fprintln(out)
	return nil
}

// podRound creates podsPerRound Pods spread over nodes, waits until all are
// Ready, deletes them and waits until all are gone.
func podRound(ctx context.Context, c kubernetes.Interface, nodes []lab.Node, prefix string) (up, down time.Duration, err error) {
	pods := c.CoreV1().Pods(lab.PodNamespace)
	sel := "weft-bench=" + prefix
	t0 := time.Now()
	for i := range podsPerRound {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%02d", prefix, i), Labels: map[string]string{"weft-bench": prefix}},
			Spec: corev1.PodSpec{
				NodeName:                      nodes[i%len(nodes)].Name,
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: lab.AgnhostImage, Args: []string{"pause"},
					ImagePullPolicy: corev1.PullNever}},
			},
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return 0, 0, err
		}
	}
	if err := poll.Err(ctx, 5*time.Minute, 100*time.Millisecond, func() error {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range list.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready != podsPerRound {
			return fmt.Errorf("%d of %d Ready", ready, podsPerRound)
		}
		return nil
	}); err != nil {
		return 0, 0, fmt.Errorf("pods not Ready: %w", err)
	}
	up = time.Since(t0)
	t1 := time.Now()
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel}); err != nil && !apierrors.IsNotFound(err) {
		return 0, 0, err
	}
	if err := poll.Err(ctx, 5*time.Minute, 100*time.Millisecond, func() error {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil && len(list.Items) > 0 {
			err = fmt.Errorf("%d left", len(list.Items))
		}
		return err
	}); err != nil {
		return 0, 0, fmt.Errorf("pods not gone: %w", err)
	}
	return up, time.Since(t1), nil
}
