// Package clientset adapts a client-go clientset (a real one, or the fake of
// unit tests) to kube.Client, for tests and tools that already have one.
//
// It imports client-go's clientset of every API group, whose initialisers
// register all their types: the agent binary must never import it (a test in
// cmd/weft-agent checks).
package clientset

import (
	"context"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/watchlist"

	"weft.dev/weft/agent/kube"
)

// Wrap returns cs as a kube.Client.
func Wrap(cs kubernetes.Interface) kube.Client { return client{cs} }

type client struct{ cs kubernetes.Interface }

// IsWatchListSemanticsUnSupported passes on the clientset's answer (the fake
// clientset cannot stream a watch's initial list), which informers ask their
// client through cache.ToListWatcherWithWatchListSemantics.
func (c client) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(c.cs)
}

func (c client) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	return c.cs.CoreV1().Nodes().List(ctx, opts)
}

func (c client) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return c.cs.CoreV1().Nodes().Watch(ctx, opts)
}

func (c client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	return c.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

func (c client) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) (*corev1.Node, error) {
	return c.cs.CoreV1().Nodes().Patch(ctx, name, pt, data, opts, "status")
}

func (c client) ListConfigMaps(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.ConfigMapList, error) {
	return c.cs.CoreV1().ConfigMaps(ns).List(ctx, opts)
}

func (c client) WatchConfigMaps(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.cs.CoreV1().ConfigMaps(ns).Watch(ctx, opts)
}

func (c client) ListServices(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.ServiceList, error) {
	return c.cs.CoreV1().Services(ns).List(ctx, opts)
}

func (c client) WatchServices(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.cs.CoreV1().Services(ns).Watch(ctx, opts)
}

func (c client) ListSecrets(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.SecretList, error) {
	return c.cs.CoreV1().Secrets(ns).List(ctx, opts)
}

func (c client) WatchSecrets(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.cs.CoreV1().Secrets(ns).Watch(ctx, opts)
}

func (c client) ListLeases(ctx context.Context, ns string, opts metav1.ListOptions) (*coordv1.LeaseList, error) {
	return c.cs.CoordinationV1().Leases(ns).List(ctx, opts)
}

func (c client) GetLease(ctx context.Context, ns, name string) (*coordv1.Lease, error) {
	return c.cs.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
}

func (c client) CreateLease(ctx context.Context, ns string, le *coordv1.Lease) (*coordv1.Lease, error) {
	return c.cs.CoordinationV1().Leases(ns).Create(ctx, le, metav1.CreateOptions{})
}

func (c client) UpdateLease(ctx context.Context, ns string, le *coordv1.Lease) (*coordv1.Lease, error) {
	return c.cs.CoordinationV1().Leases(ns).Update(ctx, le, metav1.UpdateOptions{})
}

func (c client) DeleteLease(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error {
	return c.cs.CoordinationV1().Leases(ns).Delete(ctx, name, opts)
}

func (c client) CreateEvent(ctx context.Context, ns string, e *corev1.Event) (*corev1.Event, error) {
	return c.cs.CoreV1().Events(ns).Create(ctx, e, metav1.CreateOptions{})
}

func (c client) PatchEvent(ctx context.Context, ns, name string, pt types.PatchType, data []byte) (*corev1.Event, error) {
	return c.cs.CoreV1().Events(ns).Patch(ctx, name, pt, data, metav1.PatchOptions{})
}
