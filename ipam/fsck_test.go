package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// fsck checks the store invariants of the package comment on s's directory
// (call it after an operation has recovered the store, with no operation
// running) and returns every reservation.
func fsck(s *Store) (map[Owner][]netip.Addr, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	top, err := readNames(s.dir)
	if err != nil {
		return nil, err
	}
	for _, name := range top {
		switch name {
		case lockName, bootName, addrDir, ownerDir, cursorDir, asideDir, holdDir:
		default:
			bad("unexpected file %s in store (transient files must be gone)", name)
		}
	}
	if b, err := os.ReadFile(s.path(bootName)); err != nil || string(b) != s.boot+"\n" {
		bad("boot file %q (%v), want %q", b, err, s.boot)
	}

	held := map[Owner][]netip.Addr{}
	holder := map[netip.Addr]Owner{}
	owners, err := readNames(s.path(ownerDir))
	if err != nil {
		return nil, err
	}
	for _, name := range owners {
		p := s.path(ownerDir, name)
		o, err := parseKey(name)
		if err != nil {
			bad("owner file %s: %v", name, err)
			continue
		}
		rec, err := s.readRecord(p)
		if err != nil {
			bad("owner %s: %v", o, err)
			continue
		}
		fi, _ := os.Lstat(p)
		switch {
		case rec.owner != o:
			bad("owner file %s holds a record of %s", name, rec.owner)
		case rec.boot != s.boot:
			bad("owner %s: boot %q, store boot %q", o, rec.boot, s.boot)
		case nlink(fi) != uint64(1+len(rec.addrs)):
			bad("owner %s: %d links, want %d", o, nlink(fi), 1+len(rec.addrs))
		}
		for _, a := range rec.addrs {
			if !sameFile(s.addrPath(a), fi) {
				bad("owner %s: addr/%s is not its record", o, a)
			}
			if prev, ok := holder[a]; ok {
				bad("address %s held by %s and %s", a, prev, o)
			}
			holder[a] = o
			for i := range s.spans {
				if s.spans[i].prefix.Contains(a) && !s.spans[i].allocatable(a) {
					bad("owner %s holds %s, not allocatable in %s", o, a, s.spans[i].prefix)
				}
			}
		}
		held[o] = rec.addrs
	}
	addrs, err := readNames(s.path(addrDir))
	if err != nil {
		return nil, err
	}
	for _, name := range addrs {
		a, err := netip.ParseAddr(name)
		if err != nil || a.String() != name {
			bad("addr file %q: not a canonical address", name)
			continue
		}
		o, ok := holder[a]
		if !ok {
			bad("addr/%s: orphan (no owner record lists it)", a)
			continue
		}
		if !slices.Contains(held[o], a) {
			bad("addr/%s: owner %s does not list it", a, o)
		}
	}
	return held, errors.Join(errs...)
}

// mustFsck fails t unless the store is consistent, and returns its
// reservations as text, one "cid/if addr..." line each, sorted.
func mustFsck(t testing.TB, s *Store) string {
	t.Helper()
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	held, err := fsck(s)
	if err != nil {
		t.Fatalf("store %s inconsistent:\n%v", s.dir, err)
	}
	return dumpHeld(held)
}

func dumpHeld(held map[Owner][]netip.Addr) string {
	var lines []string
	for o, as := range held {
		lines = append(lines, o.String()+" "+addrList(as))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// mustDrain releases every reservation through GC and checks that nothing
// is left: no reservation, no address, Usage zero.
func mustDrain(t testing.TB, s *Store) {
	t.Helper()
	ctx := t.Context()
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := mustFsck(t, s); got != "" {
		t.Fatalf("after GC of everything, still held:\n%s", got)
	}
	us, err := s.Usage(ctx)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	for _, u := range us {
		if u.Used != 0 {
			t.Errorf("after GC of everything, %s Used = %d, want 0", u.Prefix, u.Used)
		}
	}
	if names, err := readNames(s.path(addrDir)); err != nil || len(names) != 0 {
		t.Errorf("after GC of everything, addr/ = %v (%v), want empty", names, err)
	}
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
