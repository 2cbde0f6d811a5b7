package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"weft.dev/weft/overlay"
	"weft.dev/weft/test/lab"
	"weft.dev/weft/test/nstest"
)

// The bgp benchmark measures how fast one real weft-agent in bgp mode turns
// routes a router announces into kernel routes. The environment is the
// agent benchmark's (control plane and node namespaces joined by a veth
// underlay, bgpRoutes peer Nodes registered by the admin client with
// spec.podCIDRs and an InternalIP in the underlay subnet, no agent for
// them); FRR (zebra, bgpd, staticd) runs in the control-plane namespace as
// the node's only BGP peer (iBGP, AS 64512, nodeMesh off), so weft's
// import policy checks every pod CIDR's next hop against its Node's
// InternalIP.
//
// Each round loads bgpRoutes static routes (peer i's pod CIDR via peer i's
// InternalIP) into FRR in one vtysh batch; `redistribute static` announces
// them with those next hops. The clock runs from the start of the batch
// until the node namespace holds bgpRoutes routes of weft's protocol
// (netlink dump every agPoll), then from the start of the batch removing
// them until none is left.
var (
	bgpRoutes = flag.Int("bgp.routes", 1000, "bgp: simulated Nodes whose pod CIDRs FRR announces")
	bgpRounds = flag.Int("bgp.rounds", 5, "bgp: announce/withdraw rounds measured")
)

// Target of the issue "BGP mode": 1000 announced pod CIDRs in the kernel.
const bgpTarget = time.Second

const bgpASN = 64512

// bgpRound is one announce or withdraw.
type bgpRound struct {
	took  time.Duration // from the batch's start until the kernel count was reached
	batch time.Duration // the vtysh batch alone
	load  float64
}

// frrd is one FRR instance (its own pathspace) in a namespace.
type frrd struct {
	ns, ps, run string
}

func runBGP(ctx context.Context, out *strings.Builder) error {
	if err := requireK8s(); err != nil {
		return err
	}
	for _, b := range []string{"/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/lib/frr/staticd"} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("FRR missing (install it with test/deps.sh): %w", err)
		}
	}
	e, err := startAgEnv(ctx, "bgp", *bgpRoutes)
	if err != nil {
		return err
	}
	defer e.close()
	doc := fmt.Sprintf("mode: bgp\nclusterCIDRs:\n  - %s\nbgp:\n  asn: %d\n  nodeMesh: false\n  peers:\n    - address: %s\n      connectRetryTime: 1s\n",
		agCluster, bgpASN, agCPAddr)
	if err := e.setConfig(ctx, doc); err != nil {
		return err
	}

	f := &frrd{ns: e.cpNS, ps: "wb_" + nstest.Unique("")}
	defer f.stop()
	if err := f.start(ctx); err != nil {
		return err
	}
	add, del := filepath.Join(f.run, "add.conf"), filepath.Join(f.run, "del.conf")
	var a, d strings.Builder
	for i := range *bgpRoutes {
		fmt.Fprintf(&a, "ip route %s %s\n", agPodCIDR(i), agPeerIP(i))
		fmt.Fprintf(&d, "no ip route %s %s\n", agPodCIDR(i), agPeerIP(i))
	}
	for name, s := range map[string]string{add: a.String(), del: d.String()} {
		if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
			return err
		}
	}

	if err := e.startAgent(); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "  waiting for the BGP session")
	if err := f.waitEstablished(ctx, agNodeAddr.String(), time.Minute); err != nil {
		return fmt.Errorf("%w (agent log: %s)", err, e.agentLog)
	}

	redist := func(on bool) func() error {
		return func() error { return f.redistribute(ctx, on) }
	}
	if err := f.batch(ctx, add); err != nil {
		return err
	}
	var res bgpResults
	for r := range *bgpRounds {
		// The static routes are in FRR; switching redistribution on
		// announces all of them at once.
		steps := []struct {
			into *[]bgpRound
			want int
			act  func() error
		}{
			{&res.on, *bgpRoutes, redist(true)},
			{&res.off, 0, redist(false)},
			{nil, 0, func() error { return f.batch(ctx, del) }},
			{nil, 0, redist(true)},
			{&res.add, *bgpRoutes, func() error { return f.batch(ctx, add) }},
			{&res.del, 0, func() error { return f.batch(ctx, del) }},
			{nil, 0, redist(false)},
			{nil, 0, func() error { return f.batch(ctx, add) }},
		}
		var line []string
		for _, s := range steps {
			p, err := e.bgpMeasure(ctx, s.want, s.act)
			if err != nil {
				return fmt.Errorf("round %d: %w", r+1, err)
			}
			if s.into != nil {
				*s.into = append(*s.into, p)
				line = append(line, p.took.Round(time.Millisecond).String())
			}
		}
		fmt.Fprintf(os.Stderr, "  round %d: redistribute on/off %s, batch add/del %s, load %.1f\n", r+1,
			strings.Join(line[:2], "/"), strings.Join(line[2:], "/"), loadAvg())
	}
	bgpReport(out, res)
	return nil
}

// bgpResults are the measured steps of every round.
type bgpResults struct {
	on, off  []bgpRound // redistribute static on/off with the routes in FRR
	add, del []bgpRound // the routes added/removed in one batch, redistribution on
}

// bgpMeasure runs act and waits until the node namespace holds want routes
// of weft's protocol.
func (e *agEnv) bgpMeasure(ctx context.Context, want int, act func() error) (bgpRound, error) {
	var p bgpRound
	t0 := time.Now()
	if err := act(); err != nil {
		return p, err
	}
	p.batch = time.Since(t0)
	var err error
	if p.took, err = e.waitRoutes(ctx, want, t0); err != nil {
		return p, err
	}
	p.load = loadAvg()
	return p, nil
}

// start runs zebra, bgpd and staticd in f.ns, peering (iBGP) with the node
// and redistributing its static routes.
func (f *frrd) start(ctx context.Context) error {
	f.run = filepath.Join("/var/run/frr", f.ps)
	if err := os.MkdirAll(f.run, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", f.run, err)
	}
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("user frr (install FRR with test/deps.sh): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(f.run, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", f.run, err)
	}
	conf := fmt.Sprintf(`frr defaults datacenter
hostname bench-frr
!
router bgp %[1]d
 bgp router-id %[2]s
 neighbor %[3]s remote-as %[1]d
 neighbor %[3]s timers connect 1
 address-family ipv4 unicast
  redistribute static
 exit-address-family
!
`, bgpASN, agCPAddr, agNodeAddr)
	cf := filepath.Join(f.run, "frr.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return err
	}
	for _, d := range []string{"zebra", "bgpd", "staticd"} {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", f.ns, filepath.Join("/usr/lib/frr", d),
			"-d", "-N", f.ps, "-f", cf, "-i", filepath.Join(f.run, d+".pid")).CombinedOutput()
		if err != nil {
			return fmt.Errorf("start %s in %s: %w: %s", d, f.ns, err, out)
		}
	}
	return nil
}

// stop kills the daemons and removes the pathspace's directory.
func (f *frrd) stop() {
	if f.run == "" {
		return
	}
	for _, d := range []string{"staticd", "bgpd", "zebra"} {
		b, err := os.ReadFile(filepath.Join(f.run, d+".pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = os.RemoveAll(f.run)
}

func (f *frrd) vtysh(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", f.ns, "vtysh", "-N", f.ps}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("vtysh %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// redistribute switches the announcement of FRR's static routes on or off.
func (f *frrd) redistribute(ctx context.Context, on bool) error {
	cmd := "redistribute static"
	if !on {
		cmd = "no " + cmd
	}
	_, err := f.vtysh(ctx, "-c", "configure terminal", "-c", fmt.Sprintf("router bgp %d", bgpASN), "-c", "address-family ipv4 unicast", "-c", cmd)
	return err
}

// batch applies a file of configuration commands in one vtysh call.
func (f *frrd) batch(ctx context.Context, file string) error {
	_, err := f.vtysh(ctx, "-f", file)
	return err
}

func (f *frrd) waitEstablished(ctx context.Context, peer string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		out, err := f.vtysh(ctx, "-c", "show bgp neighbors "+peer)
		if err == nil && strings.Contains(string(out), "BGP state = Established") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("FRR session with %s not established after %s: %s", peer, limit, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func bgpReport(out *strings.Builder, res bgpResults) {
	took := func(rs []bgpRound, f func(bgpRound) time.Duration) []time.Duration {
		var d []time.Duration
		for _, r := range rs {
			d = append(d, f(r))
		}
		return d
	}
	span := func(d []time.Duration) string {
		return fmt.Sprintf("%.0f (%.0f–%.0f)", ms(quantile(d, 0.5)), ms(slices.Min(d)), ms(slices.Max(d)))
	}
	n := *bgpRoutes
	fmt.Fprintf(out, "## BGP convergence\n\n")
	fmt.Fprintf(out, "One weft-agent (the built binary) in bgp mode in a node namespace, against a real kube-apiserver holding %d simulated Nodes (spec.podCIDRs /24 in %s, an InternalIP in the underlay subnet; no agent runs for them). FRR (zebra, bgpd, staticd) in the control-plane namespace is the node's only BGP peer (iBGP AS %d, nodeMesh off), so weft's import policy checks each pod CIDR's next hop against its Node's InternalIP. FRR holds %d static routes (each simulated Node's pod CIDR via its InternalIP) and announces them by `redistribute static`. \"In the kernel\" is the count of routes with protocol %d in the node namespace, polled by netlink dump every %s. Each round: (1) with the static routes loaded, `redistribute static` switched on (one vtysh call) until all %d are in, then off until none is left; (2) with redistribution on, the %d static routes added in one `vtysh -f` batch until all are in, then removed the same way. %d rounds; times in milliseconds from the start of the vtysh call, median (min–max).\n\n",
		n, agCluster, bgpASN, n, overlay.DefaultRouteProtocol, *agPoll, n, n, len(res.on))
	fmt.Fprintf(out, "| measure | target | weft | met |\n|---|---|---|---|\n")
	on := took(res.on, func(r bgpRound) time.Duration { return r.took })
	met := "**no**"
	if quantile(on, 0.5) <= bgpTarget {
		met = "yes"
	}
	fmt.Fprintf(out, "| (b) FRR announces %d pod CIDRs at once (redistribute on) → all in the node's kernel | ≤ %d ms | %s | %s |\n", n, bgpTarget.Milliseconds(), span(on), met)
	fmt.Fprintf(out, "| (b′) FRR withdraws them at once (redistribute off) → none left | — | %s | — |\n", span(took(res.off, func(r bgpRound) time.Duration { return r.took })))
	fmt.Fprintf(out, "| (b″) %d static routes added to FRR in one batch → all in the node's kernel | — | %s | — |\n", n, span(took(res.add, func(r bgpRound) time.Duration { return r.took })))
	fmt.Fprintf(out, "| (b″′) the same, FRR's vtysh batch alone | — | %s | — |\n", span(took(res.add, func(r bgpRound) time.Duration { return r.batch })))
	fmt.Fprintf(out, "| (b⁗) the %d removed in one batch → none left | — | %s | — |\n\n", n, span(took(res.del, func(r bgpRound) time.Duration { return r.took })))
	fmt.Fprintf(out, "| round | on ms | off ms | batch add ms | batch del ms | load (1 min) |\n|---|---|---|---|---|---|\n")
	for i := range res.on {
		fmt.Fprintf(out, "| %d | %.0f | %.0f | %.0f | %.0f | %.1f |\n", i+1, ms(res.on[i].took), ms(res.off[i].took), ms(res.add[i].took), ms(res.del[i].took), res.del[i].load)
	}
	fmt.Fprintln(out)
}

var bgpMeshRounds = flag.Int("bgpmesh.rounds", 5, "bgpmesh: rejoins of node3 measured")

// runBGPMesh measures the node mesh with real agents: the lab's
// vxlan-3node topology (three nodes, dual-stack) switched to bgp mode with
// the full iBGP mesh and graceful restart off. Each round kills node3's
// agent (SIGKILL, so its sessions drop and the other nodes withdraw its pod
// CIDRs), waits until node1 and node2 hold none of node3's pod CIDR routes,
// then starts node3's agent again and times from its exec until both hold
// a route of weft's protocol for each of node3's pod CIDRs (IPv4 and
// IPv6), polled by netlink dump every agPoll.
func runBGPMesh(ctx context.Context, out *strings.Builder) error {
	tmp, err := os.MkdirTemp("", "weft-bench-bgpmesh")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, c := range []string{"weft", "weft-agent"} {
		if o, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, c), "weft.dev/weft/cmd/"+c).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v: %s", c, err, o)
		}
	}
	topo, err := filepath.Abs(filepath.Join("test", "topologies", "vxlan-3node.clab.yml"))
	if err != nil {
		return err
	}
	name := "bbm" + strings.TrimPrefix(nstest.Unique(""), nstest.Prefix)
	opts := lab.Options{BinDir: tmp, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	fmt.Fprintln(os.Stderr, "  bringing up lab", name, "(vxlan-3node)")
	l, err := opts.Up(ctx, topo, name)
	if err != nil {
		return err
	}
	defer func() {
		if err := opts.Down(name); err != nil {
			fmt.Fprintln(os.Stderr, "  lab down:", err)
		}
	}()
	if err := l.SetConfig(ctx, map[string]any{"mode": "bgp", "bgp": map[string]any{
		"nodeMesh": true, "gracefulRestart": map[string]any{"enabled": false},
	}}); err != nil {
		return err
	}
	const joiner = "node3"
	watchers := []string{"node1", "node2"}
	cidrs, err := l.WaitPodCIDRs(ctx, joiner, time.Minute)
	if err != nil {
		return err
	}
	hs := map[string]*netlink.Handle{}
	for _, n := range watchers {
		nsh, err := netns.GetFromName(l.NS(n))
		if err != nil {
			return fmt.Errorf("open netns of %s: %w", n, err)
		}
		h, err := netlink.NewHandleAt(nsh)
		nsh.Close()
		if err != nil {
			return fmt.Errorf("netlink in %s: %w", n, err)
		}
		defer h.Close()
		hs[n] = h
	}
	// present reports how many watchers hold a route of weft's protocol
	// for every one of the joiner's pod CIDRs, and how many hold none.
	present := func() (all, none int, err error) {
		for _, n := range watchers {
			have := 0
			for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
				rs, err := hs[n].RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(overlay.DefaultRouteProtocol)},
					netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
				if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
					return 0, 0, fmt.Errorf("list routes on %s: %w", n, err)
				}
				for _, r := range rs {
					for _, c := range cidrs {
						if r.Dst != nil && r.Dst.String() == c.Masked().String() {
							have++
						}
					}
				}
			}
			if have >= len(cidrs) {
				all++
			}
			if have == 0 {
				none++
			}
		}
		return all, none, nil
	}
	wait := func(what string, done func(all, none int) bool) error {
		tick := time.NewTicker(*agPoll)
		defer tick.Stop()
		deadline := time.After(2 * time.Minute)
		for {
			all, none, err := present()
			if err != nil {
				return err
			}
			if done(all, none) {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-deadline:
				return fmt.Errorf("%s: not after 2m (%d/%d watchers with every route, %d with none; logs in %s)", what, all, len(watchers), none, l.Dir)
			case <-tick.C:
			}
		}
	}
	fmt.Fprintln(os.Stderr, "  waiting for the mesh in bgp mode")
	if err := wait("node3's routes on node1 and node2", func(all, _ int) bool { return all == len(watchers) }); err != nil {
		return err
	}
	var joins, sessions []time.Duration
	var loads []float64
	for r := range *bgpMeshRounds {
		if err := l.AgentKill(joiner); err != nil {
			return err
		}
		if err := wait("node3's routes withdrawn", func(_, none int) bool { return none == len(watchers) }); err != nil {
			return err
		}
		t0 := time.Now()
		if err := l.AgentStart(ctx, joiner); err != nil {
			return err
		}
		if err := wait("node3's routes back", func(all, _ int) bool { return all == len(watchers) }); err != nil {
			return err
		}
		t1 := time.Now()
		joins = append(joins, t1.Sub(t0))
		loads = append(loads, loadAvg())
		// When did the watchers' sessions with node3 come up? Their agents
		// log it; the later one counts.
		var up time.Time
		for _, n := range watchers {
			at, err := lastLogTime(filepath.Join(l.NodeDir(n), "agent.log"), `msg="bgp session up"`, "name=node/"+joiner)
			if err != nil {
				return err
			}
			if at.After(up) {
				up = at
			}
		}
		if up.Before(t0) {
			return fmt.Errorf("round %d: no session with %s logged after its agent's start", r+1, joiner)
		}
		sessions = append(sessions, up.Sub(t0))
		fmt.Fprintf(os.Stderr, "  round %d: node3's %d pod CIDRs on node1 and node2 %s after its agent's exec (sessions up after %s), load %.1f\n",
			r+1, len(cidrs), joins[r].Round(time.Millisecond), sessions[r].Round(time.Millisecond), loads[r])
	}
	fmt.Fprintf(out, "## BGP node mesh convergence\n\n")
	fmt.Fprintf(out, "The lab's vxlan-3node topology (three nodes and the control plane on one bridge, dual-stack, the built weft-agent on each node against a real kube-apiserver) switched to bgp mode with the full iBGP mesh and graceful restart off. Each round kills node3's agent with SIGKILL (its sessions drop, node1 and node2 withdraw its pod CIDRs; the bench waits until neither holds any), then starts it again: the time runs from its exec until node1 and node2 both hold a route of weft's protocol (%d) for each of node3's %d pod CIDRs (IPv4 and IPv6), polled by netlink dump every %s. It includes the agent's start (client, informers, speaker), the sessions' setup and the UPDATEs. %d rounds; milliseconds.\n\n",
		overlay.DefaultRouteProtocol, len(cidrs), *agPoll, len(joins))
	fmt.Fprintf(out, "| measure | weft median (min–max) |\n|---|---|\n")
	span := func(d []time.Duration) string {
		return fmt.Sprintf("%.0f (%.0f–%.0f)", ms(quantile(d, 0.5)), ms(slices.Min(d)), ms(slices.Max(d)))
	}
	var after []time.Duration
	for i := range joins {
		after = append(after, joins[i]-sessions[i])
	}
	fmt.Fprintf(out, "| (a) node3's agent started → its pod CIDRs on node1 and node2 | %s |\n", span(joins))
	fmt.Fprintf(out, "| (a′) the same, until both sessions with node3 were up (node1's and node2's agent logs) | %s |\n", span(sessions))
	fmt.Fprintf(out, "| (a″) the later session up → the routes on both | %s |\n\n", span(after))
	fmt.Fprintf(out, "| round | ms | sessions up ms | load (1 min) |\n|---|---|---|---|\n")
	for i := range joins {
		fmt.Fprintf(out, "| %d | %.0f | %.0f | %.1f |\n", i+1, ms(joins[i]), ms(sessions[i]), loads[i])
	}
	fmt.Fprintln(out)
	return nil
}

// lastLogTime returns the time= of the last line of an agent's log that
// holds every one of subs.
func lastLogTime(path string, subs ...string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "time=") || slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(line, s) }) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return last, fmt.Errorf("%s: time %q: %w", path, ts, err)
		}
		last = t
	}
	return last, nil
}
