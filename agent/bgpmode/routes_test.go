package bgpmode

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

func routeDump(rs []overlay.Route) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.Dst.String())
		for _, h := range r.NextHops {
			fmt.Fprintf(&b, " via %s", h.Gateway)
			if h.Dev != "" {
				b.WriteString(" dev " + h.Dev)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func learned(prefix string, hops ...bgp.NextHop) bgp.Learned {
	return bgp.Learned{Prefix: pfx(prefix), NextHops: hops}
}

func hop(a, peer string, stale bool) bgp.NextHop {
	return bgp.NextHop{Addr: addr(a), Peer: addr(peer), Stale: stale}
}

func TestViewCompute(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	table := bgp.Table{Routes: []bgp.Learned{
		learned("10.244.2.0/24", hop("10.0.0.2", "10.0.0.2", false)),
		learned("10.244.3.0/24", hop("10.0.0.3", "10.0.0.3", false), hop("10.0.0.4", "10.0.0.4", false)),
		learned("172.30.0.5/32", hop("10.0.0.2", "10.0.0.2", false)),
	}}
	tests := []struct {
		name       string
		v          view
		now        time.Time
		want       string
		wantCapped int
	}{
		{name: "ECMP: one route, two gateways", v: view{Table: table}, now: t0,
			want: "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.3 via 10.0.0.4\n172.30.0.5/32 via 10.0.0.2\n"},
		{name: "prefixes we announce ourselves are not installed",
			v: view{Table: table, Announced: map[netip.Prefix]bool{pfx("172.30.0.5/32"): true}}, now: t0,
			want: "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.3 via 10.0.0.4\n"},
		{name: "per-peer cap: lowest prefixes win, the rest counted",
			v: view{Table: table, Caps: map[netip.Addr]int{addr("10.0.0.2"): 1}}, now: t0,
			want: "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.3 via 10.0.0.4\n", wantCapped: 1},
		{name: "cap removes one next hop of an ECMP route",
			v: view{Table: table, Caps: map[netip.Addr]int{addr("10.0.0.4"): 0}}, now: t0,
			want: "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.3\n172.30.0.5/32 via 10.0.0.2\n", wantCapped: 1},
		{name: "retained routes fill prefixes the table lacks",
			v: view{Table: table, Retained: []overlay.Route{
				{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: addr("10.0.0.99")}}},
				{Dst: pfx("10.244.9.0/24"), NextHops: []overlay.NextHop{{Gateway: addr("10.0.0.9")}}},
			}}, now: t0,
			want: "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.3 via 10.0.0.4\n10.244.9.0/24 via 10.0.0.9\n172.30.0.5/32 via 10.0.0.2\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.v.compute(tc.now)
			if diff := cmp.Diff(tc.want, routeDump(res.Routes)); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			if len(res.Capped) != tc.wantCapped {
				t.Errorf("capped %v, want %d", res.Capped, tc.wantCapped)
			}
			for _, c := range res.Capped {
				if c.Reason != bgp.MaxPrefixReason {
					t.Errorf("capped reason %q", c.Reason)
				}
			}
		})
	}
}

// TestStaleNextHopsAge runs a sequence: a peer restarts (its next hop turns
// stale), stays installed, and is dropped once the timeout passed; a fresh
// report in between keeps it.
func TestStaleNextHopsAge(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	stale := bgp.Table{Routes: []bgp.Learned{
		learned("10.244.2.0/24", hop("10.0.0.2", "10.0.0.2", true)),
		learned("10.244.3.0/24", hop("10.0.0.2", "10.0.0.2", true), hop("10.0.0.3", "10.0.0.3", false)),
	}}
	fresh := bgp.Table{Routes: []bgp.Learned{learned("10.244.2.0/24", hop("10.0.0.2", "10.0.0.2", false))}}
	since := map[hopKey]time.Time{}
	steps := []struct {
		table bgp.Table
		at    time.Duration
		want  string
	}{
		{stale, 0, "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.2 via 10.0.0.3\n"},
		{stale, 119 * time.Second, "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.2 via 10.0.0.3\n"},
		{stale, 120 * time.Second, "10.244.3.0/24 via 10.0.0.3\n"},
		{fresh, 121 * time.Second, "10.244.2.0/24 via 10.0.0.2\n"},
		{stale, 122 * time.Second, "10.244.2.0/24 via 10.0.0.2\n10.244.3.0/24 via 10.0.0.2 via 10.0.0.3\n"}, // stale again: a new clock
	}
	for i, s := range steps {
		res := view{Table: s.table, StaleSince: since, StaleTimeout: 120 * time.Second}.compute(t0.Add(s.at))
		since = res.StaleSince
		if diff := cmp.Diff(s.want, routeDump(res.Routes)); diff != "" {
			t.Errorf("step %d (+%s) routes (-want +got):\n%s", i, s.at, diff)
		}
	}
}

func TestAllEndOfRIB(t *testing.T) {
	peers := []bgp.Peer{{Address: addr("10.0.0.2")}, {Address: addr("10.0.0.3")}}
	tests := []struct {
		name  string
		eor   map[netip.Addr]bool
		peers []bgp.Peer
		want  bool
	}{
		{"no peers", nil, nil, true},
		{"none yet", map[netip.Addr]bool{}, peers, false},
		{"one of two", map[netip.Addr]bool{addr("10.0.0.2"): true, addr("10.0.0.3"): false}, peers, false},
		{"both", map[netip.Addr]bool{addr("10.0.0.2"): true, addr("10.0.0.3"): true}, peers, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := allEndOfRIB(bgp.Table{EndOfRIB: tc.eor}, tc.peers); got != tc.want {
				t.Errorf("allEndOfRIB = %t, want %t", got, tc.want)
			}
		})
	}
}

func TestToRetainedDropsDevices(t *testing.T) {
	in := []overlay.Route{
		{Dst: pfx("10.244.2.0/24"), NextHops: []overlay.NextHop{{Gateway: addr("10.0.0.2"), Dev: "eth1"}}},
		{Dst: pfx("10.244.3.0/24")}, // no gateway: not a BGP route
	}
	if diff := cmp.Diff("10.244.2.0/24 via 10.0.0.2\n", routeDump(toRetained(in))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
