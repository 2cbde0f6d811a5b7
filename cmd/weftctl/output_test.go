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

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"sigs.k8s.io/yaml"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

// serve answers path on a fresh unix socket with v as JSON, as the agent's
// status socket does, and returns the socket's path.
func serve(t *testing.T, path string, v any) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), status.SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return sock
}

// netipEqual compares net/netip values by ==.
var netipEqual = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func testStatus() status.Status {
	return status.Status{
		Node: "node-a", Mode: "vxlan", Ready: true, NodeIP: netip.MustParseAddr("192.168.1.1"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}, PodMTU: 1450,
		IPAM: []status.IPAM{{Prefix: netip.MustParsePrefix("10.244.1.0/24"), Used: 23, Total: 253}},
		Peers: []status.Peer{
			{Name: "node-b", IP: netip.MustParseAddr("192.168.1.2"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}, Via: "vxlan", Programmed: true},
			{Name: "node-c", IP: netip.MustParseAddr("192.168.1.3"), Pending: "no VTEP MAC published yet"},
		},
		LastReconcile: time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC),
	}
}

// Every format of weftctl status: json and yaml decode back to what the
// agent served, -json is -o json, wide has more than table.
func TestStatusFormats(t *testing.T) {
	want := testStatus()
	sock := serve(t, status.Path, want)
	out := func(args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		if err := run(append([]string{"status", "-socket", sock}, args...), &o, &e); err != nil {
			t.Fatalf("weftctl status %s: %v (%s)", strings.Join(args, " "), err, e.String())
		}
		return o.String()
	}
	for _, args := range [][]string{{"-o", "json"}, {"-json"}, {"-o", "JSON"}, {"-json", "-o", "json"}} {
		var got status.Status
		if err := json.Unmarshal([]byte(out(args...)), &got); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if d := cmp.Diff(want, got, netipEqual); d != "" {
			t.Errorf("%v: status differs (-served +printed):\n%s", args, d)
		}
	}
	y := out("-o", "yaml")
	if !strings.Contains(y, "podMTU: 1450\n") || strings.HasPrefix(strings.TrimSpace(y), "{") {
		t.Errorf("-o yaml is not YAML with the JSON field names:\n%s", y)
	}
	var got status.Status
	if err := yaml.Unmarshal([]byte(y), &got); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, netipEqual); d != "" {
		t.Errorf("-o yaml: status differs (-served +printed):\n%s", d)
	}

	table, wide := out(), out("-o", "wide")
	if table != out("-o", "table") {
		t.Errorf("-o table differs from the default")
	}
	for _, c := range []struct {
		text    string
		inTable bool
		inWide  bool
	}{
		{"IPAM 10.244.1.0/24:  23/253 used\n", true, false},
		{"IPAM 10.244.1.0/24:  23/253 used, 230 free (9% used)\n", false, true},
		{"node-c  192.168.1.3  -              -      no (no VTEP MAC published yet)", true, false},
		{"NODE    ADDRESS      POD CIDRS      VIA    PROGRAMMED  PENDING\n", false, true},
		{"node-b  192.168.1.2  10.244.2.0/24  vxlan  yes         -\n", false, true},
		{"node-c  192.168.1.3  -              -      no          no VTEP MAC published yet\n", false, true},
	} {
		if strings.Contains(table, c.text) != c.inTable {
			t.Errorf("table has %q: %v, want %v:\n%s", c.text, !c.inTable, c.inTable, table)
		}
		if strings.Contains(wide, c.text) != c.inWide {
			t.Errorf("wide has %q: %v, want %v:\n%s", c.text, !c.inWide, c.inWide, wide)
		}
	}
}

func TestUnknownFormat(t *testing.T) {
	sock := serve(t, status.Path, testStatus())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "-socket", sock, "-o", "xml"}, `flag -o "xml": unknown output format; want one of table, wide, json, yaml`},
		{[]string{"status", "-socket", sock, "-o", ""}, "want one of table, wide, json, yaml"},
		{[]string{"bgp", "peers", "-socket", sock, "-o", "jsonpath"}, "want one of table, wide, json, yaml"},
		{[]string{"config", "validate", "-o", "html", "testdata/bare-good.yaml"}, "want one of table, wide, json, yaml"},
		{[]string{"status", "-socket", sock, "-json", "-o", "yaml"}, "-json means -o json"},
		{[]string{"status", "-socket", sock, "extra"}, `unexpected arguments ["extra"]`},
	} {
		var o, e bytes.Buffer
		err := run(c.args, &o, &e)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("weftctl %s: error %v, want one containing %q", strings.Join(c.args, " "), err, c.want)
		}
		if o.Len() > 0 {
			t.Errorf("weftctl %s: printed %q on a usage error", strings.Join(c.args, " "), o.String())
		}
	}
}

func TestBGPFormats(t *testing.T) {
	a := netip.MustParseAddr
	since := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	want := bgpmode.Status{
		RouterID: a("172.30.1.11"), ASN: 64512, Running: true,
		Peers: []bgpmode.PeerStatus{{Address: a("172.30.1.12"), Name: "node/node2", ASN: 64512, State: "established",
			Up: true, Since: since, Received: 2, Advertised: 2, Installed: 2, EndOfRIB: true}},
		Routes: []overlay.Route{{Dst: netip.MustParsePrefix("10.244.2.0/24"),
			NextHops: []overlay.NextHop{{Gateway: a("172.30.1.12"), Dev: "eth1", Onlink: true}}}},
		RejectedByReason: map[bgp.Reason]int{bgp.DefaultRoute: 0},
	}
	sock := serve(t, bgpPath, want)
	out := func(args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		if err := run(append(args, "-socket", sock), &o, &e); err != nil {
			t.Fatalf("weftctl %s: %v (%s)", strings.Join(args, " "), err, e.String())
		}
		return o.String()
	}
	for _, cmd := range [][]string{{"bgp", "peers"}, {"bgp", "routes"}} {
		var got bgpmode.Status
		if err := yaml.Unmarshal([]byte(out(append(cmd, "-o", "yaml")...)), &got); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got, netipEqual); d != "" {
			t.Errorf("%v -o yaml differs (-served +printed):\n%s", cmd, d)
		}
	}
	peers, peersWide := out("bgp", "peers"), out("bgp", "peers", "-o", "wide")
	if strings.Contains(peers, "SINCE") || !strings.Contains(peersWide, "SINCE") || !strings.Contains(peersWide, "2026-12-04T18:00:00Z") {
		t.Errorf("SINCE belongs to -o wide only:\ntable:\n%s\nwide:\n%s", peers, peersWide)
	}
	routes, routesWide := out("bgp", "routes"), out("bgp", "routes", "-o", "wide")
	if !strings.Contains(routes, "10.244.2.0/24  172.30.1.12\n") {
		t.Errorf("routes table:\n%s", routes)
	}
	if !strings.Contains(routesWide, "10.244.2.0/24  172.30.1.12 dev eth1 onlink\n") {
		t.Errorf("routes wide:\n%s", routesWide)
	}
}
