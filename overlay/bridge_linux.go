package overlay

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bridge is the node bridge every pod's host veth joins. The CNI binary
// ensures it on each ADD; the agent may ensure the same value on start.
type Bridge struct {
	Name string // e.g. "weft0"
	MTU  int    // pod MTU; applied also when the bridge already exists
	// Gateways are the bridge's own addresses, one per family, each with the
	// prefix length of its pod CIDR (e.g. 10.244.1.1/24, fd00:10:244:1::1/64).
	Gateways []netip.Prefix
	// Owned are the networks whose addresses on the bridge are weft's (the
	// cluster CIDRs): an address inside one of them that is not a gateway
	// is removed, e.g. the gateway of a pod CIDR the node no longer has.
	// Empty: nothing is removed (the CNI binary, whose configuration may
	// be older than the agent's).
	Owned []netip.Prefix
}

// MAC returns the bridge's pinned hardware address: a locally administered
// unicast address derived from the bridge name and its gateways. A bridge
// without a set address takes the lowest MAC of its ports, which changes as
// veths come and go; a pinned one keeps the pods' neighbour entries valid.
func (b Bridge) MAC() net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte(b.Name))
	for _, gw := range b.Gateways {
		h.Write([]byte{0})
		h.Write([]byte(gw.String()))
	}
	sum := h.Sum(nil)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfe | 0x02 // unicast, locally administered
	return mac
}

// EnsureBridge makes the bridge described by b exist, up, with its pinned
// MAC, MTU and gateway addresses, in the network namespace of h. It changes
// only what differs, so the common case (all in place) costs one link and one
// address query. Addresses outside b.Owned are left alone. IPv6 gateway
// addresses skip duplicate address detection (IFA_F_NODAD), so they are
// usable at once. It returns the bridge's interface index.
func EnsureBridge(h *netlink.Handle, b Bridge) (int, error) {
	if b.Name == "" {
		return 0, errors.New("ensure bridge: empty name")
	}
	mac := b.MAC()
	link, err := h.LinkByName(b.Name)
	var notFound netlink.LinkNotFoundError
	created := false
	if errors.As(err, &notFound) {
		link, err = bridgeCreate(h, b, mac)
		created = true
	}
	if err != nil {
		return 0, fmt.Errorf("ensure bridge %s: %w", b.Name, err)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return 0, fmt.Errorf("ensure bridge %s: link exists with type %q, not a bridge", b.Name, link.Type())
	}
	attrs := link.Attrs()
	// An MTU given at creation does not count as set by the user, and the
	// kernel would reset it to 1500 when the last port leaves; setting it
	// afterwards pins it.
	if b.MTU > 0 && (created || attrs.MTU != b.MTU) {
		if err := h.LinkSetMTU(link, b.MTU); err != nil {
			return 0, fmt.Errorf("set mtu %d on bridge %s: %w", b.MTU, b.Name, err)
		}
	}
	if !bytes.Equal(attrs.HardwareAddr, mac) {
		if err := h.LinkSetHardwareAddr(link, mac); err != nil {
			return 0, fmt.Errorf("set mac %s on bridge %s: %w", mac, b.Name, err)
		}
	}
	if err := bridgeEnsureGateways(h, link, b.Gateways, b.Owned); err != nil {
		return 0, err
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return 0, fmt.Errorf("set bridge %s up: %w", b.Name, err)
		}
	}
	return attrs.Index, nil
}

// bridgeCreate adds the bridge; a concurrent creator winning the race is not
// an error.
func bridgeCreate(h *netlink.Handle, b Bridge, mac net.HardwareAddr) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{
		Name:         b.Name,
		MTU:          b.MTU,
		HardwareAddr: mac,
		Flags:        net.FlagUp,
		TxQLen:       -1,
	}}
	if err := h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add bridge: %w", err)
	}
	return h.LinkByName(b.Name)
}

// bridgeEnsureGateways adds each missing gateway address to the bridge and
// removes the addresses inside owned that are not gateways.
func bridgeEnsureGateways(h *netlink.Handle, link netlink.Link, gateways, owned []netip.Prefix) error {
	if len(gateways) == 0 && len(owned) == 0 {
		return nil
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses on bridge %s: %w", link.Attrs().Name, err)
	}
	for _, a := range have {
		p, ok := addrPrefix(a)
		if !ok || slices.Contains(gateways, p) || !slices.ContainsFunc(owned, func(o netip.Prefix) bool { return o.Contains(p.Addr()) }) {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove stale gateway %s from bridge %s: %w", p, link.Attrs().Name, err)
		}
	}
	for _, gw := range gateways {
		if bridgeHasAddr(have, gw) {
			continue
		}
		if err := bridgeAddAddr(h, link, gw); err != nil {
			return fmt.Errorf("add gateway %s to bridge %s: %w", gw, link.Attrs().Name, err)
		}
	}
	return nil
}

func bridgeHasAddr(have []netlink.Addr, want netip.Prefix) bool {
	return slices.ContainsFunc(have, func(a netlink.Addr) bool {
		p, ok := addrPrefix(a)
		return ok && p == want
	})
}

// addrPrefix is a's address with its prefix length, host bits kept.
func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// bridgeAddAddr adds p to link (see NoDADAddr). An address already present
// is not an error.
func bridgeAddAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	if err := h.AddrAdd(link, NoDADAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// NoDADAddr is the netlink address for p (address with prefix length, host
// bits kept), without duplicate address detection: an IPv6 address is
// usable at once (IFA_F_NODAD; IPv4 has no such wait). weft's gateways and
// pod addresses are made this way.
func NoDADAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// bridgeForwardingSysctl is the per-namespace switch that lets the node route pod
// traffic, by family.
func bridgeForwardingSysctl(is6 bool) string {
	if is6 {
		return "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	return "/proc/sys/net/ipv4/ip_forward"
}

// EnsureForwarding turns on IP forwarding for the family of each prefix, in
// the network namespace of the calling thread. It writes only when the
// switch is off.
func EnsureForwarding(prefixes []netip.Prefix) error {
	done := map[bool]bool{}
	for _, p := range prefixes {
		is6 := p.Addr().Is6()
		if done[is6] {
			continue
		}
		done[is6] = true
		path := bridgeForwardingSysctl(is6)
		cur, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if bytes.Equal(bytes.TrimSpace(cur), []byte("1")) {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding %s: %w", path, err)
		}
	}
	return nil
}
