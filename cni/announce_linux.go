package cni

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// How weft announces a pod's addresses (a gratuitous ARP request per IPv4
// address, an unsolicited neighbour advertisement with the override flag
// per IPv6 address): the kernel sends them. enableNotify switches on
// arp_notify (IPv4) and ndisc_notify (IPv6) for the pod's interface; the
// interface is made with a stand-in MAC (preMAC), and setupPod gives it its
// final one once the host end's bridge port forwards; the kernel answers
// the address change with the announcements. weft sends nothing from a
// socket of its own on purpose: releasing a packet socket waits for an RCU
// grace period, which cost more than half of an ADD.

// enableNotify switches the announcements on for ifName. The calling thread
// must be in the pod's namespace: /proc/sys/net shows the namespace of the
// thread that opens it.
func enableNotify(ifName string, addrs []netip.Addr) error {
	var v4, v6 bool
	for _, a := range addrs {
		v4, v6 = v4 || a.Is4(), v6 || a.Is6()
	}
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
	return nil
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
