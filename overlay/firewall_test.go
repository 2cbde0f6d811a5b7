package overlay

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFirewallChains(t *testing.T) {
	pfx := netip.MustParsePrefix
	dual := Rules{
		ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd10::/48")},
		PodCIDRs:     []netip.Prefix{pfx("10.244.3.0/24"), pfx("fd10:0:0:3::/64")},
		VXLANPort:    4789,
		VTEPSources:  []netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("fd00::2")},
		Masquerade:   true,
	}
	type out struct {
		Chains  map[string][]string
		Sources []netip.Addr
	}
	render := func(r Rules, fam ipFamily) out {
		o := out{Chains: map[string][]string{}, Sources: r.sources(fam)}
		for _, c := range r.chains(fam) {
			o.Chains[c.table+"/"+c.parent+"->"+c.name] = c.rules
		}
		return o
	}
	tests := []struct {
		name  string
		rules Rules
		fam   ipFamily
		want  out
	}{
		{
			name: "IPv4 with masquerade", rules: dual, fam: ipFamilies[0],
			want: out{
				Chains: map[string][]string{
					"nat/POSTROUTING->WEFT-POSTROUTING": {
						"-m mark --mark 0x4000/0x4000 -j RETURN",
						"-s 10.244.3.0/24 -d 10.244.0.0/16 -j RETURN",
						"-s 10.244.3.0/24 -j MASQUERADE --random-fully",
					},
					"filter/FORWARD->WEFT-FORWARD": {"-s 10.244.0.0/16 -j ACCEPT", "-d 10.244.0.0/16 -j ACCEPT"},
					"filter/INPUT->WEFT-INPUT": {
						"-p udp -m udp --dport 4789 -m set --match-set weft-nodes4 src -j ACCEPT",
						"-p udp -m udp --dport 4789 -j DROP",
					},
				},
				Sources: []netip.Addr{netip.MustParseAddr("192.168.0.2")},
			},
		},
		{
			name: "IPv6 through the same path", rules: dual, fam: ipFamilies[1],
			want: out{
				Chains: map[string][]string{
					"nat/POSTROUTING->WEFT-POSTROUTING": {
						"-m mark --mark 0x4000/0x4000 -j RETURN",
						"-s fd10:0:0:3::/64 -d fd10::/48 -j RETURN",
						"-s fd10:0:0:3::/64 -j MASQUERADE --random-fully",
					},
					"filter/FORWARD->WEFT-FORWARD": {"-s fd10::/48 -j ACCEPT", "-d fd10::/48 -j ACCEPT"},
					"filter/INPUT->WEFT-INPUT": {
						"-p udp -m udp --dport 4789 -m set --match-set weft-nodes6 src -j ACCEPT",
						"-p udp -m udp --dport 4789 -j DROP",
					},
				},
				Sources: []netip.Addr{netip.MustParseAddr("fd00::2")},
			},
		},
		{
			name: "BGP mode without masquerade: no VXLAN rules, no MASQUERADE",
			rules: Rules{
				ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
				PodCIDRs:     []netip.Prefix{pfx("10.244.3.0/24")},
			},
			fam: ipFamilies[0],
			want: out{Chains: map[string][]string{
				"nat/POSTROUTING->WEFT-POSTROUTING": {
					"-m mark --mark 0x4000/0x4000 -j RETURN",
					"-s 10.244.3.0/24 -d 10.244.0.0/16 -j RETURN",
				},
				"filter/FORWARD->WEFT-FORWARD": {"-s 10.244.0.0/16 -j ACCEPT", "-d 10.244.0.0/16 -j ACCEPT"},
				"filter/INPUT->WEFT-INPUT":     nil,
			}},
		},
		{
			name:  "unmasked prefixes are canonicalised as iptables lists them",
			rules: Rules{ClusterCIDRs: []netip.Prefix{pfx("10.244.1.2/16")}},
			fam:   ipFamilies[0],
			want: out{Chains: map[string][]string{
				"nat/POSTROUTING->WEFT-POSTROUTING": {"-m mark --mark 0x4000/0x4000 -j RETURN"},
				"filter/FORWARD->WEFT-FORWARD":      {"-s 10.244.0.0/16 -j ACCEPT", "-d 10.244.0.0/16 -j ACCEPT"},
				"filter/INPUT->WEFT-INPUT":          nil,
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, render(tt.rules, tt.fam), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestRulesValidate(t *testing.T) {
	if err := (Rules{VTEPSources: []netip.Addr{{}}}).validate(); err == nil {
		t.Error("invalid VTEP source accepted")
	}
	if err := (Rules{ClusterCIDRs: []netip.Prefix{{}}}).validate(); err == nil {
		t.Error("invalid cluster CIDR accepted")
	}
	if err := (Rules{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}).validate(); err != nil {
		t.Errorf("valid rules rejected: %v", err)
	}
}
