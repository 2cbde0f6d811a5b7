package bgp

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/test/nstest"
)

// Third-party peers: FRR's bgpd and BIRD 2, each in its own namespace,
// joined by a veth to a namespace running a Speaker (this test binary,
// re-run there). iBGP AS 64512 over IPv4 10.98.0.1 (us) - 10.98.0.2
// (router), carrying both families; IPv6 next hops fd98::1 / fd98::2.
const envRouter = "WEFT_BGP_ROUTER" // "frr:<ns>" or "bird:<ns>"

func TestRouters(t *testing.T) {
	if os.Getenv(envLab) != "" {
		t.Skip("already inside the lab")
	}
	for _, kind := range []string{"frr", "bird"} {
		t.Run(kind, func(t *testing.T) {
			bin := map[string]string{"frr": "/usr/lib/frr/bgpd", "bird": "bird"}[kind]
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("%s not installed (test/deps.sh installs it)", bin)
			}
			us, router := nstest.New(t, "bgs"), nstest.New(t, "bgr")
			us.MustRun(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", router.Name)
			for i, ns := range []*nstest.NS{us, router} {
				ns.MustRun(t, "ip", "addr", "add", fmt.Sprintf("10.98.0.%d/24", i+1), "dev", "eth0")
				ns.MustRun(t, "ip", "-6", "addr", "add", fmt.Sprintf("fd98::%d/64", i+1), "dev", "eth0", "nodad")
				ns.MustRun(t, "ip", "link", "set", "eth0", "up")
			}
			us.RunTests(t, "^TestRouterPeer$", 10*time.Minute, envLab+"=ns", envRouter+"="+kind+":"+router.Name)
		})
	}
}

// TestRouterPeer runs inside the speaker's namespace (see TestRouters).
func TestRouterPeer(t *testing.T) {
	spec := os.Getenv(envRouter)
	if spec == "" {
		t.Skip("run by TestRouters")
	}
	kind, nsName, _ := strings.Cut(spec, ":")
	router := &nstest.NS{Name: nsName, Path: "/run/netns/" + nsName}
	us, peer := addr("10.98.0.1"), addr("10.98.0.2")
	dir := t.TempDir()

	var query func(prefix string) (string, error) // router's view of prefix
	var wantLearned string
	switch kind {
	case "frr":
		query = startFRR(t, router, dir)
		wantLearned = "172.30.40.0/24 via 10.98.0.2\nfd00:30::40/128 via fd98::2\n"
	case "bird":
		query = startBIRD(t, router, dir)
		wantLearned = "172.30.50.0/24 via 10.98.0.2\nfd00:30::50/128 via fd98::2\n"
	default:
		t.Fatalf("unknown router %q", kind)
	}

	n := &node{addr: us, nh4: us, nh6: addr("fd98::1"), cidr4: pfx("10.244.0.0/24"), cidr6: pfx("fd00:244::/64")}
	n.start(t, Config{RouterID: us, ListenPort: 179, ListenAddrs: []netip.Addr{us}, CallTimeout: 5 * time.Second})
	n.SetImportPolicy(ImportPolicy{Within: []netip.Prefix{pfx("172.30.0.0/16"), pfx("fd00:30::/112")},
		Own: []netip.Prefix{n.cidr4, n.cidr6}, Underlay: []netip.Prefix{pfx("10.98.0.1/32")}})
	must(t, n.SetPaths(ctxT(t), n.paths()))
	must(t, n.SetPeers(ctxT(t), []Peer{{Address: peer, ASN: 64512, HoldTime: 9 * time.Second, ConnectRetry: time.Second, Description: kind}}))

	n.waitEstablished(t, peer)
	n.waitRoutes(t, 30*time.Second, wantLearned)

	for _, c := range []struct{ prefix, nextHop string }{{"10.244.0.0/24", "10.98.0.1"}, {"fd00:244::/64", "fd98::1"}} {
		eventually(t, 30*time.Second, fmt.Sprintf("%s has %s via %s", kind, c.prefix, c.nextHop), func() (bool, string) {
			out, err := query(c.prefix)
			if err != nil {
				return false, err.Error()
			}
			return strings.Contains(out, c.nextHop), out
		})
	}

	// Withdraw the IPv6 prefix: the router drops it.
	must(t, n.SetPaths(ctxT(t), n.paths()[:1]))
	eventually(t, 30*time.Second, kind+" drops fd00:244::/64", func() (bool, string) {
		out, err := query("fd00:244::/64")
		return err == nil && !strings.Contains(out, "fd98::1"), out
	})
}

// startFRR runs zebra and bgpd in ns with their own path space; it returns
// a query giving `show bgp <family> unicast <prefix> json` as
// "nexthop ip ..." text.
func startFRR(t *testing.T, ns *nstest.NS, dir string) func(string) (string, error) {
	t.Helper()
	name := filepath.Base(ns.Name)
	run := "/var/run/frr/" + name
	must(t, os.MkdirAll(run, 0o755))
	t.Cleanup(func() { os.RemoveAll(run) })
	if u, err := user.Lookup("frr"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		must(t, os.Chown(run, uid, gid))
	}
	// frr drops privileges before reading its files: keep them in its run dir.
	dir = run
	conf := filepath.Join(dir, "frr.conf")
	must(t, os.WriteFile(conf, []byte(`frr defaults traditional
hostname weft-frr
log file `+filepath.Join(dir, "frr.log")+`
!
router bgp 64512
 bgp router-id 10.98.0.2
 no bgp network import-check
 neighbor 10.98.0.1 remote-as 64512
 neighbor 10.98.0.1 timers connect 1
 address-family ipv4 unicast
  network 172.30.40.0/24
 exit-address-family
 address-family ipv6 unicast
  neighbor 10.98.0.1 activate
  network fd00:30::40/128
 exit-address-family
!
`), 0o644))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "frr.log"))
			t.Logf("frr.log:\n%s", b)
		}
	})
	for _, d := range []string{"zebra", "bgpd"} {
		pid := filepath.Join(run, d+".pid") // frr must be able to write it
		ns.MustRun(t, "/usr/lib/frr/"+d, "-d", "-N", name, "-f", conf, "-i", pid)
		t.Cleanup(func() { killPidFile(pid) })
	}
	return func(prefix string) (string, error) {
		fam := "ipv4"
		if strings.Contains(prefix, ":") {
			fam = "ipv6"
		}
		out, err := ns.Run("vtysh", "-N", name, "-c", "show bgp "+fam+" unicast "+prefix+" json")
		if err != nil {
			return "", err
		}
		// vtysh first complains that it has no vtysh.conf for the path space.
		if i := strings.Index(out, "{"); i >= 0 {
			out = out[i:]
		}
		var v struct {
			Paths []struct {
				Nexthops []struct{ IP string } `json:"nexthops"`
			} `json:"paths"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return "", fmt.Errorf("parse %q: %w", out, err)
		}
		var b strings.Builder
		for _, p := range v.Paths {
			for _, nh := range p.Nexthops {
				b.WriteString("nexthop " + nh.IP + " ")
			}
		}
		return b.String(), nil
	}
}

// startBIRD runs bird in ns; the query is `show route for <prefix> all`.
func startBIRD(t *testing.T, ns *nstest.NS, dir string) func(string) (string, error) {
	t.Helper()
	conf, ctl, pid := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl"), filepath.Join(dir, "bird.pid")
	must(t, os.WriteFile(conf, []byte(`router id 10.98.0.2;
protocol device {}
protocol static s4 { ipv4; route 172.30.50.0/24 blackhole; }
protocol static s6 { ipv6; route fd00:30::50/128 blackhole; }
protocol bgp weft {
  local 10.98.0.2 as 64512;
  neighbor 10.98.0.1 as 64512;
  direct;
  connect retry time 1;
  ipv4 { import all; export all; next hop self; };
  ipv6 { import all; export all; next hop address fd98::2; };
}
`), 0o644))
	ns.MustRun(t, "bird", "-c", conf, "-s", ctl, "-P", pid)
	t.Cleanup(func() { killPidFile(pid) })
	return func(prefix string) (string, error) {
		out, err := ns.Run("birdc", "-s", ctl, "show", "route", "for", prefix, "all")
		if strings.Contains(out, "Network not found") {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		// "for" also matches covering routes: keep only our exact prefix.
		if !strings.Contains(out, prefix) {
			return "", nil
		}
		return out, nil
	}
}

func killPidFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}
