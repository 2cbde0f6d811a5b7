package bgp

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// cmpNetip compares netip values by value (they have unexported fields).
var cmpNetip = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// testPolicy: we are node A (10.244.0.0/24, fd00:244::/64) on 192.168.1.10;
// node B owns 10.244.1.0/24 and fd00:244:0:1::/64 on 192.168.1.11 /
// fd00:1::11; load balancers live in 172.30.0.0/16 and fd00:30::/112.
func testPolicy() ImportPolicy {
	return ImportPolicy{
		Allowed: []AllowedPrefix{
			{Prefix: pfx("10.244.1.0/24"), NextHops: []netip.Addr{addr("192.168.1.11")}},
			{Prefix: pfx("fd00:244:0:1::/64"), NextHops: []netip.Addr{addr("fd00:1::11")}},
			{Prefix: pfx("10.244.2.0/24")}, // any next hop
		},
		Within:   []netip.Prefix{pfx("172.30.0.0/16"), pfx("fd00:30::/112")},
		Own:      []netip.Prefix{pfx("10.244.0.0/24"), pfx("fd00:244::/64")},
		Underlay: []netip.Prefix{pfx("192.168.1.10/32"), pfx("fd00:1::10/128")},
	}
}

func TestImportPolicyCheck(t *testing.T) {
	tests := []struct {
		name    string
		prefix  string
		nextHop string
		want    Reason
	}{
		{"v4 other node exact", "10.244.1.0/24", "192.168.1.11", Accepted},
		{"v6 other node exact", "fd00:244:0:1::/64", "fd00:1::11", Accepted},
		{"v4 node without next-hop list", "10.244.2.0/24", "10.0.0.99", Accepted},
		{"v4 inside LB range", "172.30.5.0/24", "192.168.1.11", Accepted},
		{"v4 LB range itself", "172.30.0.0/16", "192.168.1.11", Accepted},
		{"v6 LB host route", "fd00:30::5/128", "fd00:1::11", Accepted},
		{"v4 default route", "0.0.0.0/0", "192.168.1.11", DefaultRoute},
		{"v6 default route", "::/0", "fd00:1::11", DefaultRoute},
		{"v4 outside", "8.8.8.0/24", "192.168.1.11", OutsideCluster},
		{"v6 outside", "2001:db8::/32", "fd00:1::11", OutsideCluster},
		{"v4 covers LB range", "172.0.0.0/8", "192.168.1.11", OutsideCluster},
		{"v4 more-specific of node", "10.244.1.128/25", "192.168.1.11", MoreSpecific},
		{"v6 more-specific of node", "fd00:244:0:1::/80", "fd00:1::11", MoreSpecific},
		{"v4 own cidr", "10.244.0.0/24", "192.168.1.11", OwnCIDR},
		{"v4 inside own cidr", "10.244.0.7/32", "192.168.1.11", OwnCIDR},
		{"v4 covers own cidr", "10.244.0.0/16", "192.168.1.11", OwnCIDR},
		{"v6 own cidr", "fd00:244::/64", "fd00:1::11", OwnCIDR},
		{"v4 covers underlay", "192.168.0.0/16", "192.168.1.11", CoversUnderlay},
		{"v4 underlay host", "192.168.1.10/32", "192.168.1.11", CoversUnderlay},
		{"v6 covers underlay", "fd00:1::/64", "fd00:1::11", CoversUnderlay},
		{"v4 wrong next hop", "10.244.1.0/24", "192.168.1.66", BadNextHop},
		{"v6 wrong next hop", "fd00:244:0:1::/64", "fd00:1::66", BadNextHop},
		{"v6 prefix via v4 next hop", "fd00:30::5/128", "192.168.1.11", BadNextHop},
		{"v4 unspecified next hop", "172.30.5.0/24", "0.0.0.0", BadNextHop},
	}
	p := testPolicy()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Check(pfx(tc.prefix), addr(tc.nextHop)); got != tc.want {
				t.Errorf("Check(%s via %s) = %q, want %q", tc.prefix, tc.nextHop, got, tc.want)
			}
		})
	}
	if got := p.Check(pfx("10.244.1.0/24"), netip.Addr{}); got != BadNextHop {
		t.Errorf("Check with no next hop = %q, want %q", got, BadNextHop)
	}
}

func TestImportPolicyFilter(t *testing.T) {
	b4, c4 := addr("192.168.1.11"), addr("192.168.1.12")
	b6 := addr("fd00:1::11")
	tests := []struct {
		name         string
		policy       ImportPolicy
		cands        []Candidate
		want         []Learned
		wantRejected []Rejected
	}{{
		name:   "ecmp from two peers, both families",
		policy: testPolicy(),
		cands: []Candidate{
			{Prefix: pfx("172.30.0.1/32"), NextHop: c4, Peer: c4, LocalPref: 100},
			{Prefix: pfx("172.30.0.1/32"), NextHop: b4, Peer: b4, LocalPref: 100},
			{Prefix: pfx("fd00:30::1/128"), NextHop: b6, Peer: b4, LocalPref: 100},
		},
		want: []Learned{
			{Prefix: pfx("172.30.0.1/32"), NextHops: []NextHop{{Addr: b4, Peer: b4}, {Addr: c4, Peer: c4}}},
			{Prefix: pfx("fd00:30::1/128"), NextHops: []NextHop{{Addr: b6, Peer: b4}}},
		},
	}, {
		name:   "longer as path loses",
		policy: testPolicy(),
		cands: []Candidate{
			{Prefix: pfx("172.30.0.1/32"), NextHop: b4, Peer: b4, LocalPref: 100, ASPathLen: 1},
			{Prefix: pfx("172.30.0.1/32"), NextHop: c4, Peer: c4, LocalPref: 100, ASPathLen: 2},
		},
		want: []Learned{{Prefix: pfx("172.30.0.1/32"), NextHops: []NextHop{{Addr: b4, Peer: b4}}}},
	}, {
		name:   "higher local pref wins, stale kept",
		policy: testPolicy(),
		cands: []Candidate{
			{Prefix: pfx("172.30.0.1/32"), NextHop: b4, Peer: b4, LocalPref: 200, Stale: true},
			{Prefix: pfx("172.30.0.1/32"), NextHop: c4, Peer: c4, LocalPref: 100},
		},
		want: []Learned{{Prefix: pfx("172.30.0.1/32"), NextHops: []NextHop{{Addr: b4, Peer: b4, Stale: true}}}},
	}, {
		name:   "same next hop via reflector and node is one hop",
		policy: testPolicy(),
		cands: []Candidate{
			{Prefix: pfx("10.244.1.0/24"), NextHop: b4, Peer: c4, LocalPref: 100},
			{Prefix: pfx("10.244.1.0/24"), NextHop: b4, Peer: b4, LocalPref: 100, Stale: true},
		},
		want: []Learned{{Prefix: pfx("10.244.1.0/24"), NextHops: []NextHop{{Addr: b4, Peer: c4}}}},
	}, {
		name:   "rejected paths do not take part",
		policy: testPolicy(),
		cands: []Candidate{
			{Prefix: pfx("10.244.1.0/24"), NextHop: c4, Peer: c4, LocalPref: 300},
			{Prefix: pfx("10.244.1.0/24"), NextHop: b4, Peer: b4, LocalPref: 100},
			{Prefix: pfx("0.0.0.0/0"), NextHop: b4, Peer: b4},
		},
		want: []Learned{{Prefix: pfx("10.244.1.0/24"), NextHops: []NextHop{{Addr: b4, Peer: b4}}}},
		wantRejected: []Rejected{
			{Prefix: pfx("0.0.0.0/0"), NextHop: b4, Peer: b4, Reason: DefaultRoute},
			{Prefix: pfx("10.244.1.0/24"), NextHop: c4, Peer: c4, Reason: BadNextHop},
		},
	}, {
		name:   "max prefixes keeps the lowest",
		policy: func() ImportPolicy { p := testPolicy(); p.MaxPrefixes = 2; return p }(),
		cands: []Candidate{
			{Prefix: pfx("172.30.0.3/32"), NextHop: b4, Peer: b4},
			{Prefix: pfx("172.30.0.1/32"), NextHop: b4, Peer: b4},
			{Prefix: pfx("172.30.0.2/32"), NextHop: b4, Peer: b4},
		},
		want: []Learned{
			{Prefix: pfx("172.30.0.1/32"), NextHops: []NextHop{{Addr: b4, Peer: b4}}},
			{Prefix: pfx("172.30.0.2/32"), NextHops: []NextHop{{Addr: b4, Peer: b4}}},
		},
		wantRejected: []Rejected{{Prefix: pfx("172.30.0.3/32"), NextHop: b4, Peer: b4, Reason: MaxPrefixReason}},
	}, {
		name:         "empty policy rejects everything as outside",
		policy:       ImportPolicy{},
		cands:        []Candidate{{Prefix: pfx("10.1.0.0/16"), NextHop: b4, Peer: b4}},
		want:         []Learned{},
		wantRejected: []Rejected{{Prefix: pfx("10.1.0.0/16"), NextHop: b4, Peer: b4, Reason: OutsideCluster}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, rejected := tc.policy.Filter(tc.cands)
			if diff := cmp.Diff(tc.want, got, cmpNetip); diff != "" {
				t.Errorf("learned (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRejected, rejected, cmpNetip); diff != "" {
				t.Errorf("rejected (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReasonsComplete guards the list used to pre-create counters.
func TestReasonsComplete(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if r == Accepted || seen[r] {
			t.Errorf("bad or duplicate reason %q in Reasons", r)
		}
		seen[r] = true
	}
	if len(seen) != 7 {
		t.Errorf("Reasons has %d entries, want 7", len(seen))
	}
}
