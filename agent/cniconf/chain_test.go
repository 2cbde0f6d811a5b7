package cniconf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakePlugin writes an executable that answers VERSION with the given JSON.
func fakePlugin(t *testing.T, dir, answer string) {
	t.Helper()
	script := "#!/bin/sh\ncat >/dev/null\necho '" + answer + "'\n"
	if err := os.WriteFile(filepath.Join(dir, "portmap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  string // "" = no portmap installed
		want    Chain
		wantErr bool
	}{
		{"no portmap", "", Chain{CNIVersion: "1.1.0"}, false},
		{"portmap speaks 1.1.0", `{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}`, Chain{CNIVersion: "1.1.0", Portmap: true}, false},
		{"portmap stops at 1.0.0", `{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}`, Chain{CNIVersion: "1.0.0", Portmap: true}, false},
		{"portmap too old", `{"cniVersion":"0.4.0","supportedVersions":["0.3.1","0.4.0"]}`, Chain{CNIVersion: "1.1.0"}, true},
		{"portmap answers garbage", `not json`, Chain{CNIVersion: "1.1.0"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			empty, dir := t.TempDir(), t.TempDir()
			if tc.answer != "" {
				fakePlugin(t, dir, tc.answer)
			}
			got, err := Negotiate(t.Context(), []string{empty, dir})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Negotiate error = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("chain (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNegotiateInstalledPortmap asks the portmap plugin installed on this
// machine (Debian's containernetworking-plugins), when there is one.
func TestNegotiateInstalledPortmap(t *testing.T) {
	const dir = "/usr/lib/cni"
	if _, err := os.Stat(filepath.Join(dir, "portmap")); err != nil {
		t.Skipf("skipped: no portmap plugin in %s (apt-get install containernetworking-plugins)", dir)
	}
	got, err := Negotiate(t.Context(), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Portmap || (got.CNIVersion != "1.1.0" && got.CNIVersion != "1.0.0") {
		t.Errorf("Negotiate(%s) = %+v, want portmap chained at 1.1.0 or 1.0.0", dir, got)
	}
}

func TestChainFor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chain   Chain
		runtime string
		want    Chain
	}{
		{"unknown runtime keeps 1.1.0", Chain{CNIVersion: "1.1.0", Portmap: true}, "", Chain{CNIVersion: "1.1.0", Portmap: true}},
		{"zero chain is Preferred", Chain{}, "", Chain{CNIVersion: Preferred}},
		{"containerd 1.6 gets 1.0.0", Chain{CNIVersion: "1.1.0", Portmap: true}, "containerd://1.6.20", Chain{CNIVersion: "1.0.0", Portmap: true}},
		{"containerd 1.7 gets 1.0.0", Chain{}, "containerd://v1.7.24", Chain{CNIVersion: "1.0.0"}},
		{"containerd 2.x keeps 1.1.0", Chain{CNIVersion: "1.1.0"}, "containerd://2.4.2", Chain{CNIVersion: "1.1.0"}},
		{"containerd 1.6 keeps an older version", Chain{CNIVersion: "1.0.0", Portmap: true}, "containerd://1.6.20", Chain{CNIVersion: "1.0.0", Portmap: true}},
		{"cri-o keeps 1.1.0", Chain{CNIVersion: "1.1.0"}, "cri-o://1.34.0", Chain{CNIVersion: "1.1.0"}},
		{"garbled version keeps 1.1.0", Chain{CNIVersion: "1.1.0"}, "containerd://x", Chain{CNIVersion: "1.1.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.chain.For(tc.runtime); got != tc.want {
				t.Errorf("%+v.For(%q) = %+v, want %+v", tc.chain, tc.runtime, got, tc.want)
			}
		})
	}
}
