package overlay

import (
	"fmt"
	"net/netip"
)

// VXLAN encapsulation overhead: outer IP header + UDP (8) + VXLAN (8) +
// inner Ethernet (14). IPv4's header is 20 bytes, IPv6's 40.
const (
	VXLANOverhead4 = 20 + 8 + 8 + 14
	VXLANOverhead6 = 40 + 8 + 8 + 14
)

// PodMTU returns the MTU for pod interfaces, the bridge and the VXLAN
// device: the underlay MTU minus the VXLAN overhead for the underlay's
// family when encapsulating, the underlay MTU itself when routing natively
// (BGP or direct routing).
func PodMTU(underlayMTU int, underlay netip.Addr, encap bool) (int, error) {
	if !underlay.IsValid() {
		return 0, fmt.Errorf("underlay address %v: invalid", underlay)
	}
	mtu := underlayMTU
	if encap {
		if underlay.Unmap().Is4() {
			mtu -= VXLANOverhead4
		} else {
			mtu -= VXLANOverhead6
		}
	}
	// 68 is IPv4's floor; IPv6 pods would need 1280, which the caller
	// checks when it plans IPv6 pod addresses.
	if mtu < 68 {
		return 0, fmt.Errorf("underlay MTU %d leaves pod MTU %d, below 68", underlayMTU, mtu)
	}
	return mtu, nil
}
