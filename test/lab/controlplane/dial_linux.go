package controlplane

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDialer opens TCP connections from inside a named network namespace,
// so a process in the root namespace can reach a daemon listening on the lab
// underlay without any route or address in the root namespace. A socket
// belongs to the namespace it was created in, wherever it is used later.
type netnsDialer struct {
	path string // /run/netns/<name>
}

// DialContext has the signature of rest.Config.Dial and http.Transport.DialContext.
func (d netnsDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(d.path, func() error {
		var nd net.Dialer
		var err error
		conn, err = nd.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, address, d.path, err)
	}
	return conn, nil
}

// inNetns runs fn on a fresh goroutine locked to its OS thread, with the
// thread switched into the namespace at path. Afterwards the thread is
// switched back and unlocked. If switching back fails the goroutine exits
// still locked, so the runtime discards the thread.
//
// The main thread never enters the namespace: its namespace is the one
// /proc/<pid>/ns/net and `ip netns pids` show, so even for a moment inside,
// the whole process would count as a member of the lab namespace (and be
// killed by a teardown that kills the namespace's processes). A locked
// goroutine that exits on the main thread does not destroy it either (Go
// parks it for good).
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread: keep it busy (locked to this goroutine, it
			// runs nothing else) and do the work on another thread.
			errc <- inNetns(path, fn)
			runtime.UnlockOSThread()
			return
		}
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current namespace: %w", err)
			return // still locked: the thread is discarded
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open namespace %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			// setns is all or nothing: the thread is still in orig.
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fnErr // still locked: the thread is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}
