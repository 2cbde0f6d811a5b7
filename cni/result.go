package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Attachment is one pod interface as ADD made it.
type Attachment struct {
	HostVeth string           // host end, on the bridge
	HostMAC  net.HardwareAddr // host end's address
	IfName   string           // pod end (CNI_IFNAME)
	PodMAC   net.HardwareAddr
	Netns    string       // CNI_NETNS
	Addrs    []netip.Addr // one per Config.Networks entry, same order
}

// HostVethName is the host end's name for a container's interface: "weft"
// and 10 hex digits of a hash of both, so DEL and GC find it from the
// container ID and interface name alone.
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return "weft" + hex.EncodeToString(sum[:5])
}

// macFrom derives a stable, locally administered unicast MAC from parts.
func macFrom(parts ...string) net.HardwareAddr {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	mac := net.HardwareAddr(h.Sum(nil)[:6])
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// hostMAC and podMAC pin the veth ends' addresses, so ADD needs no query to
// report them and a pod keeps its MAC for its addresses.
func hostMAC(containerID, ifName string) net.HardwareAddr {
	return macFrom("host", containerID, ifName)
}

func podMAC(addrs []netip.Addr) net.HardwareAddr {
	parts := []string{"pod"}
	for _, a := range addrs {
		parts = append(parts, a.String())
	}
	return macFrom(parts...)
}

// preMAC is the pod end's stand-in address until announce gives it its own
// (the change is what makes the kernel announce the pod's addresses).
func preMAC(mac net.HardwareAddr) net.HardwareAddr {
	return macFrom("pre", mac.String())
}

// defaultDst is the default route's destination in the family of a.
func defaultDst(a netip.Addr) net.IPNet {
	bits := a.BitLen()
	ip := net.IPv4zero.To4()
	if a.Is6() {
		ip = net.IPv6zero
	}
	return net.IPNet{IP: ip, Mask: net.CIDRMask(0, bits)}
}

// BuildResult is the ADD result (spec 1.1.0 types; converted to the config's
// version when printed): the host veth, the pod interface with its sandbox,
// one IP per pod CIDR pointing at the pod interface, and a default route per
// family via the gateway.
func BuildResult(c *Config, a Attachment) *types100.Result {
	podIdx := 1
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: a.HostVeth, Mac: a.HostMAC.String()},
			{Name: a.IfName, Mac: a.PodMAC.String(), Sandbox: a.Netns},
		},
	}
	for i, addr := range a.Addrs {
		n := c.Networks[i]
		idx := podIdx
		r.IPs = append(r.IPs, &types100.IPConfig{
			Interface: &idx,
			Address:   net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(n.Prefix.Bits(), addr.BitLen())},
			Gateway:   n.Gateway.AsSlice(),
		})
		r.Routes = append(r.Routes, &types.Route{Dst: defaultDst(addr), GW: n.Gateway.AsSlice()})
	}
	return r
}
