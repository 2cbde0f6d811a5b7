package ipam

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive flock(2) on path, waiting at most timeout (or
// until ctx ends). The lock belongs to the open file description, so two
// Stores in one process exclude each other like two processes do, and the
// kernel drops it when its holder dies, also by SIGKILL.
func lockFile(ctx context.Context, path string, timeout time.Duration) (func(), error) {
	_, unlock, err := lockFD(ctx, path, timeout)
	return unlock, err
}

// lockFD is lockFile that also returns the locked descriptor (valid until
// the unlock).
func lockFD(ctx context.Context, path string, timeout time.Duration) (int, func(), error) {
	fd, err := openFile(path, unix.O_RDWR|unix.O_CREAT|entryFlags, 0o644)
	if err == nil {
		if err = requireRegular(fd, path); err != nil {
			unix.Close(fd)
		}
	}
	// The lock file is the one entry the store cannot set aside by itself
	// (that would need the lock): say what to do instead.
	if errors.Is(err, errNotRegular) || errors.Is(err, unix.EISDIR) {
		return -1, nil, fmt.Errorf("open lock: %w: the lock must be a regular file; remove it by hand (no operation runs until then)", err)
	}
	if err != nil {
		return -1, nil, fmt.Errorf("open lock: %w", err)
	}
	unlock := func() { unix.Close(fd) } // closing the only descriptor drops the lock
	err = flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return fd, unlock, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		unlock()
		return -1, nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Wait in the kernel's queue rather than polling: the holder's unlock
	// wakes us at once. If we give up, the waiter keeps the file open until
	// the kernel grants it the lock, then drops it.
	got := make(chan error, 1)
	go func() { got <- flock(fd, unix.LOCK_EX) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			unlock()
			return -1, nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return fd, unlock, nil
	case <-timer.C:
		go func() { <-got; unlock() }()
		return -1, nil, fmt.Errorf("lock %s: held by another process for more than %s: %w", path, timeout, ErrLocked)
	case <-ctx.Done():
		go func() { <-got; unlock() }()
		return -1, nil, fmt.Errorf("lock %s: %w: %w", path, ErrLocked, context.Cause(ctx))
	}
}

func flock(fd, how int) error {
	for {
		if err := unix.Flock(fd, how); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
