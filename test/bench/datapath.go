package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/agent/plan"
	"weft.dev/weft/cni/cnitest"
	"weft.dev/weft/overlay"
	"weft.dev/weft/test/lab"
	"weft.dev/weft/test/nstest"
)

// The datapath benchmark measures single-stream TCP throughput (iperf3) from
// a pod on one node to a pod on another, against the same measurement
// between the two nodes themselves on their underlay, in the same session,
// alternating the two, and reports the ratio pod/underlay per mode.
//
// Each "node" is a network namespace; the two nodes of a topology share an
// underlay veth pair (made inside one node with the peer in the other). Pods
// are attached by the real weft CNI binary through libcni, and each node's
// datapath is programmed by overlay.Datapath from the same plan weft-agent
// computes: vxlan mode through agent/plan (device weft.vxlan, neighbour →
// FDB → onlink route), bgp mode as the plain route via the peer's node
// address that bgp mode installs for a learned prefix.
var (
	dpRounds      = flag.Int("datapath.rounds", 5, "datapath: alternating underlay/pod rounds")
	dpSeconds     = flag.Int("datapath.time", 5, "datapath: seconds per iperf3 run (after 1 s omitted warm-up)")
	dpUnderlayMTU = flag.Int("datapath.mtu", 1500, "datapath: underlay MTU")
	dpUnderlayGRO = flag.Bool("datapath.underlay-gro", false, "datapath: GRO on the underlay veth (off: the veth default; frames cross a veth already aggregated)")
	dpNice        = flag.Int("datapath.nice", -20, "datapath: nice value of the iperf3 processes (the machine may be shared)")
	dpVXLANGRO    = flag.Bool("datapath.vxlan-gro-ab", false, "datapath: also measure vxlan IPv4 with GRO off on weft.vxlan (toggled per run, same session)")
	dpCPU         = flag.String("datapath.cpu", "0", "datapath: also measure every path with client and server pinned to this CPU (taskset -c; empty: unpinned only)")
	dpKernel      = flag.Bool("datapath.kernel", true, "datapath: also measure pods made by hand with ip, without weft (the kernel's cost of weft's shape, and of a shape without the bridge)")
	dpPodGRO      = flag.String("datapath.pod-gro", "", "datapath: force GRO on both ends of the pod veths (on, off; empty: as the CNI plugin leaves them)")
)

const dpPort = 5201

// dpNode is one node of a topology and its pod.
type dpNode struct {
	name   string // node netns
	ip     netip.Addr
	cidrs  []netip.Prefix
	mac    net.HardwareAddr // VTEP MAC
	pod    string           // pod netns
	podIPs []netip.Addr
}

// dpTopo is two nodes on one underlay, in one mode.
type dpTopo struct {
	mode   string // "vxlan" or "bgp"
	podMTU int
	nodes  [2]*dpNode
}

// dpPath is one measured path: underlay or pod traffic of a family.
type dpPath struct {
	topo *dpTopo
	kind string // "underlay", "pod IPv4", "pod IPv6"
	src  string // client netns
	srv  string // server netns
	dst  netip.Addr
	// prep runs before each measurement of the path (device settings of a
	// variant); nil: none.
	prep func() error
	// cpu pins the client and the server (taskset -c); empty: unpinned.
	cpu string
}

// port is the iperf3 server port of the path's placement: one server per
// namespace and placement.
func (p *dpPath) port() int {
	if p.cpu != "" {
		return dpPort + 1
	}
	return dpPort
}

// command runs argv in ns at the benchmark's nice level, pinned to the
// path's CPU if it has one.
func (p *dpPath) command(ctx context.Context, ns string, argv ...string) *exec.Cmd {
	args := []string{"netns", "exec", ns, "nice", "-n", fmt.Sprint(*dpNice)}
	if p.cpu != "" {
		args = append(args, "taskset", "-c", p.cpu)
	}
	return exec.CommandContext(ctx, "ip", append(args, argv...)...)
}

// dpRun is one iperf3 result.
type dpRun struct {
	gbps    float64
	retrans int
}

// dpEnv owns everything the benchmark makes, so it can all be removed also
// on error or interrupt.
type dpEnv struct {
	tmp     string
	netnses []string
	servers []*exec.Cmd
}

func (e *dpEnv) close() {
	for _, s := range e.servers {
		_ = s.Process.Kill()
		_ = s.Wait()
	}
	for _, n := range slices.Backward(e.netnses) {
		// Anything still running in a namespace (an iperf3 the context
		// did not reach) goes with it.
		if out, err := exec.Command("ip", "netns", "pids", n).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				_ = exec.Command("kill", "-9", pid).Run()
			}
		}
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
}

func (e *dpEnv) mkns(tag string) (string, error) {
	name := nstest.Unique(tag)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	e.netnses = append(e.netnses, name)
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Errorf("lo up in %s: %v: %s", name, err, out)
	}
	return name, nil
}

func runDatapath(ctx context.Context, out *strings.Builder) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return fmt.Errorf("iperf3 missing (apt-get install iperf3): %w", err)
	}
	tmp, err := os.MkdirTemp("", "weft-bench-dp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	env := &dpEnv{tmp: tmp}
	defer env.close()
	pluginDir, err := weftBinary(tmp)
	if err != nil {
		return err
	}

	loadBefore := loadavg()
	var topos []*dpTopo
	for i, mode := range []string{"vxlan", "bgp"} {
		t, err := env.topology(ctx, mode, i, pluginDir)
		if err != nil {
			return fmt.Errorf("%s topology: %w", mode, err)
		}
		topos = append(topos, t)
	}
	var paths []dpPath
	for _, t := range topos {
		a, b := t.nodes[0], t.nodes[1]
		paths = append(paths, dpPath{topo: t, kind: "underlay", src: a.name, srv: b.name, dst: b.ip})
		for _, ip := range b.podIPs {
			p := dpPath{topo: t, kind: "pod " + famName(ip), src: a.pod, srv: b.pod, dst: ip}
			if *dpVXLANGRO && t.mode == "vxlan" {
				p.prep = func() error { return t.vxlanGRO(true) }
				if ip.Is4() {
					off := p
					off.kind += ", weft.vxlan GRO off"
					off.prep = func() error { return t.vxlanGRO(false) }
					paths = append(paths, off)
				}
			}
			paths = append(paths, p)
		}
		if *dpKernel {
			kps, err := env.kernelPaths(ctx, t, slices.Index(topos, t))
			if err != nil {
				return fmt.Errorf("%s kernel-only paths: %w", t.mode, err)
			}
			paths = append(paths, kps...)
		}
	}
	if *dpCPU != "" {
		// The same paths with client and server on one CPU: both iperf3
		// processes and the kernel's work for each packet share it, so
		// the ratio is the datapath's cost per byte, whatever the
		// scheduler would do with two CPUs between runs.
		for _, p := range slices.Clone(paths) {
			p.cpu = *dpCPU
			p.kind += ", one CPU"
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		if err := env.ready(ctx, p); err != nil {
			return err
		}
	}

	// Rounds: per topology its underlay run and its pod runs back to back,
	// the order flipped every round, so a pod figure is always compared
	// with an underlay figure taken seconds apart on the same machine.
	runs := map[*dpPath][]dpRun{}
	for r := 0; r < *dpRounds; r++ {
		for _, t := range topos {
			var mine []*dpPath
			for i := range paths {
				if paths[i].topo == t {
					mine = append(mine, &paths[i])
				}
			}
			if r%2 == 1 {
				slices.Reverse(mine)
			}
			for _, p := range mine {
				if p.prep != nil {
					if err := p.prep(); err != nil {
						return fmt.Errorf("%s %s: %w", t.mode, p.kind, err)
					}
				}
				res, err := iperf(ctx, p)
				if err != nil {
					return fmt.Errorf("round %d, %s %s: %w", r+1, t.mode, p.kind, err)
				}
				fmt.Fprintf(os.Stderr, "  round %d %s %s: %.2f Gbit/s\n", r+1, t.mode, p.kind, res.gbps)
				runs[p] = append(runs[p], res)
			}
		}
	}
	loadAfter := loadavg()

	fmt.Fprintf(out, "## Datapath throughput\n\n")
	fmt.Fprintf(out, "iperf3 single-stream TCP (`-t %d -O 1`), pod → pod across two node namespaces, against node → node on the same underlay "+
		"(a veth pair, MTU %d, GRO %s), %d alternating rounds in one session. Pods attached by the weft CNI binary through libcni; "+
		"datapath programmed by overlay.Datapath (vxlan: agent/plan's device, neighbour, FDB and onlink route; bgp: route via the peer's node address). "+
		"Load average (1/5/15 min) before: %s, after: %s.\n\n",
		*dpSeconds, *dpUnderlayMTU, onOff(*dpUnderlayGRO), *dpRounds, loadBefore, loadAfter)
	fmt.Fprintf(out, "| mode | traffic | pod MTU | Gbit/s | underlay Gbit/s | path/underlay median (min–max) | target |\n|---|---|---|---|---|---|---|\n")
	for _, t := range topos {
		underlayOf := func(p *dpPath) *dpPath {
			for i := range paths {
				if u := &paths[i]; u.topo == t && u.cpu == p.cpu && strings.HasPrefix(u.kind, "underlay") {
					return u
				}
			}
			return nil
		}
		for i := range paths {
			p := &paths[i]
			under := underlayOf(p)
			if p.topo != t || p == under {
				continue
			}
			var ratios []float64
			for j, run := range runs[p] {
				ratios = append(ratios, run.gbps/runs[under][j].gbps)
			}
			target := map[string]string{"vxlan": "≥ 0.90", "bgp": "≥ 0.97"}[t.mode]
			fmt.Fprintf(out, "| %s | %s | %d | %s | %s | %.2f (%.2f–%.2f) | %s |\n", t.mode, p.kind, t.podMTU,
				gbpsStat(runs[p]), gbpsStat(runs[under]), median(ratios), slices.Min(ratios), slices.Max(ratios), target)
		}
	}
	if *dpKernel {
		// weft's pod path against the kernel-only path of the same shape,
		// per round, per placement.
		fmt.Fprintf(out, "\n| mode | placement | weft pod IPv4 / kernel only, same shape: median (min–max) |\n|---|---|---|\n")
		for i := range paths {
			w := &paths[i]
			if !strings.HasPrefix(w.kind, "pod IPv4") || strings.Contains(w.kind, "GRO") {
				continue
			}
			k := slices.IndexFunc(paths, func(p dpPath) bool {
				return p.topo == w.topo && p.cpu == w.cpu && strings.HasPrefix(p.kind, kernelShapes[0].kind)
			})
			var ratios []float64
			for j, run := range runs[w] {
				ratios = append(ratios, run.gbps/runs[&paths[k]][j].gbps)
			}
			placement := "unpinned"
			if w.cpu != "" {
				placement = "one CPU"
			}
			fmt.Fprintf(out, "| %s | %s | %.2f (%.2f–%.2f) |\n", w.topo.mode, placement, median(ratios), slices.Min(ratios), slices.Max(ratios))
		}
	}
	fmt.Fprintf(out, "\nGbit/s: median (min–max) of the rounds; the ratio is taken per round (path run / underlay run of the same round). Per-round figures:\n\n")
	for i := range paths {
		p := &paths[i]
		var s []string
		for _, r := range runs[p] {
			s = append(s, fmt.Sprintf("%.2f", r.gbps))
		}
		fmt.Fprintf(out, "- %s %s: %s Gbit/s\n", p.topo.mode, p.kind, strings.Join(s, ", "))
	}
	fmt.Fprintln(out)
	return nil
}

// topology builds two nodes (underlay 192.168.(200+idx).0/24, pod CIDRs
// 10.(200+idx).N.0/24 and, in vxlan mode, fd00:(200+idx):0:N::/64), the
// datapath of mode on each, and one pod per node.
func (e *dpEnv) topology(ctx context.Context, mode string, idx int, pluginDir string) (*dpTopo, error) {
	t := &dpTopo{mode: mode}
	for i := range t.nodes {
		n := &dpNode{
			ip:    netip.AddrFrom4([4]byte{192, 168, byte(200 + idx), byte(1 + i)}),
			cidrs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + idx), byte(1 + i), 0}), 24)},
			mac:   net.HardwareAddr{0x0a, 0x57, 0xef, byte(idx), 0, byte(1 + i)},
		}
		if mode == "vxlan" {
			n.cidrs = append(n.cidrs, netip.MustParsePrefix(fmt.Sprintf("fd00:%d:0:%d::/64", 200+idx, 1+i)))
		}
		var err error
		if n.name, err = e.mkns("dpn"); err != nil {
			return nil, err
		}
		if n.pod, err = e.mkns("dpp"); err != nil {
			return nil, err
		}
		t.nodes[i] = n
	}
	if err := underlay(t.nodes[0], t.nodes[1]); err != nil {
		return nil, err
	}
	for i, self := range t.nodes {
		peer := t.nodes[1-i]
		want, mtu, err := desired(mode, self, peer)
		if err != nil {
			return nil, err
		}
		t.podMTU = mtu
		if err := program(ctx, self.name, want); err != nil {
			return nil, err
		}
	}
	for _, n := range t.nodes {
		if err := e.attach(ctx, n, t.podMTU, pluginDir); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// vxlanGRO sets GRO on both nodes' VXLAN devices.
func (t *dpTopo) vxlanGRO(on bool) error {
	for _, n := range t.nodes {
		if err := cnitest.Do("/run/netns/"+n.name, func() error { return setGRO(overlay.VXLANDevice, on) }); err != nil {
			return fmt.Errorf("GRO on %s in %s: %w", overlay.VXLANDevice, n.name, err)
		}
	}
	return nil
}

// underlay joins the nodes with a veth pair named eth0 on both sides, made
// inside a with its peer placed in b.
func underlay(a, b *dpNode) error {
	bns, err := netns.GetFromName(b.name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", b.name, err)
	}
	defer bns.Close()
	err = lab.WithHandle(a.name, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: *dpUnderlayMTU},
			PeerName: "eth0", PeerNamespace: netlink.NsFd(int(bns))})
	})
	if err != nil {
		return fmt.Errorf("underlay veth %s–%s: %w", a.name, b.name, err)
	}
	for _, n := range []*dpNode{a, b} {
		err := lab.WithHandle(n.name, func(h *netlink.Handle) error {
			l, err := h.LinkByName("eth0")
			if err != nil {
				return err
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}
			if err := h.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("add %v: %w", n.ip, err)
			}
			return h.LinkSetUp(l)
		})
		if err != nil {
			return fmt.Errorf("underlay of %s: %w", n.name, err)
		}
		if err := cnitest.Do("/run/netns/"+n.name, func() error { return setGRO("eth0", *dpUnderlayGRO) }); err != nil {
			return fmt.Errorf("underlay GRO in %s: %w", n.name, err)
		}
	}
	return nil
}

// desired is the datapath weft-agent programs on self for one peer, and
// the pod MTU it writes into the conflist.
func desired(mode string, self, peer *dpNode) (overlay.Desired, int, error) {
	switch mode {
	case "vxlan":
		cluster := []netip.Prefix{netip.PrefixFrom(self.cidrs[0].Addr(), 16).Masked()}
		if len(self.cidrs) > 1 {
			cluster = append(cluster, netip.PrefixFrom(self.cidrs[1].Addr(), 48).Masked())
		}
		c := config.Config{Mode: config.VXLAN, ClusterCIDRs: cluster, VXLAN: config.VXLANConfig{VNI: 1, Port: overlay.DefaultVXLANPort}}
		me := plan.Self{
			Node:        plan.Node{Name: self.name, IP: self.ip, PodCIDRs: self.cidrs, VTEPMAC: self.mac},
			Underlay:    netip.PrefixFrom(self.ip, 24).Masked(),
			UnderlayMTU: *dpUnderlayMTU,
		}
		res, err := plan.Plan(c, me, []plan.Node{{Name: peer.name, IP: peer.ip, PodCIDRs: peer.cidrs, VTEPMAC: peer.mac}})
		if err != nil {
			return overlay.Desired{}, 0, err
		}
		for _, p := range res.Peers {
			if !p.Programmed {
				return overlay.Desired{}, 0, fmt.Errorf("peer %s not programmed: %s", p.Name, p.Pending)
			}
		}
		return res.Desired, res.PodMTU, nil
	case "bgp":
		mtu, err := overlay.PodMTU(*dpUnderlayMTU, self.ip, false)
		if err != nil {
			return overlay.Desired{}, 0, err
		}
		var want overlay.Desired
		for _, p := range peer.cidrs {
			want.Routes = append(want.Routes, overlay.Route{Dst: p, NextHops: []overlay.NextHop{{Gateway: peer.ip}}})
		}
		return want, mtu, nil
	}
	return overlay.Desired{}, 0, fmt.Errorf("mode %q: want vxlan or bgp", mode)
}

func program(ctx context.Context, nsName string, want overlay.Desired) error {
	ns, err := netns.GetFromName(nsName)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsName, err)
	}
	defer ns.Close()
	k, err := overlay.NewNetlink(ns)
	if err != nil {
		return err
	}
	defer k.Close()
	if err := overlay.New(k, 0, nil).Reconcile(ctx, want); err != nil {
		return fmt.Errorf("reconcile datapath in %s: %w", nsName, err)
	}
	return nil
}

// attach adds n's pod through libcni with the conflist weft-agent writes.
func (e *dpEnv) attach(ctx context.Context, n *dpNode, mtu int, pluginDir string) error {
	var cidrs []string
	for _, p := range n.cidrs {
		cidrs = append(cidrs, p.String())
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "weft", "plugins": []any{map[string]any{
		"type": "weft", "podCIDRs": cidrs, "mtu": mtu, "dataDir": filepath.Join(e.tmp, n.name, "ipam"),
	}}})
	if err != nil {
		return err
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return err
	}
	c := cnitest.NewConfig("/run/netns/"+n.name, filepath.Join(e.tmp, n.name, "cache"), pluginDir)
	r, err := c.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "bench-" + n.pod, NetNS: "/run/netns/" + n.pod, IfName: "eth0"})
	if err != nil {
		return fmt.Errorf("CNI ADD of %s on %s: %w", n.pod, n.name, err)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return err
	}
	for _, ip := range res.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		n.podIPs = append(n.podIPs, a.Unmap())
	}
	if *dpPodGRO == "" {
		return nil
	}
	on := *dpPodGRO == "on"
	for _, itf := range res.Interfaces {
		ns := n.name
		if itf.Sandbox != "" {
			ns = n.pod
		}
		if err := cnitest.Do("/run/netns/"+ns, func() error { return setGRO(itf.Name, on) }); err != nil {
			return fmt.Errorf("-datapath.pod-gro: %w", err)
		}
	}
	return nil
}

// ready starts p's iperf3 server (once per server namespace) and checks the
// path with a ping.
func (e *dpEnv) ready(ctx context.Context, p dpPath) error {
	port := fmt.Sprint(p.port())
	if !slices.ContainsFunc(e.servers, func(c *exec.Cmd) bool { return slices.Contains(c.Args, p.srv) && slices.Contains(c.Args, port) }) {
		srv := p.command(context.Background(), p.srv, "iperf3", "-s", "-p", port)
		if err := srv.Start(); err != nil {
			return fmt.Errorf("iperf3 server in %s: %w", p.srv, err)
		}
		e.servers = append(e.servers, srv)
		if err := waitListen(ctx, p.srv, p.port()); err != nil {
			return err
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.src, "ping", "-c", "1", "-w", "5", p.dst.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: ping %v from %s: %v: %s", p.topo.mode, p.kind, p.dst, p.src, err, out)
	}
	return nil
}

func waitListen(ctx context.Context, nsName string, port int) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", nsName, "ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("iperf3 server in %s: not listening on %d after 10s", nsName, port)
		case <-tick.C:
		}
	}
}

func iperf(ctx context.Context, p *dpPath) (dpRun, error) {
	cmd := p.command(ctx, p.src, "iperf3", "-c", p.dst.String(), "-p", fmt.Sprint(p.port()),
		"-t", fmt.Sprint(*dpSeconds), "-O", "1", "-J")
	b, err := cmd.Output()
	if ctx.Err() != nil {
		return dpRun{}, ctx.Err() // interrupted: iperf3 was killed
	}
	var res struct {
		Error string `json:"error"`
		End   struct {
			Received struct {
				BPS float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(b, &res); jerr != nil {
		return dpRun{}, errors.Join(err, fmt.Errorf("iperf3 output: %w", jerr))
	}
	if res.Error != "" || err != nil {
		return dpRun{}, fmt.Errorf("iperf3 to %v: %v %s", p.dst, err, res.Error)
	}
	return dpRun{gbps: res.End.Received.BPS / 1e9, retrans: res.End.Sent.Retransmits}, nil
}

func famName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func gbpsStat(runs []dpRun) string {
	var g []float64
	for _, r := range runs {
		g = append(g, r.gbps)
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", median(g), slices.Min(g), slices.Max(g))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}
