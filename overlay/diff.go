package overlay

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// opKind is one kind of kernel write. The order of the constants is the
// order diff emits them in: a recreated device is deleted first (it keeps
// its name), then everything is added or replaced (devices, neighbours, FDB
// entries, routes), then what is no longer wanted is removed in reverse.
type opKind int

const (
	opRecreateDevice opKind = iota // delete half of a recreation
	opSetDevice
	opSetNeighbor
	opSetFDB
	opSetRoute
	opDelRoute
	opDelFDB
	opDelNeighbor
	opDelDevice
)

// op is one kernel write; only the field its kind needs is set.
type op struct {
	kind     opKind
	device   Device
	neighbor Neighbor
	fdb      FDBEntry
	route    Route
}

func (o op) String() string {
	switch o.kind {
	case opRecreateDevice, opDelDevice:
		return "del device " + o.device.Name
	case opSetDevice:
		return "set device " + o.device.String()
	case opSetNeighbor:
		return "set neigh " + o.neighbor.String()
	case opDelNeighbor:
		return "del neigh " + o.neighbor.String()
	case opSetFDB:
		return "set fdb " + o.fdb.String()
	case opDelFDB:
		return "del fdb " + o.fdb.String()
	case opSetRoute:
		return "set route " + o.route.String()
	case opDelRoute:
		return "del route " + o.route.String()
	}
	return fmt.Sprintf("op(%d)", o.kind)
}

func (d Device) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s vni %d port %d local %v mtu %d", d.Name, d.VNI, portOrDefault(d.Port), d.Local, d.MTU)
	if d.MAC != nil {
		fmt.Fprintf(&b, " mac %v", d.MAC)
	}
	if len(d.Addrs) > 0 {
		addrs := slices.Clone(d.Addrs)
		slices.SortFunc(addrs, netip.Addr.Compare)
		fmt.Fprintf(&b, " addrs %v", addrs)
	}
	return b.String()
}

func (n Neighbor) String() string {
	return fmt.Sprintf("%v lladdr %v dev %s", n.IP, n.MAC, n.Dev)
}

func (f FDBEntry) String() string {
	return fmt.Sprintf("%v dst %v dev %s", f.MAC, f.Dst, f.Dev)
}

func (h NextHop) String() string {
	s := "via " + h.Gateway.String()
	if h.Dev != "" {
		s += " dev " + h.Dev
	}
	if h.Onlink {
		s += " onlink"
	}
	return s
}

func (r Route) String() string {
	hops := sortedHops(r.NextHops)
	if len(hops) == 1 {
		return r.Dst.String() + " " + hops[0].String()
	}
	var b strings.Builder
	b.WriteString(r.Dst.String())
	for _, h := range hops {
		b.WriteString(" nexthop " + h.String())
	}
	return b.String()
}

func portOrDefault(p uint16) uint16 {
	if p == 0 {
		return DefaultVXLANPort
	}
	return p
}

// diff returns the writes that turn have into want. It is pure: all the
// ordering rules of the datapath live here.
func diff(want Desired, have State) []op {
	var ops []op

	haveDev := map[string]DeviceState{}
	for _, h := range have.Devices {
		haveDev[h.Name] = h
	}
	wantDev := map[string]bool{}
	// gone: devices deleted (recreated or no longer wanted) during this pass;
	// the kernel removes their neighbour and FDB entries and routes with them.
	gone := map[string]bool{}
	for _, w := range want.Devices {
		wantDev[w.Name] = true
		h, ok := haveDev[w.Name]
		switch {
		case !ok:
			ops = append(ops, op{kind: opSetDevice, device: w})
		case needsRecreate(w, h):
			gone[w.Name] = true
			ops = append(ops, op{kind: opRecreateDevice, device: h.Device}, op{kind: opSetDevice, device: w})
		case !sameInPlace(w, h):
			ops = append(ops, op{kind: opSetDevice, device: w})
		}
	}
	for _, h := range have.Devices {
		if !wantDev[h.Name] {
			gone[h.Name] = true
			ops = append(ops, op{kind: opDelDevice, device: h.Device})
		}
	}

	neighKey := func(n Neighbor) string { return n.Dev + "|" + n.IP.String() }
	haveNeigh := keyed(have.Neighbors, neighKey)
	wantNeigh := keyed(want.Neighbors, neighKey)
	for k, w := range wantNeigh {
		if h, ok := haveNeigh[k]; !ok || gone[h.Dev] || !bytes.Equal(h.MAC, w.MAC) {
			ops = append(ops, op{kind: opSetNeighbor, neighbor: w})
		}
	}
	for k, h := range haveNeigh {
		if _, ok := wantNeigh[k]; !ok && !gone[h.Dev] {
			ops = append(ops, op{kind: opDelNeighbor, neighbor: h})
		}
	}

	fdbKey := func(f FDBEntry) string { return f.Dev + "|" + f.MAC.String() }
	haveFDB := keyed(have.FDB, fdbKey)
	wantFDB := keyed(want.FDB, fdbKey)
	for k, w := range wantFDB {
		if h, ok := haveFDB[k]; !ok || gone[h.Dev] || h.Dst != w.Dst {
			ops = append(ops, op{kind: opSetFDB, fdb: w})
		}
	}
	for k, h := range haveFDB {
		if _, ok := wantFDB[k]; !ok && !gone[h.Dev] {
			ops = append(ops, op{kind: opDelFDB, fdb: h})
		}
	}

	routeKey := func(r Route) string { return r.Dst.String() }
	haveRoute := keyed(have.Routes, routeKey)
	wantRoute := keyed(want.Routes, routeKey)
	for k, w := range wantRoute {
		if h, ok := haveRoute[k]; !ok || usesAny(h, gone) || !sameHops(w.NextHops, h.NextHops) {
			ops = append(ops, op{kind: opSetRoute, route: w})
		}
	}
	for k, h := range haveRoute {
		// Also deleted when its device goes: the kernel may keep a
		// multipath route that lost one next hop.
		if _, ok := wantRoute[k]; !ok {
			ops = append(ops, op{kind: opDelRoute, route: h})
		}
	}

	return sortOps(ops)
}

// sortOps orders ops by kind, then by their text, formatting each op once
// (a comparison that formats both sides costs more than the kernel writes
// with a thousand peers).
func sortOps(ops []op) []op {
	type keyed struct {
		op
		text string
	}
	ks := make([]keyed, len(ops))
	for i, o := range ops {
		ks[i] = keyed{o, o.String()}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), strings.Compare(a.text, b.text))
	})
	for i, k := range ks {
		ops[i] = k.op
	}
	return ops
}

func keyed[T any](items []T, key func(T) string) map[string]T {
	m := make(map[string]T, len(items))
	for _, it := range items {
		m[key(it)] = it
	}
	return m
}

// needsRecreate reports whether h differs from w in an attribute the kernel
// cannot change on a live device.
func needsRecreate(w Device, h DeviceState) bool {
	return h.Kind != "vxlan" || h.VNI != w.VNI || portOrDefault(h.Port) != portOrDefault(w.Port) || h.Local != w.Local
}

// sameInPlace reports whether the attributes fixed in place already match.
func sameInPlace(w Device, h DeviceState) bool {
	if !h.Up || h.MTU != w.MTU {
		return false
	}
	if w.MAC != nil && !bytes.Equal(w.MAC, h.MAC) {
		return false
	}
	return sameAddrs(w.Addrs, h.Addrs)
}

func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

func sortedHops(hops []NextHop) []NextHop {
	hops = slices.Clone(hops)
	slices.SortFunc(hops, func(a, b NextHop) int {
		return cmp.Or(a.Gateway.Compare(b.Gateway), strings.Compare(a.Dev, b.Dev))
	})
	return hops
}

// sameHops compares wanted and observed next hops. A wanted hop without Dev
// matches whatever device the kernel resolved it to.
func sameHops(want, have []NextHop) bool {
	if len(want) != len(have) {
		return false
	}
	want, have = sortedHops(want), sortedHops(have)
	for i := range want {
		w, h := want[i], have[i]
		if w.Gateway != h.Gateway || w.Onlink != h.Onlink || (w.Dev != "" && w.Dev != h.Dev) {
			return false
		}
	}
	return true
}

func usesAny(r Route, devs map[string]bool) bool {
	for _, h := range r.NextHops {
		if devs[h.Dev] {
			return true
		}
	}
	return false
}
