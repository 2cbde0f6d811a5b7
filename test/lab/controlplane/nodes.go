package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// RegisterNode creates or updates the Node name as a kubelet would at
// startup: the labels (merged over the standard hostname and OS labels),
// one InternalIP per address (at most one per family), a Hostname address,
// some capacity and a Ready condition. It lifts the not-ready taint the
// apiserver puts on new nodes, as the node-lifecycle controller would (it
// does not run: RegisterNode sends no heartbeats afterwards). Idempotent.
func (cp *ControlPlane) RegisterNode(ctx context.Context, name string, addrs []netip.Addr, labels map[string]string) error {
	if name == "" {
		return errors.New("register node: empty name")
	}
	var seen [2]bool
	for _, a := range addrs {
		if !a.IsValid() {
			return fmt.Errorf("register node %s: invalid address %s", name, a)
		}
		if seen[familyIndex(a)] {
			return fmt.Errorf("register node %s: address %s is a second one of its family", name, a)
		}
		seen[familyIndex(a)] = true
	}
	nodes := cp.client.CoreV1().Nodes()
	want := map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     runtime.GOARCH,
	}
	maps.Copy(want, labels)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			node, err = nodes.Create(ctx, &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: want},
			}, metav1.CreateOptions{})
		}
		if err != nil {
			return err
		}
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		changed := false
		for k, v := range want {
			if node.Labels[k] != v {
				node.Labels[k] = v
				changed = true
			}
		}
		// The apiserver taints every new node not-ready; the node-lifecycle
		// controller, which the lab does not run, lifts it once the node is
		// Ready. Do its job here.
		if kept := slices.DeleteFunc(slices.Clone(node.Spec.Taints), func(t corev1.Taint) bool {
			return t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable
		}); len(kept) != len(node.Spec.Taints) {
			node.Spec.Taints = kept
			changed = true
		}
		if changed {
			if node, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
		setNodeStatus(node, addrs, time.Now())
		_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("register node %s: %w", name, err)
	}
	cp.log.Debug("node registered", "node", name, "addrs", addrs)
	return nil
}

// setNodeStatus fills what a kubelet reports at registration.
func setNodeStatus(node *corev1.Node, addrs []netip.Addr, now time.Time) {
	st := &node.Status
	st.Addresses = nil
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: node.Name})
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("4Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	st.Capacity, st.Allocatable = capacity, capacity.DeepCopy()
	ready := corev1.NodeCondition{
		Type:               corev1.NodeReady,
		Status:             corev1.ConditionTrue,
		Reason:             "KubeletReady",
		Message:            "registered by weft-lab",
		LastHeartbeatTime:  metav1.NewTime(now),
		LastTransitionTime: metav1.NewTime(now),
	}
	for i, c := range st.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				ready.LastTransitionTime = c.LastTransitionTime
			}
			st.Conditions[i] = ready
			return
		}
	}
	st.Conditions = append(st.Conditions, ready)
}

// DeleteNode deletes the Node name. A node that does not exist is not an error.
func (cp *ControlPlane) DeleteNode(ctx context.Context, name string) error {
	err := cp.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete node %s: %w", name, err)
	}
	return nil
}

// Kubectl runs kubectl with the admin kubeconfig inside the lab namespace and
// returns its standard output; on failure the error carries its stderr.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	argv := append([]string{"netns", "exec", cp.cfg.Netns,
		cp.bin("kubectl"), "--kubeconfig=" + cp.AdminKubeconfig()}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
