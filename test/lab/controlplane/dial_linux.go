package controlplane

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// netnsDialer opens TCP connections from inside a named network namespace,
// so a process in the root namespace can reach a daemon listening on the lab
// underlay without any route or address in the root namespace.
//
// A socket belongs to the namespace it was created in. Each dial therefore
// runs on a fresh goroutine locked to its OS thread, moves that thread into
// the namespace and creates and connects the socket there. The goroutine
// returns without unlocking, so the Go runtime throws the thread away and no
// other goroutine ever runs inside the namespace.
type netnsDialer struct {
	path string // /run/netns/<name>
}

type dialResult struct {
	conn net.Conn
	err  error
}

// DialContext has the signature of rest.Config.Dial and http.Transport.DialContext.
func (d netnsDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	res := make(chan dialResult, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked on purpose: the thread exits with the goroutine.
		target, err := netns.GetFromPath(d.path)
		if err != nil {
			res <- dialResult{err: fmt.Errorf("open namespace %s: %w", d.path, err)}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			res <- dialResult{err: fmt.Errorf("enter namespace %s: %w", d.path, err)}
			return
		}
		var nd net.Dialer
		conn, err := nd.DialContext(ctx, network, address)
		if err != nil {
			err = fmt.Errorf("dial %s %s in %s: %w", network, address, d.path, err)
		}
		res <- dialResult{conn: conn, err: err}
	}()
	r := <-res
	return r.conn, r.err
}
