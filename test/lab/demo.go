package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"weft.dev/weft/agent/status"
)

// Demo brings up the topology in file as lab name, makes two pods per weft
// node, prints a connectivity matrix (every pod to every pod and to the
// outside hosts), then switches weft to the other mode and prints it again,
// and removes the lab at the end, also on error or when ctx is cancelled.
func Demo(ctx context.Context, opts Options, file, name string, w io.Writer) (err error) {
	t0 := time.Now()
	l, err := opts.Up(ctx, file, name)
	if err != nil {
		return err
	}
	defer func() {
		t := time.Now()
		if derr := opts.Down(l.Name); derr != nil {
			err = errors.Join(err, fmt.Errorf("down %s: %w", l.Name, derr))
		}
		fmt.Fprintf(w, "demo: lab %s down in %s\n", l.Name, time.Since(t).Round(time.Millisecond))
	}()
	fmt.Fprintf(w, "demo: lab %s up in %s: %d weft nodes\n", l.Name, time.Since(t0).Round(time.Millisecond), len(l.Topo.NodesOf(KindWeft)))
	if opts.Kubelets {
		return demoReal(ctx, l, w)
	}
	var pods []Pod
	for _, n := range l.Topo.NodesOf(KindWeft) {
		for _, p := range []string{"a", "b"} {
			pod, err := l.PodAdd(ctx, n.Name, p)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "demo: pod %s/%s %s\n", pod.Node, pod.Name, joinAddrs(pod.IPs))
			pods = append(pods, pod)
		}
	}
	first := l.Topo.Cluster.Mode
	second := map[string]string{"vxlan": "bgp", "bgp": "vxlan"}[first]
	for i, mode := range []string{first, second} {
		if i > 0 {
			if !l.AgentBuilt() {
				fmt.Fprintf(w, "demo: %s: skipped: switching modes needs weft-agent (not built: %s)\n", mode, l.agentBin())
				break
			}
			refused, err := l.switchMode(ctx, mode, 60*time.Second)
			if err != nil {
				return err
			}
			if refused != "" {
				fmt.Fprintf(w, "demo: %s: skipped: weft-agent in this build does not support mode %s (%s)\n", mode, mode, refused)
				break
			}
			fmt.Fprintf(w, "demo: switched to mode %s: every agent runs it and is ready\n", mode)
		}
		m, err := l.converge(ctx, pods)
		if err != nil {
			return err
		}
		m.print(w)
		fmt.Fprintf(w, "demo: %s: %s\n", mode, m.summary(l))
		if l.AgentBuilt() {
			// What carries the traffic: weft's routes on the first node.
			n := l.Topo.NodesOf(KindWeft)[0].Name
			for _, fam := range []string{"-4", "-6"} {
				out, err := l.Exec(ctx, n, "ip", fam, "route", "show", "proto", "87")
				if err != nil {
					return err
				}
				for _, r := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if r != "" {
						fmt.Fprintf(w, "demo: %s: %s route: %s\n", mode, n, strings.TrimSpace(r))
					}
				}
			}
		}
	}
	return nil
}

// switchMode writes mode into the ConfigMap and waits until every agent
// runs it and is ready. When an agent rejects it (its status shows a
// configuration error naming the mode), it returns that agent's reason
// instead, so the caller can say so rather than measure the old mode again.
func (l *Lab) switchMode(ctx context.Context, mode string, timeout time.Duration) (refused string, err error) {
	if err := l.SetMode(ctx, mode); err != nil {
		return "", err
	}
	nodes := l.Topo.NodesOf(KindWeft)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting []string
		for _, n := range nodes {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := status.Get(sctx, l.AgentStatusSocket(n.Name))
			cancel()
			switch {
			case err != nil:
				waiting = append(waiting, fmt.Sprintf("%s: %v", n.Name, err))
			case st.ConfigError != "" && strings.Contains(st.ConfigError, mode):
				return fmt.Sprintf("%s: %s", n.Name, st.ConfigError), nil
			case st.Mode != mode || !st.Ready:
				waiting = append(waiting, fmt.Sprintf("%s: mode %s, not ready: %s", n.Name, st.Mode, strings.Join(st.NotReady, "; ")))
			}
		}
		if len(waiting) == 0 {
			return "", nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("mode %s: agents not switched after %s: %s", mode, timeout, strings.Join(waiting, " | "))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// matrix is the outcome of pinging between pods and to outside hosts.
type matrix struct {
	pods    []Pod
	targets []target        // pods, then outside hosts
	reach   map[[2]int]cell // [pod index, target index]
	outside map[string]bool // names of outside targets
}

type target struct {
	name  string
	node  string // weft node, "" for outside hosts
	addrs []netip.Addr
}

// cell says which families reached: "ok" (all), "v4", "v6", "--" (none).
type cell string

// converge pings until every pair answers, for up to 30 s when agents run
// (their routes take a moment), once otherwise.
func (l *Lab) converge(ctx context.Context, pods []Pod) (*matrix, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := l.ping(ctx, pods)
		if err != nil || !l.AgentBuilt() || m.ok(false) == len(m.reach) || time.Now().After(deadline) {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (l *Lab) ping(ctx context.Context, pods []Pod) (*matrix, error) {
	m := &matrix{pods: pods, reach: map[[2]int]cell{}, outside: map[string]bool{}}
	for _, p := range pods {
		m.targets = append(m.targets, target{name: p.Node + "/" + p.Name, node: p.Node, addrs: p.IPs})
	}
	for _, n := range l.Topo.NodesOf(KindLinux) {
		m.targets = append(m.targets, target{name: n.Name, addrs: n.NodeAddrs()})
		m.outside[n.Name] = true
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, src := range pods {
		for j, dst := range m.targets {
			if j < len(pods) && i == j {
				continue
			}
			g.Go(func() error {
				var v4, v6, has4, has6 bool
				for _, s := range src.IPs {
					for _, d := range dst.addrs {
						if s.Is4() != d.Is4() {
							continue
						}
						ok := l.Ping(gctx, src.Node+"/"+src.Name, d) == nil
						if d.Is4() {
							has4, v4 = true, v4 || ok
						} else {
							has6, v6 = true, v6 || ok
						}
					}
				}
				c := cell("--")
				switch {
				case (v4 || !has4) && (v6 || !has6) && (has4 || has6):
					c = "ok"
				case v4:
					c = "v4"
				case v6:
					c = "v6"
				}
				mu.Lock()
				m.reach[[2]int{i, j}] = c
				mu.Unlock()
				return gctx.Err()
			})
		}
	}
	return m, g.Wait()
}

// ok counts reachable pod-to-pod pairs; sameNode limits it to pairs on one node.
func (m *matrix) ok(sameNode bool) int {
	n := 0
	for k, c := range m.reach {
		if c == "ok" && (!sameNode || m.targets[k[1]].node == m.pods[k[0]].Node) {
			n++
		}
	}
	return n
}

func (m *matrix) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprint(tw, "from \\ to")
	for _, t := range m.targets {
		fmt.Fprintf(tw, "\t%s", t.name)
	}
	fmt.Fprintln(tw)
	for i, p := range m.pods {
		fmt.Fprintf(tw, "%s/%s", p.Node, p.Name)
		for j := range m.targets {
			c, ok := m.reach[[2]int{i, j}]
			if !ok {
				c = "."
			}
			fmt.Fprintf(tw, "\t%s", c)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func (m *matrix) summary(l *Lab) string {
	var pairs, same, sameOK, crossOK, out, outOK int
	for k, c := range m.reach {
		t := m.targets[k[1]]
		switch {
		case t.node == "":
			out++
			if c == "ok" {
				outOK++
			}
		case t.node == m.pods[k[0]].Node:
			pairs++
			same++
			if c == "ok" {
				sameOK++
			}
		default:
			pairs++
			if c == "ok" {
				crossOK++
			}
		}
	}
	s := fmt.Sprintf("%d/%d pod pairs reachable (same node %d/%d, across nodes %d/%d",
		sameOK+crossOK, pairs, sameOK, same, crossOK, pairs-same)
	if out > 0 {
		s += fmt.Sprintf(", to outside hosts %d/%d", outOK, out)
	}
	s += ")"
	if !l.AgentBuilt() {
		s += fmt.Sprintf("\ndemo: note: pods across nodes and to outside hosts need weft-agent, which is not built yet (%s); only same-node pairs can work", l.agentBin())
	}
	return strings.TrimSpace(s)
}
