package cni_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"weft.dev/weft/cni/cnitest"
	"weft.dev/weft/ipam"
	"weft.dev/weft/test/nstest"
)

// podAddrs lists the global addresses on name inside ns (none, with a nil
// error, when the link does not exist).
func podAddrs(t *testing.T, ns *nstest.NS, name string) ([]netip.Addr, bool) {
	t.Helper()
	var link netlink.Link
	var list []netlink.Addr
	var err error
	netlinkIn(t, ns, func(nh *netlink.Handle) {
		if link, err = nh.LinkByName(name); err == nil {
			list, err = nh.AddrList(link, netlink.FAMILY_ALL)
		}
	})
	if err != nil {
		var nf netlink.LinkNotFoundError
		if link == nil && errors.As(err, &nf) {
			return nil, false
		}
		t.Fatalf("addresses of %s in %s: %v", name, ns.Name, err)
	}
	var out []netip.Addr
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, true
}

// TestAddDelRace: ADD and DEL started together on one container, many
// times. Whatever order they end in, the pod's interface and the store
// agree: a live eth0 has exactly the addresses the store holds for it, so
// the store never hands an address that a pod still uses to another pod.
func TestAddDelRace(t *testing.T) {
	l := newLab(t, "1.1.0")
	p := l.newPod("race")
	s := l.store()
	owner := ipam.Owner{ContainerID: p.rt.ContainerID, IfName: "eth0"}
	ctx := context.Background()
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	var addOK, delFirst int
	for i := range rounds {
		var wg sync.WaitGroup
		var addErr, delErr error
		wg.Go(func() { addErr = l.add(p) })
		wg.Go(func() { delErr = l.del(p) })
		wg.Wait()
		if delErr != nil {
			t.Fatalf("round %d: DEL: %v", i, delErr)
		}
		have, live := podAddrs(t, p.ns, "eth0")
		held, err := s.Lookup(ctx, owner)
		if err != nil && !errors.Is(err, ipam.ErrNotFound) {
			t.Fatalf("round %d: Lookup: %v", i, err)
		}
		slices.SortFunc(held, netip.Addr.Compare)
		if live && !slices.Equal(have, held) {
			t.Fatalf("round %d (ADD err %v): the pod's eth0 has %v but the store holds %v for it: "+
				"the next ADD of another pod can get the same address", i, addErr, have, held)
		}
		if !live && len(held) > 0 {
			t.Fatalf("round %d (ADD err %v): no eth0 in the pod but the store holds %v for it", i, addErr, held)
		}
		if addErr == nil {
			addOK++
		}
		if live {
			delFirst++
		}
		if err := l.del(p); err != nil {
			t.Fatalf("round %d: cleanup DEL: %v", i, err)
		}
	}
	t.Logf("%d rounds: ADD succeeded %d times, DEL ran first (pod left attached) %d times", rounds, addOK, delFirst)
	if _, err := s.Lookup(ctx, owner); !errors.Is(err, ipam.ErrNotFound) {
		t.Errorf("after the last DEL: %v, want ErrNotFound", err)
	}
}

// hostState is what ADD may change in the node namespace: links,
// addresses, routes and the forwarding switches.
func hostState(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "-o", "addr", "show"},
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"},
	} {
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(args, " "), ns.MustRun(t, args[0], args[1:]...))
	}
	return b.String()
}

// execEnv runs the plugin in the node with stdin and extra environment.
func execEnv(l *lab, conf []byte, env ...string) error {
	e := &cnitest.NodeExec{NetnsPath: l.node.Path}
	env = append([]string{"CNI_PATH=" + pluginDir}, env...)
	_, err := e.ExecPlugin(context.Background(), filepath.Join(pluginDir, "weft"), conf, env)
	return err
}

// TestAddRefusedChangesNothing: an ADD whose input is wrong, or whose
// CNI_NETNS is the plugin's own network namespace, fails before it changes
// anything on the node: no bridge, no forwarding switched on, no veth, no
// address, no route, no reservation.
func TestAddRefusedChangesNothing(t *testing.T) {
	l := newLab(t, "1.1.0")
	pod := l.newPod("ok")
	conf := pluginConf(t, l)
	// Forwarding off, as on a fresh node, so that turning it on shows.
	l.node.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
	before := hostState(t, l.node)
	tests := []struct {
		name  string
		env   []string
		stdin []byte
		code  uint
	}{
		{name: "own netns by its path", env: []string{"CNI_NETNS=" + l.node.Path}, code: types.ErrInvalidEnvironmentVariables},
		{name: "own netns by /proc/self", env: []string{"CNI_NETNS=/proc/self/ns/net"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "own netns by thread", env: []string{"CNI_NETNS=/proc/thread-self/ns/net"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "netns is not a namespace", env: []string{"CNI_NETNS=/etc/hostname"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "netns missing", env: []string{"CNI_NETNS=/run/netns/wt-no-such-ns"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "container ID with a slash", env: []string{"CNI_CONTAINERID=../../x"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "interface name too long", env: []string{"CNI_IFNAME=eth0123456789abcdef"}, code: types.ErrInvalidEnvironmentVariables},
		{name: "interface name with a colon", env: []string{"CNI_IFNAME=eth:0"}, code: types.ErrInvalidEnvironmentVariables},
		// These name the test's store: a regression must never reach the
		// node's default one.
		{name: "bad config", stdin: fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"weft","type":"weft","podCIDRs":["10.77.0.0/33"],"dataDir":%q}`, l.dataDir),
			code: types.ErrInvalidNetworkConfig},
		{name: "stdin too large", stdin: fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"weft","type":"weft","podCIDRs":["10.77.0.0/24"],"dataDir":%q,"x":"%s"}`,
			l.dataDir, strings.Repeat("x", 2<<20)), code: types.ErrDecodingFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=ctr-refused", "CNI_IFNAME=eth0", "CNI_NETNS=" + pod.ns.Path}
			env = append(env, tc.env...) // later entries win
			stdin := conf
			if tc.stdin != nil {
				stdin = tc.stdin
			}
			err := execEnv(l, stdin, env...)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			if code := codeOf(t, err); code != tc.code {
				t.Errorf("ADD: code %d (%v), want %d", code, err, tc.code)
			}
			if after := hostState(t, l.node); after != before {
				t.Errorf("the refused ADD changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if _, ok := podAddrs(t, pod.ns, "eth0"); ok {
				t.Error("the refused ADD made eth0 in the pod")
			}
			// Undo what a wrong ADD made, so each case is judged alone.
			_, _ = l.node.Run("ip", "link", "del", "weft0")
			_, _ = pod.ns.Run("ip", "link", "del", "eth0")
			l.node.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
		})
	}
	if usage, err := l.store().Usage(context.Background()); err != nil || usage[0].Used+usage[1].Used != 0 {
		t.Errorf("store after refused ADDs: %+v, %v; want nothing held", usage, err)
	}
}

// TestDamagedStoreEntry: a FIFO where the next address's file goes and a
// directory where another owner's record goes cost only those entries: ADD
// and DEL work and never hang, the entries are set aside, and the warning
// goes to stderr, never into the result on stdout.
func TestDamagedStoreEntry(t *testing.T) {
	l := newLab(t, "1.1.0")
	for _, d := range []string{"addr", "owner/other=eth0"} {
		if err := os.MkdirAll(filepath.Join(l.dataDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(l.dataDir, "addr", "10.77.0.2"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := l.newPod("dmg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(command string) (stdout []byte, stderr string, err error) {
		var buf bytes.Buffer
		raw := &invoke.RawExec{Stderr: &buf}
		env := []string{"CNI_COMMAND=" + command, "CNI_PATH=" + pluginDir, "CNI_CONTAINERID=" + p.rt.ContainerID,
			"CNI_IFNAME=eth0", "CNI_NETNS=" + p.ns.Path}
		err = cnitest.Do(l.node.Path, func() error {
			stdout, err = raw.ExecPlugin(ctx, filepath.Join(pluginDir, "weft"), pluginConf(t, l), env)
			return err
		})
		return stdout, buf.String(), err
	}
	out, stderr, err := run("ADD")
	if err != nil {
		t.Fatalf("ADD with a FIFO in the store: %v (stderr %s)", err, stderr)
	}
	res, err := types100.NewResult(out)
	if err != nil {
		t.Fatalf("ADD's stdout is not a result: %v\n%s", err, out)
	}
	if r := res.(*types100.Result); len(r.IPs) != 2 || r.IPs[0].Address.IP.String() != "10.77.0.2" {
		t.Errorf("ADD got %v, want 10.77.0.2 (the address whose FIFO was set aside) first", r.IPs)
	}
	if !strings.Contains(stderr, "damaged store entry set aside") || !strings.Contains(stderr, "addr/10.77.0.2") {
		t.Errorf("ADD's stderr does not report the FIFO set aside:\n%s", stderr)
	}
	released, err := l.store().GC(ctx, []ipam.Owner{{ContainerID: p.rt.ContainerID, IfName: "eth0"}})
	if err != nil || len(released) != 0 {
		t.Errorf("GC with a directory as an owner record: %v, %v; want nothing released", released, err)
	}
	if _, stderr, err := run("DEL"); err != nil {
		t.Errorf("DEL: %v (stderr %s)", err, stderr)
	}
	aside, err := os.ReadDir(filepath.Join(l.dataDir, "damaged"))
	if err != nil || len(aside) != 2 {
		t.Errorf("damaged/ = %v (%v), want the FIFO and the directory", aside, err)
	}
}

// pluginConf is the lab's plugin config as a runtime passes it on stdin.
func pluginConf(t *testing.T, l *lab) []byte {
	t.Helper()
	c := maps.Clone(l.conf)
	c["cniVersion"], c["name"] = "1.1.0", "weft"
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
