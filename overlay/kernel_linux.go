package overlay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink is the Kernel of one network namespace, spoken to over netlink.
type Netlink struct {
	ns netns.NsHandle
	h  *netlink.Handle

	// Device indexes by name, refreshed by every Observe, so the writes of
	// a pass (three per peer) do not each look their device up again. A
	// write that finds its cached index gone looks it up and tries once
	// more (see withIndex).
	mu      sync.Mutex
	indexes map[string]int
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink opens a netlink handle in the namespace ns (netns.None() for
// the caller's own). The caller keeps ns open while the Netlink is in use
// and calls Close.
func NewNetlink(ns netns.NsHandle) (*Netlink, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %v: %w", ns, err)
	}
	return &Netlink{ns: ns, h: h, indexes: map[string]int{}}, nil
}

// Close releases the netlink sockets.
func (k *Netlink) Close() { k.h.Close() }

// retry repeats a dump the kernel interrupted because the table changed
// while it was read.
func retry[T any](dump func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func toNetip(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

func toNet(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: toNet(a), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func (k *Netlink) Observe(ctx context.Context, devices []string, proto int) (State, error) {
	var s State
	links, err := retry(func() ([]netlink.Link, error) { return k.h.LinkList() })
	if err != nil {
		return s, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	indexes := make(map[string]int, len(links))
	var ours []netlink.Link
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		indexes[l.Attrs().Name] = l.Attrs().Index
		for _, d := range devices {
			if l.Attrs().Name == d {
				ours = append(ours, l)
			}
		}
	}
	k.mu.Lock()
	k.indexes = indexes
	k.mu.Unlock()
	for _, l := range ours {
		ds, err := k.deviceState(l)
		if err != nil {
			return s, err
		}
		s.Devices = append(s.Devices, ds)
		idx := l.Attrs().Index
		for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
			neighs, err := retry(func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, fam) })
			if err != nil {
				return s, fmt.Errorf("list neighbours on %s: %w", ds.Name, err)
			}
			for _, n := range neighs {
				if n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) == 0 {
					continue
				}
				s.Neighbors = append(s.Neighbors, Neighbor{Dev: ds.Name, IP: toNetip(n.IP), MAC: n.HardwareAddr})
			}
		}
		if ds.Kind != "vxlan" {
			continue
		}
		fdb, err := retry(func() ([]netlink.Neigh, error) { return k.h.NeighList(idx, unix.AF_BRIDGE) })
		if err != nil {
			return s, fmt.Errorf("list fdb on %s: %w", ds.Name, err)
		}
		for _, n := range fdb {
			if n.Flags&netlink.NTF_SELF == 0 || n.IP == nil {
				continue
			}
			s.FDB = append(s.FDB, FDBEntry{Dev: ds.Name, MAC: n.HardwareAddr, Dst: toNetip(n.IP)})
		}
	}
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: netlink.RouteProtocol(proto)}
	routes, err := retry(func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return s, fmt.Errorf("list routes with protocol %d: %w", proto, err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue // a default route is never weft's; leave it alone
		}
		ones, _ := r.Dst.Mask.Size()
		out := Route{Dst: netip.PrefixFrom(toNetip(r.Dst.IP), ones)}
		if len(r.MultiPath) > 0 {
			for _, nh := range r.MultiPath {
				out.NextHops = append(out.NextHops, NextHop{Gateway: toNetip(nh.Gw), Dev: names[nh.LinkIndex], Onlink: nh.Flags&int(netlink.FLAG_ONLINK) != 0})
			}
		} else {
			out.NextHops = []NextHop{{Gateway: toNetip(r.Gw), Dev: names[r.LinkIndex], Onlink: r.Flags&int(netlink.FLAG_ONLINK) != 0}}
		}
		s.Routes = append(s.Routes, out)
	}
	return s, nil
}

func (k *Netlink) deviceState(l netlink.Link) (DeviceState, error) {
	a := l.Attrs()
	ds := DeviceState{
		Device: Device{Name: a.Name, MTU: a.MTU, MAC: a.HardwareAddr},
		Up:     a.Flags&net.FlagUp != 0,
		Kind:   l.Type(),
	}
	if vx, ok := l.(*netlink.Vxlan); ok {
		ds.VNI = uint32(vx.VxlanId)
		ds.Port = uint16(vx.Port)
		ds.Local = toNetip(vx.SrcAddr)
	}
	addrs, err := retry(func() ([]netlink.Addr, error) { return k.h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return ds, fmt.Errorf("list addresses on %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		ip := toNetip(ad.IP)
		if ip.IsLinkLocalUnicast() {
			continue // the kernel's own IPv6 link-local address
		}
		ds.Addrs = append(ds.Addrs, ip)
	}
	return ds, nil
}

func (k *Netlink) SetDevice(ctx context.Context, d Device) error {
	l, err := k.h.LinkByName(d.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		vx := &netlink.Vxlan{
			LinkAttrs: netlink.LinkAttrs{Name: d.Name, MTU: d.MTU, HardwareAddr: d.MAC},
			VxlanId:   int(d.VNI),
			SrcAddr:   toNet(d.Local),
			Port:      int(portOrDefault(d.Port)),
			Learning:  false,
			// Outer UDP checksums on, for both underlay families (the kernel
			// default, said explicitly: the netlink library leaves the
			// attribute out when it is false, so "off" was never applied).
			// A receiving NIC that validates the outer checksum lets the
			// stack validate the inner packet without reading it again;
			// over IPv6 RFC 6935 needs them anyway, so zero-checksum TX/RX
			// stay off. Learning is off: FDB entries come from weft. The
			// datapath benchmark (docs/benchmarks.md) found no throughput
			// difference between on and off on its veth underlay.
			UDPCSum: true,
		}
		if err := k.h.LinkAdd(vx); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add vxlan %s: %w", d.Name, err)
		}
		if l, err = k.h.LinkByName(d.Name); err != nil {
			return fmt.Errorf("find vxlan %s after adding it: %w", d.Name, err)
		}
	case err != nil:
		return fmt.Errorf("find device %s: %w", d.Name, err)
	}
	k.remember(d.Name, l.Attrs().Index)
	have, err := k.deviceState(l)
	if err != nil {
		return err
	}
	if needsRecreate(d, have) {
		return fmt.Errorf("device %s exists as %s vni %d port %d local %v: delete it first", d.Name, have.Kind, have.VNI, have.Port, have.Local)
	}
	var errs []error
	if have.MTU != d.MTU {
		if err := k.h.LinkSetMTU(l, d.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set mtu %d on %s: %w", d.MTU, d.Name, err))
		}
	}
	if d.MAC != nil && have.MAC.String() != d.MAC.String() {
		if err := k.h.LinkSetHardwareAddr(l, d.MAC); err != nil {
			errs = append(errs, fmt.Errorf("set mac %v on %s: %w", d.MAC, d.Name, err))
		}
	}
	for _, a := range d.Addrs {
		if !contains(have.Addrs, a) {
			addr := &netlink.Addr{IPNet: hostNet(a), Flags: unix.IFA_F_NODAD}
			if err := k.h.AddrReplace(l, addr); err != nil {
				errs = append(errs, fmt.Errorf("add address %v on %s: %w", a, d.Name, err))
			}
		}
	}
	for _, a := range have.Addrs {
		if !contains(d.Addrs, a) {
			if err := k.h.AddrDel(l, &netlink.Addr{IPNet: hostNet(a)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("delete address %v on %s: %w", a, d.Name, err))
			}
		}
	}
	if !have.Up {
		if err := k.h.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", d.Name, err))
		}
	}
	return errors.Join(errs...)
}

func contains(addrs []netip.Addr, a netip.Addr) bool {
	for _, x := range addrs {
		if x == a {
			return true
		}
	}
	return false
}

func (k *Netlink) DeleteDevice(ctx context.Context, name string) error {
	k.forget(name)
	l, err := k.h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find device %s: %w", name, err)
	}
	if err := k.h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete device %s: %w", name, err)
	}
	return nil
}

// index returns dev's index, from the cache when it has it.
func (k *Netlink) index(dev string) (int, error) {
	k.mu.Lock()
	idx, ok := k.indexes[dev]
	k.mu.Unlock()
	if ok {
		return idx, nil
	}
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("find device %s: %w", dev, err)
	}
	k.remember(dev, l.Attrs().Index)
	return l.Attrs().Index, nil
}

func (k *Netlink) remember(dev string, idx int) {
	k.mu.Lock()
	k.indexes[dev] = idx
	k.mu.Unlock()
}

func (k *Netlink) forget(dev string) {
	k.mu.Lock()
	delete(k.indexes, dev)
	k.mu.Unlock()
}

// withIndex runs write with dev's index. When the kernel answers that the
// device is gone (ENODEV), the cached index may be stale (the device was
// recreated since it was read): it looks dev up again and retries once.
func (k *Netlink) withIndex(dev string, write func(idx int) error) error {
	idx, err := k.index(dev)
	if err != nil {
		return err
	}
	err = write(idx)
	if !errors.Is(err, unix.ENODEV) {
		return err
	}
	k.forget(dev)
	fresh, ferr := k.index(dev)
	if ferr != nil {
		return errors.Join(err, ferr)
	}
	if fresh == idx {
		return err
	}
	return write(fresh)
}

func (k *Netlink) neigh(n Neighbor, idx int) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: idx, Family: family(n.IP), State: netlink.NUD_PERMANENT, IP: toNet(n.IP), HardwareAddr: n.MAC}
}

func (k *Netlink) SetNeighbor(ctx context.Context, n Neighbor) error {
	err := k.withIndex(n.Dev, func(idx int) error { return k.h.NeighSet(k.neigh(n, idx)) })
	if err != nil {
		return fmt.Errorf("set neighbour %v lladdr %v on %s: %w", n.IP, n.MAC, n.Dev, err)
	}
	return nil
}

func (k *Netlink) DeleteNeighbor(ctx context.Context, n Neighbor) error {
	err := k.withIndex(n.Dev, func(idx int) error { return k.h.NeighDel(k.neigh(n, idx)) })
	if err != nil && !gone(err) {
		return fmt.Errorf("delete neighbour %v on %s: %w", n.IP, n.Dev, err)
	}
	return nil
}

func (k *Netlink) fdbEntry(f FDBEntry, idx int) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		IP: toNet(f.Dst), HardwareAddr: f.MAC,
	}
}

func (k *Netlink) SetFDB(ctx context.Context, f FDBEntry) error {
	err := k.withIndex(f.Dev, func(idx int) error { return k.h.NeighSet(k.fdbEntry(f, idx)) })
	if err != nil {
		return fmt.Errorf("set fdb %v dst %v on %s: %w", f.MAC, f.Dst, f.Dev, err)
	}
	return nil
}

func (k *Netlink) DeleteFDB(ctx context.Context, f FDBEntry) error {
	err := k.withIndex(f.Dev, func(idx int) error { return k.h.NeighDel(k.fdbEntry(f, idx)) })
	if err != nil && !gone(err) {
		return fmt.Errorf("delete fdb %v dst %v on %s: %w", f.MAC, f.Dst, f.Dev, err)
	}
	return nil
}

// gone reports whether err means the object (or its device) is already
// absent.
func gone(err error) bool {
	var notFound netlink.LinkNotFoundError
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.As(err, &notFound)
}

func (k *Netlink) route(r Route, proto int) (*netlink.Route, error) {
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: toNet(r.Dst.Addr()), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		Table:    unix.RT_TABLE_MAIN,
		Protocol: netlink.RouteProtocol(proto),
		Family:   family(r.Dst.Addr()),
	}
	var hops []*netlink.NexthopInfo
	for _, h := range r.NextHops {
		nh := &netlink.NexthopInfo{Gw: toNet(h.Gateway)}
		if h.Dev != "" {
			idx, err := k.index(h.Dev)
			if err != nil {
				return nil, err
			}
			nh.LinkIndex = idx
		}
		if h.Onlink {
			nh.Flags = int(netlink.FLAG_ONLINK)
		}
		hops = append(hops, nh)
	}
	if len(hops) == 1 {
		nr.Gw, nr.LinkIndex, nr.Flags = hops[0].Gw, hops[0].LinkIndex, hops[0].Flags
	} else {
		nr.MultiPath = hops
	}
	return nr, nil
}

func (k *Netlink) SetRoute(ctx context.Context, r Route, proto int) error {
	replace := func() error {
		nr, err := k.route(r, proto)
		if err != nil {
			return err
		}
		return k.h.RouteReplace(nr)
	}
	err := replace()
	if errors.Is(err, unix.ENODEV) { // a cached index may be stale: look the devices up again
		for _, h := range r.NextHops {
			k.forget(h.Dev)
		}
		err = replace()
	}
	if err != nil {
		return fmt.Errorf("replace route %v: %w", r, err)
	}
	return nil
}

func (k *Netlink) DeleteRoute(ctx context.Context, r Route, proto int) error {
	// Match on destination, table and protocol only, so a route of another
	// protocol to the same destination is never removed.
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: toNet(r.Dst.Addr()), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		Table:    unix.RT_TABLE_MAIN,
		Protocol: netlink.RouteProtocol(proto),
		Family:   family(r.Dst.Addr()),
	}
	if err := k.h.RouteDel(nr); err != nil && !gone(err) {
		return fmt.Errorf("delete route %v: %w", r.Dst, err)
	}
	return nil
}

// Subscribe listens for link, neighbour and route changes in the namespace.
func (k *Netlink) Subscribe(ctx context.Context, fn func(Change)) error {
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	ns := k.ns
	var drains []func()
	defer func() {
		close(done)
		// A started subscription closes its channel once its socket is
		// closed; drain it so its goroutine can exit.
		for _, drain := range drains {
			drain()
		}
	}()
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	drains = append(drains, func() {
		for range links {
		}
	})
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: &ns}); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	drains = append(drains, func() {
		for range neighs {
		}
	})
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	drains = append(drains, func() {
		for range routes {
		}
	})
	names := map[int]string{} // link index → name, learnt from link updates
	name := func(idx int) string {
		if n, ok := names[idx]; ok {
			return n
		}
		if l, err := k.h.LinkByIndex(idx); err == nil {
			names[idx] = l.Attrs().Name
			return l.Attrs().Name
		}
		return ""
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-links:
			if !ok {
				return errors.New("link subscription closed")
			}
			deleted := u.Header.Type == unix.RTM_DELLINK
			names[int(u.Index)] = u.Attrs().Name
			fn(Change{Kind: LinkChange, Dev: u.Attrs().Name, Deleted: deleted})
			if deleted {
				delete(names, int(u.Index))
			}
		case u, ok := <-neighs:
			if !ok {
				return errors.New("neighbour subscription closed")
			}
			fn(Change{Kind: NeighborChange, Dev: name(u.LinkIndex), Deleted: u.Type == unix.RTM_DELNEIGH})
		case u, ok := <-routes:
			if !ok {
				return errors.New("route subscription closed")
			}
			fn(Change{Kind: RouteChange, Protocol: int(u.Protocol), Deleted: u.Type == unix.RTM_DELROUTE})
		}
	}
}

// UnderlayMTU returns the MTU of the interface that holds the node address.
func (k *Netlink) UnderlayMTU(node netip.Addr) (int, error) {
	addrs, err := retry(func() ([]netlink.Addr, error) { return k.h.AddrList(nil, family(node)) })
	if err != nil {
		return 0, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if toNetip(a.IP) != node {
			continue
		}
		l, err := k.h.LinkByIndex(a.LinkIndex)
		if err != nil {
			return 0, fmt.Errorf("find device of %v: %w", node, err)
		}
		return l.Attrs().MTU, nil
	}
	return 0, fmt.Errorf("node address %v: not on any interface", node)
}
