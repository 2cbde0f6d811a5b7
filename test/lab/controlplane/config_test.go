package controlplane

import (
	"context"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/overlay/nsrun"
	"weft.dev/weft/test/nstest"
)

func TestValidate(t *testing.T) {
	good := func() Config {
		return Config{
			Netns: "wt-none", Addr: netip.MustParseAddr("192.0.2.10"), Dir: "/tmp/x", BinDir: "/nonexistent",
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error
	}{
		{"empty netns", func(c *Config) { c.Netns = "" }, `Netns: ""`},
		{"netns path", func(c *Config) { c.Netns = "/run/netns/x" }, `Netns: "/run/netns/x"`},
		{"loopback addr", func(c *Config) { c.Addr = netip.MustParseAddr("127.0.0.1") }, "Addr: 127.0.0.1"},
		{"no addr", func(c *Config) { c.Addr = netip.Addr{} }, "Addr: invalid IP"},
		{"empty dir", func(c *Config) { c.Dir = "" }, "Dir: empty"},
		{"cluster cidr not canonical", func(c *Config) {
			c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.0/16")}
		}, "ClusterCIDRs: 10.244.1.0/16 is not a canonical prefix (want 10.244.0.0/16)"},
		{"two v4 cluster cidrs", func(c *Config) {
			c.ClusterCIDRs = append(c.ClusterCIDRs, netip.MustParsePrefix("10.245.0.0/16"))
		}, "ClusterCIDRs: 10.245.0.0/16 is a second prefix of the same family"},
		{"service family not addr's", func(c *Config) {
			c.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00:96::/112")}
		}, "ServiceCIDRs: the first prefix fd00:96::/112 must be of the family of Addr 192.0.2.10"},
		{"v4 node mask too small", func(c *Config) { c.NodeMaskV4 = 8 }, "NodeMaskV4: 8 does not fit cluster CIDR 10.244.0.0/16 (want 16..32)"},
		{"v4 node mask too many nodes", func(c *Config) {
			c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
			c.NodeMaskV4 = 25
		}, "NodeMaskV4: 25 does not fit cluster CIDR 10.0.0.0/8 (want 8..24)"},
		{"v6 node mask", func(c *Config) {
			c.ClusterCIDRs = append(c.ClusterCIDRs, netip.MustParsePrefix("fd00:10:244::/56"))
			c.NodeMaskV6 = 129
		}, "NodeMaskV6: 129 does not fit cluster CIDR fd00:10:244::/56"},
		{"netns missing", func(*Config) {}, "Netns: stat /run/netns/wt-none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mutate(&c)
			if err := c.setDefaults(); err != nil {
				t.Fatal(err)
			}
			err := c.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestKCMArgsFamilies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster []string
		want    []string
	}{
		{"ipv4", []string{"10.244.0.0/16"}, []string{
			"--cluster-cidr=10.244.0.0/16", "--node-cidr-mask-size-ipv4=24"}},
		{"ipv6", []string{"fd00:10:244::/56"}, []string{
			"--cluster-cidr=fd00:10:244::/56", "--node-cidr-mask-size-ipv6=64"}},
		{"dual", []string{"10.244.0.0/16", "fd00:10:244::/56"}, []string{
			"--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
			"--node-cidr-mask-size-ipv4=24", "--node-cidr-mask-size-ipv6=64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{}
			for _, s := range tc.cluster {
				cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, netip.MustParsePrefix(s))
			}
			if err := cfg.setDefaults(); err != nil {
				t.Fatal(err)
			}
			cp := &ControlPlane{cfg: cfg}
			got := slices.DeleteFunc(cp.kcmArgs(), func(a string) bool {
				return !strings.HasPrefix(a, "--cluster-cidr") && !strings.HasPrefix(a, "--node-cidr-mask")
			})
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("kcm CIDR flags (-want +got):\n%s", d)
			}
		})
	}
}

func TestPKI(t *testing.T) {
	apiIPs := []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.96.0.1"),
	}
	p, err := newPKI(apiIPs)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.cert)
	for _, name := range []string{
		"192.0.2.10", "127.0.0.1", "10.96.0.1", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
	} {
		if _, err := p.apiserver.cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("apiserver certificate for %s: %v", name, err)
		}
	}
	if _, err := p.apiserver.cert.Verify(x509.VerifyOptions{DNSName: "192.0.2.11", Roots: roots}); err == nil {
		t.Error("apiserver certificate also valid for 192.0.2.11")
	}
	client := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, tc := range []struct {
		name string
		kp   *keyPair
		cn   string
		orgs []string
	}{
		{"admin", p.admin, "weft-lab-admin", []string{"system:masters"}},
		{"controller manager", p.kcm, "system:kube-controller-manager", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.kp.cert.Verify(client); err != nil {
				t.Errorf("client certificate: %v", err)
			}
			if tc.kp.cert.Subject.CommonName != tc.cn || !slices.Equal(tc.kp.cert.Subject.Organization, tc.orgs) {
				t.Errorf("subject %v, want CN=%s O=%v", tc.kp.cert.Subject, tc.cn, tc.orgs)
			}
		})
	}
}

// TestDialerInNamespace shows that a connection made from the root namespace
// through the dialer reaches a listener that exists only inside a lab
// namespace (on its loopback, which the root namespace's loopback is not).
func TestDialerInNamespace(t *testing.T) {
	ns := nstest.New(t, "dial")
	var ln net.Listener
	// Not ns.Do: see nsrun on why the thread must come back.
	if err := nsrun.In(ns.Path, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("inside " + ns.Name))
			c.Close()
		}
	}()
	d := netnsDialer{path: ns.Path}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := conn.Read(buf)
	conn.Close()
	if got := string(buf[:n]); got != "inside "+ns.Name {
		t.Errorf("read %q from %s", got, ln.Addr())
	}
	if _, err := d.DialContext(ctx, "tcp", "127.0.0.1:1"); err == nil {
		t.Error("dial a closed port in the namespace: no error")
	}
	if _, err := (netnsDialer{path: "/run/netns/wt-absent"}).DialContext(ctx, "tcp", ln.Addr().String()); err == nil ||
		!strings.Contains(err.Error(), "wt-absent") {
		t.Errorf("dial into a missing namespace: %v, want an error naming it", err)
	}
}

// TestCleanupKillsRecordedDaemons starts a stand-in daemon the way Start does
// and removes it with Cleanup alone, as after a crash of the test binary.
// A pid file whose start time does not match is left alone.
func TestCleanupKillsRecordedDaemons(t *testing.T) {
	ns := nstest.New(t, "clean")
	dir := filepath.Join(t.TempDir(), "cp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := startDaemon(dir, ns.Name, "sleeper", "/bin/sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	pid := d.cmd.Process.Pid
	t.Cleanup(func() { d.kill(dir) })

	// An unrelated process under a pid file with a wrong start time.
	other := exec.Command("/bin/sleep", "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := os.WriteFile(pidFile(dir, "stale"), []byte(strings.Join([]string{
		strconv.Itoa(other.Process.Pid), "1"}, " ")), 0o644); err != nil {
		t.Fatal(err)
	}

	// ip netns exec enters the namespace and then execs in place, so the
	// recorded pid is the daemon's; wait for it to have entered.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for out := nsPids(t, ns); out != strconv.Itoa(pid); out = nsPids(t, ns) {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("processes in %s: %q, want only the daemon %d", ns.Name, out, pid)
		}
	}
	if err := Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("daemon %d still running after Cleanup", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir after Cleanup: %v, want it gone", err)
	}
	if !processExists(other.Process.Pid) {
		t.Errorf("Cleanup killed pid %d whose start time did not match", other.Process.Pid)
	}
	if err := Cleanup(dir); err != nil {
		t.Errorf("Cleanup of a missing dir: %v", err)
	}
}

// nsPids lists the pids in ns, asked from the root namespace.
func nsPids(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns.Name).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns.Name, err)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// TestInNetnsNeverMovesMainThread runs many namespace switches (nsrun.In,
// which the dialer uses) at once and
// watches the namespace of the process's main thread (what `ip netns pids`
// sees): it must never be the lab namespace.
func TestInNetnsNeverMovesMainThread(t *testing.T) {
	ns := nstest.New(t, "main")
	root, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	seen := make(chan string, 1)
	go func() {
		defer close(seen)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got, err := os.Readlink("/proc/self/ns/net"); err == nil && got != root {
				seen <- got
				return
			}
			runtime.Gosched()
		}
	}()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := nsrun.In(ns.Path, func() error {
					time.Sleep(time.Millisecond)
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if got, ok := <-seen; ok {
		t.Errorf("main thread was in namespace %s (root %s)", got, root)
	}
	if out := nsPids(t, ns); out != "" {
		t.Errorf("processes in %s: %s", ns.Name, out)
	}
}
