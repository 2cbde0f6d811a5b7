package cni

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"weft.dev/weft/overlay/nsrun"
)

// announce tells the bridge and its neighbours about a pod's new addresses:
// a gratuitous ARP request per IPv4 address and an unsolicited neighbour
// advertisement (override flag, target link-layer address) per IPv6 address.
//
// The kernel sends them: announce switches on arp_notify (IPv4) and
// ndisc_notify (IPv6) for the pod's interface inside podNS, then gives the
// interface its final MAC (it was made with a stand-in, preMAC), and the
// kernel answers the address change with the announcements. weft sends
// nothing from a socket of its own on purpose: releasing a packet socket
// waits for an RCU grace period, which cost more than half of an ADD.
// Call it once the host end's bridge port forwards (syncCarrier), or the
// bridge drops them.
func announce(podNS netns.NsHandle, ifName string, ifIndex int, mac net.HardwareAddr, addrs []netip.Addr) error {
	var v4, v6 bool
	for _, a := range addrs {
		v4, v6 = v4 || a.Is4(), v6 || a.Is6()
	}
	err := nsrun.Do(podNS, func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		if v4 {
			if err := writeSysctl(filepath.Join("/proc/sys/net/ipv4/conf", ifName, "arp_notify"), "1"); err != nil {
				return err
			}
		}
		if v6 {
			if err := writeSysctl(filepath.Join("/proc/sys/net/ipv6/conf", ifName, "ndisc_notify"), "1"); err != nil {
				return err
			}
		}
		link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifIndex, Name: ifName}}
		if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("set mac %s on %s: %w", mac, ifName, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("announce %v: %w", addrs, err)
	}
	return nil
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
