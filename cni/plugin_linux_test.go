package cni_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"weft.dev/weft/cni"
	"weft.dev/weft/cni/cnitest"
	"weft.dev/weft/ipam"
	"weft.dev/weft/test/nstest"
)

// pluginDir holds the weft binary built once for the integration tests,
// next to the reference plugins (portmap) from /usr/lib/cni.
var pluginDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() == 0 && !fuzzing() {
		dir, err := os.MkdirTemp("", "weft-cni-test")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "weft"), "weft.dev/weft/cmd/weft")
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // as shipped
		out, err := build.CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build weft: %v\n%s", err, out)
			return 1
		}
		pluginDir = dir
	}
	return m.Run()
}

// fuzzing reports whether this process runs a fuzz target (as coordinator
// or worker): only FuzzParse runs then, which needs no plugin binary.
func fuzzing() bool {
	f, w := flag.Lookup("test.fuzz"), flag.Lookup("test.fuzzworker")
	return f != nil && f.Value.String() != "" || w != nil && w.Value.String() == "true"
}

// lab is one node namespace with the weft conflist and a libcni client
// that runs the plugins inside the node.
type lab struct {
	t       *testing.T
	node    *nstest.NS
	dataDir string
	list    *libcni.NetworkConfigList
	cni     *libcni.CNIConfig
	conf    map[string]any
}

type labOpt func(conf map[string]any, plugins *[]map[string]any)

func newLab(t *testing.T, version string, opts ...labOpt) *lab {
	t.Helper()
	nstest.RequireRoot(t)
	node := nstest.New(t, "node")
	l := &lab{t: t, node: node, dataDir: filepath.Join(t.TempDir(), "ipam")}
	l.conf = map[string]any{
		"type":     "weft",
		"podCIDRs": []string{"10.77.0.0/24", "fd00:77::/64"},
		"mtu":      1400,
		"dataDir":  l.dataDir,
	}
	plugins := []map[string]any{l.conf}
	for _, o := range opts {
		o(l.conf, &plugins)
	}
	l.list = conflist(t, version, plugins)
	l.cni = cnitest.NewConfig(node.Path, t.TempDir(), pluginDir, "/usr/lib/cni")
	return l
}

func conflist(t *testing.T, version string, plugins []map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": "weft", "plugins": plugins})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("conflist %s: %v", b, err)
	}
	return list
}

type pod struct {
	ns  *nstest.NS
	rt  *libcni.RuntimeConf
	res *types100.Result
}

func (l *lab) newPod(tag string) *pod {
	l.t.Helper()
	ns := nstest.New(l.t, tag)
	return &pod{ns: ns, rt: &libcni.RuntimeConf{ContainerID: "ctr-" + ns.Name, NetNS: ns.Path, IfName: "eth0"}}
}

func (l *lab) add(p *pod) error {
	r, err := l.cni.AddNetworkList(context.Background(), l.list, p.rt)
	if err != nil {
		return err
	}
	p.res, err = types100.NewResultFromResult(r)
	if err != nil {
		l.t.Fatalf("convert result: %v", err)
	}
	return nil
}

func (l *lab) mustAdd(p *pod) {
	l.t.Helper()
	if err := l.add(p); err != nil {
		l.t.Fatalf("ADD %s: %v", p.rt.ContainerID, err)
	}
}

func (l *lab) del(p *pod) error {
	return l.cni.DelNetworkList(context.Background(), l.list, p.rt)
}

func (l *lab) store() *ipam.Store {
	l.t.Helper()
	// The same options the plugin opens the store with.
	s, err := ipam.Open(ipam.Options{
		Dir:         l.dataDir,
		Ranges:      []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd00:77::/64")},
		Reserved:    []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("fd00:77::1")},
		LockTimeout: 5 * time.Second,
	})
	if err != nil {
		l.t.Fatal(err)
	}
	return s
}

func (p *pod) addrs() []netip.Addr {
	var out []netip.Addr
	for _, ip := range p.res.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		out = append(out, a.Unmap())
	}
	return out
}

func codeOf(t *testing.T, err error) uint {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *types.Error", err, err)
	}
	return te.Code
}

// linkIn looks up a link inside ns.
func linkIn(t *testing.T, ns *nstest.NS, name string) (link netlink.Link, err error) {
	t.Helper()
	netlinkIn(t, ns, func(nh *netlink.Handle) { link, err = nh.LinkByName(name) })
	return link, err
}

// netlinkIn runs fn with a netlink handle inside ns, closed when fn returns.
func netlinkIn(t *testing.T, ns *nstest.NS, fn func(nh *netlink.Handle)) {
	t.Helper()
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	fn(nh)
}

func TestAddCheckDelAllVersions(t *testing.T) {
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			l := newLab(t, v)
			p := l.newPod("pod")
			l.mustAdd(p)
			r := p.res
			if len(r.Interfaces) != 2 || r.Interfaces[1].Name != "eth0" || r.Interfaces[1].Sandbox != p.ns.Path || r.Interfaces[0].Sandbox != "" {
				t.Fatalf("interfaces %+v: want host veth, then eth0 in %s", r.Interfaces, p.ns.Path)
			}
			if len(r.IPs) != 2 || *r.IPs[0].Interface != 1 || *r.IPs[1].Interface != 1 {
				t.Fatalf("ips %+v: want one per family on interface 1", r.IPs)
			}
			got := p.addrs()
			if !netip.MustParsePrefix("10.77.0.0/24").Contains(got[0]) || !netip.MustParsePrefix("fd00:77::/64").Contains(got[1]) {
				t.Fatalf("addresses %v not in the pod CIDRs", got)
			}
			if len(r.Routes) != 2 || r.Routes[0].GW.String() != "10.77.0.1" || r.Routes[1].GW.String() != "fd00:77::1" {
				t.Fatalf("routes %+v: want defaults via 10.77.0.1 and fd00:77::1", r.Routes)
			}
			out := p.ns.MustRun(t, "ip", "-o", "addr", "show", "dev", "eth0")
			for _, want := range []string{got[0].String() + "/24", got[1].String() + "/64"} {
				if !strings.Contains(out, want) {
					t.Errorf("eth0 addresses %q lack %s", out, want)
				}
			}
			if out := p.ns.MustRun(t, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "tentative"); strings.Contains(out, got[1].String()) {
				t.Errorf("pod IPv6 address is tentative (DAD): %s", out)
			}
			if v != "0.3.1" {
				if err := l.cni.CheckNetworkList(context.Background(), l.list, p.rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
				// CHECK notices a missing route.
				p.ns.MustRun(t, "ip", "-6", "route", "del", "default")
				if err := l.cni.CheckNetworkList(context.Background(), l.list, p.rt); err == nil || !strings.Contains(err.Error(), "default route") {
					t.Errorf("CHECK after removing the IPv6 default route = %v, want a route error", err)
				}
			}
			for i := 0; i < 2; i++ {
				if err := l.del(p); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if _, err := linkIn(t, p.ns, "eth0"); err == nil {
				t.Error("eth0 still in the pod after DEL")
			}
			if _, err := linkIn(t, l.node, r.Interfaces[0].Name); err == nil {
				t.Error("host veth still on the node after DEL")
			}
			if _, err := l.store().Lookup(context.Background(), ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"}); !errors.Is(err, ipam.ErrNotFound) {
				t.Errorf("reservation after DEL: Lookup err = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestTwoPodsPing(t *testing.T) {
	l := newLab(t, "1.1.0")
	a, b := l.newPod("pa"), l.newPod("pb")
	l.mustAdd(a)
	l.mustAdd(b)
	for _, pair := range [][2]*pod{{a, b}, {b, a}} {
		for _, dst := range pair[1].addrs() {
			if out, err := pair[0].ns.Run("ping", "-c", "1", "-W", "2", dst.String()); err != nil {
				t.Errorf("ping %s from %s: %v\n%s", dst, pair[0].ns.Name, err, out)
			}
		}
	}
	for _, gw := range []string{"10.77.0.1", "fd00:77::1"} {
		if out, err := a.ns.Run("ping", "-c", "1", "-W", "2", gw); err != nil {
			t.Errorf("ping gateway %s: %v\n%s", gw, err, out)
		}
	}
}

func TestHairpinAndMTU(t *testing.T) {
	for _, hairpin := range []bool{true, false} {
		t.Run(fmt.Sprintf("hairpin=%v", hairpin), func(t *testing.T) {
			l := newLab(t, "1.0.0", func(c map[string]any, _ *[]map[string]any) {
				if !hairpin {
					c["hairpinMode"] = false
				}
			})
			// An existing bridge with another MTU gets the configured one.
			l.node.MustRun(t, "ip", "link", "add", "weft0", "mtu", "9000", "type", "bridge")
			p := l.newPod("pod")
			l.mustAdd(p)
			host, err := linkIn(t, l.node, p.res.Interfaces[0].Name)
			if err != nil {
				t.Fatal(err)
			}
			br, err := linkIn(t, l.node, "weft0")
			if err != nil {
				t.Fatal(err)
			}
			pe, err := linkIn(t, p.ns, "eth0")
			if err != nil {
				t.Fatal(err)
			}
			for name, mtu := range map[string]int{"bridge": br.Attrs().MTU, "host veth": host.Attrs().MTU, "pod eth0": pe.Attrs().MTU} {
				if mtu != 1400 {
					t.Errorf("%s mtu %d, want 1400", name, mtu)
				}
			}
			if host.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("host veth master %d, want bridge %d", host.Attrs().MasterIndex, br.Attrs().Index)
			}
			out := l.node.MustRun(t, "ip", "-d", "link", "show", p.res.Interfaces[0].Name)
			want := "hairpin off"
			if hairpin {
				want = "hairpin on"
			}
			if !strings.Contains(out, want) {
				t.Errorf("bridge port: want %q in\n%s", want, out)
			}
			if mac := br.Attrs().HardwareAddr.String(); !strings.Contains(l.node.MustRun(t, "ip", "link", "show", "weft0"), mac) || br.Attrs().HardwareAddr[0]&2 == 0 {
				t.Errorf("bridge mac %s not pinned (locally administered)", mac)
			}
			// The MTU stays when the last port leaves.
			if err := l.del(p); err != nil {
				t.Fatal(err)
			}
			if br, err = linkIn(t, l.node, "weft0"); err != nil || br.Attrs().MTU != 1400 {
				t.Errorf("bridge after last DEL: %v, mtu %d, want 1400", err, br.Attrs().MTU)
			}
		})
	}
}

func TestDelAfterNetnsGone(t *testing.T) {
	l := newLab(t, "1.1.0")
	p := l.newPod("gone")
	l.mustAdd(p)
	if err := p.ns.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if _, err := linkIn(t, l.node, p.res.Interfaces[0].Name); err == nil {
		t.Error("host veth left after DEL")
	}
	if _, err := l.store().Lookup(context.Background(), ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"}); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("reservation after DEL: %v, want ErrNotFound", err)
	}
}

func TestConcurrentAdds(t *testing.T) {
	l := newLab(t, "1.1.0")
	const n = 50
	pods := make([]*pod, n)
	for i := range pods {
		pods[i] = l.newPod("cc")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.add(p)
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	for i, p := range pods {
		if errs[i] != nil {
			t.Errorf("ADD %d: %v", i, errs[i])
			continue
		}
		for _, a := range p.addrs() {
			if other, dup := seen[a]; dup {
				t.Errorf("address %s given to %s and %s", a, other, p.rt.ContainerID)
			}
			seen[a] = p.rt.ContainerID
		}
	}
	if len(seen) != 2*n {
		t.Errorf("%d distinct addresses, want %d", len(seen), 2*n)
	}
	out := l.node.MustRun(t, "ip", "-o", "link", "show", "master", "weft0")
	// Count link lines only: ip may also print warnings (for example
	// about other namespaces' peer references) into the same output.
	if got := strings.Count(out, " master weft0 "); got != n {
		t.Errorf("%d ports on weft0, want %d:\n%s", got, n, out)
	}
}

func TestGC(t *testing.T) {
	l := newLab(t, "1.1.0")
	pods := []*pod{l.newPod("g0"), l.newPod("g1"), l.newPod("g2")}
	for _, p := range pods {
		l.mustAdd(p)
	}
	// A runtime that knows only pod 0 (its own cache is empty, so libcni
	// sends the plugin GC without deleting anything itself).
	other := cnitest.NewConfig(l.node.Path, t.TempDir(), pluginDir)
	// Neither key: nothing is released.
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "weft", "type": "weft",
		"podCIDRs": l.conf["podCIDRs"], "mtu": 1400, "dataDir": l.dataDir})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := libcni.NetworkPluginConfFromBytes(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := execRaw(l, plain.Bytes, "GC"); err != nil {
		t.Fatalf("GC without attachments: %v", err)
	}
	s := l.store()
	for _, p := range pods {
		if _, err := s.Lookup(context.Background(), ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"}); err != nil {
			t.Fatalf("GC without attachment keys released %s: %v", p.rt.ContainerID, err)
		}
	}
	keep := []types.GCAttachment{{ContainerID: pods[0].rt.ContainerID, IfName: "eth0"}}
	if err := other.GCNetworkList(context.Background(), l.list, &libcni.GCArgs{ValidAttachments: keep}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	for i, p := range pods {
		_, err := s.Lookup(context.Background(), ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"})
		_, linkErr := linkIn(t, l.node, p.res.Interfaces[0].Name)
		if i == 0 && (err != nil || linkErr != nil) {
			t.Errorf("kept pod %d: reservation %v, veth %v", i, err, linkErr)
		}
		if i > 0 && (!errors.Is(err, ipam.ErrNotFound) || linkErr == nil) {
			t.Errorf("pod %d not listed: reservation err %v (want ErrNotFound), veth still there: %v", i, err, linkErr == nil)
		}
	}
}

// execRaw runs the weft plugin once with conf on stdin.
func execRaw(l *lab, conf []byte, command string) error {
	e := &cnitest.NodeExec{NetnsPath: l.node.Path}
	env := []string{"CNI_COMMAND=" + command, "CNI_PATH=" + pluginDir}
	_, err := e.ExecPlugin(context.Background(), filepath.Join(pluginDir, "weft"), conf, env)
	return err
}

func TestSecondAddFails(t *testing.T) {
	l := newLab(t, "1.1.0")
	p := l.newPod("twice")
	l.mustAdd(p)
	first := p.addrs()
	err := l.add(p)
	if err == nil {
		t.Fatal("second ADD for the same container and interface succeeded")
	}
	if code := codeOf(t, err); code != cni.ErrCodeExists {
		t.Errorf("second ADD code %d (%v), want %d", code, err, cni.ErrCodeExists)
	}
	got, err := l.store().Lookup(context.Background(), ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"})
	if err != nil || len(got) != 2 || got[0] != first[0] || got[1] != first[1] {
		t.Errorf("first reservation after failed ADD: %v, %v; want %v", got, err, first)
	}
	if out, err := p.ns.Run("ping", "-c", "1", "-W", "2", "10.77.0.1"); err != nil {
		t.Errorf("first attachment broken by the failed ADD: %v\n%s", err, out)
	}
}

func TestAddRollsBack(t *testing.T) {
	l := newLab(t, "1.1.0")
	p := l.newPod("rb")
	// The pod already has an eth0: creating the veth fails after the
	// addresses were reserved.
	p.ns.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
	err := l.add(p)
	if err == nil {
		t.Fatal("ADD with eth0 taken succeeded")
	}
	if _, err := l.store().Lookup(context.Background(), ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"}); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("reservation after failed ADD: %v, want ErrNotFound", err)
	}
	if out := l.node.MustRun(t, "ip", "-o", "link", "show", "type", "veth"); out != "" {
		t.Errorf("stray veth on the node after failed ADD:\n%s", out)
	}
}

func TestBadConfig(t *testing.T) {
	l := newLab(t, "1.0.0", func(c map[string]any, _ *[]map[string]any) { c["mtu"] = 100 })
	err := l.add(l.newPod("bad"))
	if code := codeOf(t, err); code != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "mtu") || !strings.Contains(err.Error(), "100") {
		t.Errorf("ADD with mtu 100: code %d, %v; want code 7 naming mtu and 100", code, err)
	}
}

func TestStatus(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	l := newLab(t, "1.1.0", func(c map[string]any, _ *[]map[string]any) { c["readyFile"] = ready })
	err := l.cni.GetStatusNetworkList(context.Background(), l.list)
	if err == nil || codeOf(t, err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS without the ready file: %v, want code 50", err)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.cni.GetStatusNetworkList(context.Background(), l.list); err != nil {
		t.Fatalf("STATUS with the ready file: %v", err)
	}
	// An unusable store (its directory is a file) is code 50 too.
	l2 := newLab(t, "1.1.0")
	if err := os.WriteFile(l2.dataDir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l2.cni.GetStatusNetworkList(context.Background(), l2.list); err == nil || codeOf(t, err) != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with a broken store: %v, want code 50", err)
	}
}

func TestPortmapChain(t *testing.T) {
	if _, err := os.Stat("/usr/lib/cni/portmap"); err != nil {
		t.Skip("skipped: /usr/lib/cni/portmap missing (apt-get install containernetworking-plugins)")
	}
	l := newLab(t, "1.0.0", func(_ map[string]any, plugins *[]map[string]any) {
		*plugins = append(*plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
	})
	p := l.newPod("pm")
	p.rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}}
	l.mustAdd(p)
	var ln net.Listener
	if err := cnitest.Do(p.ns.Path, func() (err error) { ln, err = net.Listen("tcp", ":80"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "hello from the pod\n")
			c.Close()
		}
	}()
	var got []byte
	err := cnitest.Do(l.node.Path, func() error {
		c, err := net.DialTimeout("tcp", "10.77.0.1:18080", 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil || string(got) != "hello from the pod\n" {
		t.Fatalf("node → hostPort 18080 → pod: %q, %v", got, err)
	}
	if err := l.del(p); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	if out := l.node.MustRun(t, "iptables-save", "-t", "nat"); strings.Contains(out, "18080") {
		t.Errorf("port mapping left after DEL:\n%s", out)
	}
}

// TestAnnounce captures what the bridge sees during ADD: a gratuitous ARP
// for the pod's IPv4 address and an unsolicited neighbour advertisement
// for its IPv6 address.
func TestAnnounce(t *testing.T) {
	l := newLab(t, "1.1.0")
	l.mustAdd(l.newPod("first")) // makes the bridge
	var fd int
	err := cnitest.Do(l.node.Path, func() error {
		br, err := netlink.LinkByName("weft0")
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: br.Attrs().Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	p := l.newPod("second")
	l.mustAdd(p)
	want := p.addrs()
	var podMAC net.HardwareAddr
	for _, itf := range p.res.Interfaces {
		if itf.Sandbox != "" {
			podMAC, _ = net.ParseMAC(itf.Mac)
		}
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	var sawARP, sawNA bool
	var seen []string
	buf := make([]byte, 2048)
	for i := 0; i < 200 && !(sawARP && sawNA); i++ {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			break
		}
		f := buf[:n]
		seen = append(seen, fmt.Sprintf("% x", f[:min(len(f), 64)]))
		if len(f) < 14 {
			continue
		}
		switch binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_ARP:
			a := f[14:]
			// Sender and target IP are the pod's, the sender MAC its final one.
			if len(a) >= 28 && netip.AddrFrom4([4]byte(a[14:18])) == want[0] && netip.AddrFrom4([4]byte(a[24:28])) == want[0] &&
				bytes.Equal(a[8:14], podMAC) {
				sawARP = true
			}
		case unix.ETH_P_IPV6:
			ip := f[14:]
			// An NA for the pod's address with the override flag and the
			// final MAC as target link-layer address.
			if len(ip) >= 40+32 && ip[6] == unix.IPPROTO_ICMPV6 && ip[40] == 136 && ip[44]&0x20 != 0 &&
				netip.AddrFrom16([16]byte(ip[48:64])) == want[1] && ip[64] == 2 && bytes.Equal(ip[66:72], podMAC) {
				sawNA = true
			}
		}
	}
	if !sawARP || !sawNA {
		t.Errorf("announcements seen on the bridge: gratuitous ARP %v, unsolicited NA %v; want both; frames:\n%s", sawARP, sawNA, strings.Join(seen, "\n"))
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
