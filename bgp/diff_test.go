package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDiffPeers(t *testing.T) {
	cfg, err := Config{RouterID: addr("10.99.0.1")}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	mk := func(a string, mod func(*Peer)) Peer {
		p := Peer{Address: addr(a), ASN: 64512}
		if mod != nil {
			mod(&p)
		}
		return p.normalize(cfg)
	}
	set := func(ps ...Peer) map[netip.Addr]Peer {
		m := map[netip.Addr]Peer{}
		for _, p := range ps {
			m[p.Address] = p
		}
		return m
	}
	established := func(p Peer) Peer { p.LocalAddress = addr("10.99.0.1"); return p }
	tests := []struct {
		name       string
		want, have map[netip.Addr]Peer
		plan       peerPlan
	}{
		{name: "empty"},
		{
			name: "add new, delete gone",
			want: set(mk("10.99.0.2", nil), mk("10.99.0.3", nil)),
			have: set(mk("10.99.0.3", nil), mk("10.99.0.4", nil)),
			plan: peerPlan{Add: []Peer{mk("10.99.0.2", nil)}, Delete: []netip.Addr{addr("10.99.0.4")}},
		},
		{
			name: "identical is no change",
			want: set(mk("10.99.0.2", func(p *Peer) { p.Password = "s3cret"; p.Passive = true })),
			have: set(mk("10.99.0.2", func(p *Peer) { p.Password = "s3cret"; p.Passive = true })),
		},
		{
			name: "kernel-chosen local address is no change",
			want: set(mk("10.99.0.2", nil)),
			have: set(established(mk("10.99.0.2", nil))),
		},
		{
			name: "explicit local address differs",
			want: set(mk("10.99.0.2", func(p *Peer) { p.LocalAddress = addr("10.99.0.9") })),
			have: set(established(mk("10.99.0.2", nil))),
			plan: peerPlan{Update: []Peer{mk("10.99.0.2", func(p *Peer) { p.LocalAddress = addr("10.99.0.9") })}},
		},
		{
			name: "changed fields are updated",
			want: set(
				mk("10.99.0.2", func(p *Peer) { p.ASN = 65001 }),
				mk("10.99.0.3", func(p *Peer) { p.HoldTime = 9 * time.Second }),
				mk("fd99::4", func(p *Peer) { p.MaxPrefixesV6 = 10 }),
			),
			have: set(mk("10.99.0.2", nil), mk("10.99.0.3", nil), mk("fd99::4", nil)),
			plan: peerPlan{Update: []Peer{
				mk("10.99.0.2", func(p *Peer) { p.ASN = 65001 }),
				mk("10.99.0.3", func(p *Peer) { p.HoldTime = 9 * time.Second }),
				mk("fd99::4", func(p *Peer) { p.MaxPrefixesV6 = 10 }),
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := diffPeers(tc.want, tc.have)
			if diff := cmp.Diff(tc.plan, got, cmpNetip); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDiffPaths(t *testing.T) {
	want := map[netip.Prefix]netip.Addr{
		pfx("10.244.0.0/24"): addr("10.99.0.1"),
		pfx("fd00:244::/64"): addr("fd99::1"),
		pfx("172.30.0.1/32"): addr("10.99.0.1"),
	}
	have := map[netip.Prefix]netip.Addr{
		pfx("10.244.0.0/24"): addr("10.99.0.1"),
		pfx("fd00:244::/64"): addr("fd99::7"),
		pfx("172.30.0.9/32"): addr("10.99.0.1"),
	}
	add, del := diffPaths(want, have)
	wantAdd := []Path{
		{Prefix: pfx("172.30.0.1/32"), NextHop: addr("10.99.0.1")},
		{Prefix: pfx("fd00:244::/64"), NextHop: addr("fd99::1")},
	}
	wantDel := []Path{{Prefix: pfx("172.30.0.9/32"), NextHop: addr("10.99.0.1")}}
	if diff := cmp.Diff(wantAdd, add, cmpNetip); diff != "" {
		t.Errorf("add (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantDel, del, cmpNetip); diff != "" {
		t.Errorf("delete (-want +got):\n%s", diff)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" = valid
	}{
		{name: "defaults", cfg: Config{RouterID: addr("10.0.0.1")}},
		{name: "4-byte asn", cfg: Config{RouterID: addr("10.0.0.1"), ASN: 4200000000}},
		{name: "no router id", cfg: Config{}, wantErr: "RouterID invalid IP"},
		{name: "v6 router id", cfg: Config{RouterID: addr("fd00::1")}, wantErr: "RouterID fd00::1"},
		{name: "as_trans", cfg: Config{RouterID: addr("10.0.0.1"), ASN: 23456}, wantErr: "ASN 23456"},
		{name: "asn 65535", cfg: Config{RouterID: addr("10.0.0.1"), ASN: 65535}, wantErr: "ASN 65535"},
		{name: "asn max", cfg: Config{RouterID: addr("10.0.0.1"), ASN: 4294967295}, wantErr: "ASN 4294967295"},
		{name: "bad port", cfg: Config{RouterID: addr("10.0.0.1"), ListenPort: 70000}, wantErr: "ListenPort 70000"},
		{name: "no listen", cfg: Config{RouterID: addr("10.0.0.1"), ListenPort: -1}},
		{name: "zoned listen addr", cfg: Config{RouterID: addr("10.0.0.1"), ListenAddrs: []netip.Addr{addr("fe80::1%eth0")}}, wantErr: "ListenAddrs[0] fe80::1%eth0"},
		{name: "restart time too long", cfg: Config{RouterID: addr("10.0.0.1"), GracefulRestart: GracefulRestart{RestartTime: time.Hour + 10*time.Minute}}, wantErr: "GracefulRestart.RestartTime 1h10m0s"},
		{name: "restarted without GR", cfg: Config{RouterID: addr("10.0.0.1"), RestartedWithState: true, GracefulRestart: GracefulRestart{Disabled: true}}, wantErr: "RestartedWithState"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults()
			checkErr(t, err, tc.wantErr)
		})
	}
}

func TestPeerAndPathValidation(t *testing.T) {
	cfg, _ := Config{RouterID: addr("10.0.0.1")}.withDefaults()
	peers := []struct {
		name    string
		peer    Peer
		wantErr string
	}{
		{name: "minimal", peer: Peer{Address: addr("10.0.0.2"), ASN: 64512}},
		{name: "no address", peer: Peer{ASN: 64512}, wantErr: "peers[0].Address invalid IP"},
		{name: "asn 0", peer: Peer{Address: addr("10.0.0.2")}, wantErr: "peers[0].ASN 0"},
		{name: "port", peer: Peer{Address: addr("10.0.0.2"), ASN: 1, Port: 65536}, wantErr: "peers[0].Port 65536"},
		{name: "local family", peer: Peer{Address: addr("10.0.0.2"), ASN: 1, LocalAddress: addr("fd00::1")}, wantErr: "peers[0].LocalAddress fd00::1"},
		{name: "hold time", peer: Peer{Address: addr("10.0.0.2"), ASN: 1, HoldTime: time.Second}, wantErr: "peers[0].HoldTime 1s"},
		{name: "fractional", peer: Peer{Address: addr("10.0.0.2"), ASN: 1, ConnectRetry: 1500 * time.Millisecond}, wantErr: "peers[0].ConnectRetry 1.5s"},
		{name: "password length", peer: Peer{Address: addr("10.0.0.2"), ASN: 1, Password: strings.Repeat("x", 81)}, wantErr: "peers[0].Password"},
		{name: "cluster id v6", peer: Peer{Address: addr("10.0.0.2"), ASN: 1, RouteReflectorClient: true, ClusterID: addr("fd00::1")}, wantErr: "peers[0].ClusterID fd00::1"},
	}
	for _, tc := range peers {
		t.Run("peer "+tc.name, func(t *testing.T) {
			checkErr(t, tc.peer.normalize(cfg).validate(0), tc.wantErr)
		})
	}
	paths := []struct {
		name    string
		path    Path
		wantErr string
	}{
		{name: "v4", path: Path{Prefix: pfx("10.244.0.0/24"), NextHop: addr("10.0.0.1")}},
		{name: "v6", path: Path{Prefix: pfx("fd00:244::/64"), NextHop: addr("fd00::1")}},
		{name: "host bits", path: Path{Prefix: pfx("10.244.0.1/24"), NextHop: addr("10.0.0.1")}, wantErr: "paths[0].Prefix 10.244.0.1/24: host bits set (want 10.244.0.0/24)"},
		{name: "family", path: Path{Prefix: pfx("fd00:244::/64"), NextHop: addr("10.0.0.1")}, wantErr: "paths[0].NextHop 10.0.0.1: family differs"},
		{name: "no next hop", path: Path{Prefix: pfx("10.244.0.0/24")}, wantErr: "paths[0].NextHop invalid IP"},
	}
	for _, tc := range paths {
		t.Run("path "+tc.name, func(t *testing.T) {
			checkErr(t, tc.path.validate(0), tc.wantErr)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
}

// TestPeerAPIRoundTrip: what we configure reads back equal, so SetPeers
// with an unchanged peer finds nothing to update.
func TestPeerAPIRoundTrip(t *testing.T) {
	cfg, _ := Config{RouterID: addr("10.0.0.1"), ListenAddrs: []netip.Addr{addr("10.0.0.1")}}.withDefaults()
	peers := []Peer{
		{Address: addr("10.0.0.2"), ASN: 64512},
		{Address: addr("fd00::2"), ASN: 65001, Port: 1179, Password: "pw", Passive: true, EBGPMultihopTTL: 3,
			HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second,
			RouteReflectorClient: true, MaxPrefixesV4: 100, MaxPrefixesV6: 50, Description: "node-b"},
		{Address: addr("10.0.0.3"), ASN: 1, RouteReflectorClient: true, ClusterID: addr("1.2.3.4")},
	}
	for _, p := range peers {
		p = p.normalize(cfg)
		got, err := peerFromAPI(peerToAPI(cfg, p, false))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(p, got, cmpNetip); diff != "" {
			t.Errorf("round trip of %s (-want +got):\n%s", p.Address, diff)
		}
	}
}
