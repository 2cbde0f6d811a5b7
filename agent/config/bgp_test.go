package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseBGP(t *testing.T) {
	const head = "mode: bgp\nclusterCIDRs: [10.244.0.0/16]\n"
	def := func(mut func(*BGPConfig)) BGPConfig {
		b := BGPConfig{ASN: 64512, ListenPort: 179, NodeMesh: true,
			GracefulRestart: BGPGracefulRestart{Enabled: true, RestartTime: 120 * time.Second}}
		if mut != nil {
			mut(&b)
		}
		return b
	}
	tests := []struct {
		name      string
		bgp       string // the bgp section (YAML, indented under "bgp:")
		want      BGPConfig
		wantField string
		wantValue string
	}{
		{name: "defaults", bgp: "", want: def(nil)},
		{name: "empty section", bgp: "{}", want: def(nil)},
		{name: "everything", bgp: `
  asn: 4200000000
  listenPort: 1179
  nodeMesh: false
  nodeMeshPasswordSecretRef: {key: mesh}
  advertiseServices: true
  externalRanges: [172.30.0.7/16, "fd00:30::/112"]
  gracefulRestart: {enabled: false, restartTime: 30s}
  routeReflectors: {nodeSelector: {weft.dev/route-reflector: "true"}, clusterID: 10.0.0.1}
  peers:
    - address: 172.30.2.1
      asn: 65001
      port: 1790
      passwordSecretRef: {key: tor1}
      ebgpMultihop: 2
      holdTime: 9s
      keepaliveTime: 3s
      connectRetryTime: 1s
      nodeSelector: {weft.dev/rack: r1}
      maxPrefixes: 100
    - address: "fd00:30:2::1"
      passwordSecretRef: {name: other, key: tor2}
`, want: def(func(b *BGPConfig) {
			b.ASN = 4200000000
			b.ListenPort = 1179
			b.NodeMesh = false
			b.NodeMeshPasswordSecretRef = &SecretKeyRef{Name: "weft-bgp-passwords", Key: "mesh"}
			b.AdvertiseServices = true
			b.ExternalRanges = []netip.Prefix{netip.MustParsePrefix("172.30.0.0/16"), netip.MustParsePrefix("fd00:30::/112")}
			b.GracefulRestart = BGPGracefulRestart{Enabled: false, RestartTime: 30 * time.Second}
			b.RouteReflectors = RouteReflectors{NodeSelector: map[string]string{"weft.dev/route-reflector": "true"},
				ClusterID: netip.MustParseAddr("10.0.0.1")}
			b.Peers = []BGPPeer{{
				Address: netip.MustParseAddr("172.30.2.1"), ASN: 65001, Port: 1790,
				PasswordSecretRef: &SecretKeyRef{Name: "weft-bgp-passwords", Key: "tor1"},
				EBGPMultihop:      2, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetryTime: time.Second,
				NodeSelector: map[string]string{"weft.dev/rack": "r1"}, MaxPrefixes: 100,
			}, {
				Address: netip.MustParseAddr("fd00:30:2::1"), Port: 179,
				PasswordSecretRef: &SecretKeyRef{Name: "other", Key: "tor2"},
			}}
		})},
		{name: "asn zero", bgp: "{asn: 0}", wantField: "bgp.asn", wantValue: "0"},
		{name: "asn too large", bgp: "{asn: 4294967296}", wantField: "bgp.asn", wantValue: "4294967296"},
		{name: "asn reserved AS_TRANS", bgp: "{asn: 23456}", wantField: "bgp.asn", wantValue: "23456"},
		{name: "listen port", bgp: "{listenPort: 0}", wantField: "bgp.listenPort", wantValue: "0"},
		{name: "peer without address", bgp: "{peers: [{asn: 65001}]}", wantField: "bgp.peers[0].address"},
		{name: "unparsable peer address", bgp: "{peers: [{address: 10.0.0.1}, {address: 10.0.0.300}]}",
			wantField: "bgp.peers[1].address", wantValue: "10.0.0.300"},
		{name: "peer address is a prefix", bgp: "{peers: [{address: 10.0.0.0/24}]}", wantField: "bgp.peers[0].address", wantValue: "10.0.0.0/24"},
		{name: "duplicate peer", bgp: "{peers: [{address: 10.0.0.1}, {address: 10.0.0.1}]}", wantField: "bgp.peers[1].address", wantValue: "10.0.0.1"},
		{name: "peer asn reserved", bgp: "{peers: [{address: 10.0.0.1, asn: 65535}]}", wantField: "bgp.peers[0].asn", wantValue: "65535"},
		{name: "peer port", bgp: "{peers: [{address: 10.0.0.1, port: 65536}]}", wantField: "bgp.peers[0].port", wantValue: "65536"},
		{name: "secret without key", bgp: "{peers: [{address: 10.0.0.1, passwordSecretRef: {name: x}}]}", wantField: "bgp.peers[0].passwordSecretRef.key"},
		{name: "mesh secret without key", bgp: "{nodeMeshPasswordSecretRef: {name: x}}", wantField: "bgp.nodeMeshPasswordSecretRef.key"},
		{name: "multihop ttl", bgp: "{peers: [{address: 10.0.0.1, ebgpMultihop: 256}]}", wantField: "bgp.peers[0].ebgpMultihop", wantValue: "256"},
		{name: "hold time too short", bgp: "{peers: [{address: 10.0.0.1, holdTime: 2s}]}", wantField: "bgp.peers[0].holdTime", wantValue: "2s"},
		{name: "hold time fractional", bgp: "{peers: [{address: 10.0.0.1, holdTime: 9.5s}]}", wantField: "bgp.peers[0].holdTime", wantValue: "9.5s"},
		{name: "keepalive longer than hold", bgp: "{peers: [{address: 10.0.0.1, holdTime: 9s, keepaliveTime: 10s}]}", wantField: "bgp.peers[0].keepaliveTime", wantValue: "10s"},
		{name: "bad selector key", bgp: "{peers: [{address: 10.0.0.1, nodeSelector: {\"bad key!\": x}}]}",
			wantField: "bgp.peers[0].nodeSelector", wantValue: "bad key!=x"},
		{name: "bad selector value", bgp: "{routeReflectors: {nodeSelector: {weft.dev/rr: \"a b\"}}}",
			wantField: "bgp.routeReflectors.nodeSelector", wantValue: "weft.dev/rr=a b"},
		{name: "cluster id v6", bgp: "{routeReflectors: {clusterID: \"fd00::1\"}}", wantField: "bgp.routeReflectors.clusterID", wantValue: "fd00::1"},
		{name: "max prefixes negative", bgp: "{peers: [{address: 10.0.0.1, maxPrefixes: -1}]}", wantField: "bgp.peers[0].maxPrefixes", wantValue: "-1"},
		{name: "external range", bgp: "{externalRanges: [172.30.0.0/33]}", wantField: "bgp.externalRanges[0]", wantValue: "172.30.0.0/33"},
		{name: "external default route", bgp: "{externalRanges: [0.0.0.0/0]}", wantField: "bgp.externalRanges[0]", wantValue: "0.0.0.0/0"},
		{name: "restart time too long", bgp: "{gracefulRestart: {restartTime: 4096s}}", wantField: "bgp.gracefulRestart.restartTime", wantValue: "4096s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := head
			if tc.bgp != "" {
				doc += "bgp: " + tc.bgp + "\n"
			}
			got, err := Parse([]byte(doc))
			if tc.wantField != "" {
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("Parse error = %v, want a FieldError on %s", err, tc.wantField)
				}
				if fe.Field != tc.wantField || fe.Value != tc.wantValue {
					t.Fatalf("FieldError %s=%q (%v), want %s=%q", fe.Field, fe.Value, err, tc.wantField, tc.wantValue)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if d := cmp.Diff(tc.want, got.BGP, netipCmp); d != "" {
				t.Errorf("bgp (-want +got):\n%s", d)
			}
			// And it round-trips.
			out, err := got.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Marshal) of\n%s: %v", out, err)
			}
			if d := cmp.Diff(got, again, netipCmp); d != "" {
				t.Errorf("round trip (-first +second):\n%s", d)
			}
		})
	}
}

func TestBGPUnknownFieldIsError(t *testing.T) {
	_, err := Parse([]byte("mode: bgp\nclusterCIDRs: [10.244.0.0/16]\nbgp: {peers: [{address: 10.0.0.1, pasword: x}]}\n"))
	if err == nil || !strings.Contains(err.Error(), "pasword") {
		t.Fatalf("Parse = %v, want an error naming the unknown field pasword", err)
	}
}
