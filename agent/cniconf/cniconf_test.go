package cniconf

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func network() Network {
	return Network{
		Bridge: "weft0", MTU: 1450,
		PodCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")},
		Gateways:  []netip.Addr{netip.MustParseAddr("10.244.1.1"), netip.MustParseAddr("fd00:10:244:1::1")},
		DataDir:   "/var/lib/weft/ipam",
		ReadyFile: "/run/weft/ready",
	}
}

func TestRenderFormat(t *testing.T) {
	const weft = `{"type":"weft","bridge":"weft0","mtu":1450,"podCIDRs":["10.244.1.0/24","fd00:10:244:1::/64"],
		 "gateways":["10.244.1.1","fd00:10:244:1::1"],"dataDir":"/var/lib/weft/ipam","hairpinMode":true,
		 "readyFile":"/run/weft/ready"}`
	const portmap = `{"type":"portmap","capabilities":{"portMappings":true}}`
	for _, tc := range []struct {
		name  string
		chain Chain
		want  string
	}{
		{"zero chain: weft alone at 1.1.0", Chain{}, `{"cniVersion":"1.1.0","name":"weft","plugins":[` + weft + `]}`},
		{"portmap at 1.1.0", Chain{CNIVersion: "1.1.0", Portmap: true}, `{"cniVersion":"1.1.0","name":"weft","plugins":[` + weft + `,` + portmap + `]}`},
		{"portmap that stops at 1.0.0", Chain{CNIVersion: "1.0.0", Portmap: true}, `{"cniVersion":"1.0.0","name":"weft","plugins":[` + weft + `,` + portmap + `]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := network()
			n.Chain = tc.chain
			b, err := Render(n)
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("conflist is not JSON: %v\n%s", err, b)
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("conflist (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderIncomplete(t *testing.T) {
	n := network()
	n.Gateways = n.Gateways[:1]
	if _, err := Render(n); err == nil {
		t.Fatal("Render with a missing gateway succeeded")
	}
	n = network()
	n.MTU = 0
	if _, err := Render(n); err == nil {
		t.Fatal("Render with MTU 0 succeeded")
	}
}

func TestWriteAtomicSkipUnchanged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // created by Write
	wrote, err := Write(dir, network())
	if err != nil || !wrote {
		t.Fatalf("first Write = %v, %v; want true, nil", wrote, err)
	}
	path := filepath.Join(dir, FileName)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	wrote, err = Write(dir, network())
	if err != nil || wrote {
		t.Fatalf("unchanged Write = %v, %v; want false, nil", wrote, err)
	}
	if st, _ := os.Stat(path); !st.ModTime().Equal(old) {
		t.Errorf("unchanged Write touched the file: mtime %v, want %v", st.ModTime(), old)
	}

	// A change replaces the file by rename: the old inode is untouched, so a
	// reader holding it open sees the old content complete.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := network()
	n.MTU = 1400
	if wrote, err := Write(dir, n); err != nil || !wrote {
		t.Fatalf("changed Write = %v, %v; want true, nil", wrote, err)
	}
	var held map[string]any
	if err := json.NewDecoder(f).Decode(&held); err != nil {
		t.Fatalf("old open file no longer a complete conflist: %v", err)
	}
	b, _ := os.ReadFile(path)
	want, _ := Render(n)
	if string(b) != string(want) {
		t.Errorf("file after change:\n%s\nwant:\n%s", b, want)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries (temp files left?), want 1", len(ents))
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("conflist still there after Remove: %v", err)
	}
}
