package controlplane

import (
	"context"
	"fmt"
	"net"

	"weft.dev/weft/overlay/nsrun"
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
	err := nsrun.In(d.path, func() error {
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
