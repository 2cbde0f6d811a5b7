// Package status is the agent's local status report and the client weftctl
// uses to read it over the agent's unix socket (<run dir>/status.sock).
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// SocketName is the status socket's name in the agent's run directory.
const SocketName = "status.sock"

// Path is the HTTP path serving the Status as JSON.
const Path = "/status"

// Status is a snapshot of one agent.
type Status struct {
	Node          string         `json:"node"`
	Mode          string         `json:"mode"`
	Ready         bool           `json:"ready"`
	NotReady      []string       `json:"notReady,omitempty"` // reasons
	ConfigError   string         `json:"configError,omitempty"`
	NodeIP        netip.Addr     `json:"nodeIP"`
	VTEPMAC       string         `json:"vtepMAC,omitempty"`
	PodCIDRs      []netip.Prefix `json:"podCIDRs"`
	Leased        bool           `json:"leased"` // pod CIDRs leased by weft, not allocated by the controller-manager
	PodMTU        int            `json:"podMTU"`
	IPAM          []IPAM         `json:"ipam"`
	Peers         []Peer         `json:"peers"`
	LastReconcile time.Time      `json:"lastReconcile"`
	LastError     string         `json:"lastError,omitempty"`
}

// IPAM is the use of one local pod CIDR.
type IPAM struct {
	Prefix netip.Prefix `json:"prefix"`
	Used   uint64       `json:"used"`
	Total  uint64       `json:"total"`
}

// Peer is one other node and whether its routes are programmed.
type Peer struct {
	Name       string         `json:"name"`
	IP         netip.Addr     `json:"ip"`
	PodCIDRs   []netip.Prefix `json:"podCIDRs"`
	Via        string         `json:"via,omitempty"`
	Programmed bool           `json:"programmed"`
	Pending    string         `json:"pending,omitempty"`
}

// Get reads the status from the agent listening on the unix socket at path.
func Get(ctx context.Context, socket string) (Status, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://weft-agent"+Path, nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("read agent status from %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("read agent status from %s: HTTP %s", socket, resp.Status)
	}
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("decode agent status from %s: %w", socket, err)
	}
	return s, nil
}
