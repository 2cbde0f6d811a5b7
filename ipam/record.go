package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// recordMagic is the first line of every reservation file; a new format gets
// a new number.
const recordMagic = "weft-ipam 1"

// record is one reservation: the owner, the boot it was made in and its
// addresses (at most one per family). Its text form is
//
//	weft-ipam 1
//	owner <containerID> <ifname>
//	boot <boot ID>
//	addr <address>
//	addr <address>
//
// with exactly one space between fields and a newline after every line.
// parseRecord accepts only this canonical form, so a record and its text
// convert into each other one to one.
type record struct {
	owner Owner
	boot  string
	addrs []netip.Addr
}

func (r record) marshal() []byte {
	var b strings.Builder
	b.WriteString(recordMagic + "\n")
	b.WriteString("owner " + r.owner.ContainerID + " " + r.owner.IfName + "\n")
	b.WriteString("boot " + r.boot + "\n")
	for _, a := range r.addrs {
		b.WriteString("addr " + a.String() + "\n")
	}
	return []byte(b.String())
}

func parseRecord(data []byte) (record, error) {
	text, ok := strings.CutSuffix(string(data), "\n")
	if !ok {
		return record{}, fmt.Errorf("reservation record of %d bytes: truncated (no final newline): %w", len(data), ErrInvalid)
	}
	lines := strings.Split(text, "\n")
	if lines[0] != recordMagic {
		return record{}, fmt.Errorf("reservation record: first line %q, want %q: %w", lines[0], recordMagic, ErrInvalid)
	}
	if len(lines) < 4 || len(lines) > 5 {
		return record{}, fmt.Errorf("reservation record: %d lines, want 4 or 5: %w", len(lines), ErrInvalid)
	}
	var r record
	owner, ok := strings.CutPrefix(lines[1], "owner ")
	if !ok {
		return record{}, fmt.Errorf("reservation record line 2 %q: want \"owner <containerID> <ifname>\": %w", lines[1], ErrInvalid)
	}
	r.owner.ContainerID, r.owner.IfName, _ = strings.Cut(owner, " ")
	if err := r.owner.validate(); err != nil {
		return record{}, fmt.Errorf("reservation record line 2: %w", err)
	}
	if r.boot, ok = strings.CutPrefix(lines[2], "boot "); !ok {
		return record{}, fmt.Errorf("reservation record line 3 %q: want \"boot <id>\": %w", lines[2], ErrInvalid)
	}
	if err := validBootID(r.boot); err != nil {
		return record{}, fmt.Errorf("reservation record line 3: %w", err)
	}
	for i, line := range lines[3:] {
		s, ok := strings.CutPrefix(line, "addr ")
		if !ok {
			return record{}, fmt.Errorf("reservation record line %d %q: want \"addr <address>\": %w", i+4, line, ErrInvalid)
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.String() != s || a.Zone() != "" || a.Is4In6() {
			return record{}, fmt.Errorf("reservation record line %d: %q is not a canonical IPv4 or IPv6 address: %w", i+4, s, ErrInvalid)
		}
		for _, b := range r.addrs {
			if b.Is4() == a.Is4() {
				return record{}, fmt.Errorf("reservation record line %d: second address %s of one family (with %s): %w", i+4, a, b, ErrInvalid)
			}
		}
		r.addrs = append(r.addrs, a)
	}
	return r, nil
}
