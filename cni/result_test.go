package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/ipam"
)

func TestBuildResultVersions(t *testing.T) {
	c, err := Parse([]byte(`{"cniVersion":"1.1.0","name":"weft","podCIDRs":["10.244.1.0/24","fd00:1::/64"]}`))
	if err != nil {
		t.Fatal(err)
	}
	a := Attachment{
		HostVeth: HostVethName("c1", "eth0"), HostMAC: hostMAC("c1", "eth0"), IfName: "eth0",
		PodMAC: podMAC([]netip.Addr{addr("10.244.1.2"), addr("fd00:1::2")}), Netns: "/run/netns/p",
		Addrs: []netip.Addr{addr("10.244.1.2"), addr("fd00:1::2")},
	}
	want := map[string]string{
		"1.1.0": `{"cniVersion":"1.1.0","interfaces":[{"mac":"%[1]s","name":"%[2]s"},{"mac":"%[3]s","name":"eth0","sandbox":"/run/netns/p"}],` +
			`"ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1","interface":1},{"address":"fd00:1::2/64","gateway":"fd00:1::1","interface":1}],` +
			`"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"},{"dst":"::/0","gw":"fd00:1::1"}]}`,
		"0.3.1": `{"cniVersion":"0.3.1","interfaces":[{"mac":"%[1]s","name":"%[2]s"},{"mac":"%[3]s","name":"eth0","sandbox":"/run/netns/p"}],` +
			`"ips":[{"version":"4","interface":1,"address":"10.244.1.2/24","gateway":"10.244.1.1"},{"version":"6","interface":1,"address":"fd00:1::2/64","gateway":"fd00:1::1"}],` +
			`"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"},{"dst":"::/0","gw":"fd00:1::1"}],"dns":{}}`,
	}
	for v, tmpl := range want {
		t.Run(v, func(t *testing.T) {
			r, err := BuildResult(c, a).GetAsVersion(v)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			exp := fmt.Sprintf(tmpl, a.HostMAC, a.HostVeth, a.PodMAC)
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal([]byte(exp), &w)
			if diff := cmp.Diff(w, g); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNames(t *testing.T) {
	n := HostVethName("0123456789abcdef", "eth0")
	if len(n) > 15 || n != HostVethName("0123456789abcdef", "eth0") || n == HostVethName("0123456789abcdef", "eth1") {
		t.Errorf("HostVethName %q: want a stable name of at most 15 bytes, distinct per interface", n)
	}
	for _, mac := range []net.HardwareAddr{hostMAC("c", "eth0"), podMAC([]netip.Addr{addr("10.0.0.2")})} {
		if mac[0]&1 != 0 || mac[0]&2 == 0 {
			t.Errorf("mac %s: want unicast, locally administered", mac)
		}
	}
	if podMAC([]netip.Addr{addr("10.0.0.2")}).String() == podMAC([]netip.Addr{addr("10.0.0.3")}).String() {
		t.Error("podMAC equal for different addresses")
	}
}

func TestTypedCodes(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code uint
	}{
		{"locked", fmt.Errorf("lock: %w", ipam.ErrLocked), types.ErrTryAgainLater},
		{"exists", fmt.Errorf("x: %w", ipam.ErrExists), ErrCodeExists},
		{"exhausted", ipam.ErrExhausted, ErrCodeExhausted},
		{"not found", ipam.ErrNotFound, types.ErrUnknownContainer},
		{"invalid", ipam.ErrInvalid, types.ErrInvalidNetworkConfig},
		{"typed kept", fmt.Errorf("wrap: %w", types.NewError(types.ErrInvalidNetworkConfig, "m", "")), types.ErrInvalidNetworkConfig},
		{"other", errors.New("boom"), types.ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var te *types.Error
			if err := typed("op", tt.err); !errors.As(err, &te) || te.Code != tt.code {
				t.Errorf("typed(%v) = %v, want code %d", tt.err, err, tt.code)
			}
		})
	}
	if typed("op", nil) != nil {
		t.Error("typed(nil) != nil")
	}
}

func TestKeepList(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []ipam.Owner
		ok   bool
	}{
		{"neither key", `{"name":"weft"}`, nil, false},
		{"empty list releases all", `{"cni.dev/valid-attachments":[]}`, nil, true},
		{"spec key", `{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`, []ipam.Owner{{ContainerID: "a", IfName: "eth0"}}, true},
		{"legacy key", `{"cni.dev/attachments":[{"containerID":"b","ifname":"net1"}]}`, []ipam.Owner{{ContainerID: "b", IfName: "net1"}}, true},
		{"both keys merged", `{"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"c","ifname":"eth0"}]}`,
			[]ipam.Owner{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "c", IfName: "eth0"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := keepList([]byte(tt.in))
			if err != nil || ok != tt.ok {
				t.Fatalf("keepList = %v, %v, %v; want ok=%v", got, ok, err, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("keep (-want +got):\n%s", diff)
			}
		})
	}
}
