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

	"weft.dev/weft/agent/status"
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
