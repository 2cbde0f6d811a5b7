package cni

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Config
	}{
		{
			name: "defaults, IPv4 only",
			in:   `{"cniVersion":"1.0.0","name":"weft","type":"weft","podCIDRs":["10.244.1.0/24"]}`,
			want: &Config{CNIVersion: "1.0.0", Name: "weft", Bridge: "weft0", MTU: 1500, DataDir: DefaultDataDir, HairpinMode: true,
				Networks: []Network{{Prefix: pfx("10.244.1.0/24"), Gateway: addr("10.244.1.1")}}},
		},
		{
			name: "dual-stack, every field set",
			in: `{"cniVersion":"1.1.0","name":"weft","type":"weft","bridge":"br-x","mtu":1450,
				"podCIDRs":["fd00:10:244:1::/64","10.244.1.0/24"],"gateways":["10.244.1.254","fd00:10:244:1::fe"],
				"dataDir":"/tmp/ipam","hairpinMode":false,"readyFile":"/run/weft/ready"}`,
			want: &Config{CNIVersion: "1.1.0", Name: "weft", Bridge: "br-x", MTU: 1450, DataDir: "/tmp/ipam", ReadyFile: "/run/weft/ready",
				Networks: []Network{
					{Prefix: pfx("fd00:10:244:1::/64"), Gateway: addr("fd00:10:244:1::fe")},
					{Prefix: pfx("10.244.1.0/24"), Gateway: addr("10.244.1.254")},
				}},
		},
		{
			name: "gateway for one family only, other defaults",
			in:   `{"cniVersion":"0.3.1","name":"n","podCIDRs":["10.0.0.0/30","fd00::/126"],"gateways":["fd00::2"],"mtu":576}`,
			want: &Config{CNIVersion: "0.3.1", Name: "n", Bridge: "weft0", MTU: 576, DataDir: DefaultDataDir, HairpinMode: true,
				Networks: []Network{{Prefix: pfx("10.0.0.0/30"), Gateway: addr("10.0.0.1")}, {Prefix: pfx("fd00::/126"), Gateway: addr("fd00::2")}}},
		},
		{
			name: "runtime keys are ignored",
			in: `{"cniVersion":"1.1.0","name":"weft","podCIDRs":["10.0.0.0/16"],"mtu":65535,"runtimeConfig":{"portMappings":[]},
				"prevResult":{"cniVersion":"1.1.0"},"cni.dev/valid-attachments":[]}`,
			want: &Config{CNIVersion: "1.1.0", Name: "weft", Bridge: "weft0", MTU: 65535, DataDir: DefaultDataDir, HairpinMode: true,
				Networks: []Network{{Prefix: pfx("10.0.0.0/16"), Gateway: addr("10.0.0.1")}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		code     uint
		contains []string // the field and the value must be named
	}{
		{"not json", `{"podCIDRs":`, types.ErrDecodingFailure, []string{"decode config"}},
		{"missing podCIDRs", `{"name":"weft"}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs", "required"}},
		{"empty podCIDRs", `{"podCIDRs":[]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs"}},
		{"bad CIDR", `{"podCIDRs":["10.0.0.0/33"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs[0]", `"10.0.0.0/33"`}},
		{"host bits", `{"podCIDRs":["10.0.0.7/24"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs[0]", `"10.0.0.7/24"`, "10.0.0.0/24"}},
		{"too small v4", `{"podCIDRs":["10.0.0.0/31"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs[0]", "/30"}},
		{"too small v6", `{"podCIDRs":["fd00::/127"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs[0]", "/126"}},
		{"two of a family", `{"podCIDRs":["10.0.0.0/24","10.1.0.0/24"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs[1]", `"10.1.0.0/24"`}},
		{"three CIDRs", `{"podCIDRs":["10.0.0.0/24","fd00::/64","10.1.0.0/24"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs", "at most two"}},
		{"mapped v4", `{"podCIDRs":["::ffff:10.0.0.0/120"]}`, types.ErrInvalidNetworkConfig, []string{"podCIDRs[0]"}},
		{"mtu low", `{"podCIDRs":["10.0.0.0/24"],"mtu":575}`, types.ErrInvalidNetworkConfig, []string{"mtu", "575", "576..65535"}},
		{"mtu high", `{"podCIDRs":["10.0.0.0/24"],"mtu":65536}`, types.ErrInvalidNetworkConfig, []string{"mtu", "65536"}},
		{"mtu zero", `{"podCIDRs":["10.0.0.0/24"],"mtu":0}`, types.ErrInvalidNetworkConfig, []string{"mtu", "0"}},
		{"mtu string", `{"podCIDRs":["10.0.0.0/24"],"mtu":"1500"}`, types.ErrInvalidNetworkConfig, []string{"mtu", "string"}},
		{"gateway outside", `{"podCIDRs":["10.0.0.0/24"],"gateways":["10.0.1.1"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[0]", `"10.0.1.1"`, "10.0.0.0/24"}},
		{"gateway network address", `{"podCIDRs":["10.0.0.0/24"],"gateways":["10.0.0.0"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[0]", "network address"}},
		{"gateway broadcast", `{"podCIDRs":["10.0.0.0/24"],"gateways":["10.0.0.255"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[0]", "broadcast"}},
		{"gateway no family", `{"podCIDRs":["10.0.0.0/24"],"gateways":["fd00::1"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[0]", `"fd00::1"`}},
		{"two gateways one family", `{"podCIDRs":["10.0.0.0/24"],"gateways":["10.0.0.1","10.0.0.2"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[1]"}},
		{"gateway not ip", `{"podCIDRs":["10.0.0.0/24"],"gateways":["gw"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[0]", `"gw"`}},
		{"gateway zone", `{"podCIDRs":["fd00::/64"],"gateways":["fd00::1%eth0"]}`, types.ErrInvalidNetworkConfig, []string{"gateways[0]"}},
		{"bridge empty", `{"podCIDRs":["10.0.0.0/24"],"bridge":""}`, types.ErrInvalidNetworkConfig, []string{"bridge", `""`}},
		{"bridge long", `{"podCIDRs":["10.0.0.0/24"],"bridge":"a23456789012345x"}`, types.ErrInvalidNetworkConfig, []string{"bridge", "15"}},
		{"bridge slash", `{"podCIDRs":["10.0.0.0/24"],"bridge":"a/b"}`, types.ErrInvalidNetworkConfig, []string{"bridge", `"a/b"`}},
		{"dataDir relative", `{"podCIDRs":["10.0.0.0/24"],"dataDir":"ipam"}`, types.ErrInvalidNetworkConfig, []string{"dataDir", `"ipam"`}},
		{"readyFile relative", `{"podCIDRs":["10.0.0.0/24"],"readyFile":"ready"}`, types.ErrInvalidNetworkConfig, []string{"readyFile", `"ready"`}},
		{"hairpin not bool", `{"podCIDRs":["10.0.0.0/24"],"hairpinMode":"yes"}`, types.ErrInvalidNetworkConfig, []string{"hairpinMode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("Parse error = %v (%T), want *types.Error", err, err)
			}
			if te.Code != tt.code {
				t.Errorf("code = %d, want %d (%s)", te.Code, tt.code, te.Msg)
			}
			for _, s := range tt.contains {
				if !strings.Contains(te.Msg, s) {
					t.Errorf("message %q does not contain %q", te.Msg, s)
				}
			}
		})
	}
}

// FuzzParse checks that whatever Parse accepts is valid and survives a
// round trip through JSON, and that whatever it rejects gets code 6 or 7.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"weft","type":"weft","podCIDRs":["10.244.1.0/24","fd00:10:244:1::/64"]}`,
		`{"podCIDRs":["10.0.0.0/30"],"gateways":["10.0.0.2"],"mtu":9000,"bridge":"br0","hairpinMode":false}`,
		`{"podCIDRs":["fd00::/64"],"gateways":["fd00::ffff"],"dataDir":"/d","readyFile":"/r"}`,
		`{"podCIDRs":["10.0.0.0/24"],"gateways":["10.0.0.255"]}`,
		`{"podCIDRs":["10.0.0.0/24"],"mtu":1e3}`,
		`{"podCIDRs":"10.0.0.0/24"}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || (te.Code != types.ErrDecodingFailure && te.Code != types.ErrInvalidNetworkConfig) {
				t.Fatalf("Parse(%q) error %v: want *types.Error code 6 or 7", data, err)
			}
			return
		}
		checkInvariants(t, c)
		out, err := c.JSON()
		if err != nil {
			t.Fatalf("JSON: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(JSON(Parse(%q))) = %v; JSON was %s", data, err, out)
		}
		if diff := cmp.Diff(c, again, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
			cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Fatalf("round trip changed the config (-first +second):\n%s", diff)
		}
		out2, err := again.JSON()
		if err != nil || string(out2) != string(out) {
			t.Fatalf("JSON not stable: %s vs %s (%v)", out, out2, err)
		}
	})
}

func checkInvariants(t *testing.T, c *Config) {
	t.Helper()
	if c.MTU < MinMTU || c.MTU > MaxMTU {
		t.Fatalf("MTU %d out of range", c.MTU)
	}
	if err := validIfName(c.Bridge); err != nil {
		t.Fatalf("bridge %q: %v", c.Bridge, err)
	}
	if n := len(c.Networks); n < 1 || n > 2 || (n == 2 && c.Networks[0].Prefix.Addr().Is4() == c.Networks[1].Prefix.Addr().Is4()) {
		t.Fatalf("networks %v: want one or two of different families", c.Networks)
	}
	for _, n := range c.Networks {
		if n.Prefix != n.Prefix.Masked() || !n.Prefix.Contains(n.Gateway) || n.Gateway == n.Prefix.Addr() {
			t.Fatalf("network %v: gateway not a usable address in a canonical prefix", n)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24": "10.0.0.255", "10.0.0.0/30": "10.0.0.3", "10.0.0.0/9": "10.127.255.255",
		"fd00::/64": "fd00::ffff:ffff:ffff:ffff", "0.0.0.0/0": "255.255.255.255",
	} {
		if got := lastAddr(pfx(in)); got != addr(want) {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
