package cni

import (
	"fmt"
	"net"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// route is one route netlink socket, in the namespace it was opened in,
// for the requests of one command: a socket per request would cost its own
// setup and teardown each time.
type route map[int]*nl.SocketHandle

func openRoute() (route, error) {
	s, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return route{unix.NETLINK_ROUTE: {Socket: s}}, nil
}

func (r route) execute(req *nl.NetlinkRequest) error {
	req.Sockets = r
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func (r route) Close() { r[unix.NETLINK_ROUTE].Socket.Close() }

// vethSpec is a veth pair whose host end starts on a bridge and whose pod
// end starts in the pod's network namespace.
type vethSpec struct {
	Host, Pod       string
	HostMAC, PodMAC net.HardwareAddr
	MTU             int
	Master          int // bridge index
	PodNS           netns.NsHandle
}

// addVeth creates the pair in one request, in the calling thread's network
// namespace: the host end up and on the bridge, the pod end (down) already
// in its namespace. The kernel makes all of it or nothing, so no stray link
// is left behind.
func (r route) addVeth(v vethSpec) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.Host)))
	req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU))))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, v.HostMAC))
	req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(v.Master))))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	peer := data.AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC) // down: a veth end cannot open before its peer exists
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.Pod))
	peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU)))
	peer.AddRtAttr(unix.IFLA_ADDRESS, v.PodMAC)
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(v.PodNS)))
	req.AddData(info)
	return r.execute(req)
}

// setHairpin turns hairpin mode on for the bridge port name (frames may
// leave by the port they came in, so a pod reaches itself through a
// service address).
func (r route) setHairpin(name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_SLAVE_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_SLAVE_DATA, nil)
	data.AddRtAttr(nl.IFLA_BRPORT_MODE, []byte{1})
	req.AddData(info)
	return r.execute(req)
}

// deleteLink removes a link by name (for a veth, both ends); a link already
// gone is not an error.
func deleteLink(name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err == nil || err == unix.ENODEV {
		return nil
	}
	return err
}

// ethtoolSocket opens the socket syncCarrier asks through, in the calling
// thread's network namespace (the one whose interfaces it can name).
func ethtoolSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("ethtool socket: %w", err)
	}
	return fd, nil
}

// syncCarrier makes the kernel apply the link state of the named interface
// now instead of in its deferred link-watch work: reading the link through
// ethtool (ETHTOOL_GLINK) runs that work for the device synchronously. For a
// bridge port whose veth peer just came up this enables the port at once,
// so the pod's first frames are forwarded, without any wait. It reports
// whether the link has carrier. fd is an ethtoolSocket of the namespace
// that holds the interface, whichever namespace the caller is in.
func syncCarrier(fd int, name string) (bool, error) {
	val := struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_GLINK}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return false, fmt.Errorf("ethtool get link %s: %w", name, errno)
	}
	return val.data != 0, nil
}
