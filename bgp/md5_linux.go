package bgp

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// md5Supported probes whether a listener made the way GoBGP makes its own
// (net.Listen) accepts TCP MD5 signatures (RFC 2385). GoBGP only logs a
// warning when its listener refuses, so a peer with a password would then
// never connect to us, or be accepted unsigned: we refuse the peer instead.
//
// Since Go 1.24 net listeners use MPTCP where the kernel has it, and MPTCP
// sockets refuse TCP_MD5SIG (ENOPROTOOPT). A binary that uses passwords
// needs `//go:debug multipathtcp=0` in its main package (or
// GODEBUG=multipathtcp=0).
func md5Supported() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l, err = net.Listen("tcp", "[::1]:0")
	}
	if err != nil {
		return fmt.Errorf("probe tcp md5: %w", err)
	}
	defer l.Close()
	sc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		return fmt.Errorf("probe tcp md5: %w", err)
	}
	host := l.Addr().(*net.TCPAddr).IP
	sig := unix.TCPMD5Sig{Keylen: 4}
	if ip4 := host.To4(); ip4 != nil {
		sig.Addr.Family = unix.AF_INET
		copy(sig.Addr.Data[2:], ip4)
	} else {
		sig.Addr.Family = unix.AF_INET6
		copy(sig.Addr.Data[6:], host.To16())
	}
	copy(sig.Key[:], "weft")
	var serr error
	if err := sc.Control(func(fd uintptr) {
		serr = unix.SetsockoptTCPMD5Sig(int(fd), unix.IPPROTO_TCP, unix.TCP_MD5SIG, &sig)
	}); err != nil {
		return fmt.Errorf("probe tcp md5: %w", err)
	}
	switch {
	case errors.Is(serr, unix.ENOPROTOOPT):
		return errors.New("listener refuses TCP MD5 signatures (ENOPROTOOPT): Go listeners use MPTCP, " +
			"set //go:debug multipathtcp=0 (or GODEBUG=multipathtcp=0), or the kernel lacks CONFIG_TCP_MD5SIG")
	case serr != nil:
		return fmt.Errorf("probe tcp md5: %w", serr)
	}
	return nil
}
