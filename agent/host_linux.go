package agent

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"weft.dev/weft/overlay"
)

// LinuxHost is the Host of the network namespace the agent runs in.
type LinuxHost struct {
	h *netlink.Handle
}

// NewLinuxHost opens a netlink handle in the caller's namespace.
func NewLinuxHost() (*LinuxHost, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &LinuxHost{h: h}, nil
}

// Close releases the netlink handle.
func (l *LinuxHost) Close() { l.h.Close() }

// Underlay returns the subnet and MTU of the interface holding addr.
func (l *LinuxHost) Underlay(addr netip.Addr) (netip.Prefix, int, error) { return underlayOf(addr) }

// EnsureBridge makes the pod bridge exist with its gateways and MTU (so
// node → pod routes exist before the first pod) and turns on forwarding.
func (l *LinuxHost) EnsureBridge(_ context.Context, b overlay.Bridge) error {
	if _, err := overlay.EnsureBridge(l.h, b); err != nil {
		return fmt.Errorf("ensure bridge %s: %w", b.Name, err)
	}
	if err := overlay.EnsureForwarding(b.Gateways); err != nil {
		return fmt.Errorf("ensure forwarding: %w", err)
	}
	return nil
}
