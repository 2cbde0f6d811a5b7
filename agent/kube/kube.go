// Package kube is weft-agent's client of the Kubernetes API: only the kinds
// and verbs the agent uses — core/v1 Nodes, ConfigMaps, Services, Secrets and
// Events, coordination.k8s.io/v1 Leases — on client-go's REST client with a
// scheme of just those two groups.
//
// The agent binary links this package instead of client-go's clientset and
// informer factory: importing any part of those registers and links the
// types, clients and informers of every API group, tens of megabytes of
// program text that the kernel keeps resident once their initialisers ran.
// The requests are the same as the typed clients' (protobuf on the wire, one
// HTTP client and rate limiter shared by both groups, QPS, burst and user
// agent from the rest.Config), built directly on rest.Interface: client-go's
// generic typed client would link its fake-client testing package and with it
// the managed-fields and structured-merge-diff machinery.
//
// Package kube/clientset adapts a clientset to Client for tests and tools
// that have one; the agent binary must never import it.
package kube

import (
	"context"
	"fmt"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// Client is what weft-agent does with the apiserver. Namespace "" lists and
// watches across all namespaces. Errors are the apiserver's (apierrors.Is*).
type Client interface {
	ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	GetNode(ctx context.Context, name string) (*corev1.Node, error)
	// PatchNodeStatus patches the status subresource of a Node.
	PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) (*corev1.Node, error)

	ListConfigMaps(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.ConfigMapList, error)
	WatchConfigMaps(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error)
	ListServices(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.ServiceList, error)
	WatchServices(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error)
	ListSecrets(ctx context.Context, namespace string, opts metav1.ListOptions) (*corev1.SecretList, error)
	WatchSecrets(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error)

	ListLeases(ctx context.Context, namespace string, opts metav1.ListOptions) (*coordv1.LeaseList, error)
	GetLease(ctx context.Context, namespace, name string) (*coordv1.Lease, error)
	CreateLease(ctx context.Context, namespace string, le *coordv1.Lease) (*coordv1.Lease, error)
	UpdateLease(ctx context.Context, namespace string, le *coordv1.Lease) (*coordv1.Lease, error)
	DeleteLease(ctx context.Context, namespace, name string, opts metav1.DeleteOptions) error

	// CreateEvent and PatchEvent write agent/events' core/v1 Events.
	CreateEvent(ctx context.Context, namespace string, e *corev1.Event) (*corev1.Event, error)
	PatchEvent(ctx context.Context, namespace, name string, pt types.PatchType, data []byte) (*corev1.Event, error)
}

var scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	// core/v1 is group "" version "v1": its registration also adds meta/v1's
	// Status, WatchEvent and option types under "v1".
	utilruntime.Must(corev1.AddToScheme(s))
	utilruntime.Must(coordv1.AddToScheme(s))
	return s
}

// Scheme is the scheme the client decodes with: core/v1 and
// coordination.k8s.io/v1 (and meta/v1's types in both). agent/events
// resolves its objects' kinds with it. Callers must not add to it.
func Scheme() *runtime.Scheme { return scheme }

type client struct {
	core, coord rest.Interface
	params      runtime.ParameterCodec
}

// New returns a Client for cfg, as client-go's clientset would build it: the
// user agent defaults to client-go's, and one HTTP client and one token
// bucket (cfg.QPS, cfg.Burst) serve both groups unless cfg.RateLimiter is
// set (with QPS 0 each group gets rest's default bucket).
func New(cfg *rest.Config) (Client, error) {
	c := *cfg
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	hc, err := rest.HTTPClientFor(&c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes http client: %w", err)
	}
	if c.RateLimiter == nil && c.QPS > 0 {
		if c.Burst <= 0 {
			return nil, fmt.Errorf("kubernetes client: burst %d must be positive when QPS (%g) is set", c.Burst, c.QPS)
		}
		c.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(c.QPS, c.Burst)
	}
	codecs := rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)).WithoutConversion()
	group := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		gc := c
		gc.GroupVersion, gc.APIPath, gc.NegotiatedSerializer = &gv, apiPath, codecs
		rc, err := rest.RESTClientForConfigAndClient(&gc, hc)
		if err != nil {
			return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
		}
		return rc, nil
	}
	out := &client{params: runtime.NewParameterCodec(scheme)}
	if out.core, err = group(corev1.SchemeGroupVersion, "/api"); err != nil {
		return nil, err
	}
	if out.coord, err = group(coordv1.SchemeGroupVersion, "/apis"); err != nil {
		return nil, err
	}
	return out, nil
}

// timeout is the request timeout a list or watch asks for in its options.
func timeout(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
}

// on starts a request of verb on resource in namespace ("": cluster-scoped,
// or all namespaces), preferring protobuf as the clientset's clients of
// built-in kinds do.
func on(r *rest.Request, resource, namespace string) *rest.Request {
	return r.UseProtobufAsDefaultIfPreferred(true).NamespaceIfScoped(namespace, namespace != "").Resource(resource)
}

func (c *client) list(ctx context.Context, rc rest.Interface, resource, ns string, opts metav1.ListOptions, into runtime.Object) error {
	return on(rc.Get(), resource, ns).VersionedParams(&opts, c.params).Timeout(timeout(opts)).Do(ctx).Into(into)
}

func (c *client) watch(ctx context.Context, rc rest.Interface, resource, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return on(rc.Get(), resource, ns).VersionedParams(&opts, c.params).Timeout(timeout(opts)).Watch(ctx)
}

func (c *client) get(ctx context.Context, rc rest.Interface, resource, ns, name string, into runtime.Object) error {
	return on(rc.Get(), resource, ns).Name(name).VersionedParams(&metav1.GetOptions{}, c.params).Do(ctx).Into(into)
}

func (c *client) create(ctx context.Context, rc rest.Interface, resource, ns string, obj, into runtime.Object) error {
	return on(rc.Post(), resource, ns).VersionedParams(&metav1.CreateOptions{}, c.params).Body(obj).Do(ctx).Into(into)
}

func (c *client) update(ctx context.Context, rc rest.Interface, resource, ns, name string, obj, into runtime.Object) error {
	return on(rc.Put(), resource, ns).Name(name).VersionedParams(&metav1.UpdateOptions{}, c.params).Body(obj).Do(ctx).Into(into)
}

func (c *client) patch(ctx context.Context, rc rest.Interface, resource, ns, name, sub string, pt types.PatchType, data []byte, opts metav1.PatchOptions, into runtime.Object) error {
	r := on(rc.Patch(pt), resource, ns).Name(name)
	if sub != "" {
		r = r.SubResource(sub)
	}
	return r.VersionedParams(&opts, c.params).Body(data).Do(ctx).Into(into)
}

func (c *client) ListNodes(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error) {
	l := &corev1.NodeList{}
	return l, c.list(ctx, c.core, "nodes", "", opts, l)
}

func (c *client) WatchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.core, "nodes", "", opts)
}

func (c *client) GetNode(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	return n, c.get(ctx, c.core, "nodes", "", name, n)
}

func (c *client) PatchNodeStatus(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions) (*corev1.Node, error) {
	n := &corev1.Node{}
	return n, c.patch(ctx, c.core, "nodes", "", name, "status", pt, data, opts, n)
}

func (c *client) ListConfigMaps(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.ConfigMapList, error) {
	l := &corev1.ConfigMapList{}
	return l, c.list(ctx, c.core, "configmaps", ns, opts, l)
}

func (c *client) WatchConfigMaps(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.core, "configmaps", ns, opts)
}

func (c *client) ListServices(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.ServiceList, error) {
	l := &corev1.ServiceList{}
	return l, c.list(ctx, c.core, "services", ns, opts, l)
}

func (c *client) WatchServices(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.core, "services", ns, opts)
}

func (c *client) ListSecrets(ctx context.Context, ns string, opts metav1.ListOptions) (*corev1.SecretList, error) {
	l := &corev1.SecretList{}
	return l, c.list(ctx, c.core, "secrets", ns, opts, l)
}

func (c *client) WatchSecrets(ctx context.Context, ns string, opts metav1.ListOptions) (watch.Interface, error) {
	return c.watch(ctx, c.core, "secrets", ns, opts)
}

func (c *client) ListLeases(ctx context.Context, ns string, opts metav1.ListOptions) (*coordv1.LeaseList, error) {
	l := &coordv1.LeaseList{}
	return l, c.list(ctx, c.coord, "leases", ns, opts, l)
}

func (c *client) GetLease(ctx context.Context, ns, name string) (*coordv1.Lease, error) {
	le := &coordv1.Lease{}
	return le, c.get(ctx, c.coord, "leases", ns, name, le)
}

func (c *client) CreateLease(ctx context.Context, ns string, le *coordv1.Lease) (*coordv1.Lease, error) {
	out := &coordv1.Lease{}
	return out, c.create(ctx, c.coord, "leases", ns, le, out)
}

func (c *client) UpdateLease(ctx context.Context, ns string, le *coordv1.Lease) (*coordv1.Lease, error) {
	out := &coordv1.Lease{}
	return out, c.update(ctx, c.coord, "leases", ns, le.Name, le, out)
}

func (c *client) DeleteLease(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error {
	return on(c.coord.Delete(), "leases", ns).Name(name).Body(&opts).Do(ctx).Error()
}

func (c *client) CreateEvent(ctx context.Context, ns string, e *corev1.Event) (*corev1.Event, error) {
	out := &corev1.Event{}
	return out, c.create(ctx, c.core, "events", ns, e, out)
}

func (c *client) PatchEvent(ctx context.Context, ns, name string, pt types.PatchType, data []byte) (*corev1.Event, error) {
	out := &corev1.Event{}
	return out, c.patch(ctx, c.core, "events", ns, name, "", pt, data, metav1.PatchOptions{}, out)
}
