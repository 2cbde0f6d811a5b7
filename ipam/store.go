package ipam

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors returned by Store, wrapped with context; test them with errors.Is.
var (
	ErrExists    = errors.New("reservation exists")
	ErrNotFound  = errors.New("no reservation")
	ErrExhausted = errors.New("address range exhausted")
	ErrLocked    = errors.New("store locked")
	ErrInvalid   = errors.New("invalid argument")
)

// DefaultLockTimeout is how long an operation waits for the store lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = 10 * time.Second

// Options configure a Store.
type Options struct {
	Dir         string         // store directory, e.g. /var/lib/weft/ipam (created if missing)
	Ranges      []netip.Prefix // at most one per family; allocation returns one address per range, in this order
	Reserved    []netip.Addr   // never handed out (the gateways)
	LockTimeout time.Duration  // default 10s; waiting longer returns an error wrapping ErrLocked
	BootID      string         // default: contents of /proc/sys/kernel/random/boot_id
	Log         *slog.Logger   // entries set aside (see Store.setAside); nil: no log
}

// Usage is how much of one range is handed out.
type Usage struct {
	Prefix netip.Prefix
	Used   uint64 // reserved addresses in the range (excluding Options.Reserved)
	Total  uint64 // usable addresses, saturating at math.MaxUint64 (see usableCount)
}

// Store is an IP address store in a directory shared by processes. Its
// methods are safe for concurrent use, also by many Stores and processes
// on one directory.
type Store struct {
	dir     string
	spans   []span
	timeout time.Duration
	boot    string
	log     *slog.Logger

	// hook, when set (by tests), runs at each named step of an operation;
	// an error makes the operation stop there as a failure would.
	hook func(point string) error
}

// Names in the store directory; see the package comment.
const (
	lockName   = "lock"
	bootName   = "boot"
	txnName    = "txn"
	tmpName    = "tmp"
	addrDir    = "addr"
	ownerDir   = "owner"
	cursorDir  = "cursor"
	asideDir   = "damaged"
	bootIDFile = "/proc/sys/kernel/random/boot_id"
)

// Open checks opts and creates the store directory. It takes no lock and
// reads no reservation.
func Open(opts Options) (*Store, error) {
	s := &Store{dir: opts.Dir, timeout: opts.LockTimeout, boot: opts.BootID, log: opts.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Dir == "" {
		return nil, fmt.Errorf("ipam: Options.Dir: empty: %w", ErrInvalid)
	}
	if !filepath.IsAbs(opts.Dir) {
		return nil, fmt.Errorf("ipam: Options.Dir %q: not an absolute path: %w", opts.Dir, ErrInvalid)
	}
	if err := s.setRanges(opts.Ranges, opts.Reserved); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	switch {
	case s.timeout < 0:
		return nil, fmt.Errorf("ipam: Options.LockTimeout %s: negative: %w", s.timeout, ErrInvalid)
	case s.timeout == 0:
		s.timeout = DefaultLockTimeout
	}
	if s.boot == "" {
		b, err := os.ReadFile(bootIDFile)
		if err != nil {
			return nil, fmt.Errorf("ipam: Options.BootID empty and kernel boot ID unreadable: %w", err)
		}
		s.boot = strings.TrimSpace(string(b))
	}
	if err := validBootID(s.boot); err != nil {
		return nil, fmt.Errorf("ipam: Options.BootID: %w", err)
	}
	if err := s.mkdirs(); err != nil {
		// A subdirectory's name may be taken by something else (a FIFO,
		// a file): set it aside under the lock and try again.
		if rerr := s.repairDirs(); rerr != nil {
			return nil, fmt.Errorf("ipam: %w", errors.Join(err, rerr))
		}
	}
	return s, nil
}

func (s *Store) setRanges(ranges []netip.Prefix, reserved []netip.Addr) error {
	if len(ranges) == 0 {
		return fmt.Errorf("Options.Ranges: empty, want one prefix per family: %w", ErrInvalid)
	}
	for i, p := range ranges {
		switch {
		case !p.IsValid():
			return fmt.Errorf("Options.Ranges[%d] %s: not a valid prefix: %w", i, p, ErrInvalid)
		case p.Addr().Is4In6():
			return fmt.Errorf("Options.Ranges[%d] %s: IPv4-mapped IPv6 prefix, write the IPv4 prefix: %w", i, p, ErrInvalid)
		case p != p.Masked():
			return fmt.Errorf("Options.Ranges[%d] %s: host bits set, want %s: %w", i, p, p.Masked(), ErrInvalid)
		}
		for j, q := range ranges[:i] {
			if p.Addr().Is4() == q.Addr().Is4() {
				return fmt.Errorf("Options.Ranges[%d] %s: second %s range (Ranges[%d] is %s), at most one per family: %w",
					i, p, family(p.Addr()), j, q, ErrInvalid)
			}
		}
	}
	for i, a := range reserved {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			return fmt.Errorf("Options.Reserved[%d] %q: not a plain IPv4 or IPv6 address: %w", i, a, ErrInvalid)
		}
		if !slices.ContainsFunc(ranges, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return fmt.Errorf("Options.Reserved[%d] %s: outside every range %v: %w", i, a, ranges, ErrInvalid)
		}
	}
	for i, p := range ranges {
		sp := newSpan(p, reserved)
		if sp.usable == 0 {
			return fmt.Errorf("Options.Ranges[%d] %s: no usable address (network, broadcast and %d reserved excluded): %w",
				i, p, len(sp.reserved), ErrInvalid)
		}
		s.spans = append(s.spans, sp)
	}
	return nil
}

// storeDirs are the store's subdirectories.
var storeDirs = []string{addrDir, ownerDir, cursorDir, holdDir}

func (s *Store) mkdirs() error {
	for _, d := range storeDirs {
		if err := os.MkdirAll(s.path(d), 0o755); err != nil {
			return fmt.Errorf("create store: %w", err)
		}
	}
	return nil
}

// repairDirs takes the lock and runs repairDirsLocked.
func (s *Store) repairDirs() error {
	unlock, err := lockFile(context.Background(), s.path(lockName), s.timeout)
	if err != nil {
		return err
	}
	defer unlock()
	return s.repairDirsLocked()
}

// repairDirsLocked sets aside whatever takes a subdirectory's name and is
// neither a directory nor a symbolic link (which may lead to one: a FIFO or
// a file holds no reservation, so setting it aside loses none), then makes
// the subdirectories.
func (s *Store) repairDirsLocked() error {
	for _, d := range storeDirs {
		p := s.path(d)
		fi, err := os.Lstat(p)
		if err != nil || fi.IsDir() || fi.Mode()&fs.ModeSymlink != 0 {
			continue
		}
		if err := s.setAside(p, fmt.Errorf("not a directory (%s)", fileKind(fi))); err != nil {
			return err
		}
	}
	return s.mkdirs()
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}
func (s *Store) addrPath(a netip.Addr) string { return s.path(addrDir, a.String()) }
func (s *Store) ownerPath(o Owner) string     { return s.path(ownerDir, o.key()) }

// at runs the test hook at a named step.
func (s *Store) at(format string, args ...any) error {
	if s.hook == nil {
		return nil
	}
	return s.hook(fmt.Sprintf(format, args...))
}

// do runs fn holding the store lock, after finishing whatever a previous
// holder left undone.
func (s *Store) do(ctx context.Context, fn func() error) error {
	return s.locked(ctx, true, fn)
}

// locked runs fn holding the lock, after recover; a reader (reclaim false)
// completes or rolls back an interrupted operation but releases nothing of
// an earlier boot: see Usage.
func (s *Store) locked(ctx context.Context, reclaim bool, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	unlock, err := lockFile(ctx, s.path(lockName), s.timeout)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.recover(ctx, reclaim); err != nil {
		return fmt.Errorf("recover store %s: %w", s.dir, err)
	}
	return fn()
}

// Allocate reserves one address in each range for o and returns them in
// the order of Options.Ranges: all of them or none.
func (s *Store) Allocate(ctx context.Context, o Owner) ([]netip.Addr, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("allocate: %w", err)
	}
	var addrs []netip.Addr
	err := s.do(ctx, func() error {
		switch rec, err := s.readRecord(s.ownerPath(o)); {
		case err == nil:
			return fmt.Errorf("already holds %s: %w", addrList(rec.addrs), ErrExists)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		rec := record{owner: o, boot: s.boot}
		for i := range s.spans {
			a, err := s.spans[i].probe(ctx, s.cursor(i), s.taken)
			if err != nil {
				return err
			}
			rec.addrs = append(rec.addrs, a)
		}
		if err := s.commit(rec); err != nil {
			return err
		}
		addrs = rec.addrs
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("allocate %s: %w", o, err)
	}
	return addrs, nil
}

// Release frees o's addresses. It returns nil when o holds none.
func (s *Store) Release(ctx context.Context, o Owner) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	err := s.do(ctx, func() error {
		// No owner record means nothing is held: no crash loses a record
		// (see the package comment), so a repeated DEL costs no scan.
		_, err := s.release(o.key())
		return err
	})
	if err != nil {
		return fmt.Errorf("release %s: %w", o, err)
	}
	return nil
}

// Lookup returns o's addresses, or an error wrapping ErrNotFound.
func (s *Store) Lookup(ctx context.Context, o Owner) ([]netip.Addr, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("lookup: %w", err)
	}
	var addrs []netip.Addr
	err := s.do(ctx, func() error {
		rec, err := s.readRecord(s.ownerPath(o))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return ErrNotFound
		case err != nil:
			return err
		case rec.owner != o:
			return fmt.Errorf("record %s names owner %s: %w", s.ownerPath(o), rec.owner, errDamaged)
		}
		addrs = rec.addrs
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", o, err)
	}
	return addrs, nil
}

// GC releases every reservation whose owner is not in keep and returns
// those owners, sorted. An owner with a command in flight (it is held, see
// Hold) is skipped, to be released by a later GC. GC also removes addresses
// left without an owner record (or gives a kept owner its record back when
// all its addresses are intact).
func (s *Store) GC(ctx context.Context, keep []Owner) (released []Owner, err error) {
	kept := make(map[string]bool, len(keep))
	for i, o := range keep {
		if err := o.Validate(); err != nil {
			return nil, fmt.Errorf("gc: keep[%d]: %w", i, err)
		}
		kept[o.key()] = true
	}
	err = s.do(ctx, func() error {
		gone := map[Owner]bool{}
		names, err := readNames(s.path(ownerDir))
		if err != nil {
			return err
		}
		for _, name := range names {
			if kept[name] {
				continue
			}
			// An owner with a command in flight (see Hold) is left for
			// the next GC: releasing under a running ADD would free
			// addresses its veth is about to carry.
			unhold, busy, err := s.tryHold(name)
			if err != nil || busy {
				if err != nil {
					s.log.Warn("ipam: gc skips an owner whose hold lock fails", "dir", s.dir, "owner", name, "err", err.Error())
				}
				continue
			}
			o, perr := parseKey(name)
			held, err := s.release(name)
			unhold()
			if err != nil {
				return err
			}
			if held && perr == nil {
				gone[o] = true
			}
			if err := s.at("gc/owner-released"); err != nil {
				return err
			}
		}
		orphans, err := s.removeOrphans(func(r record) bool {
			return !kept[r.owner.key()] || !s.relink(r)
		})
		for _, o := range orphans {
			gone[o] = true
		}
		released = sortedOwners(gone)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return released, nil
}

// Usage returns, per range, how many addresses are handed out and usable.
// It counts the names under addr/, reading no file. It is a reader: it
// never reclaims an earlier boot's reservations (it counts them until the
// next Allocate, Release or GC does), so a process that only watches the
// store (the agent) cannot release what the plugin handed out, even if it
// sees another boot ID than the plugin does.
func (s *Store) Usage(ctx context.Context) ([]Usage, error) {
	var us []Usage
	err := s.locked(ctx, false, func() error {
		names, err := readNames(s.path(addrDir))
		if err != nil {
			return err
		}
		us = make([]Usage, len(s.spans))
		for i := range s.spans {
			us[i] = Usage{Prefix: s.spans[i].prefix, Total: s.spans[i].usable}
		}
		for _, name := range names {
			a, err := netip.ParseAddr(name)
			if err != nil {
				continue
			}
			for i := range s.spans {
				if s.spans[i].allocatable(a) {
					us[i].Used++
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return us, nil
}

// Check reports whether the store is usable: the lock can be taken within
// the lock timeout and the directory is writable.
func (s *Store) Check(ctx context.Context) error {
	err := s.do(ctx, func() error {
		if err := s.mkdirs(); err != nil {
			if rerr := s.repairDirsLocked(); rerr != nil {
				return errors.Join(err, rerr)
			}
		}
		if err := os.WriteFile(s.path(tmpName), []byte("check\n"), 0o644); err != nil {
			return err
		}
		return os.Remove(s.path(tmpName))
	})
	if err != nil {
		return fmt.Errorf("check store %s: %w", s.dir, err)
	}
	return nil
}

// taken reports whether a is reserved. An entry that is not a regular file
// is no reservation: it is set aside and the address is free.
func (s *Store) taken(a netip.Addr) (bool, error) {
	p := s.addrPath(a)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case !fi.Mode().IsRegular():
		return false, s.setAside(p, fmt.Errorf("%w (%s)", errNotRegular, fileKind(fi)))
	}
	return true, nil
}

// cursor returns the last address handed out in range i, or an invalid
// address (probing then starts at the range's first address). It is only a
// hint: a missing or garbled cursor costs a longer probe, nothing else.
func (s *Store) cursor(i int) netip.Addr {
	p := s.path(cursorDir, cursorName(s.spans[i].prefix))
	b, err := readSmall(p)
	if errors.Is(err, errNotRegular) {
		_ = s.setAside(p, err) // a failure shows again at the cursor's write
	}
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(strings.TrimSpace(string(b)))
	return a
}

// readRecord reads and parses the record at path. An entry that is not a
// regular file is set aside and reads as missing (wrapping fs.ErrNotExist).
func (s *Store) readRecord(path string) (record, error) {
	b, err := readSmall(path)
	if errors.Is(err, errNotRegular) {
		if aerr := s.setAside(path, err); aerr != nil {
			return record{}, aerr
		}
		return record{}, fmt.Errorf("%s set aside: %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return record{}, err
	}
	rec, err := parseRecord(b)
	if err != nil {
		return record{}, fmt.Errorf("%s: %w", path, err)
	}
	return rec, nil
}

// setAside moves a damaged entry (one that is not a regular file, where
// the store keeps only regular files) out of the way, to
// damaged/<name>.<time>, and logs it, so that one bad entry costs only
// itself: never every operation, never a hang under the lock. Only a lock
// holder calls it. The entry is kept for a person to look at.
func (s *Store) setAside(path string, why error) error {
	rel, err := filepath.Rel(s.dir, path)
	if err != nil {
		rel = filepath.Base(path)
	}
	dst := s.path(asideDir, fmt.Sprintf("%s.%d", strings.ReplaceAll(rel, "/", "_"), time.Now().UnixNano()))
	if err := os.Mkdir(s.path(asideDir), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("set aside %s: %w", path, err)
	}
	if err := os.Rename(path, dst); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("set aside %s (%v): %w", path, why, err)
	}
	s.log.Warn("ipam: damaged store entry set aside", "dir", s.dir, "entry", rel, "reason", why.Error(), "moved_to", dst)
	return nil
}

// readNames lists dir. It fails at once, never blocks, when dir is not a
// directory (a FIFO opened for reading would wait for a writer).
func readNames(dir string) ([]string, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func addrList(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func sortedOwners(set map[Owner]bool) []Owner {
	os := make([]Owner, 0, len(set))
	for o := range set {
		os = append(os, o)
	}
	slices.SortFunc(os, func(a, b Owner) int { return strings.Compare(a.key(), b.key()) })
	return os
}
