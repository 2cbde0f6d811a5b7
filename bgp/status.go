package bgp

import (
	"context"
	"net/netip"
	"slices"
	"time"
)

// PeerStatus is one neighbour as seen now.
type PeerStatus struct {
	Address     netip.Addr
	ASN         uint32
	Description string
	State       string // "established", "active", "idle", ...
	// Since is when the session came up (established) or went down.
	Since time.Time
	// Received, Accepted and Advertised count prefixes over both families
	// (Accepted is after GoBGP's own checks, before weft's import policy).
	Received, Accepted, Advertised uint64
	// Rejected counts this peer's paths refused by the import policy, by
	// reason, in the current table.
	Rejected map[Reason]int
	// EndOfRIB: the current session delivered End-of-RIB for every family.
	EndOfRIB bool
	// Restarting: the peer is gone in graceful restart; its routes are
	// kept, marked stale, until it comes back or the restart time ends.
	Restarting bool
}

// Peers returns the status of every configured neighbour, sorted by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	listed, err := s.listPeers(ctx, true)
	if err != nil {
		return nil, err
	}
	t := s.Routes()
	out := make([]PeerStatus, 0, len(listed))
	for _, p := range listed {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		st := PeerStatus{
			Address:     addr,
			ASN:         p.GetConf().GetPeerAsn(),
			Description: p.GetConf().GetDescription(),
			State:       sessionState(p.GetState().GetSessionState()),
			EndOfRIB:    endOfRIB(p),
			Restarting:  p.GetGracefulRestart().GetPeerRestarting(),
			Rejected:    map[Reason]int{},
		}
		ts := p.GetTimers().GetState()
		if st.State == "established" {
			st.Since = ts.GetUptime().AsTime()
		} else if d := ts.GetDowntime(); d != nil && d.GetSeconds() > 0 {
			st.Since = d.AsTime()
		}
		for _, as := range p.GetAfiSafis() {
			st.Received += as.GetState().GetReceived()
			st.Accepted += as.GetState().GetAccepted()
			adv := as.GetState().GetAdvertised()
			// GoBGP counts the End-of-RIB marker it sends to a graceful
			// restart peer as one advertised path per family.
			if adv > 0 && p.GetGracefulRestart().GetEnabled() && as.GetMpGracefulRestart().GetState().GetEnabled() {
				adv--
			}
			st.Advertised += adv
		}
		for _, r := range t.Rejected {
			if r.Peer == addr {
				st.Rejected[r.Reason]++
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}
