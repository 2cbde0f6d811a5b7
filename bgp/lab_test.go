//go:debug multipathtcp=0

package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"weft.dev/weft/test/nstest"
	"weft.dev/weft/test/poll"
)

// The speaker tests run several in-process speakers against each other.
// GoBGP dials from its own goroutines, which cannot be pinned into a
// namespace, so as root the whole test binary is re-run inside a fresh
// namespace (TestSpeakersInNamespace) with a veth link holding 10.99.0.1-3
// and fd99::1-3; without root they use 127.0.0.1-3 on loopback (IPv4
// sessions only, still carrying both families).
const (
	envLab    = "WEFT_BGP_LAB"    // "ns": running inside the lab namespace
	envHelper = "WEFT_BGP_HELPER" // JSON helperConfig: run one speaker
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(envHelper); cfg != "" {
		os.Exit(runHelper(cfg))
	}
	os.Exit(m.Run())
}

// lab is the set of addresses speakers may use.
type lab struct {
	v4 []netip.Addr // transport and IPv4 next hops
	v6 []netip.Addr // IPv6 next hops (and transport when inNS)
	ns bool
}

func newLab(t *testing.T) lab {
	t.Helper()
	v6 := []netip.Addr{addr("fd99::1"), addr("fd99::2"), addr("fd99::3")}
	switch {
	case os.Getenv(envLab) == "ns":
		return lab{v4: []netip.Addr{addr("10.99.0.1"), addr("10.99.0.2"), addr("10.99.0.3")}, v6: v6, ns: true}
	case os.Geteuid() == 0:
		t.Skip("as root the speaker tests run inside a namespace: see TestSpeakersInNamespace")
	}
	return lab{v4: []netip.Addr{addr("127.0.0.1"), addr("127.0.0.2"), addr("127.0.0.3")}, v6: v6}
}

// transports lists the transport families the lab can run sessions over.
func (l lab) transports() map[string][]netip.Addr {
	m := map[string][]netip.Addr{"v4": l.v4}
	if l.ns {
		m["v6"] = l.v6
	}
	return m
}

// TestSpeakersInNamespace re-runs the TestSpeaker* tests inside a namespace.
func TestSpeakersInNamespace(t *testing.T) {
	if os.Getenv(envLab) != "" {
		t.Skip("already inside the lab")
	}
	ns := nstest.New(t, "bgp")
	ns.MustAddLink(t, "lab0", "lab1", labAddrs(3)...)
	ns.RunTests(t, "^TestSpeaker[A-Z]", 10*time.Minute, envLab+"=ns")
}

// labAddrs are the addresses 10.99.0.i/24 and fd99::i/64 for i in 1..n,
// the lab link's in the namespace.
func labAddrs(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("10.99.0.%d/24", i), fmt.Sprintf("fd99::%d/64", i))
	}
	return out
}

func freePort(t *testing.T, a netip.Addr) int {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		t.Fatalf("find free port on %s: %v", a, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testLogger(name string) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("WEFT_BGP_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("speaker", name)
}

// node is a speaker under test with its lab identity.
type node struct {
	*Speaker
	addr  netip.Addr // session address
	port  int
	nh4   netip.Addr
	nh6   netip.Addr
	cidr4 netip.Prefix
	cidr6 netip.Prefix
	// stop cancels Run (a planned restart) and waits for it; idempotent.
	stop func(t *testing.T)
}

// startNode runs speaker i of the lab (transport address addrs[i]).
func startNode(t *testing.T, l lab, addrs []netip.Addr, i int, mod func(*Config)) *node {
	t.Helper()
	n := &node{
		addr:  addrs[i],
		nh4:   l.v4[i],
		nh6:   l.v6[i],
		cidr4: pfx(fmt.Sprintf("10.244.%d.0/24", i)),
		cidr6: pfx(fmt.Sprintf("fd00:244:0:%d::/64", i)),
	}
	n.port = freePort(t, n.addr)
	cfg := Config{
		RouterID:    l.v4[i],
		ListenPort:  n.port,
		ListenAddrs: []netip.Addr{n.addr},
		CallTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	n.start(t, cfg)
	return n
}

func (n *node) start(t *testing.T, cfg Config) {
	t.Helper()
	n.Speaker = New(cfg, testLogger(n.addr.String()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	n.stop = func(t *testing.T) {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("speaker %s Run: %v", n.addr, err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("speaker %s did not stop", n.addr)
			}
		})
	}
	stop := n.stop
	t.Cleanup(func() { stop(t) })
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := n.wait(wctx); err != nil {
		t.Fatalf("speaker %s: %v", n.addr, err)
	}
}

func (n *node) paths() []Path {
	return []Path{{Prefix: n.cidr4, NextHop: n.nh4}, {Prefix: n.cidr6, NextHop: n.nh6}}
}

// peerOf is how n peers with other.
func (n *node) peerOf(other *node, mod func(*Peer)) Peer {
	p := Peer{Address: other.addr, ASN: 64512, Port: other.port, Description: "node-" + other.addr.String(),
		HoldTime: 9 * time.Second, ConnectRetry: time.Second}
	if mod != nil {
		mod(&p)
	}
	return p
}

// policyFor accepts the other nodes' CIDRs via their next hops and the LB
// ranges 172.30.0.0/16 and fd00:30::/112.
func (n *node) policyFor(others ...*node) ImportPolicy {
	p := ImportPolicy{
		Within:   []netip.Prefix{pfx("172.30.0.0/16"), pfx("fd00:30::/112")},
		Own:      []netip.Prefix{n.cidr4, n.cidr6},
		Underlay: []netip.Prefix{netip.PrefixFrom(n.addr, n.addr.BitLen())},
	}
	for _, o := range others {
		p.Allowed = append(p.Allowed,
			AllowedPrefix{Prefix: o.cidr4, NextHops: []netip.Addr{o.nh4}},
			AllowedPrefix{Prefix: o.cidr6, NextHops: []netip.Addr{o.nh6}})
	}
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	poll.Until(t, timeout, 50*time.Millisecond, what, cond)
}

func (n *node) peerState(t *testing.T, peer netip.Addr) (PeerStatus, bool) {
	t.Helper()
	ps, err := n.Peers(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Address == peer {
			return p, true
		}
	}
	return PeerStatus{}, false
}

func (n *node) waitEstablished(t *testing.T, peer netip.Addr) PeerStatus {
	t.Helper()
	var st PeerStatus
	eventually(t, 20*time.Second, fmt.Sprintf("%s: session to %s established", n.addr, peer), func() (bool, string) {
		st, _ = n.peerState(t, peer)
		return st.State == "established", fmt.Sprintf("%+v", st)
	})
	return st
}

// dumpRoutes renders a table as text: "prefix via nh(peer)[stale] ...".
func dumpRoutes(t Table) string {
	var b strings.Builder
	for _, r := range t.Routes {
		fmt.Fprintf(&b, "%s", r.Prefix)
		for _, h := range r.NextHops {
			fmt.Fprintf(&b, " via %s", h.Addr)
			if h.Stale {
				b.WriteString("[stale]")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (n *node) waitRoutes(t *testing.T, timeout time.Duration, want string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s routes:\n%s", n.addr, want), func() (bool, string) {
		got := dumpRoutes(n.Routes())
		return got == want, "\n" + got
	})
}

// --- helper process: one speaker that can be killed with SIGKILL ---

type helperConfig struct {
	Addr, RouterID, PeerAddr string
	Port, PeerPort           int
	Paths                    []string // "prefix via nexthop"
	Restarted                bool
	Deferral                 int // seconds
}

// runHelper runs a speaker until killed and prints "TABLE <json>" for every
// learned table, so the parent can see End-of-RIB.
func runHelper(raw string) int {
	var hc helperConfig
	if err := json.Unmarshal([]byte(raw), &hc); err != nil {
		fmt.Fprintln(os.Stderr, "helper config:", err)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	s := New(Config{
		RouterID: addr(hc.RouterID), ListenPort: hc.Port, ListenAddrs: []netip.Addr{addr(hc.Addr)},
		RestartedWithState: hc.Restarted,
		GracefulRestart:    GracefulRestart{DeferralTime: time.Duration(hc.Deferral) * time.Second},
	}, testLogger("helper-"+hc.Addr))
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var paths []Path
	for _, p := range hc.Paths {
		f := strings.Fields(p)
		paths = append(paths, Path{Prefix: pfx(f[0]), NextHop: addr(f[2])})
	}
	s.SetImportPolicy(ImportPolicy{Within: []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/8")}})
	if err := s.SetPaths(ctx, paths); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	peer := Peer{Address: addr(hc.PeerAddr), ASN: 64512, Port: hc.PeerPort, HoldTime: 9 * time.Second, ConnectRetry: time.Second}
	if err := s.SetPeers(ctx, []Peer{peer}); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	fmt.Println("READY")
	for t := range s.Watch(ctx) {
		eor := map[string]bool{}
		for a, v := range t.EndOfRIB {
			eor[a.String()] = v
		}
		b, _ := json.Marshal(struct {
			Routes string
			EOR    map[string]bool
		}{dumpRoutes(t), eor})
		fmt.Printf("TABLE %s\n", b)
	}
	if err := <-errc; err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// helperProc is a running helper speaker.
type helperProc struct {
	cmd    *exec.Cmd
	tables chan string // raw TABLE json lines
	ready  chan struct{}
}

func startHelper(t *testing.T, hc helperConfig) *helperProc {
	t.Helper()
	raw, _ := json.Marshal(hc)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envHelper+"="+string(raw))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	h := &helperProc{cmd: cmd, tables: make(chan string, 1024), ready: make(chan struct{})}
	t.Cleanup(func() { h.kill() })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "READY":
				close(h.ready)
			case strings.HasPrefix(line, "TABLE "):
				select {
				case h.tables <- strings.TrimPrefix(line, "TABLE "):
				default:
				}
			}
		}
	}()
	select {
	case <-h.ready:
	case <-time.After(15 * time.Second):
		t.Fatal("helper speaker not ready")
	}
	return h
}

// kill ends the helper with SIGKILL: no NOTIFICATION, sockets just close.
func (h *helperProc) kill() {
	if h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Kill()
	_ = h.cmd.Wait()
}

// waitEOR waits until the helper reports End-of-RIB from peer.
func (h *helperProc) waitEOR(t *testing.T, peer netip.Addr, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case raw := <-h.tables:
			var tb struct {
				Routes string
				EOR    map[string]bool
			}
			must(t, json.Unmarshal([]byte(raw), &tb))
			if tb.EOR[peer.String()] {
				return tb.Routes
			}
		case <-deadline:
			t.Fatalf("helper saw no End-of-RIB from %s within %s", peer, timeout)
		}
	}
}
