package ipam

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var recordCmp = cmp.Options{cmp.AllowUnexported(record{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })}

func TestParseRecord(t *testing.T) {
	tests := []struct {
		name string
		text string
		want record // zero: a parse error is expected
	}{
		{"dual-stack", "weft-ipam 1\nowner abc eth0\nboot b-1\naddr 10.0.0.2\naddr fd00::2\n",
			record{owner: eth0("abc"), boot: "b-1", addrs: []netip.Addr{ma("10.0.0.2"), ma("fd00::2")}}},
		{"ipv6 only", "weft-ipam 1\nowner abc net1\nboot 5b0d2d5e-3c4a-4f7e-9b61-0a4d7f5f2a11\naddr fd00::2\n",
			record{owner: Owner{"abc", "net1"}, boot: "5b0d2d5e-3c4a-4f7e-9b61-0a4d7f5f2a11", addrs: []netip.Addr{ma("fd00::2")}}},
		{"no final newline", "weft-ipam 1\nowner abc eth0\nboot b\naddr 10.0.0.2", record{}},
		{"empty", "", record{}},
		{"other version", "weft-ipam 2\nowner abc eth0\nboot b\naddr 10.0.0.2\n", record{}},
		{"no address", "weft-ipam 1\nowner abc eth0\nboot b\n", record{}},
		{"three addresses", "weft-ipam 1\nowner abc eth0\nboot b\naddr 10.0.0.2\naddr fd00::2\naddr 10.0.0.3\n", record{}},
		{"two ipv4", "weft-ipam 1\nowner abc eth0\nboot b\naddr 10.0.0.2\naddr 10.0.0.3\n", record{}},
		{"non-canonical ipv6", "weft-ipam 1\nowner abc eth0\nboot b\naddr FD00::2\n", record{}},
		{"mapped ipv4", "weft-ipam 1\nowner abc eth0\nboot b\naddr ::ffff:10.0.0.2\n", record{}},
		{"zone", "weft-ipam 1\nowner abc eth0\nboot b\naddr fe80::1%eth0\n", record{}},
		{"double space", "weft-ipam 1\nowner abc  eth0\nboot b\naddr 10.0.0.2\n", record{}},
		{"bad owner", "weft-ipam 1\nowner a/b eth0\nboot b\naddr 10.0.0.2\n", record{}},
		{"missing ifname", "weft-ipam 1\nowner abc\nboot b\naddr 10.0.0.2\n", record{}},
		{"empty boot", "weft-ipam 1\nowner abc eth0\nboot \naddr 10.0.0.2\n", record{}},
		{"swapped lines", "weft-ipam 1\nboot b\nowner abc eth0\naddr 10.0.0.2\n", record{}},
		{"crlf", "weft-ipam 1\r\nowner abc eth0\r\nboot b\r\naddr 10.0.0.2\r\n", record{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRecord([]byte(tt.text))
			if tt.want.boot == "" {
				if !errors.Is(err, errDamaged) || errors.Is(err, ErrInvalid) {
					t.Fatalf("parseRecord = %+v, %v; want an errDamaged error (not ErrInvalid)", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, recordCmp); diff != "" {
				t.Errorf("parseRecord (-want +got):\n%s", diff)
			}
			if out := string(got.marshal()); out != tt.text {
				t.Errorf("marshal = %q, want %q", out, tt.text)
			}
		})
	}
}

// FuzzRecord checks that every text parseRecord accepts is canonical (it
// marshals back byte for byte) and that every valid record survives
// marshal → parse unchanged; the seeds run as a normal test.
func FuzzRecord(f *testing.F) {
	f.Add([]byte("weft-ipam 1\nowner abc eth0\nboot b-1\naddr 10.0.0.2\naddr fd00::2\n"), "abc", "eth0", "b-1", []byte{10, 0, 0, 2}, []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})
	f.Add([]byte("weft-ipam 1\nowner a.b_c-d net1\nboot 5b0d2d5e-3c4a\naddr fd00::2\n"), "a.b_c-d", "net1", "x", []byte{}, []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})
	f.Add([]byte("weft-ipam 1\nowner abc eth0\nboot b\naddr 010.0.0.2\n"), "abc", "a=b", "b", []byte{192, 168, 1, 1}, []byte{})
	f.Add([]byte("weft-ipam 1\nowner abc eth0\nboot b"), "", "eth0", "b", []byte{1, 2, 3, 4}, []byte{1})
	f.Add([]byte("weft-ipam 1\nowner abc eth\xa00\nboot b\naddr 1.2.3.4\n"), "abc", "eth\xa00", "b", []byte{1, 2, 3, 4}, []byte{})
	f.Fuzz(func(t *testing.T, text []byte, id, ifName, boot string, v4, v6 []byte) {
		if r, err := parseRecord(text); err == nil {
			if out := r.marshal(); string(out) != string(text) {
				t.Fatalf("accepted non-canonical text %q (canonical %q)", text, out)
			}
			if _, err := parseKey(r.owner.key()); err != nil {
				t.Fatalf("owner %q of a valid record has no valid key: %v", r.owner, err)
			}
		}
		r := record{owner: Owner{id, ifName}, boot: boot}
		if a, ok := netip.AddrFromSlice(v4); ok && len(v4) == 4 {
			r.addrs = append(r.addrs, a)
		}
		if a, ok := netip.AddrFromSlice(v6); ok && len(v6) == 16 && !a.Is4In6() {
			r.addrs = append(r.addrs, a)
		}
		valid := r.owner.Validate() == nil && validBootID(boot) == nil && len(r.addrs) > 0
		got, err := parseRecord(r.marshal())
		if valid != (err == nil) {
			t.Fatalf("record %+v valid=%v but parse of its text: %v", r, valid, err)
		}
		if valid {
			if diff := cmp.Diff(r, got, recordCmp); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
			if o, err := parseKey(r.owner.key()); err != nil || o != r.owner {
				t.Fatalf("key round trip of %+v: %+v, %v", r.owner, o, err)
			}
		}
	})
}
