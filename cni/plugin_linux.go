package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"weft.dev/weft/ipam"
	"weft.dev/weft/overlay"
	"weft.dev/weft/overlay/nsrun"
)

// About is printed when the binary runs without CNI_COMMAND.
const About = "weft CNI plugin: pods on the node bridge, addresses from weft's IPAM store"

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Funcs are the command handlers for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC}
}

// opTimeout bounds one command (store lock waits included).
const opTimeout = 60 * time.Second

// lockTimeout is how long a command waits for the store's lock before it
// answers "try again later" (code 11).
const lockTimeout = 30 * time.Second

func openStore(c *Config) (*ipam.Store, error) {
	s, err := ipam.Open(ipam.Options{
		Dir:         c.DataDir,
		Ranges:      c.Prefixes(),
		Reserved:    gatewayAddrs(c),
		LockTimeout: lockTimeout,
		Log:         stderrLog(),
	})
	if err != nil {
		return nil, typed("open ipam store "+c.DataDir, err)
	}
	return s, nil
}

// stderrLog logs to stderr: stdout carries only the result.
func stderrLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

func gatewayAddrs(c *Config) []netip.Addr {
	out := make([]netip.Addr, len(c.Networks))
	for i, n := range c.Networks {
		out[i] = n.Gateway
	}
	return out
}

func (c *Config) bridge() overlay.Bridge {
	b := overlay.Bridge{Name: c.Bridge, MTU: c.MTU}
	for _, n := range c.Networks {
		b.Gateways = append(b.Gateways, n.GatewayPrefix())
	}
	return b
}

func internal(format string, args ...any) error {
	return types.NewError(types.ErrInternal, fmt.Sprintf(format, args...), "")
}

// ownerOf validates the container ID and interface name: they name the
// reservation, the host veth and the pod's interface.
func ownerOf(args *skel.CmdArgs) (ipam.Owner, error) {
	o := ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	if err := o.Validate(); err != nil {
		return o, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID/CNI_IFNAME: "+err.Error(), "")
	}
	return o, nil
}

// openPodNS opens CNI_NETNS and checks that it is a network namespace and
// not the plugin's own: ADD there would put the pod's addresses and default
// routes on the node itself.
func openPodNS(path string) (netns.NsHandle, error) {
	bad := func(why string, err error) error {
		msg := fmt.Sprintf("CNI_NETNS %s: %s", quote(path), why)
		if err != nil {
			msg += ": " + err.Error()
		}
		return types.NewError(types.ErrInvalidEnvironmentVariables, msg, "")
	}
	podNS, err := netns.GetFromPath(path)
	if err != nil {
		return podNS, bad("open", err)
	}
	typ, err := unix.IoctlRetInt(int(podNS), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		podNS.Close()
		return netns.None(), bad("not a network namespace", err)
	}
	self, err := netns.Get() // this thread's: every thread of the plugin is in its namespace here
	if err != nil {
		podNS.Close()
		return netns.None(), internal("open the plugin's own network namespace: %v", err)
	}
	defer self.Close()
	if podNS.Equal(self) {
		podNS.Close()
		return netns.None(), bad("is the plugin's own network namespace (the node's), not a pod's", nil)
	}
	return podNS, nil
}

// cmdAdd checks all of its input first (config, container ID, interface
// name, CNI_NETNS) and only then changes the node. It holds the owner's
// lock (ipam.Store.Hold) throughout, so a DEL of the same container runs
// wholly before or wholly after it.
func cmdAdd(args *skel.CmdArgs) (err error) {
	c, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	owner, err := ownerOf(args)
	if err != nil {
		return err
	}
	podNS, err := openPodNS(args.Netns)
	if err != nil {
		return err
	}
	defer podNS.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()

	store, err := openStore(c)
	if err != nil {
		return err
	}
	release, err := store.Hold(ctx, owner)
	if err != nil {
		return typed(fmt.Sprintf("hold %s/%s", args.ContainerID, args.IfName), err)
	}
	defer release()

	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return internal("netlink handle: %v", err)
	}
	defer host.Close()
	brIndex, err := overlay.EnsureBridge(host, c.bridge())
	if err != nil {
		return internal("%v", err)
	}
	if err := overlay.EnsureForwarding(c.Prefixes()); err != nil {
		return internal("%v", err)
	}

	addrs, err := store.Allocate(ctx, owner)
	if err != nil {
		return typed(fmt.Sprintf("allocate addresses for %s/%s", args.ContainerID, args.IfName), err)
	}
	if len(addrs) != len(c.Networks) {
		_ = store.Release(ctx, owner)
		return internal("ipam returned %d addresses for %d pod CIDRs", len(addrs), len(c.Networks))
	}

	a := Attachment{
		HostVeth: HostVethName(args.ContainerID, args.IfName),
		HostMAC:  hostMAC(args.ContainerID, args.IfName),
		IfName:   args.IfName,
		PodMAC:   podMAC(addrs),
		Netns:    args.Netns,
		Addrs:    addrs,
	}
	success := false
	var vethMade bool
	defer func() {
		if success {
			return
		}
		if vethMade {
			_ = deleteLink(a.HostVeth)
		}
		_ = store.Release(context.WithoutCancel(ctx), owner)
	}()

	rt, err := openRoute()
	if err != nil {
		return internal("netlink socket: %v", err)
	}
	defer rt.Close()
	err = rt.addVeth(vethSpec{Host: a.HostVeth, Pod: args.IfName, HostMAC: a.HostMAC, PodMAC: preMAC(a.PodMAC),
		MTU: c.MTU, Master: brIndex, PodNS: podNS})
	if err != nil {
		return internal("add veth %s (pod end %s in %s): %v", a.HostVeth, args.IfName, args.Netns, err)
	}
	vethMade = true
	if c.HairpinMode {
		if err := rt.setHairpin(a.HostVeth); err != nil {
			return internal("set hairpin on %s: %v", a.HostVeth, err)
		}
	}
	if err := setupPod(podNS, c, a); err != nil {
		return internal("%v", err)
	}
	success = true
	return types.PrintResult(BuildResult(c, a), c.CNIVersion)
}

// setupPod configures the pod end in one visit to the pod's namespace:
// announcements switched on (arp_notify, ndisc_notify), the interface up
// with its addresses (no DAD) and its default routes via the gateways; then,
// once the host end's bridge port forwards (syncCarrier, through a socket
// opened in the host's namespace before the visit), the pod end's final
// MAC, whose change makes the kernel announce the addresses (see announce).
func setupPod(podNS netns.NsHandle, c *Config, a Attachment) error {
	ethtool, err := ethtoolSocket()
	if err != nil {
		return err
	}
	defer unix.Close(ethtool)
	return nsrun.Do(podNS, func() error {
		// /proc/sys/net and new sockets belong to this thread's namespace.
		if err := enableNotify(a.IfName, a.Addrs); err != nil {
			return err
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink handle in %s: %w", a.Netns, err)
		}
		defer h.Close()
		link, err := h.LinkByName(a.IfName)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", a.IfName, a.Netns, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", a.IfName, err)
		}
		for i, addr := range a.Addrs {
			p := netip.PrefixFrom(addr, c.Networks[i].Prefix.Bits())
			if err := h.AddrAdd(link, overlay.NoDADAddr(p)); err != nil {
				return fmt.Errorf("add address %s to %s: %w", p, a.IfName, err)
			}
		}
		for i, addr := range a.Addrs {
			dst := defaultDst(addr)
			gw := c.Networks[i].Gateway
			if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: gw.AsSlice()}); err != nil {
				return fmt.Errorf("add default route via %s on %s: %w", gw, a.IfName, err)
			}
		}
		if up, err := syncCarrier(ethtool, a.HostVeth); err != nil || !up {
			return fmt.Errorf("host veth %s has no carrier (%v)", a.HostVeth, err)
		}
		if err := h.LinkSetHardwareAddr(link, a.PodMAC); err != nil {
			return fmt.Errorf("announce %v: set mac %s on %s: %w", a.Addrs, a.PodMAC, a.IfName, err)
		}
		return nil
	})
}

// cmdDel holds the owner's lock (see cmdAdd) while it removes the veth and
// releases the addresses.
func cmdDel(args *skel.CmdArgs) error {
	c, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	owner, err := ownerOf(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	store, err := openStore(c)
	if err != nil {
		return err
	}
	release, err := store.Hold(ctx, owner)
	if err != nil {
		return typed(fmt.Sprintf("hold %s/%s", args.ContainerID, args.IfName), err)
	}
	defer release()
	if err := deleteHostVeth(HostVethName(args.ContainerID, args.IfName)); err != nil {
		return err
	}
	return typed(fmt.Sprintf("release addresses of %s/%s", args.ContainerID, args.IfName), store.Release(ctx, owner))
}

// deleteHostVeth removes a host veth (the kernel removes its pod end with
// it); a veth already gone is not an error.
func deleteHostVeth(name string) error {
	if err := deleteLink(name); err != nil {
		return internal("delete veth %s: %v", name, err)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	c, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	if c.ReadyFile != "" {
		if _, err := os.Stat(c.ReadyFile); err != nil {
			return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("not ready: ready file %s: %v", c.ReadyFile, err), "")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	store, err := openStore(c)
	if err == nil {
		err = store.Check(ctx)
	}
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("ipam store %s unusable: %v", c.DataDir, err), "")
	}
	return nil
}

// gcRequest holds the GC keys: the spec's and the older one libcni also sends.
type gcRequest struct {
	Valid  *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	Legacy *[]types.GCAttachment `json:"cni.dev/attachments"`
}

// keepList returns the attachments to keep, and false when the request names
// none at all (then nothing is released).
func keepList(data []byte) ([]ipam.Owner, bool, error) {
	var req gcRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, false, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode GC attachments: %v", err), "")
	}
	if req.Valid == nil && req.Legacy == nil {
		return nil, false, nil
	}
	var keep []ipam.Owner
	for _, list := range []*[]types.GCAttachment{req.Valid, req.Legacy} {
		if list == nil {
			continue
		}
		for _, a := range *list {
			o := ipam.Owner{ContainerID: a.ContainerID, IfName: a.IfName}
			if !slices.Contains(keep, o) {
				keep = append(keep, o)
			}
		}
	}
	return keep, true, nil
}

func cmdGC(args *skel.CmdArgs) error {
	c, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	keep, ok, err := keepList(args.StdinData)
	if err != nil || !ok {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	store, err := openStore(c)
	if err != nil {
		return err
	}
	released, err := store.GC(ctx, keep)
	if err != nil {
		return typed("gc ipam store", err)
	}
	var errs []error
	for _, o := range released {
		if err := deleteHostVeth(HostVethName(o.ContainerID, o.IfName)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return internal("gc: %v", errors.Join(errs...))
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := Parse(args.StdinData)
	if err != nil {
		return err
	}
	var pc types.PluginConf
	if err := json.Unmarshal(args.StdinData, &pc); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode config: %v", err), "")
	}
	if pc.RawPrevResult == nil {
		return invalid("prevResult", nil, "required for CHECK")
	}
	if err := version.ParsePrevResult(&pc); err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: %v", err), "")
	}
	prev, err := types100.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("convert prevResult: %v", err), "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	store, err := openStore(c)
	if err != nil {
		return err
	}
	owner := ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
	addrs, err := store.Lookup(ctx, owner)
	if err != nil {
		return typed(fmt.Sprintf("look up %s/%s", args.ContainerID, args.IfName), err)
	}
	want, err := expected(c, prev, args)
	if err != nil {
		return err
	}
	if !slices.Equal(want.Addrs, addrs) {
		return internal("check: prevResult addresses %v, ipam store has %v", want.Addrs, addrs)
	}
	if err := checkHost(c, want.HostVeth); err != nil {
		return err
	}
	podNS, err := netns.GetFromPath(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("open CNI_NETNS %q: %v", args.Netns, err), "")
	}
	defer podNS.Close()
	return checkPod(podNS, c, want)
}

// expected reads the attachment ADD reported out of prevResult.
func expected(c *Config, prev *types100.Result, args *skel.CmdArgs) (Attachment, error) {
	a := Attachment{HostVeth: HostVethName(args.ContainerID, args.IfName), IfName: args.IfName, Netns: args.Netns}
	podIdx := -1
	for i, itf := range prev.Interfaces {
		if itf.Name == args.IfName && itf.Sandbox != "" {
			podIdx = i
			mac, err := net.ParseMAC(itf.Mac)
			if err != nil {
				return a, internal("check: prevResult interface %s mac %q: %v", itf.Name, itf.Mac, err)
			}
			a.PodMAC = mac
		}
	}
	if podIdx < 0 {
		return a, internal("check: prevResult has no interface %s with a sandbox", args.IfName)
	}
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != podIdx {
			continue
		}
		addr, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			return a, internal("check: prevResult address %v", ip.Address)
		}
		a.Addrs = append(a.Addrs, addr.Unmap())
	}
	// Same order as the config, as ADD reports them.
	if len(a.Addrs) != len(c.Networks) {
		return a, internal("check: prevResult has %d addresses on %s, config has %d pod CIDRs", len(a.Addrs), args.IfName, len(c.Networks))
	}
	for i, n := range c.Networks {
		if !n.Prefix.Contains(a.Addrs[i]) {
			return a, internal("check: prevResult address %s outside pod CIDR %s", a.Addrs[i], n.Prefix)
		}
	}
	return a, nil
}

func checkHost(c *Config, hostVeth string) error {
	link, err := netlink.LinkByName(hostVeth)
	if err != nil {
		return internal("check: host veth %s: %v", hostVeth, err)
	}
	br, err := netlink.LinkByName(c.Bridge)
	if err != nil {
		return internal("check: bridge %s: %v", c.Bridge, err)
	}
	if link.Attrs().MasterIndex != br.Attrs().Index {
		return internal("check: host veth %s is not on bridge %s", hostVeth, c.Bridge)
	}
	return nil
}

func checkPod(podNS netns.NsHandle, c *Config, want Attachment) error {
	h, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return internal("netlink handle in %s: %v", want.Netns, err)
	}
	defer h.Close()
	link, err := h.LinkByName(want.IfName)
	if err != nil {
		return internal("check: %s in %s: %v", want.IfName, want.Netns, err)
	}
	if link.Type() != "veth" {
		return internal("check: %s is a %s, not a veth", want.IfName, link.Type())
	}
	if !bytes.Equal(link.Attrs().HardwareAddr, want.PodMAC) {
		return internal("check: %s has mac %s, prevResult says %s", want.IfName, link.Attrs().HardwareAddr, want.PodMAC)
	}
	if link.Attrs().MTU != c.MTU {
		return internal("check: %s has mtu %d, config says %d", want.IfName, link.Attrs().MTU, c.MTU)
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return internal("check: list addresses on %s: %v", want.IfName, err)
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return internal("check: list routes on %s: %v", want.IfName, err)
	}
	for i, addr := range want.Addrs {
		p := netip.PrefixFrom(addr, c.Networks[i].Prefix.Bits())
		if !slices.ContainsFunc(have, func(x netlink.Addr) bool { return ipnetEqual(x.IPNet, p) }) {
			return internal("check: address %s missing on %s", p, want.IfName)
		}
		gw := c.Networks[i].Gateway
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return isDefaultVia(r, gw) }) {
			return internal("check: default route via %s missing on %s", gw, want.IfName)
		}
	}
	return nil
}

func ipnetEqual(n *net.IPNet, p netip.Prefix) bool {
	if n == nil {
		return false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return ok && ip.Unmap() == p.Addr() && ones == p.Bits()
}

func isDefaultVia(r netlink.Route, gw netip.Addr) bool {
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 {
			return false
		}
	}
	got, ok := netip.AddrFromSlice(r.Gw)
	return ok && got.Unmap() == gw
}
