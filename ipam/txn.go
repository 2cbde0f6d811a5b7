package ipam

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// commit makes rec a reservation: write it to txn, link txn to addr/<a> for
// each address, then to owner/<key> (the commit point), move the cursors
// and remove txn. Before the commit point every failure is rolled back;
// after it the reservation stands.
func (s *Store) commit(rec record) error {
	txn := s.path(txnName)
	if err := s.writeTxn(rec.marshal()); err != nil {
		return s.abort(err)
	}
	if err := s.at("alloc/txn-written"); err != nil {
		return s.abort(err)
	}
	for i, a := range rec.addrs {
		// Under the lock a probe's free address stays free, so EEXIST
		// means another writer ignored the lock: fail, never share.
		if err := os.Link(txn, s.addrPath(a)); err != nil {
			return s.abort(fmt.Errorf("claim %s: %w", a, err))
		}
		if err := s.at("alloc/addr-linked-%d", i); err != nil {
			return s.abort(err)
		}
	}
	if err := os.Link(txn, s.ownerPath(rec.owner)); err != nil {
		return s.abort(fmt.Errorf("record owner: %w", err))
	}
	// Committed. What follows is bookkeeping that a crash may skip: the
	// cursors are hints and the next lock holder removes txn.
	_ = s.at("alloc/owner-linked")
	for i, a := range rec.addrs {
		_ = s.writeCursor(i, a)
	}
	_ = s.at("alloc/cursors-saved")
	_ = os.Remove(txn)
	return nil
}

// writeTxn creates txn with data. It must not exist: recover removed it.
func (s *Store) writeTxn(data []byte) error {
	return writeFile(s.path(txnName), unix.O_EXCL, data, func() error { return s.at("alloc/txn-partial") })
}

// abort rolls back an uncommitted allocation and returns err with any
// rollback failure (which the next lock holder then repairs).
func (s *Store) abort(err error) error {
	if rerr := s.resolveTxn(""); rerr != nil {
		return errors.Join(err, fmt.Errorf("roll back: %w", rerr))
	}
	return err
}

// release frees the reservation recorded as owner/<name>: rename it to txn
// (from here on the owner holds nothing), then roll txn back. held is false
// when there is no such record.
func (s *Store) release(name string) (held bool, err error) {
	err = os.Rename(s.path(ownerDir, name), s.path(txnName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("release %s: %w", name, err)
	}
	if err := s.at("release/owner-moved"); err != nil {
		return true, err
	}
	return true, s.resolveTxn(name)
}

// resolveTxn finishes what txn describes. If owner/<key> is the same file,
// an allocation committed and only txn is left to remove; otherwise (an
// allocation that did not commit, or a release) every addr/ link to the
// record is removed, then txn. Each step is idempotent, so a crash inside
// is resolved by the next lock holder the same way. A record too damaged to
// parse is resolved by its inode: its other names are found by a scan. A
// txn that is not a regular file (an owner/ entry that was not, renamed by
// release: from names that) is set aside.
func (s *Store) resolveTxn(from string) error {
	txn := s.path(txnName)
	fi, err := os.Lstat(txn)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		why := fmt.Errorf("%w (%s)", errNotRegular, fileKind(fi))
		if from != "" {
			why = fmt.Errorf("%s/%s renamed to %s: %w", ownerDir, from, txnName, why)
		}
		return s.setAside(txn, why)
	}
	if rec, err := s.readRecord(txn); err == nil {
		if sameFile(s.ownerPath(rec.owner), fi) {
			return removeIfExists(txn)
		}
		for i, a := range rec.addrs {
			if sameFile(s.addrPath(a), fi) {
				if err := removeIfExists(s.addrPath(a)); err != nil {
					return err
				}
			}
			if err := s.at("txn/addr-unlinked-%d", i); err != nil {
				return err
			}
		}
	} else if !isParseError(err) {
		return err
	}
	if fi, err = os.Lstat(txn); err != nil {
		return err
	}
	if nlink(fi) > 1 {
		committed, err := s.unlinkInode(fi)
		if err != nil || committed {
			return errors.Join(err, removeIfExists(txn))
		}
	}
	if err := s.at("txn/addrs-unlinked"); err != nil {
		return err
	}
	return removeIfExists(txn)
}

// unlinkInode removes the addr/ names of fi's file unless an owner/ name
// links it (committed).
func (s *Store) unlinkInode(fi fs.FileInfo) (committed bool, err error) {
	var addrs []string
	for _, dir := range []string{ownerDir, addrDir} {
		names, err := readNames(s.path(dir))
		if err != nil {
			return false, err
		}
		for _, name := range names {
			if p := s.path(dir, name); sameFile(p, fi) {
				if dir == ownerDir {
					return true, nil
				}
				addrs = append(addrs, p)
			}
		}
	}
	for _, p := range addrs {
		if err := removeIfExists(p); err != nil {
			return false, err
		}
	}
	return false, nil
}

// recover brings the store to a clean state before an operation: remove
// the scratch file, resolve txn, and (reclaim) release reservations of an
// earlier boot.
func (s *Store) recover(ctx context.Context, reclaim bool) error {
	if err := removeIfExists(s.path(tmpName)); err != nil {
		// A directory with entries: set it aside like any damage.
		if aerr := s.setAside(s.path(tmpName), err); aerr != nil {
			return errors.Join(err, aerr)
		}
	}
	if err := s.resolveTxn(""); err != nil {
		return fmt.Errorf("resolve %s: %w", txnName, err)
	}
	if !reclaim {
		return nil
	}
	b, err := readSmall(s.path(bootName))
	if errors.Is(err, errNotRegular) {
		// Read as missing: the reclaim below keeps this boot's records.
		if err = s.setAside(s.path(bootName), err); err != nil {
			return err
		}
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if strings.TrimSuffix(string(b), "\n") == s.boot {
		return nil
	}
	if err := s.reclaim(ctx); err != nil {
		return fmt.Errorf("reclaim reservations of an earlier boot: %w", err)
	}
	return nil
}

// reclaim releases every reservation not stamped with this boot: after a
// reboot none of their containers runs. The boot file is written last, so
// a crash midway makes the next operation start over.
func (s *Store) reclaim(ctx context.Context) error {
	stale := func(path string) (bool, error) {
		rec, err := s.readRecord(path)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // set aside (or gone): nothing to release
		}
		if err != nil && !isParseError(err) {
			return false, err
		}
		return err != nil || rec.boot != s.boot, nil
	}
	names, err := readNames(s.path(ownerDir))
	if err != nil {
		return err
	}
	for _, name := range names {
		old, err := stale(s.path(ownerDir, name))
		if err != nil {
			return err
		}
		if !old {
			continue
		}
		if _, err := s.release(name); err != nil {
			return err
		}
		if err := s.at("reclaim/owner-released"); err != nil {
			return err
		}
	}
	if names, err = readNames(s.path(addrDir)); err != nil {
		return err
	}
	for _, name := range names {
		old, err := stale(s.path(addrDir, name))
		if err != nil {
			return err
		}
		if !old {
			continue
		}
		if err := removeIfExists(s.path(addrDir, name)); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	return s.writeReplace("boot", s.path(bootName), []byte(s.boot+"\n"))
}

// removeOrphans scans addr/ for addresses whose record has no owner/ link
// and removes those match accepts, returning their owners. Files that are
// not a reservation of their address are removed too.
func (s *Store) removeOrphans(match func(record) bool) ([]Owner, error) {
	names, err := readNames(s.path(addrDir))
	if err != nil {
		return nil, err
	}
	var owners []Owner
	for _, name := range names {
		p := s.path(addrDir, name)
		fi, err := os.Lstat(p)
		if err != nil {
			return owners, err
		}
		if !fi.Mode().IsRegular() {
			if err := s.setAside(p, fmt.Errorf("%w (%s)", errNotRegular, fileKind(fi))); err != nil {
				return owners, err
			}
			continue
		}
		rec, err := s.readRecord(p)
		if err != nil && !isParseError(err) {
			return owners, err
		}
		a, aerr := netip.ParseAddr(name)
		switch {
		case err != nil || aerr != nil || !slices.Contains(rec.addrs, a):
			// Not a reservation of this address: nobody's.
		case sameFile(s.ownerPath(rec.owner), fi):
			continue // held
		case !match(rec):
			continue
		default:
			owners = append(owners, rec.owner)
		}
		if err := removeIfExists(p); err != nil {
			return owners, err
		}
		if err := s.at("orphan/addr-removed"); err != nil {
			return owners, err
		}
	}
	return owners, nil
}

// relink gives r's owner its record back from an address link, if all of
// r's addresses are still linked to one record of this boot.
func (s *Store) relink(r record) bool {
	if r.boot != s.boot {
		return false
	}
	var first fs.FileInfo
	for _, a := range r.addrs {
		fi, err := os.Lstat(s.addrPath(a))
		if err != nil || first != nil && !os.SameFile(first, fi) {
			return false
		}
		if first == nil {
			first = fi
		}
	}
	return os.Link(s.addrPath(r.addrs[0]), s.ownerPath(r.owner)) == nil
}

// cursorWidth is the size of a cursor file: the longest address and a
// newline, so every write covers all of the previous one.
const cursorWidth = len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") + 1

// writeCursor records a as range i's cursor by overwriting the cursor file
// in place, padded to cursorWidth. A cursor is a hint, so a write torn by a
// crash costs at most a longer probe; in exchange the common path spares
// the new inode and the rename a replacement would cost.
func (s *Store) writeCursor(i int, a netip.Addr) error {
	data := fmt.Appendf(nil, "%-*s\n", cursorWidth-1, a)
	return writeFile(s.path(cursorDir, cursorName(s.spans[i].prefix)), 0, data,
		func() error { return s.at("cursor/partial") })
}

// writeReplace replaces path with data atomically (write tmp, rename).
func (s *Store) writeReplace(what, path string, data []byte) error {
	tmp := s.path(tmpName)
	if err := writeFile(tmp, unix.O_TRUNC, data, nil); err != nil {
		return err
	}
	if err := s.at("replace/%s-tmp-written", what); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func sameFile(path string, fi fs.FileInfo) bool {
	other, err := os.Lstat(path)
	return err == nil && os.SameFile(fi, other)
}

func nlink(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// isParseError tells a damaged record from an I/O failure.
func isParseError(err error) bool { return errors.Is(err, errDamaged) }
