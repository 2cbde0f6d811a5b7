package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"weft.dev/weft/overlay/nsrun"
)

// netnsDir is where iproute2 keeps named namespaces.
const netnsDir = "/run/netns"

// ensureNS makes a named namespace with loopback up; an existing one is kept.
func ensureNS(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, name)); err != nil {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
		}
	}
	return WithHandle(name, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo in %s: %w", name, err)
		}
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up in %s: %w", name, err)
		}
		return nil
	})
}

// listNS returns the named namespaces that start with prefix.
func listNS(prefix string) ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// nsPids lists the processes inside a namespace.
func nsPids(name string) ([]int, error) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", name, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// removeNS stops every process inside a namespace (TERM, then KILL after
// grace) and deletes it. A missing namespace is not an error.
func removeNS(name string, grace time.Duration) error {
	if !nsExists(name) {
		return nil
	}
	pids, err := nsPids(name)
	if err != nil {
		return err
	}
	killAll(withoutSelf(pids), grace)
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && nsExists(name) {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// withoutSelf drops this process: a thread of it may have been left inside
// a namespace (see inNS), and a lab never kills the process running it.
func withoutSelf(pids []int) []int {
	self := os.Getpid()
	out := pids[:0:0]
	for _, p := range pids {
		if p != self {
			out = append(out, p)
		}
	}
	return out
}

// killAll sends TERM, waits up to grace for the processes to go, then KILLs
// the rest and waits for them to be gone.
func killAll(pids []int, grace time.Duration) {
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && anyAlive(pids) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && anyAlive(pids) {
		time.Sleep(20 * time.Millisecond)
	}
}

func anyAlive(pids []int) bool {
	for _, pid := range pids {
		if alive(pid) {
			return true
		}
	}
	return false
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return false
	}
	return data[i+2] != 'Z' && data[i+2] != 'X'
}

// WithHandle runs fn with a netlink handle inside the named namespace.
func WithHandle(name string, fn func(h *netlink.Handle) error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	defer h.Close()
	return fn(h)
}

// inNS runs fn inside the named namespace (see nsrun).
func inNS(name string, fn func() error) error { return nsrun.In(filepath.Join(netnsDir, name), fn) }

// setForwarding turns IPv4 and IPv6 forwarding on inside a namespace.
func setForwarding(name string) error {
	return inNS(name, func() error {
		for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/"+key, []byte("1"), 0o644); err != nil {
				return fmt.Errorf("sysctl %s in %s: %w", key, name, err)
			}
		}
		return nil
	})
}

// ensureVeth makes a veth pair with one end in each namespace, both up. It
// is created inside nsA with its peer placed straight into nsB, so no end
// ever exists in the root namespace. An existing complete pair is kept; a
// half pair (left by a crash) is replaced.
func ensureVeth(nsA, ifA, nsB, ifB string, mtu int) error {
	aExists, bExists := linkExists(nsA, ifA), linkExists(nsB, ifB)
	if aExists && bExists {
		return errors.Join(setUp(nsA, ifA), setUp(nsB, ifB))
	}
	for _, e := range []struct {
		ns, ifc string
		ok      bool
	}{{nsA, ifA, aExists}, {nsB, ifB, bExists}} {
		if e.ok {
			if err := delLink(e.ns, e.ifc); err != nil {
				return err
			}
		}
	}
	peer, err := netns.GetFromName(nsB)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", nsB, err)
	}
	defer peer.Close()
	err = WithHandle(nsA, func(h *netlink.Handle) error {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: ifA, MTU: mtu},
			PeerName:      ifB,
			PeerNamespace: netlink.NsFd(int(peer)),
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s/%s - %s/%s: %w", nsA, ifA, nsB, ifB, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(setUp(nsA, ifA), setUp(nsB, ifB))
}

func linkExists(ns, name string) bool {
	return WithHandle(ns, func(h *netlink.Handle) error {
		_, err := h.LinkByName(name)
		return err
	}) == nil
}

func delLink(ns, name string) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return nil
		}
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("delete %s in %s: %w", name, ns, err)
		}
		return nil
	})
}

func setUp(ns, name string) error   { return setLink(ns, name, true) }
func setDown(ns, name string) error { return setLink(ns, name, false) }

func setLink(ns, name string, up bool) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", name, ns, err)
		}
		if up {
			err = h.LinkSetUp(l)
		} else {
			err = h.LinkSetDown(l)
		}
		if err != nil {
			return fmt.Errorf("set %s in %s up=%t: %w", name, ns, up, err)
		}
		return nil
	})
}

// linkOperUp reports whether a link is administratively up.
func linkAdminUp(ns, name string) (bool, error) {
	var up bool
	err := WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", name, ns, err)
		}
		up = l.Attrs().Flags&unix.IFF_UP != 0
		return nil
	})
	return up, err
}

// ensureBridge makes bridge br in ns (up) and enslaves ports to it.
func ensureBridge(ns, br string, ports []string) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(br)
		if err != nil {
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: br}}); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add bridge %s in %s: %w", br, ns, err)
			}
			if l, err = h.LinkByName(br); err != nil {
				return fmt.Errorf("find bridge %s in %s: %w", br, ns, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set bridge %s in %s up: %w", br, ns, err)
		}
		for _, p := range ports {
			pl, err := h.LinkByName(p)
			if err != nil {
				return fmt.Errorf("find %s in %s: %w", p, ns, err)
			}
			if pl.Attrs().MasterIndex == l.Attrs().Index {
				continue
			}
			if err := h.LinkSetMaster(pl, l); err != nil {
				return fmt.Errorf("add %s to bridge %s in %s: %w", p, br, ns, err)
			}
		}
		return nil
	})
}

// ensureAddrs puts addresses on interfaces (IPv6 without DAD).
func ensureAddrs(ns string, addrs map[string][]netip.Prefix) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		for iface, list := range addrs {
			l, err := h.LinkByName(iface)
			if err != nil {
				return fmt.Errorf("find %s in %s: %w", iface, ns, err)
			}
			for _, p := range list {
				a := &netlink.Addr{IPNet: prefixIPNet(p)}
				if p.Addr().Is6() {
					a.Flags = unix.IFA_F_NODAD
				}
				if err := h.AddrReplace(l, a); err != nil {
					return fmt.Errorf("add address %s on %s in %s: %w", p, iface, ns, err)
				}
			}
		}
		return nil
	})
}

// ensureRoutes installs static routes (replace semantics).
func ensureRoutes(ns string, routes []Route) error {
	return WithHandle(ns, func(h *netlink.Handle) error {
		for _, r := range routes {
			nr := &netlink.Route{Dst: prefixIPNet(r.Dst)}
			if r.Via.IsValid() {
				nr.Gw = r.Via.AsSlice()
			}
			if r.Dev != "" {
				l, err := h.LinkByName(r.Dev)
				if err != nil {
					return fmt.Errorf("find %s in %s: %w", r.Dev, ns, err)
				}
				nr.LinkIndex = l.Attrs().Index
			}
			if err := h.RouteReplace(nr); err != nil {
				return fmt.Errorf("add route %s via %s dev %s in %s: %w", r.Dst, r.Via, r.Dev, ns, err)
			}
		}
		return nil
	})
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
