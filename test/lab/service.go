package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
)

// A lab has no kubelet, so it has no pods the apiserver knows of and no
// selector can find them. It gives its pods Services the way any workload
// outside Kubernetes' own pods gets one: a Service without selector plus
// EndpointSlices (label kubernetes.io/service-name, managed-by weft-lab)
// that list the pods' addresses, ready, with their nodeName. kube-proxy
// cannot tell the difference: it reads the same two objects.

// ServiceSpec is a Service of lab pods.
type ServiceSpec struct {
	Name      string
	Namespace string             // default "default"
	Type      corev1.ServiceType // ClusterIP (default), NodePort or LoadBalancer
	Port      uint16             // the Service's port
	// TargetPort is the pods' port; default Port.
	TargetPort uint16
	NodePort   uint16 // NodePort and LoadBalancer: 0 lets the apiserver pick
	// Backends are the pods behind the Service; each contributes its
	// addresses of the Service's families. A backend without Node is an
	// endpoint outside the cluster (no nodeName), such as a lab host.
	Backends []Pod
	// IngressIPs is written into status.loadBalancer.ingress (LoadBalancer
	// only), as a load-balancer controller would.
	IngressIPs []netip.Addr
	// ExternalTrafficPolicy Local keeps the client address for NodePort and
	// LoadBalancer traffic (only nodes with a backend answer).
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy
	DualStack             bool // RequireDualStack instead of the first service CIDR's family
}

// ServiceManager is the managed-by label value of the lab's EndpointSlices.
const ServiceManager = "weft-lab"

var dnsLabelRE = regexp.MustCompile(`^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (s *ServiceSpec) defaults() error {
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	if s.Type == "" {
		s.Type = corev1.ServiceTypeClusterIP
	}
	if s.TargetPort == 0 {
		s.TargetPort = s.Port
	}
	switch {
	case !dnsLabelRE.MatchString(s.Name):
		return fmt.Errorf("service name %q: want a DNS label starting with a letter", s.Name)
	case s.Port == 0:
		return fmt.Errorf("service %s: port 0", s.Name)
	case s.Type != corev1.ServiceTypeClusterIP && s.Type != corev1.ServiceTypeNodePort && s.Type != corev1.ServiceTypeLoadBalancer:
		return fmt.Errorf("service %s: type %q: want ClusterIP, NodePort or LoadBalancer", s.Name, s.Type)
	case s.NodePort != 0 && s.Type == corev1.ServiceTypeClusterIP:
		return fmt.Errorf("service %s: nodePort %d on a ClusterIP service", s.Name, s.NodePort)
	case len(s.IngressIPs) > 0 && s.Type != corev1.ServiceTypeLoadBalancer:
		return fmt.Errorf("service %s: ingress IPs on a %s service", s.Name, s.Type)
	}
	for _, a := range s.IngressIPs {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("service %s: ingress IP %v: want an address without zone", s.Name, a)
		}
	}
	return nil
}

// ServiceApply creates or updates the Service and its EndpointSlices (one
// per family) and returns the Service as the apiserver has it (ClusterIPs,
// node port, ingress status).
func (l *Lab) ServiceApply(ctx context.Context, spec ServiceSpec) (*corev1.Service, error) {
	if err := spec.defaults(); err != nil {
		return nil, err
	}
	c, err := l.Client()
	if err != nil {
		return nil, err
	}
	svcs := c.CoreV1().Services(spec.Namespace)
	want := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Namespace: spec.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": ServiceManager}},
		Spec: corev1.ServiceSpec{
			Type: spec.Type,
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: int32(spec.Port),
				TargetPort: intstr.FromInt32(int32(spec.TargetPort)), NodePort: int32(spec.NodePort),
			}},
			ExternalTrafficPolicy: spec.ExternalTrafficPolicy,
		},
	}
	if spec.DualStack {
		p := corev1.IPFamilyPolicyRequireDualStack
		want.Spec.IPFamilyPolicy = &p
	}
	var svc *corev1.Service
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := svcs.Get(ctx, spec.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			svc, err = svcs.Create(ctx, want, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		cur.Labels = want.Labels
		cur.Spec.Type = want.Spec.Type
		if want.Spec.Ports[0].NodePort == 0 && len(cur.Spec.Ports) == 1 {
			want.Spec.Ports[0].NodePort = cur.Spec.Ports[0].NodePort
		}
		cur.Spec.Ports = want.Spec.Ports
		cur.Spec.ExternalTrafficPolicy = want.Spec.ExternalTrafficPolicy
		svc, err = svcs.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("apply service %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	if spec.Type == corev1.ServiceTypeLoadBalancer {
		ing := make([]corev1.LoadBalancerIngress, len(spec.IngressIPs))
		for i, a := range spec.IngressIPs {
			ing[i] = corev1.LoadBalancerIngress{IP: a.String()}
		}
		svc.Status.LoadBalancer.Ingress = ing
		if svc, err = svcs.UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("service %s/%s: set ingress %v: %w", spec.Namespace, spec.Name, spec.IngressIPs, err)
		}
	}
	if err := l.applySlices(ctx, svc, spec); err != nil {
		return nil, err
	}
	return svc, nil
}

// sliceName is the name of a Service's EndpointSlice of one family.
func sliceName(svc string, fam discoveryv1.AddressType) string {
	return svc + "-" + strings.ToLower(string(fam))
}

func (l *Lab) applySlices(ctx context.Context, svc *corev1.Service, spec ServiceSpec) error {
	c, _ := l.Client()
	slices := c.DiscoveryV1().EndpointSlices(spec.Namespace)
	ready := true
	for _, fam := range svc.Spec.IPFamilies {
		at := discoveryv1.AddressTypeIPv4
		if fam == corev1.IPv6Protocol {
			at = discoveryv1.AddressTypeIPv6
		}
		var eps []discoveryv1.Endpoint
		for _, p := range spec.Backends {
			for _, ip := range p.IPs {
				if ip.Is6() != (at == discoveryv1.AddressTypeIPv6) {
					continue
				}
				ep := discoveryv1.Endpoint{
					Addresses:  []string{ip.String()},
					Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				}
				if p.Node != "" {
					node := p.Node
					ep.NodeName = &node
				}
				if p.Name != "" {
					name := p.Name
					ep.Hostname = &name
				}
				eps = append(eps, ep)
			}
		}
		port, name, proto := int32(spec.TargetPort), "http", corev1.ProtocolTCP
		want := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name: sliceName(spec.Name, at), Namespace: spec.Namespace,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: spec.Name,
					discoveryv1.LabelManagedBy:   ServiceManager,
				},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				}},
			},
			AddressType: at,
			Endpoints:   eps,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := slices.Get(ctx, want.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				_, err = slices.Create(ctx, want, metav1.CreateOptions{})
				return err
			}
			if err != nil {
				return err
			}
			cur.Labels, cur.OwnerReferences = want.Labels, want.OwnerReferences
			cur.Endpoints, cur.Ports = want.Endpoints, want.Ports
			_, err = slices.Update(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("service %s/%s: endpoint slice %s: %w", spec.Namespace, spec.Name, want.Name, err)
		}
	}
	return nil
}

// ServiceDelete deletes a Service and its EndpointSlices; a Service that
// does not exist is not an error.
func (l *Lab) ServiceDelete(ctx context.Context, namespace, name string) error {
	if namespace == "" {
		namespace = "default"
	}
	c, err := l.Client()
	if err != nil {
		return err
	}
	var errs []error
	if err := c.CoreV1().Services(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete service %s/%s: %w", namespace, name, err))
	}
	for _, at := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
		err := c.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, sliceName(name, at), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete endpoint slice %s/%s: %w", namespace, sliceName(name, at), err))
		}
	}
	return errors.Join(errs...)
}

// ServiceIPs returns a Service's ClusterIPs.
func ServiceIPs(svc *corev1.Service) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range svc.Spec.ClusterIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("service %s: clusterIP %q: %w", svc.Name, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}
