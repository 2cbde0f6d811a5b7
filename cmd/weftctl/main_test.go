package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

func TestStatusTable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), status.SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	st := status.Status{
		Node: "node-a", Mode: "vxlan", Ready: true, NodeIP: netip.MustParseAddr("192.168.1.1"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, PodMTU: 1450,
		IPAM: []status.IPAM{{Prefix: netip.MustParsePrefix("10.244.1.0/24"), Used: 3, Total: 253}},
		Peers: []status.Peer{
			{Name: "node-b", IP: netip.MustParseAddr("192.168.1.2"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Via: "vxlan", Programmed: true},
			{Name: "node-c", IP: netip.MustParseAddr("192.168.1.3"), Pending: "no VTEP MAC published yet"},
		},
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != status.Path {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	var out, errOut bytes.Buffer
	if err := run([]string{"status", "-socket", sock}, &out, &errOut); err != nil {
		t.Fatalf("weftctl status: %v (%s)", err, errOut.String())
	}
	for _, want := range []string{
		"Mode:", "vxlan", "[10.244.1.0/24]", "IPAM 10.244.1.0/24:  3/253 used",
		"node-b  192.168.1.2  10.244.2.0/24  vxlan  yes",
		"node-c  192.168.1.3  -              -      no (no VTEP MAC published yet)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	if err := run([]string{"status", "-socket", filepath.Join(t.TempDir(), "none.sock")}, &out, &errOut); err == nil {
		t.Error("status against a missing socket succeeded")
	}
	if err := run([]string{"frobnicate"}, &out, &errOut); err == nil {
		t.Error("unknown command succeeded")
	}
	errOut.Reset()
	if err := run([]string{"--help"}, &out, &errOut); err != nil || !strings.Contains(errOut.String(), "weftctl status") {
		t.Errorf("--help = %v, output %q", err, errOut.String())
	}
}

func TestBGPPeersAndRoutes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), status.SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	st := bgpmode.Status{
		RouterID: a("172.30.1.11"), ASN: 64512, Running: true,
		Peers: []bgpmode.PeerStatus{
			{Address: a("172.30.1.12"), Name: "node/node2", ASN: 64512, State: "established", Up: true,
				Since: time.Now().Add(-90 * time.Second), Received: 2, Advertised: 2, Installed: 2, EndOfRIB: true},
			{Address: a("172.30.1.1"), Name: "peer/172.30.1.1", ASN: 64512, State: "active",
				Received: 3, Rejected: map[bgp.Reason]int{bgp.DefaultRoute: 1, bgp.OutsideCluster: 2}},
		},
		Routes: []overlay.Route{{Dst: netip.MustParsePrefix("10.244.2.0/24"),
			NextHops: []overlay.NextHop{{Gateway: a("172.30.1.12")}, {Gateway: a("172.30.1.1")}}}},
		Rejected:         []bgp.Rejected{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: a("172.30.1.1"), Peer: a("172.30.1.1"), Reason: bgp.DefaultRoute}},
		RejectedByReason: map[bgp.Reason]int{bgp.DefaultRoute: 1, bgp.OutsideCluster: 2, bgp.OwnCIDR: 0},
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != bgpPath {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	var out, errOut bytes.Buffer
	if err := run([]string{"bgp", "peers", "-socket", sock}, &out, &errOut); err != nil {
		t.Fatalf("weftctl bgp peers: %v (%s)", err, errOut.String())
	}
	for _, want := range []string{
		"Router ID: 172.30.1.11  AS: 64512",
		"172.30.1.12  node/node2       64512  established  1m30s",
		"172.30.1.1   peer/172.30.1.1  64512  active       -       3         0           0          default-route=1,outside-cluster=2  no",
		"Rejected paths by reason: default-route=1,outside-cluster=2",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("peers output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run([]string{"bgp", "routes", "-socket", sock}, &out, &errOut); err != nil {
		t.Fatalf("weftctl bgp routes: %v (%s)", err, errOut.String())
	}
	for _, want := range []string{
		"10.244.2.0/24  172.30.1.12,172.30.1.1",
		"0.0.0.0/0  172.30.1.1  172.30.1.1  default-route",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("routes output lacks %q:\n%s", want, out.String())
		}
	}
	if err := run([]string{"bgp", "sessions", "-socket", sock}, &out, &errOut); err == nil {
		t.Error("bgp sessions (unknown subcommand) succeeded")
	}
}
