package bgpmode

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"weft.dev/weft/agent/config"
	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
	"weft.dev/weft/test/nstest"
	"weft.dev/weft/test/poll"
)

// The controller tests run three Controllers (nodes 10.99.0.1-3) and two
// plain speakers as outside routers (10.99.0.4-5) in one namespace. GoBGP
// dials from its own goroutines, which cannot be pinned into a namespace,
// so the test binary re-runs itself inside a fresh one.
const envLab = "WEFT_BGPMODE_LAB"

func TestControllersInNamespace(t *testing.T) {
	if os.Getenv(envLab) != "" {
		t.Skip("already inside the lab")
	}
	nstest.RequireRoot(t)
	ns := nstest.New(t, "bgm")
	var addrs []string
	for i := 1; i <= 5; i++ {
		addrs = append(addrs, fmt.Sprintf("10.99.0.%d/24", i), fmt.Sprintf("fd99::%d/64", i))
	}
	ns.MustAddLink(t, "lab0", "lab1", addrs...)
	ns.RunTests(t, "^TestLab", 5*time.Minute, envLab+"=ns")
}

func requireLab(t *testing.T) {
	t.Helper()
	if os.Getenv(envLab) != "ns" {
		t.Skip("runs inside the namespace made by TestControllersInNamespace (needs root)")
	}
}

func labLog(name string) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("WEFT_BGP_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", name)
}

func labNode(i int) Node {
	return Node{
		Name:     fmt.Sprintf("n%d", i),
		Addrs:    []netip.Addr{addr(fmt.Sprintf("10.99.0.%d", i)), addr(fmt.Sprintf("fd99::%d", i))},
		PodCIDRs: []netip.Prefix{pfx(fmt.Sprintf("10.244.%d.0/24", i)), pfx(fmt.Sprintf("fd00:244:0:%d::/64", i))},
	}
}

func labSelf(n Node) Self {
	// Only the node's own addresses as underlay: all lab addresses share
	// one subnet, which the routers' next hops live in too.
	return Self{Node: n}
}

// labController is a running Controller.
type labController struct {
	*Controller
	node Node
	stop func()
}

func startController(t *testing.T, n Node, opts Options) *labController {
	t.Helper()
	opts.NodeName = n.Name
	opts.ListenAddrs = []netip.Addr{n.Addrs[0]}
	opts.CallTimeout = 5 * time.Second
	c := New(opts, labLog(n.Name))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	lc := &labController{Controller: c, node: n}
	lc.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s Run: %v", n.Name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s Run did not return", n.Name)
			}
		})
	}
	t.Cleanup(lc.stop)
	return lc
}

// update feeds the controller the lab's nodes with cfg.
func (lc *labController) update(t *testing.T, cfg config.BGPConfig, nodes []Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := lc.Update(ctx, Input{Config: cfg, Self: labSelf(lc.node), Nodes: nodes}); err != nil {
		t.Fatalf("%s Update: %v", lc.node.Name, err)
	}
}

// keepUpdating calls update every 200 ms until the test ends, as the
// agent's worker would on informer events and resyncs.
func (lc *labController) keepUpdating(t *testing.T, cfg func() config.BGPConfig, nodes []Node) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			uctx, ucancel := context.WithTimeout(ctx, 15*time.Second)
			if err := lc.Update(uctx, Input{Config: cfg(), Self: labSelf(lc.node), Nodes: nodes}); err != nil && ctx.Err() == nil {
				t.Logf("%s Update: %v", lc.node.Name, err)
			}
			ucancel()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	poll.Until(t, timeout, 100*time.Millisecond, what, cond)
}

func (lc *labController) waitRoutes(t *testing.T, timeout time.Duration, want string) {
	t.Helper()
	eventually(t, timeout, lc.node.Name+" routes:\n"+want, func() (bool, string) {
		got := routeDump(lc.Routes())
		return got == want, got
	})
}

// router is an outside BGP router: a plain speaker announcing paths.
func startRouter(t *testing.T, a netip.Addr, peers []netip.Addr, paths []bgp.Path) *bgp.Speaker {
	t.Helper()
	sp := bgp.New(bgp.Config{RouterID: a, ListenPort: 179, ListenAddrs: []netip.Addr{a}, CallTimeout: 5 * time.Second}, labLog("router-"+a.String()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("router %s did not stop", a)
		}
	})
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if err := sp.SetPaths(cctx, paths); err != nil {
		t.Fatalf("router %s paths: %v", a, err)
	}
	var ps []bgp.Peer
	for _, p := range peers {
		ps = append(ps, bgp.Peer{Address: p, ASN: 64512, Passive: true, Description: "node"})
	}
	if err := sp.SetPeers(cctx, ps); err != nil {
		t.Fatalf("router %s peers: %v", a, err)
	}
	return sp
}

// TestLabMeshECMPAndHijacks: three nodes in a full mesh learn each other's
// pod CIDRs (both families) as routes via the owner's address; two outside
// routers offer the same prefix (one ECMP route); one of them tries to
// hijack (a node's CIDR via itself, a more-specific, a default route, a
// prefix outside the cluster) and none of it is installed, all counted;
// the other's max-prefix cap holds.
func TestLabMeshECMPAndHijacks(t *testing.T) {
	requireLab(t)
	nodes := []Node{labNode(1), labNode(2), labNode(3)}
	r4, r5 := addr("10.99.0.4"), addr("10.99.0.5")
	nodeAddrs := []netip.Addr{nodes[0].Addrs[0], nodes[1].Addrs[0], nodes[2].Addrs[0]}
	startRouter(t, r4, nodeAddrs, []bgp.Path{
		{Prefix: pfx("172.30.0.0/24"), NextHop: r4},
		{Prefix: pfx("10.244.2.0/24"), NextHop: r4},   // hijack: node 2's CIDR via the router
		{Prefix: pfx("10.244.3.128/25"), NextHop: r4}, // hijack: more-specific of node 3's
		{Prefix: pfx("0.0.0.0/0"), NextHop: r4},       // default route
		{Prefix: pfx("192.168.7.0/24"), NextHop: r4},  // outside the cluster
	})
	startRouter(t, r5, nodeAddrs, []bgp.Path{
		{Prefix: pfx("172.30.0.0/24"), NextHop: r5},
		{Prefix: pfx("172.30.1.0/24"), NextHop: r5}, // over r5's cap of 1
	})
	cfg := defaultCfg(func(c *config.BGPConfig) {
		c.ExternalRanges = []netip.Prefix{pfx("172.30.0.0/16")}
		c.Peers = []config.BGPPeer{{Address: r4, Port: 179}, {Address: r5, Port: 179, MaxPrefixes: 1}}
	})
	var ctrls []*labController
	for _, n := range nodes {
		lc := startController(t, n, Options{})
		lc.update(t, cfg, nodes)
		ctrls = append(ctrls, lc)
	}
	want := map[string]string{
		"n1": "10.244.2.0/24 via 10.99.0.2\n10.244.3.0/24 via 10.99.0.3\n172.30.0.0/24 via 10.99.0.4 via 10.99.0.5\n" +
			"fd00:244:0:2::/64 via fd99::2\nfd00:244:0:3::/64 via fd99::3\n",
		"n2": "10.244.1.0/24 via 10.99.0.1\n10.244.3.0/24 via 10.99.0.3\n172.30.0.0/24 via 10.99.0.4 via 10.99.0.5\n" +
			"fd00:244:0:1::/64 via fd99::1\nfd00:244:0:3::/64 via fd99::3\n",
		"n3": "10.244.1.0/24 via 10.99.0.1\n10.244.2.0/24 via 10.99.0.2\n172.30.0.0/24 via 10.99.0.4 via 10.99.0.5\n" +
			"fd00:244:0:1::/64 via fd99::1\nfd00:244:0:2::/64 via fd99::2\n",
	}
	for _, lc := range ctrls {
		lc.waitRoutes(t, 40*time.Second, want[lc.node.Name])
	}
	// Changed fired for the new routes.
	select {
	case <-ctrls[0].Changed():
	default:
		t.Error("n1: Changed did not fire after routes were learned")
	}

	// n1's status: four established peers, the hijacks counted by reason.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st Status
	eventually(t, 20*time.Second, "n1 status with hijacks counted", func() (bool, string) {
		var err error
		st, err = ctrls[0].Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		r := st.RejectedByReason
		return r[bgp.BadNextHop] == 1 && r[bgp.MoreSpecific] == 1 && r[bgp.DefaultRoute] == 1 &&
			r[bgp.OutsideCluster] == 1 && r[bgp.MaxPrefixReason] == 1, fmt.Sprintf("%+v", st)
	})
	up := map[string]bool{}
	for _, p := range st.Peers {
		up[p.Name] = p.Up
		if p.Address == r4 && (p.Rejected[bgp.DefaultRoute] != 1 || p.Installed != 1) {
			t.Errorf("router 4 status %+v: want 1 default route rejected, 1 route installed", p)
		}
		if p.Address == addr("10.99.0.2") && p.Installed != 2 {
			t.Errorf("node 2 status %+v: want 2 routes installed", p)
		}
	}
	for _, name := range []string{"node/n2", "node/n3", "peer/10.99.0.4", "peer/10.99.0.5"} {
		if !up[name] {
			t.Errorf("n1: peer %s not up in status %+v", name, st.Peers)
		}
	}
	if st.ASN != 64512 || st.RouterID != addr("10.99.0.1") || !st.Running {
		t.Errorf("n1 status header %+v", st)
	}

	// Node 3 leaves the cluster: the others stop accepting its CIDRs even
	// while its speaker still announces them.
	two := nodes[:2]
	for _, lc := range ctrls[:2] {
		lc.update(t, cfg, two)
	}
	ctrls[0].waitRoutes(t, 20*time.Second,
		"10.244.2.0/24 via 10.99.0.2\n172.30.0.0/24 via 10.99.0.4 via 10.99.0.5\nfd00:244:0:2::/64 via fd99::2\n")
}

// TestLabRestartKeepsRoutes: a node's controller restarts with its kernel
// routes as state. Routes() holds them from the first moment (nothing is
// removed while the sessions come back), then follows the learned table;
// and a change of the AS number restarts the speaker inside a running
// controller without dropping routes.
func TestLabRestartKeepsRoutes(t *testing.T) {
	requireLab(t)
	nodes := []Node{labNode(1), labNode(2)}
	cfg := defaultCfg(nil)
	var mu sync.Mutex
	cfgNow := func() config.BGPConfig { mu.Lock(); defer mu.Unlock(); return cfg }
	n2 := startController(t, nodes[1], Options{})
	n2.keepUpdating(t, cfgNow, nodes)
	n1 := startController(t, nodes[0], Options{})
	n1.update(t, cfg, nodes)
	const want = "10.244.2.0/24 via 10.99.0.2\nfd00:244:0:2::/64 via fd99::2\n"
	n1.waitRoutes(t, 40*time.Second, want)
	routes := n1.Routes()
	n1.stop()

	// Restart with state, plus a stale route of a node gone meanwhile.
	retained := append(routes, overlay.Route{Dst: pfx("10.244.9.0/24"), NextHops: []overlay.NextHop{{Gateway: addr("10.99.0.9"), Dev: "lab0"}}})
	n1 = startController(t, nodes[0], Options{RestartedWithState: true, Retained: retained})
	if got := routeDump(n1.Routes()); got != "10.244.2.0/24 via 10.99.0.2\n10.244.9.0/24 via 10.99.0.9\nfd00:244:0:2::/64 via fd99::2\n" {
		t.Fatalf("right after restart, routes:\n%s", got)
	}
	// Watch that the peer's routes never leave Routes() meanwhile.
	stopWatch := make(chan struct{})
	lost := make(chan string, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case <-tick.C:
				if got := routeDump(n1.Routes()); !strings.Contains(got, "10.244.2.0/24 via 10.99.0.2\n") {
					select {
					case lost <- got:
					default:
					}
				}
			}
		}
	}()
	n1.update(t, cfg, nodes)
	// After node 2's End-of-RIB the retained route of the gone node is swept.
	n1.waitRoutes(t, 40*time.Second, want)

	// A new AS number (cluster-wide) restarts both speakers in place.
	mu.Lock()
	cfg.ASN = 64600
	mu.Unlock()
	n1.update(t, cfgNow(), nodes)
	eventually(t, 40*time.Second, "n1 on AS 64600 with its peer up", func() (bool, string) {
		st, err := n1.Status(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return st.ASN == 64600 && len(st.Peers) == 1 && st.Peers[0].Up && st.Peers[0].ASN == 64600 && st.Peers[0].EndOfRIB, fmt.Sprintf("%+v", st)
	})
	n1.waitRoutes(t, 20*time.Second, want)
	close(stopWatch)
	select {
	case got := <-lost:
		t.Errorf("node 2's route left Routes() during the restarts; routes were:\n%s", got)
	default:
	}
}
