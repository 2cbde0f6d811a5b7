package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	pfx := netip.MustParsePrefix
	def := func(mut func(*Config)) Config {
		c := Config{
			Mode:         VXLAN,
			ClusterCIDRs: []netip.Prefix{pfx("10.244.0.0/16")},
			BlockSizeV4:  24,
			BlockSizeV6:  64,
			Masquerade:   true,
			Resync:       30 * time.Second,
			VXLAN:        VXLANConfig{VNI: 1, Port: 4789},
			BGP:          defaultBGP(),
		}
		if mut != nil {
			mut(&c)
		}
		return c
	}
	tests := []struct {
		name      string
		doc       string
		want      Config
		wantField string // non-empty: a FieldError on this field
		wantErr   bool   // any other error
	}{
		{name: "minimal vxlan", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n", want: def(nil)},
		{name: "json works too", doc: `{"mode":"vxlan","clusterCIDRs":["10.244.0.0/16"]}`, want: def(nil)},
		{name: "full dual-stack", doc: `
mode: VXLAN
clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"]
blockSizeV4: 26
blockSizeV6: 80
masquerade: false
mtu: 1400
resync: 10s
vxlan: {vni: 42, port: 8472, directRouting: true}
`, want: def(func(c *Config) {
			c.ClusterCIDRs = append(c.ClusterCIDRs, pfx("fd00:10:244::/56"))
			c.BlockSizeV4, c.BlockSizeV6 = 26, 80
			c.Masquerade = false
			c.MTU = 1400
			c.Resync = 10 * time.Second
			c.VXLAN = VXLANConfig{VNI: 42, Port: 8472, DirectRouting: true}
		})},
		{name: "prefix is masked", doc: "mode: vxlan\nclusterCIDRs: [10.244.7.9/16]\n", want: def(nil)},
		{name: "bgp with asn", doc: "mode: bgp\nclusterCIDRs: [10.244.0.0/16]\nbgp: {asn: 64512}\n",
			want: def(func(c *Config) { c.Mode = BGP; c.BGP.ASN = 64512 })},
		{name: "empty", doc: "  \n", wantField: Key},
		{name: "missing mode", doc: "clusterCIDRs: [10.244.0.0/16]\n", wantField: "mode"},
		{name: "unknown mode", doc: "mode: ipip\nclusterCIDRs: [10.244.0.0/16]\n", wantField: "mode"},
		{name: "missing cluster CIDRs", doc: "mode: vxlan\n", wantField: "clusterCIDRs"},
		{name: "unparsable CIDR", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/33]\n", wantField: "clusterCIDRs[0]"},
		{name: "address not prefix", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.1]\n", wantField: "clusterCIDRs[0]"},
		{name: "two v4 cluster CIDRs", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16, 10.245.0.0/16]\n", wantField: "clusterCIDRs[1]"},
		{name: "VNI zero", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {vni: 0}\n", wantField: "vxlan.vni"},
		{name: "VNI too large", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {vni: 16777216}\n", wantField: "vxlan.vni"},
		{name: "port out of range", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {port: 70000}\n", wantField: "vxlan.port"},
		{name: "block wider than cluster", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nblockSizeV4: 8\n", wantField: "blockSizeV4"},
		{name: "v6 block too narrow", doc: "mode: vxlan\nclusterCIDRs: [fd00::/56]\nblockSizeV6: 127\n", wantField: "blockSizeV6"},
		{name: "mtu too small", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nmtu: 500\n", wantField: "mtu"},
		{name: "bad resync", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nresync: soon\n", wantField: "resync"},
		{name: "resync too short", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nresync: 1ms\n", wantField: "resync"},
		{name: "resync too long", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nresync: 2h\n", wantField: "resync"},
		{name: "resync longest", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nresync: 1h\n", want: def(func(c *Config) { c.Resync = time.Hour })},
		{name: "v4 /0 cluster CIDR", doc: "mode: vxlan\nclusterCIDRs: [0.0.0.0/0]\n", wantField: "clusterCIDRs[0]"},
		{name: "v6 /0 cluster CIDR", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16, \"::/0\"]\n", wantField: "clusterCIDRs[1]"},
		{name: "external range covers cluster", doc: "mode: bgp\nclusterCIDRs: [10.244.0.0/16]\nbgp: {externalRanges: [10.0.0.0/8]}\n",
			wantField: "bgp.externalRanges[0]"},
		{name: "external range inside cluster", doc: "mode: bgp\nclusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\nbgp: {externalRanges: [172.30.0.0/16, \"fd00:10:244:1::/64\"]}\n",
			wantField: "bgp.externalRanges[1]"},
		{name: "external range beside cluster", doc: "mode: bgp\nclusterCIDRs: [10.244.0.0/16]\nbgp: {externalRanges: [10.245.0.0/16]}\n",
			want: def(func(c *Config) { c.Mode = BGP; c.BGP.ExternalRanges = []netip.Prefix{pfx("10.245.0.0/16")} })},
		{name: "bgp without asn", doc: "mode: bgp\nclusterCIDRs: [10.244.0.0/16]\n", want: def(func(c *Config) { c.Mode = BGP })},
		{name: "unknown field", doc: "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvni: 3\n", wantErr: true},
		{name: "wrong type", doc: "mode: vxlan\nclusterCIDRs: 10.244.0.0/16\n", wantErr: true},
		{name: "not yaml", doc: "mode: [vxlan\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.doc))
			var fe *FieldError
			switch {
			case tc.wantField != "":
				if !errors.As(err, &fe) {
					t.Fatalf("Parse error = %v, want a FieldError on %s", err, tc.wantField)
				}
				if fe.Field != tc.wantField {
					t.Fatalf("FieldError on %q (%v), want %q", fe.Field, err, tc.wantField)
				}
				return
			case tc.wantErr:
				if err == nil {
					t.Fatalf("Parse = %+v, want an error", got)
				}
				return
			case err != nil:
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, netipCmp); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStrictDecoding: every lenient form of the document is refused with an
// error that names the key (or the line) at fault.
func TestStrictDecoding(t *testing.T) {
	const base = "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n"
	tests := []struct {
		name, doc, want string // want: a substring of the error
	}{
		{"duplicate key", base + "mode: bgp\n", `"mode"`},
		{"duplicate nested key", base + "vxlan:\n  vni: 3\n  vni: 4\n", `"vni"`},
		{"duplicate key in JSON", `{"mode":"vxlan","clusterCIDRs":["10.244.0.0/16"],"mode":"bgp"}`, `"mode"`},
		{"case-variant key", "Mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n", `"Mode"`},
		{"case-variant beside the key", base + "Mode: bgp\n", `"Mode"`},
		{"case-variant nested key", base + "vxlan: {VNI: 3}\n", `VNI`},
		{"case-variant bgp key", base + "bgp: {ASN: 65000}\n", `ASN`},
		{"unknown key", base + "vni: 3\n", `"vni"`},
		{"unknown nested key", base + "bgp: {peers: [{address: 10.0.0.1, password: x}]}\n", `password`},
		{"second document", base + "---\nmode: bgp\n", "second YAML document at line 3"},
		{"empty second document", base + "---\n", "second YAML document"},
		{"content after document end", base + "...\nmode: bgp\n", "content after the document"},
		{"trailing content after JSON", `{"mode":"vxlan","clusterCIDRs":["10.244.0.0/16"]} {"mode":"bgp"}`, "parse config.yaml"},
		{"trailing garbage", base + "]]]\n", "parse config.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tc.doc, got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) error %q does not contain %q", tc.doc, err, tc.want)
			}
		})
	}
}

// TestErrorsClipValues: a value of any size is echoed clipped.
func TestErrorsClipValues(t *testing.T) {
	huge := strings.Repeat("x", 100_000)
	tests := []struct{ name, doc string }{
		{"field value", "mode: " + huge + "\nclusterCIDRs: [10.244.0.0/16]\n"},
		{"cidr", "mode: vxlan\nclusterCIDRs: [\"" + huge + "\"]\n"},
		{"unknown key", "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n" + huge + ": 1\n"},
		{"duplicate key", "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n" + huge + ": 1\n" + huge + ": 2\n"},
		{"bad yaml", "mode: [" + huge + "\n"},
		{"node annotation", ""}, // a FieldError made elsewhere, below
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.doc == "" {
				err = &FieldError{Field: "node n1 annotation weft.dev/bgp-asn", Value: huge, Reason: "not a number"}
			} else if _, err = Parse([]byte(tc.doc)); err == nil {
				t.Fatal("Parse accepted the document")
			}
			if n := len(err.Error()); n > 512 {
				t.Fatalf("error is %d bytes, want at most 512: %.200s…", n, err)
			}
		})
	}
	err := &FieldError{Field: "mode", Value: strings.Repeat("é", 40), Reason: "unknown mode"}
	if want := `config field mode="` + strings.Repeat("é", 32) + `…(80 bytes)": unknown mode`; err.Error() != want {
		t.Fatalf("error = %s, want %s", err, want)
	}
}

func TestFieldErrorNamesFieldAndValue(t *testing.T) {
	_, err := Parse([]byte("mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {vni: 99999999}\n"))
	want := `config field vxlan.vni="99999999": out of range 1..16777215`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

func TestCheckPodCIDRs(t *testing.T) {
	c, err := Parse([]byte("mode: vxlan\nclusterCIDRs: [10.244.0.0/16, fd00:10:244::/56]\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pods []string
		ok   bool
	}{
		{"inside both", []string{"10.244.3.0/24", "fd00:10:244:3::/64"}, true},
		{"v4 outside", []string{"10.96.0.0/24"}, false},
		{"wider than cluster", []string{"10.244.0.0/15"}, false},
		{"v6 outside", []string{"fd00:99::/64"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pods []netip.Prefix
			for _, s := range tc.pods {
				pods = append(pods, netip.MustParsePrefix(s))
			}
			err := c.CheckPodCIDRs("node.spec.podCIDRs", pods)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckPodCIDRs(%v) = %v, want ok=%v", tc.pods, err, tc.ok)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that every accepted document
// round-trips: Parse(Marshal(Parse(doc))) == Parse(doc).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n",
		"mode: bgp\nclusterCIDRs: [10.244.0.0/16, fd00::/48]\nbgp: {asn: 65000}\nmtu: 1450\n",
		"mode: vxlan\nclusterCIDRs: [fd00::/56]\nvxlan: {vni: 7, port: 8472, directRouting: true}\nresync: 1m\n",
		"mode: bgp\nclusterCIDRs: [10.244.0.0/16]\nbgp: {asn: 65000, listenPort: 1179, nodeMesh: false, nodeMeshPasswordSecretRef: {key: mesh}, advertiseServices: true, " +
			"externalRanges: [172.30.0.0/16], gracefulRestart: {enabled: false, restartTime: 30s}, " +
			"routeReflectors: {nodeSelector: {weft.dev/route-reflector: \"true\"}, clusterID: 10.0.0.1}, " +
			"peers: [{address: 172.30.2.1, asn: 65001, port: 1790, passwordSecretRef: {key: tor1}, ebgpMultihop: 2, " +
			"holdTime: 9s, keepaliveTime: 3s, connectRetryTime: 1s, nodeSelector: {weft.dev/rack: r1}, maxPrefixes: 10}]}\n",
		"{}", "mode: [", "clusterCIDRs: [x]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			return
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", c, err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)) of %q: %v", out, err)
		}
		if diff := cmp.Diff(c, c2, netipCmp); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// netipCmp compares net/netip values by value.
var netipCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}
