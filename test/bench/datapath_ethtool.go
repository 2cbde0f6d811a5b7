package main

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolValue runs one ETHTOOL_{G,S}* command with a 32-bit value on the
// named interface, in the calling thread's network namespace, and returns
// the value the kernel wrote back.
func ethtoolValue(name string, cmd, data uint32) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: cmd, data: data}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return 0, fmt.Errorf("ethtool command %#x on %s: %w", cmd, name, errno)
	}
	return val.data, nil
}

// setGRO turns generic receive offload on or off for the named interface.
func setGRO(name string, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	_, err := ethtoolValue(name, unix.ETHTOOL_SGRO, v)
	return err
}
