package ipam

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// makeEntry puts a file of the given kind at path: a directory (with a file
// in it, so rmdir fails), a FIFO (no writer: a blocking open never
// returns), or a symbolic link to a well-formed record outside the store.
func makeEntry(t *testing.T, path, kind string) {
	t.Helper()
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var err error
	switch kind {
	case "dir":
		if err = os.Mkdir(path, 0o755); err == nil {
			err = os.WriteFile(filepath.Join(path, "x"), []byte("x\n"), 0o644)
		}
	case "fifo":
		err = unix.Mkfifo(path, 0o644)
	case "symlink":
		target := filepath.Join(t.TempDir(), "record")
		rec := record{owner: eth0("elsewhere"), boot: "boot-a", addrs: []netip.Addr{ma("10.0.0.6")}}
		if err = os.WriteFile(target, rec.marshal(), 0o644); err == nil {
			err = os.Symlink(target, path)
		}
	default:
		t.Fatalf("unknown kind %q", kind)
	}
	if err != nil {
		t.Fatalf("make %s %s: %v", kind, path, err)
	}
}

// within fails t if fn does not return within d (a blocking open of a FIFO
// never returns; the goroutine is then left behind, the test failed).
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still running after %s (hangs on a non-regular store entry)", what, d)
	}
}

// TestNonRegularEntries: a directory, a FIFO or a symbolic link in place of
// any file of the store costs only that entry. Every operation still works,
// without hanging; the entry is set aside under damaged/ with a log line;
// no reservation is lost or shared.
func TestNonRegularEntries(t *testing.T) {
	entries := []struct {
		name string
		path string // relative to the store
	}{
		{"owner record of the next allocation", "owner/c=eth0"},
		{"owner record GC releases", "owner/zz=eth0"},
		{"address the next allocation probes", "addr/10.0.0.4"},
		{"txn", txnName},
		{"tmp", tmpName},
		{"boot", bootName},
		{"cursor", "cursor/10.0.0.0_29"},
	}
	for _, e := range entries {
		for _, kind := range []string{"dir", "fifo", "symlink"} {
			t.Run(e.name+"/"+kind, func(t *testing.T) {
				var log bytes.Buffer
				s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/29")}, Reserved: []netip.Addr{ma("10.0.0.1")},
					Log: slog.New(slog.NewTextHandler(&log, nil))})
				ctx := t.Context()
				for _, id := range []string{"a", "b"} { // 10.0.0.2, 10.0.0.3
					if _, err := s.Allocate(ctx, eth0(id)); err != nil {
						t.Fatal(err)
					}
				}
				path := s.path(e.path)
				makeEntry(t, path, kind)

				var got []netip.Addr
				within(t, 10*time.Second, "operations", func() {
					var err error
					if got, err = s.Allocate(ctx, eth0("c")); err != nil {
						t.Errorf("Allocate c: %v", err)
					}
					if as, err := s.Lookup(ctx, eth0("a")); err != nil || !slices.Equal(as, []netip.Addr{ma("10.0.0.2")}) {
						t.Errorf("Lookup a = %v, %v; want 10.0.0.2", as, err)
					}
					if err := s.Release(ctx, eth0("b")); err != nil {
						t.Errorf("Release b: %v", err)
					}
					if _, err := s.GC(ctx, []Owner{eth0("a"), eth0("c")}); err != nil {
						t.Errorf("GC: %v", err)
					}
					if _, err := s.Usage(ctx); err != nil {
						t.Errorf("Usage: %v", err)
					}
					if err := s.Check(ctx); err != nil {
						t.Errorf("Check: %v", err)
					}
				})
				if t.Failed() {
					return
				}
				if len(got) != 1 || got[0] == ma("10.0.0.2") {
					t.Errorf("Allocate c = %v, want one address other than a's 10.0.0.2", got)
				}
				if want, have := "a/eth0 10.0.0.2\nc/eth0 "+addrList(got), mustFsck(t, s); have != want {
					t.Errorf("reservations:\n%s\nwant:\n%s", have, want)
				}
				if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
					t.Errorf("%s is still a %s", e.path, fi.Mode().Type())
				}
				aside, _ := readNames(s.path(asideDir))
				// tmp is removed, not set aside, when rmdir or unlink can.
				wantAside := e.path != tmpName || kind == "dir"
				if wantAside != (len(aside) == 1) || len(aside) > 1 {
					t.Errorf("damaged/ = %v, want the entry there: %v", aside, wantAside)
				}
				if wantAside && !strings.Contains(log.String(), "damaged store entry set aside") {
					t.Errorf("no log line for the entry set aside; log:\n%s", log.String())
				}
			})
		}
	}
}

// TestNonRegularEntriesAfterReboot: the reclaim after a reboot scans owner/
// and addr/; a bad entry there costs only itself.
func TestNonRegularEntriesAfterReboot(t *testing.T) {
	for _, kind := range []string{"dir", "fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			ranges := []netip.Prefix{mp("10.0.0.0/29")}
			before := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-a"})
			if _, err := before.Allocate(t.Context(), eth0("a")); err != nil {
				t.Fatal(err)
			}
			makeEntry(t, before.path("owner/zz=eth0"), kind)
			makeEntry(t, before.path("addr/10.0.0.5"), kind)
			after := newStore(t, Options{Dir: dir, Ranges: ranges, BootID: "boot-b"})
			within(t, 10*time.Second, "allocate after reboot", func() {
				if _, err := after.Allocate(t.Context(), eth0("b")); err != nil {
					t.Errorf("Allocate after reboot: %v", err)
				}
			})
			if t.Failed() {
				return
			}
			if got := mustFsck(t, after); !strings.HasPrefix(got, "b/eth0 ") || strings.Contains(got, "\n") {
				t.Errorf("after reboot: %q, want only b/eth0", got)
			}
		})
	}
}

// TestNonRegularLock: the lock file is the one entry the store cannot set
// aside (that needs the lock): a clear error, never a hang.
func TestNonRegularLock(t *testing.T) {
	for _, kind := range []string{"dir", "fifo", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/29")}})
			makeEntry(t, s.path(lockName), kind)
			within(t, 10*time.Second, "allocate", func() {
				_, err := s.Allocate(t.Context(), eth0("a"))
				if err == nil || !strings.Contains(err.Error(), "must be a regular file") || !strings.Contains(err.Error(), "remove it by hand") {
					t.Errorf("Allocate with a %s as lock: %v, want an error saying so", kind, err)
				}
			})
		})
	}
}

// TestSubdirectoryTaken: a FIFO or a file where a subdirectory of the
// store belongs is set aside (with a log line) and the directory made
// again, at Open or at Check; an operation never blocks on it.
func TestSubdirectoryTaken(t *testing.T) {
	for _, dir := range storeDirs {
		for _, kind := range []string{"fifo", "file"} {
			t.Run(dir+"/"+kind, func(t *testing.T) {
				var log bytes.Buffer
				opts := Options{Dir: t.TempDir(), Ranges: []netip.Prefix{mp("10.0.0.0/29")}, Log: slog.New(slog.NewTextHandler(&log, nil))}
				s := newStore(t, opts)
				if _, err := s.Allocate(t.Context(), eth0("a")); err != nil {
					t.Fatal(err)
				}
				take := func() {
					t.Helper()
					if err := os.RemoveAll(s.path(dir)); err != nil {
						t.Fatal(err)
					}
					if kind == "fifo" {
						if err := unix.Mkfifo(s.path(dir), 0o644); err != nil {
							t.Fatal(err)
						}
					} else if err := os.WriteFile(s.path(dir), []byte("x\n"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				// Taken while a Store is open: operations fail (those
				// that touch it) without blocking; Check repairs.
				take()
				within(t, 10*time.Second, "operations", func() {
					_, _ = s.GC(t.Context(), nil)
					_, _ = s.Usage(t.Context())
					if err := s.Check(t.Context()); err != nil {
						t.Errorf("Check: %v", err)
					}
				})
				if fi, err := os.Lstat(s.path(dir)); err != nil || !fi.IsDir() {
					t.Fatalf("after Check, %s is %v (%v), want a directory", dir, fi, err)
				}
				// Taken before Open: Open repairs.
				take()
				s2, err := Open(opts)
				if err != nil {
					t.Fatalf("Open with %s a %s: %v", dir, kind, err)
				}
				within(t, 10*time.Second, "allocate", func() {
					if _, err := s2.Allocate(t.Context(), eth0("b")); err != nil {
						t.Errorf("Allocate: %v", err)
					}
				})
				if !strings.Contains(log.String(), "entry="+dir) {
					t.Errorf("no log line naming %s:\n%s", dir, log.String())
				}
			})
		}
	}
}
