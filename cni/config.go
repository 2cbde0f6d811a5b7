// Package cni is the weft CNI plugin: it attaches a pod to the node bridge
// with a veth pair and one address per pod CIDR from the node's IPAM store.
//
// The contract, per command (CNI spec 0.3.1 to 1.1.0):
//   - ADD first checks all of its input: the config, the container ID and
//     interface name, and CNI_NETNS, which must be a network namespace other
//     than the plugin's own (the node's). Only then does it change the node.
//     It holds the container's owner lock (ipam.Store.Hold) to the end, as
//     DEL does, so ADD and DEL of one container never interleave: a live
//     veth always carries addresses the store holds for it.
//   - ADD ensures the node bridge (overlay.EnsureBridge), reserves the pod's
//     addresses, creates the veth pair with the pod end named CNI_IFNAME
//     inside CNI_NETNS, configures addresses (no DAD) and default routes via
//     the gateways, announces the addresses and prints the Result in the
//     config's cniVersion. A failure undoes what that ADD made. A second ADD
//     for the same container ID and interface name fails.
//   - DEL removes the host veth (and so the pod end) and releases the
//     reservation; it succeeds when either is already gone, also when the
//     pod's network namespace no longer exists.
//   - CHECK compares the pod's interface, addresses and routes with the
//     previous result.
//   - STATUS fails with code 50 while the ready file is missing or the
//     store is unusable; GC releases every reservation not listed as valid.
//
// Every error is a *types.Error with the spec's code; stdout carries only the
// result (logs go to stderr), and values echoed in errors are clipped. The
// plugin reads at most MaxStdin bytes of config. Everything it needs comes
// from its config (see Config).
package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Defaults for the optional config fields.
const (
	DefaultBridge  = "weft0"
	DefaultMTU     = 1500
	DefaultDataDir = "/var/lib/weft/ipam"
	MinMTU         = 576
	MaxMTU         = 65535
)

// Config is the validated, defaulted plugin config.
type Config struct {
	CNIVersion  string
	Name        string
	Bridge      string
	MTU         int
	Networks    []Network // one per pod CIDR, in config order (at most one per family)
	DataDir     string
	HairpinMode bool
	ReadyFile   string
}

// Network is one pod CIDR with the bridge's gateway address in it.
type Network struct {
	Prefix  netip.Prefix // canonical (host bits zero)
	Gateway netip.Addr
}

// GatewayPrefix is the gateway with the pod CIDR's prefix length, as it sits
// on the bridge.
func (n Network) GatewayPrefix() netip.Prefix {
	return netip.PrefixFrom(n.Gateway, n.Prefix.Bits())
}

// rawConfig is the JSON form of the plugin object in a conflist. Fields the
// runtime adds (prevResult, runtimeConfig, GC attachments) are read by the
// command that needs them.
type rawConfig struct {
	CNIVersion  string   `json:"cniVersion,omitempty"`
	Name        string   `json:"name,omitempty"`
	Type        string   `json:"type,omitempty"`
	Bridge      *string  `json:"bridge,omitempty"`
	MTU         *int     `json:"mtu,omitempty"`
	PodCIDRs    []string `json:"podCIDRs,omitempty"`
	Gateways    []string `json:"gateways,omitempty"`
	DataDir     *string  `json:"dataDir,omitempty"`
	HairpinMode *bool    `json:"hairpinMode,omitempty"`
	ReadyFile   string   `json:"readyFile,omitempty"`
}

// invalid is a code-7 error naming the config field and its value.
func invalid(field string, value any, why string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("invalid config: %s %s: %s", field, quote(value), why), "")
}

// quote renders v as JSON for an error message, clipped to maxEcho bytes:
// the value comes from the caller and may be of any size.
func quote(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		b = fmt.Appendf(nil, "%v", v)
	}
	if len(b) > maxEcho {
		return fmt.Sprintf("%s…(%d bytes)", bytes.ToValidUTF8(b[:maxEcho], nil), len(b))
	}
	return string(b)
}

// maxEcho bounds a value echoed in an error message.
const maxEcho = 64

// Parse decodes and validates a plugin config, filling in defaults. Its error
// is a *types.Error: code 6 when the input is not JSON, code 7 naming the
// field and value when a field is wrong.
func Parse(data []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("invalid config: %s: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value), "")
		}
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode config: %v", err), "")
	}
	c := &Config{
		CNIVersion:  raw.CNIVersion,
		Name:        raw.Name,
		Bridge:      DefaultBridge,
		MTU:         DefaultMTU,
		DataDir:     DefaultDataDir,
		HairpinMode: true,
		ReadyFile:   raw.ReadyFile,
	}
	if raw.Bridge != nil {
		if err := validIfName(*raw.Bridge); err != nil {
			return nil, invalid("bridge", *raw.Bridge, err.Error())
		}
		c.Bridge = *raw.Bridge
	}
	if raw.MTU != nil {
		if *raw.MTU < MinMTU || *raw.MTU > MaxMTU {
			return nil, invalid("mtu", *raw.MTU, fmt.Sprintf("must be %d..%d", MinMTU, MaxMTU))
		}
		c.MTU = *raw.MTU
	}
	if raw.DataDir != nil {
		if !filepath.IsAbs(*raw.DataDir) {
			return nil, invalid("dataDir", *raw.DataDir, "must be an absolute path")
		}
		c.DataDir = *raw.DataDir
	}
	if raw.ReadyFile != "" && !filepath.IsAbs(raw.ReadyFile) {
		return nil, invalid("readyFile", raw.ReadyFile, "must be an absolute path")
	}
	if raw.HairpinMode != nil {
		c.HairpinMode = *raw.HairpinMode
	}
	nets, err := parseNetworks(raw.PodCIDRs, raw.Gateways)
	if err != nil {
		return nil, err
	}
	c.Networks = nets
	return c, nil
}

// parseNetworks validates the pod CIDRs (one or two, one per family) and
// pairs each with its gateway (given, or the CIDR's first usable address).
func parseNetworks(cidrs, gateways []string) ([]Network, error) {
	if len(cidrs) == 0 {
		return nil, invalid("podCIDRs", cidrs, "required: one IPv4 and/or one IPv6 CIDR")
	}
	if len(cidrs) > 2 {
		return nil, invalid("podCIDRs", cidrs, "at most two CIDRs (one per family)")
	}
	var nets []Network
	for i, s := range cidrs {
		field := fmt.Sprintf("podCIDRs[%d]", i)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, invalid(field, s, "not a CIDR")
		}
		if p.Addr().Is4In6() {
			return nil, invalid(field, s, "IPv4-mapped IPv6 CIDR; write it as IPv4")
		}
		if p != p.Masked() {
			return nil, invalid(field, s, fmt.Sprintf("host bits set (want %s)", p.Masked()))
		}
		if max := p.Addr().BitLen() - 2; p.Bits() > max {
			return nil, invalid(field, s, fmt.Sprintf("too small: prefix length at most /%d", max))
		}
		for _, n := range nets {
			if n.Prefix.Addr().Is4() == p.Addr().Is4() {
				return nil, invalid(field, s, "second CIDR of the same family (one IPv4 and/or one IPv6)")
			}
		}
		nets = append(nets, Network{Prefix: p, Gateway: p.Addr().Next()})
	}
	seen := make([]bool, len(nets))
	for i, s := range gateways {
		field := fmt.Sprintf("gateways[%d]", i)
		gw, err := netip.ParseAddr(s)
		if err != nil || gw.Zone() != "" {
			return nil, invalid(field, s, "not an IP address")
		}
		idx := -1
		for j, n := range nets {
			if n.Prefix.Addr().Is4() == gw.Is4() {
				idx = j
			}
		}
		if idx < 0 {
			return nil, invalid(field, s, "no pod CIDR of its family")
		}
		if seen[idx] {
			return nil, invalid(field, s, "second gateway of the same family")
		}
		seen[idx] = true
		p := nets[idx].Prefix
		if !p.Contains(gw) {
			return nil, invalid(field, s, fmt.Sprintf("not inside pod CIDR %s", p))
		}
		if gw == p.Addr() {
			return nil, invalid(field, s, fmt.Sprintf("is the network address of %s", p))
		}
		if gw.Is4() && gw == lastAddr(p) {
			return nil, invalid(field, s, fmt.Sprintf("is the broadcast address of %s", p))
		}
		nets[idx].Gateway = gw
	}
	return nets, nil
}

// lastAddr is the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		bit := i * 8
		switch {
		case bit >= p.Bits():
			b[i] = 0xff
		case bit+8 > p.Bits():
			b[i] |= 0xff >> (p.Bits() - bit)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// validIfName applies the kernel's rules for interface names.
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > 15:
		return errors.New("longer than 15 bytes")
	case name == "." || name == "..":
		return errors.New("not a valid interface name")
	case strings.ContainsAny(name, "/: \t\n\r\x00"):
		return errors.New("contains '/', ':', NUL or white space")
	}
	return nil
}

// JSON renders c as a plugin object with every field explicit; Parse of the
// output yields c again.
func (c *Config) JSON() ([]byte, error) {
	raw := rawConfig{
		CNIVersion:  c.CNIVersion,
		Name:        c.Name,
		Type:        "weft",
		Bridge:      &c.Bridge,
		MTU:         &c.MTU,
		DataDir:     &c.DataDir,
		HairpinMode: &c.HairpinMode,
		ReadyFile:   c.ReadyFile,
	}
	for _, n := range c.Networks {
		raw.PodCIDRs = append(raw.PodCIDRs, n.Prefix.String())
		raw.Gateways = append(raw.Gateways, n.Gateway.String())
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(raw); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(buf.Bytes()), nil
}

// Prefixes lists the pod CIDRs in config order.
func (c *Config) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, len(c.Networks))
	for i, n := range c.Networks {
		out[i] = n.Prefix
	}
	return out
}
