package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
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
	Agent    string // weft nodes: "pid N", "stopped", "not built"
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
