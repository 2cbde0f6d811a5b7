package kube_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/agent/events"
	"weft.dev/weft/agent/kube"
	"weft.dev/weft/agent/kube/clientset"
	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/lab/controlplane/cptest"
	"weft.dev/weft/test/nstest"
)

// startControlPlane runs a real etcd + kube-apiserver (+ controller-manager)
// in a namespace, skipping when not root or the binaries are missing.
func startControlPlane(t *testing.T) *controlplane.ControlPlane {
	t.Helper()
	nstest.RequireRoot(t)
	if testing.Short() {
		t.Skip("skipped in -short: starts a real control plane")
	}
	return cptest.Start(t, "kube", controlplane.Config{
		Addr: netip.MustParseAddr("192.168.251.1"),
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// TestAgainstAPIServer runs every call of kube.Client against a real
// apiserver, through kube.New and through a wrapped clientset, which must
// behave the same: lists by label and field selector, watches from a list's
// version, the node status patch, the Lease life cycle with its conflicts and
// preconditions, and agent/events' create, merge patch and re-create of a
// Node's Event.
func TestAgainstAPIServer(t *testing.T) {
	cp := startControlPlane(t)
	admin := cp.Client()
	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	direct, err := kube.New(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tag string
		c         kube.Client
	}{
		{"kube.New", "direct", direct},
		{"clientset.Wrap", "wrapped", clientset.Wrap(cs)},
	} {
		t.Run(tc.name, func(t *testing.T) { exercise(t, admin, tc.c, "wk-"+tc.tag) })
	}
}

func exercise(t *testing.T, admin kubernetes.Interface, c kube.Client, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ns, mine := name, metav1.ListOptions{LabelSelector: "weft.dev/test=" + name}
	labels := map[string]string{"weft.dev/test": name}
	byName := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	must(admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}))
	meta0 := func(n string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: n, Namespace: ns, Labels: labels} }
	must(admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}))
	t.Cleanup(func() { _ = admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	for _, n := range []string{name, name + "-other"} {
		must(admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: meta0(n)}, metav1.CreateOptions{}))
		must(admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: meta0(n)}, metav1.CreateOptions{}))
	}
	must(admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: meta0(name),
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}))
	patch := []byte(`{"metadata":{"annotations":{"weft.dev/touched":"1"}}}`)

	// Each cached kind: the list holds only what the options select, and a
	// watch from the list's version sees a change made after it.
	for _, k := range []struct {
		kind  string
		opts  metav1.ListOptions
		list  func(metav1.ListOptions) (runtime.Object, error)
		watch func(metav1.ListOptions) (watch.Interface, error)
		touch func() error
	}{
		{"node by label", mine,
			func(o metav1.ListOptions) (runtime.Object, error) { return c.ListNodes(ctx, o) },
			func(o metav1.ListOptions) (watch.Interface, error) { return c.WatchNodes(ctx, o) },
			func() error {
				n, err := c.PatchNodeStatus(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
				if err == nil && n.Annotations["weft.dev/touched"] != "1" {
					err = fmt.Errorf("patched node's annotations %v", n.Annotations)
				}
				return err
			}},
		{"configmap by name", byName,
			func(o metav1.ListOptions) (runtime.Object, error) { return c.ListConfigMaps(ctx, ns, o) },
			func(o metav1.ListOptions) (watch.Interface, error) { return c.WatchConfigMaps(ctx, ns, o) },
			func() error {
				_, err := admin.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
				return err
			}},
		{"secret by name", byName,
			func(o metav1.ListOptions) (runtime.Object, error) { return c.ListSecrets(ctx, ns, o) },
			func(o metav1.ListOptions) (watch.Interface, error) { return c.WatchSecrets(ctx, ns, o) },
			func() error {
				_, err := admin.CoreV1().Secrets(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
				return err
			}},
		{"services in all namespaces by label", mine,
			func(o metav1.ListOptions) (runtime.Object, error) { return c.ListServices(ctx, metav1.NamespaceAll, o) },
			func(o metav1.ListOptions) (watch.Interface, error) {
				return c.WatchServices(ctx, metav1.NamespaceAll, o)
			},
			func() error {
				_, err := admin.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
				return err
			}},
	} {
		l, err := k.list(k.opts)
		if err != nil {
			t.Fatalf("%s: list: %v", k.kind, err)
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, it := range items {
			names = append(names, it.(metav1.Object).GetName())
		}
		if diff := cmp.Diff([]string{name}, names); diff != "" {
			t.Errorf("%s: listed (-want +got):\n%s", k.kind, diff)
		}
		la, err := meta.ListAccessor(l)
		if err != nil {
			t.Fatal(err)
		}
		wo := k.opts
		wo.ResourceVersion = la.GetResourceVersion()
		w, err := k.watch(wo)
		if err != nil {
			t.Fatalf("%s: watch: %v", k.kind, err)
		}
		if err := k.touch(); err != nil {
			w.Stop()
			t.Fatalf("%s: change: %v", k.kind, err)
		}
		select {
		case ev := <-w.ResultChan():
			o, ok := ev.Object.(metav1.Object)
			if ev.Type != watch.Modified || !ok || o.GetName() != name || o.GetAnnotations()["weft.dev/touched"] != "1" {
				t.Errorf("%s: watch event %s %#v, want Modified %s with the new annotation", k.kind, ev.Type, ev.Object, name)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: no watch event within 30s of the change", k.kind)
		}
		w.Stop()
	}

	n, err := c.GetNode(ctx, name)
	if err != nil || n.Annotations["weft.dev/touched"] != "1" {
		t.Errorf("GetNode(%s) = annotations %v, %v; want the patched annotation", name, n.GetAnnotations(), err)
	}
	if _, err := c.GetNode(ctx, name+"-missing"); !apierrors.IsNotFound(err) {
		t.Errorf("GetNode of a missing node: %v, want NotFound", err)
	}

	leases(ctx, t, c, ns, name, labels, mine)
	recordEvents(ctx, t, admin, c, n)
}

// leases walks a Lease through create, get, update, list and delete with the
// apiserver's conflicts on each.
func leases(ctx context.Context, t *testing.T, c kube.Client, ns, name string, labels map[string]string, sel metav1.ListOptions) {
	holder, other := "a", "b"
	le, err := c.CreateLease(ctx, ns, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder}})
	if err != nil || le.UID == "" {
		t.Fatalf("CreateLease = %+v, %v", le, err)
	}
	if _, err := c.CreateLease(ctx, ns, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}); !apierrors.IsAlreadyExists(err) {
		t.Errorf("second CreateLease: %v, want AlreadyExists", err)
	}
	got, err := c.GetLease(ctx, ns, name)
	if err != nil || *got.Spec.HolderIdentity != holder {
		t.Fatalf("GetLease = %+v, %v", got, err)
	}
	got.Spec.HolderIdentity = &other
	upd, err := c.UpdateLease(ctx, ns, got)
	if err != nil || *upd.Spec.HolderIdentity != other {
		t.Fatalf("UpdateLease = %+v, %v", upd, err)
	}
	if _, err := c.UpdateLease(ctx, ns, le); !apierrors.IsConflict(err) {
		t.Errorf("UpdateLease at a stale version: %v, want Conflict", err)
	}
	l, err := c.ListLeases(ctx, ns, sel)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 1 || l.Items[0].Name != name || *l.Items[0].Spec.HolderIdentity != other {
		t.Errorf("ListLeases(%s) = %+v, want only %s held by %s", sel.LabelSelector, l.Items, name, other)
	}
	wrong := types.UID("not-" + string(le.UID))
	if err := c.DeleteLease(ctx, ns, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrong}}); !apierrors.IsConflict(err) {
		t.Errorf("DeleteLease with a wrong UID precondition: %v, want Conflict", err)
	}
	if err := c.DeleteLease(ctx, ns, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &le.UID}}); err != nil {
		t.Errorf("DeleteLease: %v", err)
	}
	if _, err := c.GetLease(ctx, ns, name); !apierrors.IsNotFound(err) {
		t.Errorf("GetLease after delete: %v, want NotFound", err)
	}
	if err := c.DeleteLease(ctx, ns, name, metav1.DeleteOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("second DeleteLease: %v, want NotFound", err)
	}
}

// recordEvents records the same Event about node through agent/events on the
// client: the recorder creates it, then raises its count with a merge patch;
// once the Event is deleted, the next repeat creates a fresh one.
func recordEvents(ctx context.Context, t *testing.T, admin kubernetes.Interface, c kube.Client, node *corev1.Node) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rec := events.New(events.Options{Sink: c, Scheme: kube.Scheme(), Component: "weft-test", Host: node.Name})
	go func() { _ = rec.Run(rctx) }()
	// wait returns the one WeftTest Event about node once it has count.
	wait := func(count int32) corev1.Event {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			l, err := admin.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + node.Name})
			if err != nil {
				t.Fatal(err)
			}
			var mine []corev1.Event
			for _, e := range l.Items {
				if e.Reason == "WeftTest" {
					mine = append(mine, e)
				}
			}
			if len(mine) == 1 && mine[0].Count == count {
				return mine[0]
			}
			if time.Now().After(deadline) || len(mine) > 1 {
				t.Fatalf("want one WeftTest event about %s with count %d within 30s, have %+v (dropped %d)", node.Name, count, mine, rec.Dropped())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	rec.Event(node, corev1.EventTypeNormal, "WeftTest", "about "+node.Name)
	first := wait(1)
	want := corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID, ResourceVersion: node.ResourceVersion}
	if diff := cmp.Diff(want, first.InvolvedObject); diff != "" {
		t.Errorf("involved object (-want +got):\n%s", diff)
	}
	if first.Source != (corev1.EventSource{Component: "weft-test", Host: node.Name}) || first.Type != corev1.EventTypeNormal {
		t.Errorf("event source %+v, type %q", first.Source, first.Type)
	}
	rec.Event(node, corev1.EventTypeNormal, "WeftTest", "about "+node.Name)
	second := wait(2)
	if second.Name != first.Name || second.FirstTimestamp != first.FirstTimestamp || second.LastTimestamp.Before(&first.LastTimestamp) {
		t.Errorf("repeat: event %s first %v last %v, want the patched %s first %v, last not before %v",
			second.Name, second.FirstTimestamp, second.LastTimestamp, first.Name, first.FirstTimestamp, first.LastTimestamp)
	}
	if err := admin.CoreV1().Events(metav1.NamespaceDefault).Delete(ctx, first.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.Event(node, corev1.EventTypeNormal, "WeftTest", "about "+node.Name)
	if fresh := wait(1); fresh.Name == first.Name {
		t.Errorf("repeat after the Event was deleted: %s again, want a fresh Event", fresh.Name)
	}
	if n := rec.Dropped(); n != 0 {
		t.Errorf("recorder dropped %d events", n)
	}
}
