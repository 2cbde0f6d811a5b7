package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/test/poll"
)

// DemoApp is the Deployment and Service the real-node demo (and the tests)
// run: agnhost's netexec (HTTP on 8080: /hostname, /clientip, /echo; UDP
// on 8081) behind a dual-stack Service on port 80.
const DemoApp = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{name}}
  namespace: default
spec:
  replicas: {{replicas}}
  selector:
    matchLabels: {app: {{name}}}
  template:
    metadata:
      labels: {app: {{name}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels: {app: {{name}}}
      containers:
        - name: netexec
          image: ` + AgnhostImage + `
          imagePullPolicy: Never
          args: [netexec, --http-port=8080, --udp-port=8081]
          ports:
            - {name: http, containerPort: 8080}
            - {name: udp, containerPort: 8081, protocol: UDP}
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {{name}}
  namespace: default
spec:
  selector: {app: {{name}}}
  ipFamilyPolicy: PreferDualStack
  ports:
    - {name: http, port: 80, targetPort: 8080}
    - {name: udp, port: 81, targetPort: 8081, protocol: UDP}
`

// ApplyApp applies DemoApp as name with replicas (kubectl apply, as a user
// does) and waits until every replica is available.
func (l *Lab) ApplyApp(ctx context.Context, name string, replicas int, timeout time.Duration) error {
	doc := strings.NewReplacer("{{name}}", name, "{{replicas}}", fmt.Sprint(replicas)).Replace(DemoApp)
	file := filepath.Join(l.Dir, "app-"+name+".yaml")
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		return err
	}
	if out, err := l.Kubectl(ctx, "apply", "-f", file); err != nil {
		return fmt.Errorf("kubectl apply %s: %w: %s", name, err, out)
	}
	return l.WaitApp(ctx, name, replicas, timeout)
}

// ScaleApp sets the replicas of Deployment name and waits until exactly
// that many pods exist and are available.
func (l *Lab) ScaleApp(ctx context.Context, name string, replicas int, timeout time.Duration) error {
	if out, err := l.Kubectl(ctx, "scale", "deployment/"+name, fmt.Sprintf("--replicas=%d", replicas)); err != nil {
		return fmt.Errorf("kubectl scale %s: %w: %s", name, err, out)
	}
	return l.WaitApp(ctx, name, replicas, timeout)
}

// WaitApp waits until Deployment name has replicas available pods and no
// other pod of it exists (terminating ones included).
func (l *Lab) WaitApp(ctx context.Context, name string, replicas int, timeout time.Duration) error {
	c := l.cp.Client()
	return poll.Err(ctx, timeout, 250*time.Millisecond, func() error {
		d, err := c.AppsV1().Deployments(PodNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pods, err := l.AppPods(ctx, name)
		if err != nil {
			return err
		}
		if d.Status.ObservedGeneration < d.Generation || int(d.Status.AvailableReplicas) != replicas ||
			int(d.Status.UpdatedReplicas) != replicas || len(pods) != replicas {
			return fmt.Errorf("deployment %s: %d available, %d pods, want %d", name, d.Status.AvailableReplicas, len(pods), replicas)
		}
		return nil
	})
}

// AppPods lists the pods of Deployment name (by its app label), sorted by
// node then name.
func (l *Lab) AppPods(ctx context.Context, name string) ([]corev1.Pod, error) {
	list, err := l.cp.Client().CoreV1().Pods(PodNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	pods := list.Items
	slices.SortFunc(pods, func(a, b corev1.Pod) int {
		return strings.Compare(a.Spec.NodeName+"/"+a.Name, b.Spec.NodeName+"/"+b.Name)
	})
	return pods, nil
}

// AttachApp names the network namespace of every pod of Deployment name
// (see attachRealPod) and returns them as lab pods.
func (l *Lab) AttachApp(ctx context.Context, name string) ([]Pod, error) {
	kps, err := l.AppPods(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []Pod
	for _, kp := range kps {
		p, err := l.attachRealPod(ctx, kp.Spec.NodeName, kp.Name, time.Minute)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// DetachPods drops the namespace names and records of lab pods whose Pods
// are gone (a scaled-down Deployment).
func (l *Lab) DetachPods(pods []Pod) error {
	var errs []error
	for _, p := range pods {
		if err := removeNS(p.NS, time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := os.Remove(l.podFile(p.Node, p.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KubectlExec runs a command in a pod's first container (kubectl exec:
// apiserver → kubelet → containerd), returning its output.
func (l *Lab) KubectlExec(ctx context.Context, pod string, argv ...string) ([]byte, error) {
	return l.Kubectl(ctx, append([]string{"exec", "-n", PodNamespace, pod, "--"}, argv...)...)
}

// demoReal is the demo on real nodes: weft installed by its manifests, a
// Deployment spread over the nodes, its pods' connectivity matrix, a
// Service reached by name through CoreDNS from another node, the live mode
// switch.
func demoReal(ctx context.Context, l *Lab, w io.Writer) error {
	out, err := l.Kubectl(ctx, "-n", "kube-system", "get", "daemonsets,pods", "-l", "app.kubernetes.io/name=weft-agent", "-o", "wide")
	if err != nil {
		return fmt.Errorf("kubectl get weft-agent: %w: %s", err, out)
	}
	fmt.Fprintf(w, "demo: $ kubectl apply -k deploy/kubernetes  (weft as its DaemonSet on every node)\n%s", out)
	nodes := len(l.Topo.NodesOf(KindWeft))
	replicas := 2 * nodes
	t := time.Now()
	if err := l.ApplyApp(ctx, "web", replicas, 3*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(w, "demo: Deployment web: %d replicas available in %s\n", replicas, time.Since(t).Round(time.Millisecond))
	if out, err = l.Kubectl(ctx, "get", "pods", "-o", "wide", "-l", "app=web"); err != nil {
		return fmt.Errorf("kubectl get pods: %w: %s", err, out)
	}
	fmt.Fprintf(w, "demo: $ kubectl get pods -o wide\n%s", out)
	pods, err := l.AttachApp(ctx, "web")
	if err != nil {
		return err
	}
	first := l.Topo.Cluster.Mode
	second := map[string]string{"vxlan": "bgp", "bgp": "vxlan"}[first]
	for i, mode := range []string{first, second} {
		if i > 0 {
			refused, err := l.switchMode(ctx, mode, 90*time.Second)
			if err != nil {
				return err
			}
			if refused != "" {
				return fmt.Errorf("mode %s refused: %s", mode, refused)
			}
			fmt.Fprintf(w, "demo: switched to mode %s live: every agent runs it and is ready\n", mode)
		}
		m, err := l.converge(ctx, pods)
		if err != nil {
			return err
		}
		m.print(w)
		dns, err := l.demoDNS(ctx, pods)
		if err != nil {
			return fmt.Errorf("mode %s: %w", mode, err)
		}
		fmt.Fprintf(w, "demo: %s: %s\n", mode, dns)
		fmt.Fprintf(w, "demo: %s: %s\n", mode, m.summary(l))
	}
	return nil
}

// demoDNS resolves the Service web by name through CoreDNS from the last
// pod (on the last node) and fetches /hostname through it.
func (l *Lab) demoDNS(ctx context.Context, pods []Pod) (string, error) {
	from := pods[len(pods)-1]
	var last error
	for range 20 {
		out, err := l.KubectlExec(ctx, from.Name, "sh", "-c",
			`nslookup web.default.svc.cluster.local | awk '/^Address/ && !/:53$/ {print $2}' | tr '\n' ' '; `+
				`printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 3 web 80 | tail -n 1`)
		if err == nil && strings.Contains(string(out), "web-") {
			f := strings.Fields(string(out))
			return fmt.Sprintf("Service web.default.svc.cluster.local resolved by CoreDNS from %s/%s to %s; GET http://web/hostname answered by %s",
				from.Node, from.Name, strings.Join(f[:len(f)-1], " "), f[len(f)-1]), nil
		}
		last = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return "", fmt.Errorf("Service web by name from %s: %w", from.Name, last)
}
