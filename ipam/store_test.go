package ipam

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

var (
	mp = netip.MustParsePrefix
	ma = netip.MustParseAddr
)

func eth0(id string) Owner { return Owner{ContainerID: id, IfName: "eth0"} }

// newStore opens a store in a fresh directory with boot "boot-a".
func newStore(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.BootID == "" {
		opts.BootID = "boot-a"
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	return s
}

func TestOpenValidation(t *testing.T) {
	dir := t.TempDir()
	v4, v6 := mp("10.244.1.0/24"), mp("fd00:10:244:1::/64")
	tests := []struct {
		name string
		opts Options
		want string // substring of the error; "" = valid
	}{
		{"valid dual-stack", Options{Ranges: []netip.Prefix{v4, v6}, Reserved: []netip.Addr{ma("10.244.1.1"), ma("fd00:10:244:1::1")}}, ""},
		{"valid /30 with gateway", Options{Ranges: []netip.Prefix{mp("10.0.0.0/30")}, Reserved: []netip.Addr{ma("10.0.0.1")}}, ""},
		{"valid /127", Options{Ranges: []netip.Prefix{mp("fd00::/127")}}, ""},
		{"empty dir", Options{Dir: "-", Ranges: []netip.Prefix{v4}}, "Options.Dir: empty"},
		{"relative dir", Options{Dir: "var/lib/weft", Ranges: []netip.Prefix{v4}}, `Options.Dir "var/lib/weft": not an absolute path`},
		{"no ranges", Options{}, "Options.Ranges: empty"},
		{"zero prefix", Options{Ranges: []netip.Prefix{{}}}, "Options.Ranges[0] invalid Prefix: not a valid prefix"},
		{"host bits set", Options{Ranges: []netip.Prefix{mp("10.244.1.7/24")}}, "Options.Ranges[0] 10.244.1.7/24: host bits set, want 10.244.1.0/24"},
		{"mapped prefix", Options{Ranges: []netip.Prefix{mp("::ffff:10.0.0.0/120")}}, "IPv4-mapped IPv6 prefix"},
		{"two IPv4", Options{Ranges: []netip.Prefix{v4, v6, mp("10.0.0.0/8")}}, "Options.Ranges[2] 10.0.0.0/8: second IPv4 range (Ranges[0] is 10.244.1.0/24)"},
		{"two IPv6", Options{Ranges: []netip.Prefix{v6, mp("fd00::/64")}}, "Options.Ranges[1] fd00::/64: second IPv6 range"},
		{"/32", Options{Ranges: []netip.Prefix{mp("10.0.0.5/32")}}, "Options.Ranges[0] 10.0.0.5/32: no usable address"},
		{"/31", Options{Ranges: []netip.Prefix{mp("10.0.0.4/31")}}, "Options.Ranges[0] 10.0.0.4/31: no usable address"},
		{"/128", Options{Ranges: []netip.Prefix{v4, mp("fd00::5/128")}}, "Options.Ranges[1] fd00::5/128: no usable address"},
		{"/30 all reserved", Options{Ranges: []netip.Prefix{mp("10.0.0.0/30")}, Reserved: []netip.Addr{ma("10.0.0.1"), ma("10.0.0.2")}}, "no usable address (network, broadcast and 2 reserved excluded)"},
		{"reserved outside", Options{Ranges: []netip.Prefix{v4}, Reserved: []netip.Addr{ma("10.244.2.1")}}, "Options.Reserved[0] 10.244.2.1: outside every range [10.244.1.0/24]"},
		{"reserved other family", Options{Ranges: []netip.Prefix{v4}, Reserved: []netip.Addr{ma("10.244.1.1"), ma("fd00::1")}}, "Options.Reserved[1] fd00::1: outside every range"},
		{"reserved zero", Options{Ranges: []netip.Prefix{v4}, Reserved: []netip.Addr{{}}}, `Options.Reserved[0] "invalid IP": not a plain`},
		{"reserved with zone", Options{Ranges: []netip.Prefix{v6}, Reserved: []netip.Addr{ma("fd00:10:244:1::1%eth0")}}, "not a plain IPv4 or IPv6 address"},
		{"negative timeout", Options{Ranges: []netip.Prefix{v4}, LockTimeout: -time.Second}, "Options.LockTimeout -1s: negative"},
		{"bad boot", Options{Ranges: []netip.Prefix{v4}, BootID: "a b"}, `Options.BootID: boot ID "a b": character ' ' at 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			switch opts.Dir {
			case "":
				opts.Dir = filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			case "-":
				opts.Dir = ""
			}
			if opts.BootID == "" {
				opts.BootID = "boot-a"
			}
			s, err := Open(opts)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if !fileExists(s.path(addrDir)) {
					t.Errorf("Open did not create %s", s.path(addrDir))
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestOpenDefaultBootID(t *testing.T) {
	want, err := os.ReadFile(bootIDFile)
	if err != nil {
		t.Skipf("no kernel boot ID on this system: %v", err)
	}
	s, err := Open(Options{Dir: t.TempDir(), Ranges: []netip.Prefix{mp("10.0.0.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	if s.boot != strings.TrimSpace(string(want)) {
		t.Errorf("boot = %q, want %q", s.boot, want)
	}
}

func TestOwnerValidation(t *testing.T) {
	tests := []struct {
		name  string
		owner Owner
		want  string // "" = valid
	}{
		{"docker id", Owner{strings.Repeat("ab12", 16), "eth0"}, ""},
		{"dots dashes underscores", Owner{"pod_1.a-b", "net1"}, ""},
		{"ifname 15 bytes", Owner{"c", "abcdefghijklmno"}, ""},
		{"ifname with equals", Owner{"c", "a=b"}, ""},
		{"empty container", Owner{"", "eth0"}, `owner ContainerID "": empty`},
		{"container slash", Owner{"a/b", "eth0"}, `owner ContainerID "a/b": character '/' at 1`},
		{"container dotdot", Owner{"..", "eth0"}, "must start with a letter or digit"},
		{"container leading dash", Owner{"-x", "eth0"}, "must start with a letter or digit"},
		{"container equals", Owner{"a=b", "eth0"}, "character '=' at 1"},
		{"container too long", Owner{strings.Repeat("a", 240), "eth0"}, "240 bytes, at most 239"},
		{"empty ifname", Owner{"c", ""}, `owner IfName "": empty`},
		{"ifname too long", Owner{"c", "abcdefghijklmnop"}, "16 bytes, at most 15"},
		{"ifname dot", Owner{"c", "."}, "not a valid interface name"},
		{"ifname slash", Owner{"c", "a/b"}, "character '/' at 1"},
		{"ifname colon", Owner{"c", "eth0:1"}, "character ':' at 4"},
		{"ifname space", Owner{"c", "eth 0"}, "character ' ' at 3"},
		{"ifname newline", Owner{"c", "eth0\n"}, `character '\n' at 4`},
	}
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24")}})
	ctx := t.Context()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := map[string]error{}
			_, errs["Allocate"] = s.Allocate(ctx, tt.owner)
			errs["Release"] = s.Release(ctx, tt.owner)
			_, errs["Lookup"] = s.Lookup(ctx, tt.owner)
			_, errs["GC"] = s.GC(ctx, []Owner{tt.owner})
			for op, err := range errs {
				if tt.want == "" {
					if errors.Is(err, ErrInvalid) {
						t.Errorf("%s: %v", op, err)
					}
					continue
				}
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s error = %v, want ErrInvalid containing %q", op, err, tt.want)
				}
			}
			if tt.want == "" {
				if got, err := parseKey(tt.owner.key()); err != nil || got != tt.owner {
					t.Errorf("parseKey(key) = %v, %v", got, err)
				}
			}
		})
		mustFsck(t, s)
	}
}

// step is one operation of a sequence test and what it must return.
type step struct {
	op    string // alloc, release, lookup, usage
	id    string // container ID (ifname eth0)
	want  string // addresses "a b", usage "prefix used/total …", or a substring of the error
	isErr error  // the sentinel the error must wrap, nil for success
}

func TestSequences(t *testing.T) {
	v4small := []netip.Prefix{mp("10.0.0.0/29")}
	tests := []struct {
		name     string
		ranges   []netip.Prefix
		reserved []netip.Addr
		steps    []step
	}{
		{
			name: "exhaustion of a /29 and reuse", ranges: v4small, reserved: []netip.Addr{ma("10.0.0.1")},
			steps: []step{
				{op: "usage", want: "10.0.0.0/29 0/5"},
				{op: "alloc", id: "a", want: "10.0.0.2"},
				{op: "alloc", id: "b", want: "10.0.0.3"},
				{op: "alloc", id: "c", want: "10.0.0.4"},
				{op: "alloc", id: "d", want: "10.0.0.5"},
				{op: "alloc", id: "e", want: "10.0.0.6"},
				{op: "usage", want: "10.0.0.0/29 5/5"},
				{op: "alloc", id: "f", want: "allocate f/eth0: no free address in 10.0.0.0/29 (5 usable)", isErr: ErrExhausted},
				{op: "lookup", id: "f", isErr: ErrNotFound, want: "lookup f/eth0: no reservation"},
				{op: "release", id: "c"},
				{op: "alloc", id: "f", want: "10.0.0.4"},
				{op: "lookup", id: "c", isErr: ErrNotFound},
				{op: "lookup", id: "f", want: "10.0.0.4"},
			},
		},
		{
			name: "cursor passes released addresses, then wraps", ranges: v4small, reserved: []netip.Addr{ma("10.0.0.1")},
			steps: []step{
				{op: "alloc", id: "a", want: "10.0.0.2"},
				{op: "alloc", id: "b", want: "10.0.0.3"},
				{op: "release", id: "a"},
				{op: "alloc", id: "c", want: "10.0.0.4"},
				{op: "release", id: "b"},
				{op: "alloc", id: "d", want: "10.0.0.5"},
				{op: "alloc", id: "e", want: "10.0.0.6"},
				{op: "alloc", id: "f", want: "10.0.0.2"}, // wrapped, skipping network and gateway
				{op: "alloc", id: "g", want: "10.0.0.3"},
				{op: "alloc", id: "h", isErr: ErrExhausted},
			},
		},
		{
			name: "reserved addresses are skipped", ranges: v4small, reserved: []netip.Addr{ma("10.0.0.1"), ma("10.0.0.3"), ma("10.0.0.4"), ma("10.0.0.0")},
			steps: []step{
				{op: "usage", want: "10.0.0.0/29 0/3"},
				{op: "alloc", id: "a", want: "10.0.0.2"},
				{op: "alloc", id: "b", want: "10.0.0.5"},
				{op: "alloc", id: "c", want: "10.0.0.6"},
				{op: "alloc", id: "d", want: "no free address in 10.0.0.0/29 (3 usable)", isErr: ErrExhausted},
			},
		},
		{
			name: "second allocate is ErrExists, release is idempotent", ranges: v4small, reserved: []netip.Addr{ma("10.0.0.1")},
			steps: []step{
				{op: "release", id: "a"},
				{op: "alloc", id: "a", want: "10.0.0.2"},
				{op: "alloc", id: "a", want: "allocate a/eth0: already holds 10.0.0.2: reservation exists", isErr: ErrExists},
				{op: "lookup", id: "a", want: "10.0.0.2"},
				{op: "release", id: "a"},
				{op: "release", id: "a"},
				{op: "lookup", id: "a", isErr: ErrNotFound},
				{op: "usage", want: "10.0.0.0/29 0/5"},
			},
		},
		{
			name:     "dual-stack, one address per family in Ranges order",
			ranges:   []netip.Prefix{mp("fd00::/125"), mp("10.0.0.0/29")},
			reserved: []netip.Addr{ma("10.0.0.1"), ma("fd00::1")},
			steps: []step{
				{op: "alloc", id: "a", want: "fd00::2 10.0.0.2"},
				{op: "alloc", id: "b", want: "fd00::3 10.0.0.3"},
				{op: "lookup", id: "b", want: "fd00::3 10.0.0.3"},
				{op: "usage", want: "fd00::/125 2/6 10.0.0.0/29 2/5"},
				{op: "release", id: "a"},
				{op: "usage", want: "fd00::/125 1/6 10.0.0.0/29 1/5"},
			},
		},
		{
			name:     "dual-stack all or nothing: IPv6 exhausted, IPv4 not taken",
			ranges:   []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/126")},
			reserved: []netip.Addr{ma("10.0.0.1"), ma("fd00::1")},
			steps: []step{
				{op: "alloc", id: "a", want: "10.0.0.2 fd00::2"},
				{op: "alloc", id: "b", want: "10.0.0.3 fd00::3"},
				{op: "alloc", id: "c", want: "allocate c/eth0: no free address in fd00::/126 (2 usable)", isErr: ErrExhausted},
				{op: "lookup", id: "c", isErr: ErrNotFound},
				{op: "usage", want: "10.0.0.0/24 2/253 fd00::/126 2/2"},
				{op: "release", id: "a"},
				{op: "alloc", id: "c", want: "10.0.0.4 fd00::2"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, Options{Ranges: tt.ranges, Reserved: tt.reserved})
			for i, st := range tt.steps {
				got, err := runStep(t.Context(), s, st)
				if st.isErr != nil {
					if !errors.Is(err, st.isErr) || !strings.Contains(fmt.Sprint(err), st.want) {
						t.Fatalf("step %d %s %s: error %v, want %v containing %q", i, st.op, st.id, err, st.isErr, st.want)
					}
				} else if err != nil {
					t.Fatalf("step %d %s %s: %v", i, st.op, st.id, err)
				} else if got != st.want {
					t.Fatalf("step %d %s %s = %q, want %q", i, st.op, st.id, got, st.want)
				}
				mustFsck(t, s)
			}
		})
	}
}

func runStep(ctx context.Context, s *Store, st step) (string, error) {
	switch st.op {
	case "alloc":
		as, err := s.Allocate(ctx, eth0(st.id))
		return strings.ReplaceAll(addrList(as), ",", ""), err
	case "lookup":
		as, err := s.Lookup(ctx, eth0(st.id))
		return strings.ReplaceAll(addrList(as), ",", ""), err
	case "release":
		return "", s.Release(ctx, eth0(st.id))
	case "usage":
		us, err := s.Usage(ctx)
		var parts []string
		for _, u := range us {
			parts = append(parts, fmt.Sprintf("%s %d/%d", u.Prefix, u.Used, u.Total))
		}
		return strings.Join(parts, " "), err
	}
	return "", fmt.Errorf("unknown op %q", st.op)
}

func TestUsageTotals(t *testing.T) {
	tests := []struct {
		name     string
		prefix   string
		reserved []string
		want     uint64
	}{
		{"ipv4 /24 with gateway", "10.244.1.0/24", []string{"10.244.1.1"}, 253},
		{"ipv4 /24 gateway listed twice", "10.244.1.0/24", []string{"10.244.1.1", "10.244.1.1"}, 253},
		{"ipv4 network and broadcast reserved too", "10.244.1.0/24", []string{"10.244.1.0", "10.244.1.255"}, 254},
		{"ipv4 /30", "10.0.0.0/30", nil, 2},
		{"ipv4 /16", "10.1.0.0/16", []string{"10.1.0.1"}, 65533},
		{"ipv4 /0", "0.0.0.0/0", nil, 1<<32 - 2},
		{"ipv6 /127", "fd00::/127", nil, 1},
		{"ipv6 /120 with gateway", "fd00::/120", []string{"fd00::1"}, 254},
		{"ipv6 /96", "fd00::/96", nil, 1<<32 - 1},
		{"ipv6 /65", "fd00::/65", nil, 1<<63 - 1},
		{"ipv6 /64 is 2^64-1 less reserved", "fd00::/64", []string{"fd00::1"}, math.MaxUint64 - 1},
		{"ipv6 /48 saturates", "fd00::/48", []string{"fd00::1"}, math.MaxUint64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var res []netip.Addr
			for _, r := range tt.reserved {
				res = append(res, ma(r))
			}
			s := newStore(t, Options{Ranges: []netip.Prefix{mp(tt.prefix)}, Reserved: res})
			us, err := s.Usage(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			want := []Usage{{Prefix: mp(tt.prefix), Total: tt.want}}
			if diff := cmp.Diff(want, us, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("Usage (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExhaustionMessageForHugeRange(t *testing.T) {
	sp := newSpan(mp("fd00::/48"), nil)
	_, err := sp.probe(t.Context(), netip.Addr{}, func(netip.Addr) (bool, error) { return false, nil })
	if err != nil {
		t.Fatalf("probe on a free range: %v", err)
	}
	tiny := newSpan(mp("10.0.0.0/30"), nil)
	_, err = tiny.probe(t.Context(), netip.Addr{}, func(netip.Addr) (bool, error) { return true, nil })
	if want := "no free address in 10.0.0.0/30 (2 usable): address range exhausted"; err == nil || err.Error() != want {
		t.Errorf("probe on a full range: %v, want %q", err, want)
	}
	if got := countString(sp.usable); got != "2^64 or more" {
		t.Errorf("countString(/48) = %q", got)
	}
}

func TestGC(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}})
	ctx := t.Context()
	for _, id := range []string{"a", "b", "c", "d"} {
		if _, err := s.Allocate(ctx, eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Allocate(ctx, Owner{"b", "net1"}); err != nil {
		t.Fatal(err)
	}
	released, err := s.GC(ctx, []Owner{eth0("b"), eth0("d"), eth0("never-held")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Owner{eth0("a"), {"b", "net1"}, eth0("c")}, released); diff != "" {
		t.Errorf("GC released (-want +got):\n%s", diff)
	}
	want := "b/eth0 10.0.0.2, fd00::2\nd/eth0 10.0.0.4, fd00::4"
	if got := mustFsck(t, s); got != want {
		t.Errorf("after GC:\n%s\nwant:\n%s", got, want)
	}
	released, err = s.GC(ctx, []Owner{eth0("b"), eth0("d")})
	if err != nil || len(released) != 0 {
		t.Errorf("second GC = %v, %v; want nothing released", released, err)
	}
}

// TestLostOwnerRecord removes owner records by hand (no crash does that)
// and checks that Release and GC still find the addresses.
func TestLostOwnerRecord(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}})
	ctx := t.Context()
	for _, id := range []string{"rel", "gone", "kept", "kept-damaged"} {
		if _, err := s.Allocate(ctx, eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"rel", "gone", "kept", "kept-damaged"} {
		if err := os.Remove(s.ownerPath(eth0(id))); err != nil {
			t.Fatal(err)
		}
	}
	// kept-damaged also lost one of its two address links.
	if err := os.Remove(s.addrPath(ma("fd00::4"))); err != nil {
		t.Fatal(err)
	}
	// Release trusts the owner record (no crash loses one): it finds
	// nothing to free and leaves the repair to GC.
	if err := s.Release(ctx, eth0("rel")); err != nil {
		t.Fatal(err)
	}
	if !fileExists(s.addrPath(ma("10.0.0.1"))) {
		t.Errorf("Release of an owner without record scanned and freed its addresses")
	}
	released, err := s.GC(ctx, []Owner{eth0("kept"), eth0("kept-damaged")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Owner{eth0("gone"), eth0("kept-damaged"), eth0("rel")}, released); diff != "" {
		t.Errorf("GC released (-want +got):\n%s", diff)
	}
	if got, want := mustFsck(t, s), "kept/eth0 10.0.0.3, fd00::3"; got != want {
		t.Errorf("after GC: %q, want %q (kept owner's record restored)", got, want)
	}
}

func TestRebootReclaim(t *testing.T) {
	dir := t.TempDir()
	ranges := []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}
	before := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-a"})
	ctx := t.Context()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := before.Allocate(ctx, eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
	after := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-b"})
	if _, err := after.Lookup(ctx, eth0("a")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after reboot: %v, want ErrNotFound", err)
	}
	if _, err := after.Allocate(ctx, eth0("a")); err != nil {
		t.Errorf("Allocate after reboot: %v", err)
	}
	us, err := after.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if u.Used != 1 {
			t.Errorf("after reboot and one allocation, %s used %d, want 1", u.Prefix, u.Used)
		}
	}
	if got := mustFsck(t, after); !strings.HasPrefix(got, "a/eth0 ") || strings.Contains(got, "\n") {
		t.Errorf("after reboot: %q, want only a/eth0", got)
	}
	rec, err := after.readRecord(after.ownerPath(eth0("a")))
	if err != nil || rec.boot != "boot-b" {
		t.Errorf("record after reboot: %+v, %v; want boot-b", rec, err)
	}
}

// TestUsageNeverReclaims: a reader with another boot ID (the agent in a
// container that sees another boot_id than the plugin) counts the
// reservations and releases none of them; the plugin's next operation in
// the new boot does.
func TestUsageNeverReclaims(t *testing.T) {
	dir := t.TempDir()
	ranges := []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}
	plugin := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-a"})
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if _, err := plugin.Allocate(ctx, eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
	reader := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-b"})
	for range 2 {
		us, err := reader.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			if u.Used != 2 {
				t.Errorf("Usage in another boot: %s used %d, want 2 (nothing reclaimed)", u.Prefix, u.Used)
			}
		}
	}
	for _, id := range []string{"a", "b"} {
		if _, err := plugin.Lookup(ctx, eth0(id)); err != nil {
			t.Errorf("Lookup %s after another boot's Usage: %v, want its reservation", id, err)
		}
	}
	// The plugin's first operation after a reboot still reclaims.
	rebooted := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-b"})
	if _, err := rebooted.Lookup(ctx, eth0("a")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup after reboot: %v, want ErrNotFound", err)
	}
}

func TestRangeChange(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	old := newStore(t, Options{Dir: dir, Ranges: []netip.Prefix{mp("10.1.0.0/24")}})
	for _, id := range []string{"a", "b"} {
		if _, err := old.Allocate(ctx, eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
	s := newStore(t, Options{Dir: dir, Ranges: []netip.Prefix{mp("10.2.0.0/24"), mp("fd00::/120")}})
	got, err := s.Lookup(ctx, eth0("a"))
	if err != nil || addrList(got) != "10.1.0.1" {
		t.Errorf("Lookup of an old-range reservation = %v, %v; want 10.1.0.1", got, err)
	}
	if got, err := s.Allocate(ctx, eth0("c")); err != nil || addrList(got) != "10.2.0.1, fd00::1" {
		t.Errorf("Allocate in new ranges = %v, %v", got, err)
	}
	if st, _ := runStep(ctx, s, step{op: "usage"}); st != "10.2.0.0/24 1/254 fd00::/120 1/255" {
		t.Errorf("Usage = %q: old-range addresses must not count", st)
	}
	if err := s.Release(ctx, eth0("a")); err != nil {
		t.Fatal(err)
	}
	if fileExists(s.addrPath(ma("10.1.0.1"))) {
		t.Error("Release left the old-range address")
	}
	if released, err := s.GC(ctx, []Owner{eth0("c")}); err != nil || len(released) != 1 || released[0] != eth0("b") {
		t.Errorf("GC = %v, %v; want [b/eth0]", released, err)
	}
	mustDrain(t, s)
}

// TestFailureRollsBack makes each step before the commit point fail and
// checks that nothing is left held.
func TestFailureRollsBack(t *testing.T) {
	for _, point := range []string{"alloc/txn-partial", "alloc/txn-written", "alloc/addr-linked-0", "alloc/addr-linked-1"} {
		t.Run(point, func(t *testing.T) {
			s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}})
			ctx := t.Context()
			if _, err := s.Allocate(ctx, eth0("before")); err != nil {
				t.Fatal(err)
			}
			failure := errors.New("injected failure")
			s.hook = func(p string) error {
				if p == point {
					return failure
				}
				return nil
			}
			if _, err := s.Allocate(ctx, eth0("victim")); !errors.Is(err, failure) {
				t.Fatalf("Allocate = %v, want the injected failure", err)
			}
			s.hook = nil
			if got, want := mustFsck(t, s), "before/eth0 10.0.0.1, fd00::1"; got != want {
				t.Errorf("after failed allocation: %q, want %q", got, want)
			}
			if got, err := s.Allocate(ctx, eth0("victim")); err != nil || addrList(got) != "10.0.0.2, fd00::2" {
				t.Errorf("retry = %v, %v; want the rolled-back addresses 10.0.0.2, fd00::2", got, err)
			}
		})
	}
}

// TestAllocateRefusesTakenAddress: if an address appears between probe and
// link (a writer ignoring the lock), link(2) fails and nothing is shared.
func TestAllocateRefusesTakenAddress(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}})
	intruder := record{owner: eth0("intruder"), boot: "boot-a", addrs: []netip.Addr{ma("fd00::1")}}
	s.hook = func(p string) error {
		if p == "alloc/txn-written" {
			return os.WriteFile(s.addrPath(ma("fd00::1")), intruder.marshal(), 0o644)
		}
		return nil
	}
	_, err := s.Allocate(t.Context(), eth0("victim"))
	if !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), "claim fd00::1") {
		t.Fatalf("Allocate = %v, want a failed claim of fd00::1", err)
	}
	if fileExists(s.addrPath(ma("10.0.0.1"))) || fileExists(s.ownerPath(eth0("victim"))) {
		t.Error("failed allocation left 10.0.0.1 or its owner record")
	}
	if rec, err := s.readRecord(s.addrPath(ma("fd00::1"))); err != nil || rec.owner != intruder.owner {
		t.Errorf("the intruder's address was touched: %+v, %v", rec, err)
	}
}

func TestLockTimeout(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24")}, LockTimeout: 50 * time.Millisecond})
	f, err := os.OpenFile(s.path(lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = s.Allocate(t.Context(), eth0("a"))
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "held by another process for more than 50ms") {
		t.Errorf("Allocate under a held lock = %v, want ErrLocked after 50ms", err)
	}
	if err := s.Check(t.Context()); !errors.Is(err, ErrLocked) {
		t.Errorf("Check under a held lock = %v, want ErrLocked", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(10*time.Millisecond, cancel)
	long := newStore(t, Options{Dir: s.dir, Ranges: []netip.Prefix{mp("10.0.0.0/24")}})
	if err := long.Release(ctx, eth0("a")); !errors.Is(err, ErrLocked) || !errors.Is(err, context.Canceled) {
		t.Errorf("Release with a cancelled context = %v, want ErrLocked and context.Canceled", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Allocate(t.Context(), eth0("a")); err != nil {
		t.Errorf("Allocate after unlock: %v", err)
	}
}

func TestCheck(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24")}})
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check on a fresh store: %v", err)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.dir, nil, 0o644); err != nil { // a file where the directory was
		t.Fatal(err)
	}
	if err := s.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Check with the store directory replaced by a file = %v, want an error", err)
	}
}
