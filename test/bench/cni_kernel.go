package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"weft.dev/weft/overlay"
)

// kernelAddFloor times, in this (warm) process, the kernel requests any
// bridge plugin's ADD needs at the least: the veth pair made with its peer
// in the pod and the host end up on the bridge, then in the pod the
// address of each family, the interface up and a default route per family.
// No IPAM, no checks, no announcements. With the VERSION floor (a plugin
// process that does nothing) it bounds from below what one ADD can cost on
// this machine. node is a namespace holding nothing of the benchmark's;
// pods are empty namespaces, one per request; each veth is deleted after
// its request, so the namespaces are left as they were.
func kernelAddFloor(node string, pods []string, dual bool) (time.Duration, error) {
	nodeNS, err := netns.GetFromName(node)
	if err != nil {
		return 0, err
	}
	defer nodeNS.Close()
	h, err := netlink.NewHandleAt(nodeNS)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	gws := []netip.Prefix{netip.MustParsePrefix("10.66.0.1/16")}
	if dual {
		gws = append(gws, netip.MustParsePrefix("fd66::1/64"))
	}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kfloor0", Flags: net.FlagUp}}); err != nil {
		return 0, fmt.Errorf("bridge: %w", err)
	}
	br, err := h.LinkByName("kfloor0")
	if err != nil {
		return 0, err
	}
	for _, gw := range gws {
		if err := h.AddrAdd(br, overlay.NoDADAddr(gw)); err != nil {
			return 0, fmt.Errorf("bridge address %v: %w", gw, err)
		}
	}
	// next: each pod's addresses, one per gateway, counting up from the
	// gateway.
	next := slices.Clone(gws)
	var d []time.Duration
	for i, pod := range pods {
		for j, p := range next {
			next[j] = netip.PrefixFrom(p.Addr().Next(), p.Bits())
		}
		podNS, err := netns.GetFromName(pod)
		if err != nil {
			return 0, err
		}
		ph, err := netlink.NewHandleAt(podNS)
		if err != nil {
			podNS.Close()
			return 0, err
		}
		t, err := timed(func() error {
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("kf%d", i), MasterIndex: br.Attrs().Index, Flags: net.FlagUp},
				PeerName: "kf0", PeerNamespace: netlink.NsFd(int(podNS))}
			if err := h.LinkAdd(v); err != nil {
				return fmt.Errorf("veth: %w", err)
			}
			l, err := ph.LinkByName("kf0")
			if err != nil {
				return err
			}
			for _, p := range next {
				if err := ph.AddrAdd(l, overlay.NoDADAddr(p)); err != nil {
					return fmt.Errorf("pod address %v: %w", p, err)
				}
			}
			if err := ph.LinkSetUp(l); err != nil {
				return err
			}
			for _, gw := range gws {
				if err := ph.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.Addr().AsSlice()}); err != nil {
					return fmt.Errorf("default route via %v: %w", gw.Addr(), err)
				}
			}
			return nil
		})
		ph.Close()
		podNS.Close()
		if err != nil {
			return 0, err
		}
		d = append(d, t)
		// Gone before the next one, so the floor is not taken over a
		// growing number of devices.
		if err := h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("kf%d", i)}}); err != nil {
			return 0, fmt.Errorf("delete veth: %w", err)
		}
	}
	return quantile(d, 0.5), nil
}
