package bgpmode

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"

	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

// Status is bgp mode's state for weftctl and metrics.
type Status struct {
	RouterID netip.Addr `json:"routerID"`
	ASN      uint32     `json:"asn"`
	Running  bool       `json:"running"`
	// LastError is the last failure to start or configure the speaker.
	LastError string       `json:"lastError,omitempty"`
	Peers     []PeerStatus `json:"peers"`
	// Routes are the kernel routes bgp mode wants (Routes()).
	Routes []overlay.Route `json:"routes"`
	// Retained counts routes kept from before a restart, awaiting End-of-RIB.
	Retained int `json:"retained"`
	// Rejected are the learned paths refused now (import policy and
	// per-peer caps); RejectedByReason counts them, every reason present.
	Rejected         []bgp.Rejected     `json:"rejected,omitempty"`
	RejectedByReason map[bgp.Reason]int `json:"rejectedByReason"`
	// EventsDropped counts session events the reader did not take in time.
	EventsDropped int `json:"eventsDropped,omitempty"`
}

// PeerStatus is one BGP neighbour.
type PeerStatus struct {
	Address netip.Addr `json:"address"`
	Name    string     `json:"name"` // node/<name> or peer/<address>
	ASN     uint32     `json:"asn"`
	State   string     `json:"state"` // established, active, idle, ...
	Up      bool       `json:"up"`
	// Since is when the session came up (Up) or went down.
	Since      time.Time          `json:"since,omitzero"`
	Received   uint64             `json:"received"`
	Advertised uint64             `json:"advertised"`
	Installed  int                `json:"installed"` // routes installed with a next hop from this peer
	Rejected   map[bgp.Reason]int `json:"rejected,omitempty"`
	EndOfRIB   bool               `json:"endOfRIB"`
	Restarting bool               `json:"restarting"`
}

// Uptime is how long the session has been up (0 when down).
func (p PeerStatus) Uptime(now time.Time) time.Duration {
	if !p.Up || p.Since.IsZero() {
		return 0
	}
	return now.Sub(p.Since)
}

// Status reports the speaker's peers and the routes. Without a running
// speaker it still reports the routes and the last error.
func (c *Controller) Status(ctx context.Context) (Status, error) {
	c.mu.Lock()
	inst := c.cur
	st := Status{
		Running:          inst != nil,
		LastError:        c.lastErr,
		Routes:           slices.Clone(c.routes),
		Retained:         len(c.retained),
		Rejected:         append(slices.Clone(c.table.Rejected), c.capped...),
		RejectedByReason: map[bgp.Reason]int{},
		EventsDropped:    c.dropped,
	}
	installed := maps.Clone(c.installed)
	names := map[netip.Addr]string{}
	if c.want != nil {
		st.RouterID, st.ASN = c.want.Global.RouterID, c.want.Global.ASN
		names = c.want.Names
	}
	c.mu.Unlock()
	for _, r := range bgp.Reasons {
		st.RejectedByReason[r] = 0
	}
	for _, r := range st.Rejected {
		st.RejectedByReason[r.Reason]++
	}
	if inst == nil {
		return st, nil
	}
	peers, err := inst.sp.Peers(ctx)
	if err != nil {
		return st, err
	}
	for _, p := range peers {
		ps := PeerStatus{
			Address: p.Address, Name: names[p.Address], ASN: p.ASN, State: p.State, Up: p.State == "established",
			Since: p.Since, Received: p.Received, Advertised: p.Advertised, Installed: installed[p.Address],
			Rejected: map[bgp.Reason]int{}, EndOfRIB: p.EndOfRIB, Restarting: p.Restarting,
		}
		if ps.Name == "" {
			ps.Name = p.Description
		}
		for _, r := range st.Rejected {
			if r.Peer == p.Address {
				ps.Rejected[r.Reason]++
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}
