// Package nsrun runs a function inside a network namespace, on an OS thread
// that no other goroutine uses while it is there.
//
// Sockets made and processes started inside fn belong to the namespace.
// The thread is switched back before it is unlocked; when switching back
// fails it stays locked and the runtime retires it with the goroutine. The
// process's main thread never enters: its namespace is the one
// /proc/<pid>/ns/net (and so `ip netns pids`) shows, so even a moment inside
// would make the whole process count as a member of the namespace — and be
// killed by a teardown that kills the namespace's processes.
package nsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// In runs fn inside the network namespace at path (e.g. /run/netns/NAME).
func In(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer target.Close()
	if err := Do(target, fn); err != nil {
		return fmt.Errorf("in namespace %s: %w", path, err)
	}
	return nil
}

// Do runs fn inside the network namespace target.
func Do(target netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread: keep it (locked to this goroutine, it runs
			// nothing else) and do the work on another thread.
			errc <- Do(target, fn)
			runtime.UnlockOSThread()
			return
		}
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("open own namespace: %w", err)
			return // still locked: the thread is retired
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			// setns is all or nothing: the thread is still in orig.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace: %w", err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fnErr // still locked: the thread is retired
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
