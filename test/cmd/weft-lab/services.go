package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"weft.dev/weft/test/lab"
)

// Services in the lab: kube-proxy on the nodes, an echo server in pods,
// Services with EndpointSlices, and an HTTP client run inside pods.

const servicesUsage = `  kube-proxy start N NODE|all MODE   run kube-proxy (iptables, nftables, ipvs) on weft nodes
  kube-proxy stop N NODE|all
  serve N NAME PORT            start the echo server in a node or pod (NAME: node, pod or node/pod)
  service add N NAME TYPE PORT[:TARGET] POD... [--node-port P] [--lb-ip IP]...
                               a Service (ClusterIP, NodePort, LoadBalancer) of lab pods
  service del N NAME
  fetch N FROM URL [COUNT]     COUNT requests (default 1) from a node or pod; prints who answered
`

// dispatchServices runs the service commands; handled is false for any
// other command.
func dispatchServices(ctx context.Context, opts lab.Options, cmd string, args []string, stdout, stderr io.Writer) (handled bool, err error) {
	switch cmd {
	case "kube-proxy":
		return true, kubeProxyCmd(ctx, opts, args)
	case "serve":
		return true, serveCmd(ctx, opts, args)
	case "service":
		return true, serviceCmd(ctx, opts, args, stdout, stderr)
	case "fetch":
		return true, fetchCmd(ctx, opts, args, stdout)
	case "_serve": // inside a pod namespace, started by `serve`
		return true, serveHere(ctx, args)
	case "_fetch": // inside a namespace, started by lab.Fetch
		return true, fetchHere(ctx, args, stdout, stderr)
	}
	return false, nil
}

func kubeProxyCmd(ctx context.Context, opts lab.Options, args []string) error {
	if len(args) < 3 || (args[0] == "start" && len(args) != 4) || (args[0] == "stop" && len(args) != 3) ||
		(args[0] != "start" && args[0] != "stop") {
		return usageErr("kube-proxy start N NODE|all MODE | kube-proxy stop N NODE|all")
	}
	l, err := opts.Open(args[1])
	if err != nil {
		return err
	}
	nodes := []string{args[2]}
	if args[2] == "all" {
		nodes = nil
		for _, n := range l.Topo.NodesOf(lab.KindWeft) {
			nodes = append(nodes, n.Name)
		}
	}
	for _, n := range nodes {
		if args[0] == "start" {
			err = l.KubeProxyStart(ctx, n, args[3])
		} else {
			err = l.KubeProxyStop(n)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// podArg resolves "pod" or "node/pod" to a lab pod.
func podArg(l *lab.Lab, name string) (lab.Pod, error) {
	pods, err := l.Pods("")
	if err != nil {
		return lab.Pod{}, err
	}
	var found []lab.Pod
	for _, p := range pods {
		if p.Name == name || p.Node+"/"+p.Name == name {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return lab.Pod{}, fmt.Errorf("no pod %q in lab %s", name, l.Name)
	}
	return lab.Pod{}, fmt.Errorf("pod name %q is on %d nodes: say node/pod", name, len(found))
}

func portArg(what, s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, usageErr("%s %q: want 1-65535", what, s)
	}
	return uint16(p), nil
}

func serveCmd(ctx context.Context, opts lab.Options, args []string) error {
	if len(args) != 3 {
		return usageErr("serve N NAME PORT")
	}
	port, err := portArg("port", args[2])
	if err != nil {
		return err
	}
	l, err := opts.Open(args[0])
	if err != nil {
		return err
	}
	return l.Serve(ctx, args[1], port)
}

// ipList collects repeated -lb-ip flags.
type ipList []netip.Addr

func (s *ipList) String() string { return fmt.Sprint(*s) }
func (s *ipList) Set(v string) error {
	a, err := netip.ParseAddr(v)
	if err != nil {
		return err
	}
	*s = append(*s, a)
	return nil
}

func serviceCmd(ctx context.Context, opts lab.Options, args []string, stdout, stderr io.Writer) error {
	if len(args) == 3 && args[0] == "del" {
		l, err := opts.Open(args[1])
		if err != nil {
			return err
		}
		return l.ServiceDelete(ctx, "", args[2])
	}
	if len(args) < 6 || args[0] != "add" {
		return usageErr("service add N NAME TYPE PORT[:TARGET] POD... [--node-port P] [--lb-ip IP]... | service del N NAME")
	}
	name, svcName, typ := args[1], args[2], args[3]
	ps, ts, _ := strings.Cut(args[4], ":")
	port, err := portArg("port", ps)
	if err != nil {
		return err
	}
	target := port
	if ts != "" {
		if target, err = portArg("target port", ts); err != nil {
			return err
		}
	}
	fs := flag.NewFlagSet("service add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodePort := fs.Uint("node-port", 0, "node port (NodePort, LoadBalancer)")
	var lbIPs ipList
	fs.Var(&lbIPs, "lb-ip", "load-balancer ingress IP written into the Service's status (repeatable)")
	// Pods first, flags after them.
	var podNames []string
	rest := args[5:]
	for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		podNames, rest = append(podNames, rest[0]), rest[1:]
	}
	if err := fs.Parse(rest); err != nil || fs.NArg() > 0 || len(podNames) == 0 || *nodePort > 65535 {
		return usageErr("service add N NAME TYPE PORT[:TARGET] POD... [--node-port P] [--lb-ip IP]...")
	}
	types := map[string]corev1.ServiceType{
		"clusterip": corev1.ServiceTypeClusterIP, "nodeport": corev1.ServiceTypeNodePort,
		"loadbalancer": corev1.ServiceTypeLoadBalancer,
	}
	t, ok := types[strings.ToLower(typ)]
	if !ok {
		return usageErr("service type %q: want ClusterIP, NodePort or LoadBalancer", typ)
	}
	l, err := opts.Open(name)
	if err != nil {
		return err
	}
	spec := lab.ServiceSpec{Name: svcName, Type: t, Port: port, TargetPort: target, NodePort: uint16(*nodePort), IngressIPs: lbIPs}
	for _, pn := range podNames {
		p, err := podArg(l, pn)
		if err != nil {
			return err
		}
		spec.Backends = append(spec.Backends, p)
	}
	svc, err := l.ServiceApply(ctx, spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "service %s/%s %s clusterIPs %s", svc.Namespace, svc.Name, svc.Spec.Type, strings.Join(svc.Spec.ClusterIPs, ","))
	if np := svc.Spec.Ports[0].NodePort; np != 0 {
		fmt.Fprintf(stdout, " nodePort %d", np)
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		fmt.Fprintf(stdout, " ingress %s", ing.IP)
	}
	fmt.Fprintln(stdout)
	return nil
}

func fetchCmd(ctx context.Context, opts lab.Options, args []string, stdout io.Writer) error {
	if len(args) != 3 && len(args) != 4 {
		return usageErr("fetch N FROM URL [COUNT]")
	}
	count := 1
	if len(args) == 4 {
		n, err := strconv.Atoi(args[3])
		if err != nil || n < 1 {
			return usageErr("count %q: want a positive number", args[3])
		}
		count = n
	}
	l, err := opts.Open(args[0])
	if err != nil {
		return err
	}
	res, err := l.Fetch(ctx, args[1], args[2], lab.FetchOptions{Count: count})
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Echo != nil {
			fmt.Fprintf(stdout, "%s answered, saw client %s (%s)\n", r.Echo.Server, r.Echo.Client, r.Took.Round(time.Microsecond))
		} else {
			fmt.Fprintf(stdout, "failed: %s\n", r.Err)
		}
	}
	if count > 1 {
		byPod, failed := lab.Spread(res)
		var keys []string
		for k := range byPod {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s %d", k, byPod[k])
		}
		fmt.Fprintf(stdout, "spread: %s; failed %d of %d\n", strings.Join(parts, " / "), failed, len(res))
	}
	if _, failed := lab.Spread(res); failed > 0 {
		return exitError(1)
	}
	return nil
}

// serveHere runs the echo server in the current namespace: _serve NAME PORT.
func serveHere(ctx context.Context, args []string) error {
	if len(args) != 2 {
		return usageErr("_serve NAME PORT")
	}
	if _, err := portArg("port", args[1]); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", ":"+args[1])
	if err != nil {
		return err
	}
	return lab.ServeEcho(ctx, ln, args[0])
}

// fetchHere makes requests from the current namespace: _fetch [flags] URL.
func fetchHere(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("_fetch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o lab.FetchOptions
	fs.IntVar(&o.Count, "count", 1, "requests")
	fs.Float64Var(&o.Rate, "rate", 0, "requests per second (0: one after the other)")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long")
	fs.DurationVar(&o.Timeout, "timeout", 0, "per request")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		return usageErr("_fetch [-count N] [-rate R] [-duration D] [-timeout T] URL")
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	return lab.FetchAll(ctx, fs.Arg(0), o, stdout)
}
