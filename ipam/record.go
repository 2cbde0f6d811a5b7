package ipam

import (
	"errors"
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

// errDamaged marks a reservation file that does not parse: damage, not a
// caller's mistake (so it does not wrap ErrInvalid).
var errDamaged = errors.New("damaged reservation record")

func parseRecord(data []byte) (record, error) {
	r, err := parseRecordText(data)
	if err != nil {
		return record{}, fmt.Errorf("%w: %s", errDamaged, err)
	}
	return r, nil
}

func parseRecordText(data []byte) (record, error) {
	text, ok := strings.CutSuffix(string(data), "\n")
	if !ok {
		return record{}, fmt.Errorf("%d bytes: truncated (no final newline)", len(data))
	}
	lines := strings.Split(text, "\n")
	if lines[0] != recordMagic {
		return record{}, fmt.Errorf("first line %q, want %q", lines[0], recordMagic)
	}
	if len(lines) < 4 || len(lines) > 5 {
		return record{}, fmt.Errorf("%d lines, want 4 or 5", len(lines))
	}
	var r record
	owner, ok := strings.CutPrefix(lines[1], "owner ")
	if !ok {
		return record{}, fmt.Errorf("line 2 %q: want \"owner <containerID> <ifname>\"", lines[1])
	}
	r.owner.ContainerID, r.owner.IfName, _ = strings.Cut(owner, " ")
	if err := r.owner.Validate(); err != nil {
		return record{}, fmt.Errorf("line 2: %w", err)
	}
	if r.boot, ok = strings.CutPrefix(lines[2], "boot "); !ok {
		return record{}, fmt.Errorf("line 3 %q: want \"boot <id>\"", lines[2])
	}
	if err := validBootID(r.boot); err != nil {
		return record{}, fmt.Errorf("line 3: %w", err)
	}
	for i, line := range lines[3:] {
		s, ok := strings.CutPrefix(line, "addr ")
		if !ok {
			return record{}, fmt.Errorf("line %d %q: want \"addr <address>\"", i+4, line)
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.String() != s || a.Zone() != "" || a.Is4In6() {
			return record{}, fmt.Errorf("line %d: %q is not a canonical IPv4 or IPv6 address", i+4, s)
		}
		for _, b := range r.addrs {
			if b.Is4() == a.Is4() {
				return record{}, fmt.Errorf("line %d: second address %s of one family (with %s)", i+4, a, b)
			}
		}
		r.addrs = append(r.addrs, a)
	}
	return r, nil
}
