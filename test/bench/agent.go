package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/agent"
	"weft.dev/weft/agent/config"
	"weft.dev/weft/overlay"
	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/nstest"
)

// The agent benchmark runs one real weft-agent (the built binary) in a node
// namespace against a real control plane (etcd, kube-apiserver,
// kube-controller-manager in a second namespace, joined by a veth underlay)
// holding many peer Node objects, and measures from the kernel side, by
// counting the routes of weft's protocol in the node namespace (a netlink
// dump every agPoll):
//
//   - cold start: from exec of the agent, with an empty datapath, until every
//     peer's route is in the kernel;
//   - burst: from the first create of agBurst new Nodes until their routes
//     are in;
//   - deletion: from the first delete of those Nodes until their routes are
//     gone;
//   - the agent's resident memory (VmRSS) with every peer programmed.
//
// Peer Nodes are created by the admin client as a kubelet would register
// them (spec.podCIDRs, an InternalIP in the underlay subnet) with the
// weft.dev/vtep-mac annotation their agent would publish; no agent runs for
// them. After each phase the neighbour and FDB entries on weft.vxlan are
// counted too, and the agent's weft_peers_programmed metric (read over its
// status socket) is compared with the kernel's count.
var (
	agPeers  = flag.Int("agent.peers", 1000, "agent: peer Nodes present at agent start")
	agBurst  = flag.Int("agent.burst", 100, "agent: Nodes created (then deleted) in one burst")
	agRounds = flag.Int("agent.rounds", 3, "agent: cold starts and bursts measured")
	agPoll   = flag.Duration("agent.poll", 5*time.Millisecond, "agent: kernel route count poll interval")
	agBin    = flag.String("agent.bin", "", "agent: weft-agent binary (default: $WEFT_BIN/weft-agent, else a fresh go build)")
)

// Targets of the issue "weft-agent with VXLAN mode".
const (
	agStartTarget = time.Second
	agBurstTarget = 500 * time.Millisecond
	agRSSTarget   = 40 << 20
)

var (
	agUnderlay = netip.MustParsePrefix("10.200.0.0/16")
	agCPAddr   = netip.MustParseAddr("10.200.0.1")
	agNodeAddr = netip.MustParseAddr("10.200.0.2")
	agCluster  = netip.MustParsePrefix("172.16.0.0/12") // 4096 /24 blocks
)

const agNodeName = "bench-node"

// agEnv owns everything the benchmark makes.
type agEnv struct {
	tmp      string
	cpNS     string
	nodeNS   string
	netnses  []string
	cp       *controlplane.ControlPlane
	client   kubernetes.Interface
	bin      string
	agent    *exec.Cmd
	agentLog string
	h        *netlink.Handle
	nsh      netns.NsHandle
}

func (e *agEnv) close() {
	e.stopAgent()
	if e.h != nil {
		e.h.Close()
	}
	if e.nsh.IsOpen() {
		e.nsh.Close()
	}
	if e.cp != nil {
		if err := e.cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "  stop control plane:", err)
		}
	}
	for _, n := range slices.Backward(e.netnses) {
		if out, err := exec.Command("ip", "netns", "pids", n).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				if p, err := strconv.Atoi(pid); err == nil {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
	_ = os.RemoveAll(e.tmp)
}

func (e *agEnv) mkns(tag string) (string, error) {
	name := nstest.Unique(tag)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	e.netnses = append(e.netnses, name)
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Errorf("lo up in %s: %v: %s", name, err, out)
	}
	return name, nil
}

func ipRun(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// agPhase is one measured phase of one round.
type agPhase struct {
	took    time.Duration // until the kernel showed the wanted route count
	api     time.Duration // until the last API request of the phase returned (burst, deletion)
	metric  int           // weft_peers_programmed when the kernel count was reached
	load    float64       // 1-minute load average at the end
	neigh   int
	fdb     int
	routes  int
	rss     int64 // bytes, cold start only
	hwm     int64
	heap    float64 // go_memstats_heap_inuse_bytes, cold start only
	gosys   float64 // go_memstats_sys_bytes, cold start only
	passes  float64 // reconcile passes so far (weft_reconcile_duration_seconds count)
	passSum float64
}

func runAgent(ctx context.Context, out *strings.Builder) error {
	if err := requireK8s(); err != nil {
		return err
	}
	e, err := startAgEnv(ctx, "agent", *agPeers)
	if err != nil {
		return err
	}
	defer e.close()

	var starts, bursts, dels []agPhase
	for r := range *agRounds {
		fmt.Fprintf(os.Stderr, "  round %d: cold start with %d peers\n", r+1, *agPeers)
		p, err := e.coldStart(ctx)
		if err != nil {
			return err
		}
		starts = append(starts, p)
		fmt.Fprintf(os.Stderr, "    programmed in %s, rss %.1f MiB, load %.1f\n", p.took.Round(time.Millisecond), float64(p.rss)/(1<<20), p.load)

		first := *agPeers + r**agBurst
		fmt.Fprintf(os.Stderr, "  round %d: burst of %d new Nodes\n", r+1, *agBurst)
		b, err := e.measure(ctx, *agPeers+*agBurst, func() error { _, err := e.createPeers(ctx, first, *agBurst); return err })
		if err != nil {
			return fmt.Errorf("burst: %w", err)
		}
		bursts = append(bursts, b)
		fmt.Fprintf(os.Stderr, "    programmed in %s (API %s)\n", b.took.Round(time.Millisecond), b.api.Round(time.Millisecond))
		d, err := e.measure(ctx, *agPeers, func() error { return e.deletePeers(ctx, first, *agBurst) })
		if err != nil {
			return fmt.Errorf("deletion: %w", err)
		}
		dels = append(dels, d)
		fmt.Fprintf(os.Stderr, "    removed in %s (API %s)\n", d.took.Round(time.Millisecond), d.api.Round(time.Millisecond))
	}
	e.report(out, starts, bursts, dels)
	return nil
}

// k8sBinDir is where the Kubernetes binaries are: $WEFT_K8S_BIN, else
// controlplane.DefaultBinDir.
func k8sBinDir() (string, error) {
	if v := os.Getenv("WEFT_K8S_BIN"); v != "" {
		return v, nil
	}
	return controlplane.DefaultBinDir()
}

// requireK8s fails unless the Kubernetes binaries and etcd are there.
func requireK8s() error {
	binDir, err := k8sBinDir()
	if err != nil {
		return err
	}
	if m := controlplane.MissingBinaries(binDir, "/usr/bin/etcd"); len(m) > 0 {
		return fmt.Errorf("Kubernetes binaries missing (%s); build them with `make k8s`", strings.Join(m, ", "))
	}
	return nil
}

// startAgEnv builds the environment the agent and bgp benchmarks share in
// a temporary directory weft-bench-<name>: the agent binary, both
// namespaces, the control plane (see setup) and peers peer Nodes. The
// caller closes it.
func startAgEnv(ctx context.Context, name string, peers int) (*agEnv, error) {
	binDir, err := k8sBinDir()
	if err != nil {
		return nil, err
	}
	root := filepath.Dir(filepath.Dir(filepath.Dir(binDir))) // <repo>/.cache/k8s/<v>
	tmp, err := os.MkdirTemp("", "weft-bench-"+name)
	if err != nil {
		return nil, err
	}
	e := &agEnv{tmp: tmp}
	if err := e.start(ctx, root, peers); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *agEnv) start(ctx context.Context, root string, peers int) error {
	var err error
	if e.bin, err = agentBinary(e.tmp); err != nil {
		return err
	}
	if err := e.setup(ctx, root); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "  creating %d peer Nodes\n", peers)
	_, err = e.createPeers(ctx, 0, peers)
	return err
}

// agentBinary returns the weft-agent to run: -agent.bin, $WEFT_BIN's, else a
// fresh build.
func agentBinary(tmp string) (string, error) {
	if *agBin != "" {
		return *agBin, nil
	}
	if dir := os.Getenv("WEFT_BIN"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "weft-agent")); err == nil {
			return filepath.Join(dir, "weft-agent"), nil
		}
	}
	bin := filepath.Join(tmp, "weft-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "weft.dev/weft/cmd/weft-agent").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build weft-agent: %v: %s", err, out)
	}
	return bin, nil
}

// setup makes the two namespaces and the underlay, starts the control
// plane, applies deploy/kubernetes with a weft-config for the bench's
// cluster CIDR, and registers the agent's own Node.
func (e *agEnv) setup(ctx context.Context, root string) error {
	var err error
	if e.cpNS, err = e.mkns("bcp"); err != nil {
		return err
	}
	if e.nodeNS, err = e.mkns("bnode"); err != nil {
		return err
	}
	bits := strconv.Itoa(agUnderlay.Bits())
	for _, args := range [][]string{
		{"-n", e.cpNS, "link", "add", "ul0", "type", "veth", "peer", "name", "eth0", "netns", e.nodeNS},
		{"-n", e.cpNS, "addr", "add", agCPAddr.String() + "/" + bits, "dev", "ul0"},
		{"-n", e.nodeNS, "addr", "add", agNodeAddr.String() + "/" + bits, "dev", "eth0"},
		{"-n", e.cpNS, "link", "set", "ul0", "up"},
		{"-n", e.nodeNS, "link", "set", "eth0", "up"},
	} {
		if err := ipRun(args...); err != nil {
			return err
		}
	}
	if e.nsh, err = netns.GetFromName(e.nodeNS); err != nil {
		return fmt.Errorf("open netns %s: %w", e.nodeNS, err)
	}
	if e.h, err = netlink.NewHandleAt(e.nsh); err != nil {
		return fmt.Errorf("netlink in %s: %w", e.nodeNS, err)
	}

	fmt.Fprintln(os.Stderr, "  starting control plane")
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	e.cp, err = controlplane.Start(cctx, controlplane.Config{
		Netns: e.cpNS, Addr: agCPAddr, Dir: filepath.Join(e.tmp, "cp"),
		ClusterCIDRs: []netip.Prefix{agCluster}, NodeMaskV4: 24,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	cfg := e.cp.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 2000 // the bench's own writes must not be what is measured
	if e.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if err := e.cp.ApplyDeploy(cctx, filepath.Join(root, "deploy", "kubernetes")); err != nil {
		return err
	}
	if err := e.setConfig(cctx, fmt.Sprintf("mode: vxlan\nclusterCIDRs:\n  - %s\n", agCluster)); err != nil {
		return err
	}
	if err := e.cp.RegisterNode(cctx, agNodeName, []netip.Addr{agNodeAddr}, nil); err != nil {
		return err
	}
	own := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q]}}`, agPodCIDR(-1), agPodCIDR(-1))
	if _, err := e.client.CoreV1().Nodes().Patch(cctx, agNodeName, types.MergePatchType, []byte(own), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("set pod CIDR of %s: %w", agNodeName, err)
	}
	return e.cp.AgentKubeconfig(cctx, agNodeName, filepath.Join(e.tmp, "node", "kubeconfig"))
}

// agPodCIDR is peer i's pod CIDR (-1: the agent's own node).
func agPodCIDR(i int) netip.Prefix {
	a := agCluster.Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n += uint32(i+1) << 8
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), 0}), 24)
}

// agPeerIP is peer i's underlay address (from 10.200.1.0 on).
func agPeerIP(i int) netip.Addr {
	a := agUnderlay.Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(256+i)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func agPeerName(i int) string { return fmt.Sprintf("peer-%05d", i) }

func agPeerMAC(i int) string {
	return net.HardwareAddr{0x02, 0xbe, 0, byte(i >> 16), byte(i >> 8), byte(i)}.String()
}

// peerNode is peer i as a kubelet registers it, with its agent's annotation.
func peerNode(i int) *corev1.Node {
	cidr := agPodCIDR(i).String()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        agPeerName(i),
			Labels:      map[string]string{"kubernetes.io/hostname": agPeerName(i), "kubernetes.io/os": "linux"},
			Annotations: map[string]string{agent.AnnotationVTEPMAC: agPeerMAC(i)},
		},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: agPeerIP(i).String()},
				{Type: corev1.NodeHostName, Address: agPeerName(i)},
			},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}},
		},
	}
}

// createPeers creates peers first..first+n-1 (32 at a time) and returns how
// long the API took. A Node created without its status (the apiserver may
// drop it) gets it with a second write before the next Node's create.
func (e *agEnv) createPeers(ctx context.Context, first, n int) (time.Duration, error) {
	t0 := time.Now()
	err := e.each(ctx, first, n, func(ctx context.Context, i int) error {
		nodes := e.client.CoreV1().Nodes()
		want := peerNode(i)
		got, err := nodes.Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node %s: %w", want.Name, err)
		}
		if len(got.Status.Addresses) == 0 {
			got.Status = want.Status
			if _, err := nodes.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("set status of node %s: %w", want.Name, err)
			}
		}
		return nil
	})
	return time.Since(t0), err
}

func (e *agEnv) deletePeers(ctx context.Context, first, n int) error {
	return e.each(ctx, first, n, func(ctx context.Context, i int) error {
		err := e.client.CoreV1().Nodes().Delete(ctx, agPeerName(i), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete node %s: %w", agPeerName(i), err)
		}
		return nil
	})
}

func (e *agEnv) each(ctx context.Context, first, n int, fn func(context.Context, int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := first; i < first+n; i++ {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}

// startAgent runs the agent in the node namespace with every path in the
// bench's directory; its HTTP listener is off (the status socket serves
// /metrics).
func (e *agEnv) startAgent() error {
	d := filepath.Join(e.tmp, "node")
	e.agentLog = filepath.Join(d, "agent.log")
	lf, err := os.OpenFile(e.agentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command("ip", "netns", "exec", e.nodeNS, e.bin,
		"--node-name="+agNodeName,
		"--kubeconfig="+filepath.Join(d, "kubeconfig"),
		"--state-dir="+filepath.Join(d, "var", "lib", "weft"),
		"--run-dir="+filepath.Join(d, "run", "weft"),
		"--cni-conf-dir="+filepath.Join(d, "etc", "cni", "net.d"),
		"--http-addr=")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start weft-agent: %w", err)
	}
	e.agent = cmd
	return nil
}

func (e *agEnv) stopAgent() {
	if e.agent == nil {
		return
	}
	_ = e.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = e.agent.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.agent.Process.Kill()
		<-done
	}
	e.agent = nil
}

// coldStart stops the agent, empties the datapath (deleting weft.vxlan takes
// its neighbours, FDB entries and routes with it) and measures a start.
func (e *agEnv) coldStart(ctx context.Context) (agPhase, error) {
	e.stopAgent()
	if l, err := e.h.LinkByName(overlay.VXLANDevice); err == nil {
		if err := e.h.LinkDel(l); err != nil {
			return agPhase{}, fmt.Errorf("delete %s: %w", overlay.VXLANDevice, err)
		}
	}
	if n, err := e.countRoutes(); err != nil || n != 0 {
		return agPhase{}, fmt.Errorf("datapath not empty before start: %d routes (%v)", n, err)
	}
	p, err := e.measure(ctx, *agPeers, e.startAgent)
	if err != nil {
		return p, fmt.Errorf("cold start: %w", err)
	}
	// Let the passes the start set off settle, then read the memory.
	select {
	case <-ctx.Done():
		return p, ctx.Err()
	case <-time.After(3 * time.Second):
	}
	if p.rss, p.hwm, err = procMem(e.agent.Process.Pid); err != nil {
		return p, err
	}
	m, err := e.metrics()
	p.heap, p.gosys = m["go_memstats_heap_inuse_bytes"], m["go_memstats_sys_bytes"]
	var stats []string
	for k, v := range m {
		if strings.HasPrefix(k, "go_memstats_") && strings.HasSuffix(k, "_bytes") {
			stats = append(stats, fmt.Sprintf("%s=%.1fMiB", strings.TrimPrefix(k, "go_memstats_"), v/(1<<20)))
		}
	}
	slices.Sort(stats)
	st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.agent.Process.Pid))
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "Rss") {
			stats = append(stats, strings.Join(strings.Fields(l), ""))
		}
	}
	fmt.Fprintf(os.Stderr, "    rss %.1f MiB; %s\n", mib(p.rss), strings.Join(stats, " "))
	return p, err
}

// measure runs act and waits until the node namespace holds want routes of
// weft's protocol, then reads the counts and metrics.
func (e *agEnv) measure(ctx context.Context, want int, act func() error) (agPhase, error) {
	var p agPhase
	t0 := time.Now()
	if err := act(); err != nil {
		return p, err
	}
	p.api = time.Since(t0)
	var err error
	if p.took, err = e.waitRoutes(ctx, want, t0); err != nil {
		return p, err
	}
	m, err := e.metrics()
	if err != nil {
		return p, err
	}
	p.metric = int(m["weft_peers_programmed"])
	p.passes, p.passSum = m["weft_reconcile_duration_seconds_count"], m["weft_reconcile_duration_seconds_sum"]
	p.routes = want
	if p.neigh, p.fdb, err = e.countNeighFDB(); err != nil {
		return p, err
	}
	p.load = loadAvg()
	return p, nil
}

// waitRoutes waits until the node namespace holds want routes of weft's
// protocol (counted every agPoll, for at most 2 minutes) and returns the
// time since t0.
func (e *agEnv) waitRoutes(ctx context.Context, want int, t0 time.Time) (time.Duration, error) {
	tick := time.NewTicker(*agPoll)
	defer tick.Stop()
	deadline := time.After(2 * time.Minute)
	for {
		n, err := e.countRoutes()
		if err != nil {
			return 0, err
		}
		if n == want {
			return time.Since(t0), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-deadline:
			return 0, fmt.Errorf("%d routes after 2m, want %d (agent log: %s)", n, want, e.agentLog)
		case <-tick.C:
		}
	}
}

// setConfig checks doc and writes it into the weft-config ConfigMap.
func (e *agEnv) setConfig(ctx context.Context, doc string) error {
	if _, err := config.Parse([]byte(doc)); err != nil {
		return fmt.Errorf("bench weft-config: %w", err)
	}
	patch := fmt.Sprintf(`{"data":{%q:%q}}`, config.Key, doc)
	if _, err := e.client.CoreV1().ConfigMaps("kube-system").Patch(ctx, "weft-config", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch weft-config: %w", err)
	}
	return nil
}

func (e *agEnv) countRoutes() (int, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(overlay.DefaultRouteProtocol)}
	for range 5 {
		rs, err := e.h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("list routes in %s: %w", e.nodeNS, err)
		}
		return len(rs), nil
	}
	return 0, fmt.Errorf("list routes in %s: dump interrupted 5 times", e.nodeNS)
}

// countNeighFDB counts the permanent neighbours and the FDB entries with a
// destination on weft.vxlan.
func (e *agEnv) countNeighFDB() (neigh, fdb int, err error) {
	l, err := e.h.LinkByName(overlay.VXLANDevice)
	if err != nil {
		return 0, 0, fmt.Errorf("find %s: %w", overlay.VXLANDevice, err)
	}
	ns, err := e.h.NeighList(l.Attrs().Index, unix.AF_INET)
	if err != nil {
		return 0, 0, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT != 0 {
			neigh++
		}
	}
	fs, err := e.h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return 0, 0, fmt.Errorf("list fdb: %w", err)
	}
	for _, f := range fs {
		if f.IP != nil && f.Flags&netlink.NTF_SELF != 0 {
			fdb++
		}
	}
	return neigh, fdb, nil
}

// metrics reads the agent's /metrics over its status socket (plain samples
// without labels only).
func (e *agEnv) metrics() (map[string]float64, error) {
	body, err := e.metricsText(context.Background())
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			m[name] = v
		}
	}
	return m, nil
}

// metricsText is the agent's /metrics page, read over its status socket.
func (e *agEnv) metricsText(ctx context.Context) (string, error) {
	sock := filepath.Join(e.tmp, "node", "run", "weft", "status.sock")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("agent metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("agent metrics: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// procMem reads VmRSS and VmHWM of pid in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("agent memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("agent memory: no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func (e *agEnv) report(out *strings.Builder, starts, bursts, dels []agPhase) {
	took := func(ps []agPhase, f func(agPhase) time.Duration) []time.Duration {
		var d []time.Duration
		for _, p := range ps {
			d = append(d, f(p))
		}
		return d
	}
	span := func(d []time.Duration) string {
		return fmt.Sprintf("%.0f (%.0f–%.0f)", ms(quantile(d, 0.5)), ms(slices.Min(d)), ms(slices.Max(d)))
	}
	met := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	fmt.Fprintf(out, "## Agent control plane\n\n")
	fmt.Fprintf(out, "One weft-agent (the built binary) in a node namespace, against a real kube-apiserver (with etcd and kube-controller-manager in a second namespace, one veth underlay), vxlan mode, IPv4. %d peer Nodes created by the admin client with spec.podCIDRs, an InternalIP in the underlay subnet and weft.dev/vtep-mac. \"Programmed\" is read from the kernel: the count of routes with protocol %d in the node namespace, polled by netlink dump every %s; each peer's route is written after its neighbour and FDB entry. %d rounds; times in milliseconds, median (min–max).\n\n",
		*agPeers, overlay.DefaultRouteProtocol, *agPoll, len(starts))
	fmt.Fprintf(out, "| measure | target | weft | met |\n|---|---|---|---|\n")
	sd := took(starts, func(p agPhase) time.Duration { return p.took })
	fmt.Fprintf(out, "| (a) cold start → %d peers programmed | ≤ %d ms | %s | %s |\n", *agPeers, agStartTarget.Milliseconds(), span(sd), met(quantile(sd, 0.5) <= agStartTarget))
	bd := took(bursts, func(p agPhase) time.Duration { return p.took })
	fmt.Fprintf(out, "| (b) %d new Nodes → programmed (from first create) | ≤ %d ms | %s | %s |\n", *agBurst, agBurstTarget.Milliseconds(), span(bd), met(quantile(bd, 0.5) <= agBurstTarget))
	fmt.Fprintf(out, "| (b′) the same, the %d creates alone (API) | — | %s | — |\n", *agBurst, span(took(bursts, func(p agPhase) time.Duration { return p.api })))
	fmt.Fprintf(out, "| (b″) the same, from the last create's answer (the agent's own delay) | — | %s | — |\n", span(took(bursts, func(p agPhase) time.Duration { return p.took - p.api })))
	dd := took(dels, func(p agPhase) time.Duration { return p.took })
	fmt.Fprintf(out, "| (c) %d Nodes deleted → routes removed (from first delete) | — | %s | — |\n", *agBurst, span(dd))
	fmt.Fprintf(out, "| (c′) the same, the %d deletes alone (API) | — | %s | — |\n", *agBurst, span(took(dels, func(p agPhase) time.Duration { return p.api })))
	fmt.Fprintf(out, "| (c″) the same, from the last delete's answer | — | %s | — |\n", span(took(dels, func(p agPhase) time.Duration { return p.took - p.api })))
	var rss []int64
	var hwm int64
	for _, p := range starts {
		rss = append(rss, p.rss)
		hwm = max(hwm, p.hwm)
	}
	slices.Sort(rss)
	fmt.Fprintf(out, "| (d) agent VmRSS at %d peers (3 s after programmed) | ≤ %d MiB | %.1f MiB (%.1f–%.1f); VmHWM max %.1f MiB | %s |\n\n",
		*agPeers, agRSSTarget>>20, mib(rss[len(rss)/2]), mib(rss[0]), mib(rss[len(rss)-1]), mib(hwm), met(rss[len(rss)/2] <= agRSSTarget))
	fmt.Fprintf(out, "Memory at the RSS reading, round 1: Go heap in use %.1f MiB, memory the Go runtime holds from the OS %.1f MiB (go_memstats_heap_inuse_bytes, go_memstats_sys_bytes).\n\n",
		starts[0].heap/(1<<20), starts[0].gosys/(1<<20))

	fmt.Fprintf(out, "Per round (load average is the 1-minute figure at the end of the phase; metric is weft_peers_programmed read when the kernel count was reached; passes are weft_reconcile_duration_seconds count / sum since the agent started):\n\n")
	fmt.Fprintf(out, "| round | phase | ms | load | routes | neigh | fdb | metric | passes | pass time s |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for i := range starts {
		for _, x := range []struct {
			name string
			p    agPhase
		}{{"start", starts[i]}, {"burst", bursts[i]}, {"delete", dels[i]}} {
			fmt.Fprintf(out, "| %d | %s | %.0f | %.1f | %d | %d | %d | %d | %.0f | %.3f |\n", i+1, x.name, ms(x.p.took), x.p.load,
				x.p.routes, x.p.neigh, x.p.fdb, x.p.metric, x.p.passes, x.p.passSum)
		}
	}
	fmt.Fprintln(out)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
