package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Status is a snapshot of a lab.
type Status struct {
	Name      string
	APIServer string // "ready", an error, or "" without a control plane
	Nodes     []NodeStatus
}

// NodeStatus is one topology node.
type NodeStatus struct {
	Name     string
	Kind     Kind
	NS       string
	Present  bool // its namespace exists
	Addrs    []netip.Addr
	PodCIDRs []netip.Prefix
	Agent    string // weft nodes: "pid N", "stopped", "not built"; real nodes: "pod NAME Ready|not ready"
	Pods     []Pod
}

// Status reads the lab's state: namespaces, pod CIDRs, agents and pods.
func (l *Lab) Status(ctx context.Context) (Status, error) {
	s := Status{Name: l.Name}
	if l.cp != nil {
		s.APIServer = "ready"
		if err := l.Readyz(ctx); err != nil {
			s.APIServer = err.Error()
		}
	}
	for _, n := range l.Topo.Nodes {
		ns := NodeStatus{Name: n.Name, Kind: n.Kind, NS: l.NS(n.Name), Present: nsExists(l.NS(n.Name)), Addrs: n.NodeAddrs()}
		if n.Kind == KindWeft {
			if s.APIServer == "ready" {
				ns.PodCIDRs, _ = l.PodCIDRs(ctx, n.Name)
			}
			switch pid := l.AgentPid(n.Name); {
			case l.opts.Kubelets:
				ns.Agent = l.agentPodState(ctx, n.Name, s.APIServer == "ready")
			case !l.AgentBuilt():
				ns.Agent = "not built"
			case pid > 0:
				ns.Agent = fmt.Sprintf("pid %d", pid)
			default:
				ns.Agent = "stopped"
			}
			pods, err := l.Pods(n.Name)
			if err != nil {
				return s, err
			}
			ns.Pods = pods
		}
		s.Nodes = append(s.Nodes, ns)
	}
	return s, nil
}

// String renders the status as a table.
func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lab %s", s.Name)
	if s.APIServer != "" {
		fmt.Fprintf(&b, "  apiserver: %s", s.APIServer)
	}
	b.WriteString("\n")
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tKIND\tNETNS\tADDRESSES\tPOD CIDRS\tAGENT\tPODS")
	for _, n := range s.Nodes {
		nsName := n.NS
		if !n.Present {
			nsName += " (missing)"
		}
		var pods []string
		for _, p := range n.Pods {
			pods = append(pods, p.Name+"="+joinAddrs(p.IPs))
		}
		sort.Strings(pods)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Kind, nsName, orDash(joinAddrs(n.Addrs)),
			orDash(joinPrefixes(n.PodCIDRs)), orDash(n.Agent), orDash(strings.Join(pods, " ")))
	}
	w.Flush()
	return b.String()
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// agentPodState names a real node's weft-agent pod and whether it is ready.
func (l *Lab) agentPodState(ctx context.Context, node string, apiUp bool) string {
	if !apiUp {
		return "unknown (apiserver down)"
	}
	pods, err := l.cp.Client().CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=weft-agent", FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return err.Error()
	}
	if len(pods.Items) == 0 {
		return "no pod"
	}
	p := pods.Items[0]
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return "pod " + p.Name + " Ready"
		}
	}
	return "pod " + p.Name + " not ready"
}
