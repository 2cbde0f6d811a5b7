package ipam

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// holdDir holds one lock file per owner with a command in flight.
const holdDir = "hold"

// Hold takes o's owner lock, waiting at most Options.LockTimeout (then an
// error wrapping ErrLocked), and returns its release. It serialises whole
// commands on one owner across processes: a CNI ADD holds it from before it
// reserves addresses until its veth carries them, a DEL from before it
// removes the veth until the addresses are released, so the two can never
// interleave (a DEL between an ADD's reservation and its veth would free
// addresses that the veth then carries). Commands on different owners do
// not wait for each other, and GC skips a held owner.
//
// The lock is hold/<key>, removed again on release: a waiter that gets the
// lock of a file already removed takes the new one instead.
func (s *Store) Hold(ctx context.Context, o Owner) (release func(), err error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("hold: %w", err)
	}
	path := s.path(holdDir, o.key())
	deadline := time.Now().Add(s.timeout)
	for {
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("hold %s: lock %s: held for more than %s: %w", o, path, s.timeout, ErrLocked)
		}
		fd, unlock, err := lockFD(ctx, path, wait)
		if err != nil {
			return nil, fmt.Errorf("hold %s: %w", o, err)
		}
		if current(fd, path) {
			return func() {
				_ = os.Remove(path) // before the unlock: see above
				unlock()
			}, nil
		}
		unlock()
	}
}

// tryHold takes owner key's lock if nobody holds it: busy is true when
// someone does (or might: a lock file replaced meanwhile counts as busy).
func (s *Store) tryHold(key string) (release func(), busy bool, err error) {
	path := s.path(holdDir, key)
	fd, err := openFile(path, unix.O_RDWR|unix.O_CREAT|entryFlags, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("open %s: %w", path, err)
	}
	if err := flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	if !current(fd, path) {
		unix.Close(fd)
		return nil, true, nil
	}
	return func() {
		_ = os.Remove(path)
		unix.Close(fd)
	}, false, nil
}

// current reports whether fd is still the file at path.
func current(fd int, path string) bool {
	var held, now unix.Stat_t
	if unix.Fstat(fd, &held) != nil || unix.Lstat(path, &now) != nil {
		return false
	}
	return held.Dev == now.Dev && held.Ino == now.Ino
}
