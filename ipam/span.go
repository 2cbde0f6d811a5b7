package ipam

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"strings"
)

// span is one allocation range: the usable addresses of a prefix (all but
// the network address and, for IPv4, the broadcast address) less the
// reserved ones.
type span struct {
	prefix      netip.Prefix
	first, last netip.Addr          // first and last address after the network/broadcast cut; first > last when none
	reserved    map[netip.Addr]bool // reserved addresses in [first, last]
	usable      uint64              // addresses that can be handed out, saturating at math.MaxUint64
}

func newSpan(p netip.Prefix, reserved []netip.Addr) span {
	sp := span{prefix: p, first: p.Addr().Next(), last: lastAddr(p), reserved: map[netip.Addr]bool{}}
	if p.Addr().Is4() {
		sp.last = sp.last.Prev() // broadcast
	}
	for _, a := range reserved {
		if sp.inside(a) {
			sp.reserved[a] = true
		}
	}
	sp.usable = usableCount(p, len(sp.reserved))
	return sp
}

// inside reports whether a is in [first, last].
func (sp *span) inside(a netip.Addr) bool {
	return sp.first.IsValid() && sp.prefix.Contains(a) && sp.first.Compare(a) <= 0 && a.Compare(sp.last) <= 0
}

// allocatable reports whether a may be handed out from this span.
func (sp *span) allocatable(a netip.Addr) bool { return sp.inside(a) && !sp.reserved[a] }

// next returns the address after a, wrapping from last to first.
func (sp *span) next(a netip.Addr) netip.Addr {
	if a == sp.last || !sp.inside(a) {
		return sp.first
	}
	return a.Next()
}

// probe returns the first allocatable address after cursor (wrapping
// around) for which taken reports false. Its cost grows with the run of
// taken addresses after the cursor, not with the number allocated.
func (sp *span) probe(ctx context.Context, cursor netip.Addr, taken func(netip.Addr) (bool, error)) (netip.Addr, error) {
	start := sp.next(cursor)
	a := start
	for n := 1; ; n++ {
		if !sp.reserved[a] {
			t, err := taken(a)
			if err != nil {
				return netip.Addr{}, err
			}
			if !t {
				return a, nil
			}
		}
		if a = sp.next(a); a == start {
			return netip.Addr{}, fmt.Errorf("no free address in %s (%s usable): %w", sp.prefix, countString(sp.usable), ErrExhausted)
		}
		if n%1024 == 0 && ctx.Err() != nil {
			return netip.Addr{}, context.Cause(ctx)
		}
	}
}

// Usable is how many addresses a store with p among its Options.Ranges
// hands out at most: every address of p but the network address, for IPv4
// the broadcast address, and the reserved addresses inside p (the node's
// gateway), saturating at math.MaxUint64. It is Usage's Total, computed
// without a store: an IPv4 /24 with its gateway gives 253, a /26 61, an
// IPv6 /120 254.
func Usable(p netip.Prefix, reserved []netip.Addr) uint64 {
	sp := newSpan(p.Masked(), reserved)
	return sp.usable
}

// usableCount is 2^hostbits minus the network address, the IPv4 broadcast
// address and nReserved, saturating at math.MaxUint64 (so an IPv6 /64 with
// no reserved address reports 2^64-1 and any shorter prefix reports
// math.MaxUint64).
func usableCount(p netip.Prefix, nReserved int) uint64 {
	host := p.Addr().BitLen() - p.Bits()
	if host > 64 {
		return math.MaxUint64
	}
	sizeMinus1 := uint64(math.MaxUint64) >> (64 - host) // 2^host - 1 without overflow
	excluded := uint64(nReserved)                       // plus the network address, taken from the "+1"
	if p.Addr().Is4() {
		excluded++ // broadcast
	}
	if sizeMinus1 < excluded {
		return 0
	}
	return sizeMinus1 - excluded
}

func countString(n uint64) string {
	if n == math.MaxUint64 {
		return "2^64 or more"
	}
	return fmt.Sprint(n)
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.As16()
	off := 0
	if a.Is4() {
		off = 96
	}
	for i := off + p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	if a.Is4() {
		return netip.AddrFrom16(b).Unmap()
	}
	return netip.AddrFrom16(b)
}

// cursorName is the file name of p's cursor under cursor/.
func cursorName(p netip.Prefix) string { return strings.ReplaceAll(p.String(), "/", "_") }

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
