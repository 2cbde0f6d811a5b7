package agent

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"weft.dev/weft/agent/cniconf"
	"weft.dev/weft/agent/plan"
)

// vtepMACFile keeps the VTEP MAC in the state directory.
const vtepMACFile = "vtep-mac"

// stableMAC returns the node's VTEP MAC, stable across restarts: the one
// already published in the node's annotation (what peers program), else the
// one persisted in the state directory, else a new random locally
// administered unicast address. The result is persisted.
func stableMAC(stateDir, published string) (net.HardwareAddr, error) {
	path := filepath.Join(stateDir, vtepMACFile)
	mac, err := plan.ParseMAC(published)
	if err != nil {
		b, rerr := os.ReadFile(path)
		switch {
		case rerr == nil:
			mac, err = plan.ParseMAC(string(b))
		case errors.Is(rerr, fs.ErrNotExist):
		default:
			return nil, fmt.Errorf("read %s: %w", path, rerr)
		}
	}
	if err != nil {
		mac = make(net.HardwareAddr, 6)
		if _, err := rand.Read(mac); err != nil {
			return nil, fmt.Errorf("random VTEP MAC: %w", err)
		}
		mac[0] = mac[0]&0xfe | 0x02 // unicast, locally administered
	}
	if _, err := cniconf.WriteFile(path, []byte(mac.String()+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("persist VTEP MAC: %w", err)
	}
	return mac, nil
}
