package overlay

import (
	"errors"
	"fmt"
	"net"
)

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// validate checks a Desired value before anything is written, so a bad plan
// never half-applies. Errors name the field and the value.
func validate(want Desired) error {
	var errs []error
	devs := map[string]bool{}
	for i, d := range want.Devices {
		field := fmt.Sprintf("Devices[%d]", i)
		if err := validName(d.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s.Name %q: %w", field, d.Name, err))
		}
		if devs[d.Name] {
			errs = append(errs, fmt.Errorf("%s.Name %q: listed twice", field, d.Name))
		}
		devs[d.Name] = true
		if d.VNI == 0 || d.VNI > maxVNI {
			errs = append(errs, fmt.Errorf("%s.VNI %d: want 1..%d", field, d.VNI, maxVNI))
		}
		if !d.Local.IsValid() || d.Local.IsUnspecified() {
			errs = append(errs, fmt.Errorf("%s.Local %v: want a unicast underlay address", field, d.Local))
		}
		if d.MTU < 68 || d.MTU > 65535 {
			errs = append(errs, fmt.Errorf("%s.MTU %d: want 68..65535", field, d.MTU))
		}
		if d.MAC != nil && !validMAC(d.MAC) {
			errs = append(errs, fmt.Errorf("%s.MAC %v: want a 6-byte unicast MAC", field, d.MAC))
		}
		for j, a := range d.Addrs {
			if !a.IsValid() || a.Zone() != "" {
				errs = append(errs, fmt.Errorf("%s.Addrs[%d] %v: want an address without zone", field, j, a))
			}
		}
	}
	for i, n := range want.Neighbors {
		field := fmt.Sprintf("Neighbors[%d]", i)
		if !devs[n.Dev] {
			errs = append(errs, fmt.Errorf("%s.Dev %q: not among Devices", field, n.Dev))
		}
		if !n.IP.IsValid() {
			errs = append(errs, fmt.Errorf("%s.IP %v: invalid", field, n.IP))
		}
		if !validMAC(n.MAC) {
			errs = append(errs, fmt.Errorf("%s.MAC %v: want a 6-byte unicast MAC", field, n.MAC))
		}
	}
	for i, f := range want.FDB {
		field := fmt.Sprintf("FDB[%d]", i)
		if !devs[f.Dev] {
			errs = append(errs, fmt.Errorf("%s.Dev %q: not among Devices", field, f.Dev))
		}
		if !validMAC(f.MAC) {
			errs = append(errs, fmt.Errorf("%s.MAC %v: want a 6-byte unicast MAC", field, f.MAC))
		}
		if !f.Dst.IsValid() || f.Dst.IsUnspecified() {
			errs = append(errs, fmt.Errorf("%s.Dst %v: want a unicast underlay address", field, f.Dst))
		}
	}
	dsts := map[string]bool{}
	for i, r := range want.Routes {
		field := fmt.Sprintf("Routes[%d]", i)
		if !r.Dst.IsValid() || r.Dst != r.Dst.Masked() {
			errs = append(errs, fmt.Errorf("%s.Dst %v: want a canonical (masked) prefix", field, r.Dst))
		}
		if dsts[r.Dst.String()] {
			errs = append(errs, fmt.Errorf("%s.Dst %v: listed twice", field, r.Dst))
		}
		dsts[r.Dst.String()] = true
		if len(r.NextHops) == 0 {
			errs = append(errs, fmt.Errorf("%s.NextHops: empty for %v", field, r.Dst))
		}
		for j, nh := range r.NextHops {
			if !nh.Gateway.IsValid() || nh.Gateway.Is4() != r.Dst.Addr().Is4() {
				errs = append(errs, fmt.Errorf("%s.NextHops[%d].Gateway %v: want an address of the family of %v", field, j, nh.Gateway, r.Dst))
			}
			if nh.Onlink && nh.Dev == "" {
				errs = append(errs, fmt.Errorf("%s.NextHops[%d].Onlink: needs a Dev", field, j))
			}
		}
	}
	return errors.Join(errs...)
}

func validName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > 15:
		return errors.New("longer than 15 bytes")
	}
	for _, c := range name {
		if c == '/' || c == ' ' || c == ':' {
			return fmt.Errorf("contains %q", c)
		}
	}
	return nil
}

func validMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0
}
