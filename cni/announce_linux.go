package cni

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"weft.dev/weft/overlay/nsrun"
)

// announce tells the bridge and its neighbours about a pod's new addresses:
// a gratuitous ARP request per IPv4 address and an unsolicited neighbour
// advertisement (override flag, target link-layer address) per IPv6 address,
// sent from the pod's interface inside podNS.
func announce(podNS netns.NsHandle, ifIndex int, mac net.HardwareAddr, addrs []netip.Addr) error {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	arpFD, ndFD, err := socketsIn(podNS, len(v4) > 0, len(v6) > 0)
	if err != nil {
		return err
	}
	if arpFD >= 0 {
		defer unix.Close(arpFD)
	}
	if ndFD >= 0 {
		defer unix.Close(ndFD)
	}
	for _, a := range v4 {
		to := &unix.SockaddrLinklayer{Ifindex: ifIndex, Protocol: htons(unix.ETH_P_ARP), Halen: 6,
			Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		if err := unix.Sendto(arpFD, garp(mac, a), 0, to); err != nil {
			return fmt.Errorf("send gratuitous arp for %s: %w", a, err)
		}
	}
	if ndFD >= 0 {
		if err := unix.SetsockoptInt(ndFD, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
			return fmt.Errorf("set hop limit for neighbour advertisement: %w", err)
		}
		if err := unix.SetsockoptInt(ndFD, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifIndex); err != nil {
			return fmt.Errorf("set interface for neighbour advertisement: %w", err)
		}
	}
	allNodes := netip.MustParseAddr("ff02::1").As16()
	for _, a := range v6 {
		to := &unix.SockaddrInet6{Addr: allNodes, ZoneId: uint32(ifIndex)}
		if err := unix.Sendto(ndFD, unsolicitedNA(mac, a), 0, to); err != nil {
			return fmt.Errorf("send neighbour advertisement for %s: %w", a, err)
		}
	}
	return nil
}

// socketsIn opens the packet socket (ARP) and ICMPv6 socket inside podNS
// (see nsrun); sockets stay in the namespace they were made in.
func socketsIn(podNS netns.NsHandle, arp, nd bool) (arpFD, ndFD int, err error) {
	arpFD, ndFD = -1, -1
	err = nsrun.Do(podNS, func() error {
		var err error
		if arp {
			if arpFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP))); err != nil {
				arpFD = -1
				return fmt.Errorf("arp socket: %w", err)
			}
		}
		if nd {
			if ndFD, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6); err != nil {
				ndFD = -1
				return fmt.Errorf("icmpv6 socket: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		if arpFD >= 0 {
			unix.Close(arpFD)
		}
		return -1, -1, fmt.Errorf("pod netns: %w", err)
	}
	return arpFD, ndFD, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// garp is an ARP request announcing ip at mac (sender and target IP equal).
func garp(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:])
	copy(b[24:28], a[:])
	return b
}

// unsolicitedNA is an ICMPv6 neighbour advertisement for ip with the
// override flag and a target link-layer address option; the kernel fills in
// the checksum.
func unsolicitedNA(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, 32)
	b[0] = 136                                    // neighbour advertisement
	binary.BigEndian.PutUint32(b[4:], 0x20000000) // override
	t := ip.As16()
	copy(b[8:24], t[:])
	b[24], b[25] = 2, 1 // target link-layer address, 8 bytes
	copy(b[26:32], mac)
	return b
}
