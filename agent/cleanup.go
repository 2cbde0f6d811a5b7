package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"weft.dev/weft/agent/cniconf"
)

// Cleanup removes everything weft made on a node: the datapath (devices,
// neighbour and FDB entries, routes with weft's protocol), the firewall
// chains and sets, the CNI conflist and the ready file. It keeps going past
// failures and returns them joined. The IPAM store and the VTEP MAC in the
// state directory are left (pods may still hold addresses).
func Cleanup(ctx context.Context, dp Datapath, fw Firewall, cniConfDir, runDir string) error {
	var errs []error
	// The conflist first, so no new pod is attached while the rest goes.
	if err := cniconf.Remove(cniConfDir); err != nil {
		errs = append(errs, err)
	}
	if err := cniconf.RemoveReady(filepath.Join(runDir, "ready")); err != nil {
		errs = append(errs, err)
	}
	if err := dp.Cleanup(ctx); err != nil {
		errs = append(errs, fmt.Errorf("clean up datapath: %w", err))
	}
	if err := fw.Cleanup(ctx); err != nil {
		errs = append(errs, fmt.Errorf("clean up firewall: %w", err))
	}
	return errors.Join(errs...)
}
