package agent

import (
	"fmt"
	"net"
	"net/netip"
)

// underlayOf returns the subnet and MTU of the interface holding addr, from
// the calling process's network namespace.
func underlayOf(addr netip.Addr) (netip.Prefix, int, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Prefix{}, 0, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.Unmap() != addr {
				continue
			}
			bits, _ := ipn.Mask.Size()
			return netip.PrefixFrom(addr, bits).Masked(), ifc.MTU, nil
		}
	}
	return netip.Prefix{}, 0, fmt.Errorf("node address %s is on no interface", addr)
}
