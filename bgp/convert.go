package bgp

import (
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// family is one address family we speak: IPv4 or IPv6 unicast.
type family struct {
	name string
	api  *api.Family
	is4  bool
}

var families = []family{
	{name: "ipv4-unicast", api: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, is4: true},
	{name: "ipv6-unicast", api: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, is4: false},
}

func familyOf(a netip.Addr) family {
	if a.Is4() {
		return families[0]
	}
	return families[1]
}

func seconds(d time.Duration) uint64 { return uint64(d / time.Second) }

// peerToAPI builds GoBGP's view of a normalized peer. Both address families
// are configured explicitly (else GoBGP enables only the session's family),
// each with graceful restart when it is on.
func peerToAPI(cfg Config, p Peer, restarting bool) *api.Peer {
	gr := !cfg.GracefulRestart.Disabled
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Description,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          seconds(p.HoldTime),
			KeepaliveInterval: seconds(p.Keepalive),
			ConnectRetry:      seconds(p.ConnectRetry),
		}},
		Transport: &api.Transport{
			PassiveMode: p.Passive,
			RemotePort:  uint32(p.Port),
		},
		RouteReflector: &api.RouteReflector{RouteReflectorClient: p.RouteReflectorClient},
	}
	if p.LocalAddress.IsValid() {
		out.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.RouteReflectorClient {
		out.RouteReflector.RouteReflectorClusterId = p.ClusterID.String()
	}
	if p.EBGPMultihopTTL > 0 {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihopTTL)}
	}
	if gr {
		out.GracefulRestart = &api.GracefulRestart{
			Enabled:      true,
			RestartTime:  uint32(seconds(cfg.GracefulRestart.RestartTime)),
			DeferralTime: uint32(seconds(cfg.GracefulRestart.DeferralTime)),
			// RFC 8538: a Cease that is not a Hard Reset keeps graceful
			// restart going, so a planned agent restart keeps our routes.
			NotificationEnabled: true,
			LocalRestarting:     restarting,
		}
	}
	for _, f := range families {
		max := p.MaxPrefixesV6
		if f.is4 {
			max = p.MaxPrefixesV4
		}
		as := &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f.api, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: gr}},
		}
		if max > 0 {
			as.PrefixLimits = &api.PrefixLimit{Family: f.api, MaxPrefixes: max}
		}
		out.AfiSafis = append(out.AfiSafis, as)
	}
	return out
}

// peerFromAPI reads back the fields peerToAPI sets, so that comparing it
// with the desired (normalized) peer tells whether an update is needed.
func peerFromAPI(in *api.Peer) (Peer, error) {
	var p Peer
	c := in.GetConf()
	addr, err := netip.ParseAddr(c.GetNeighborAddress())
	if err != nil {
		return p, fmt.Errorf("peer address %q: %w", c.GetNeighborAddress(), err)
	}
	p.Address = addr
	p.ASN = c.GetPeerAsn()
	p.Password = c.GetAuthPassword()
	p.Description = c.GetDescription()
	t := in.GetTransport()
	p.Passive = t.GetPassiveMode()
	p.Port = int(t.GetRemotePort())
	// Once established, GoBGP reports the session's real local address.
	if a, err := netip.ParseAddr(t.GetLocalAddress()); err == nil && !a.IsUnspecified() {
		p.LocalAddress = a
	}
	tc := in.GetTimers().GetConfig()
	p.HoldTime = time.Duration(tc.GetHoldTime()) * time.Second
	p.Keepalive = time.Duration(tc.GetKeepaliveInterval()) * time.Second
	p.ConnectRetry = time.Duration(tc.GetConnectRetry()) * time.Second
	if m := in.GetEbgpMultihop(); m.GetEnabled() {
		p.EBGPMultihopTTL = uint8(m.GetMultihopTtl())
	}
	if rr := in.GetRouteReflector(); rr.GetRouteReflectorClient() {
		p.RouteReflectorClient = true
		p.ClusterID, _ = netip.ParseAddr(rr.GetRouteReflectorClusterId())
	}
	for _, as := range in.GetAfiSafis() {
		max := as.GetPrefixLimits().GetMaxPrefixes()
		switch as.GetConfig().GetFamily().GetAfi() {
		case api.Family_AFI_IP:
			p.MaxPrefixesV4 = max
		case api.Family_AFI_IP6:
			p.MaxPrefixesV6 = max
		}
	}
	return p, nil
}

// pathToAPI builds the announcement (or withdrawal) of one of our paths:
// IPv4 with a NEXT_HOP attribute, IPv6 with MP_REACH_NLRI (RFC 4760).
func pathToAPI(p Path, withdraw bool) (*api.Path, error) {
	bits := uint8(p.Prefix.Bits())
	addr := p.Prefix.Addr().String()
	attrs := []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	var nlri gobgp.AddrPrefixInterface
	if p.Prefix.Addr().Is4() {
		nlri = gobgp.NewIPAddrPrefix(bits, addr)
		attrs = append(attrs, gobgp.NewPathAttributeNextHop(p.NextHop.String()))
	} else {
		nlri = gobgp.NewIPv6AddrPrefix(bits, addr)
		attrs = append(attrs, gobgp.NewPathAttributeMpReachNLRI(p.NextHop.String(), []gobgp.AddrPrefixInterface{nlri}))
	}
	out, err := apiutil.NewPath(nlri, withdraw, attrs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("encode path %s: %w", p, err)
	}
	return out, nil
}

// pathInfo is what we read from one GoBGP path.
type pathInfo struct {
	Candidate
	local bool // originated by us (no neighbour)
}

// pathFromAPI decodes a path listed by GoBGP.
func pathFromAPI(prefix netip.Prefix, in *api.Path, localASN uint32) (pathInfo, error) {
	out := pathInfo{Candidate: Candidate{Prefix: prefix, Stale: in.GetStale(), LocalPref: 100}}
	out.External = in.GetSourceAsn() != localASN
	peer, err := netip.ParseAddr(in.GetNeighborIp())
	if err != nil || peer.IsUnspecified() {
		out.local = true
	} else {
		out.Peer = peer.Unmap()
	}
	attrs, err := apiutil.GetNativePathAttributes(in)
	if err != nil {
		return out, fmt.Errorf("decode attributes of %s: %w", prefix, err)
	}
	for _, a := range attrs {
		switch a := a.(type) {
		case *gobgp.PathAttributeNextHop:
			out.NextHop, _ = netip.AddrFromSlice(a.Value)
		case *gobgp.PathAttributeMpReachNLRI:
			out.NextHop, _ = netip.AddrFromSlice(a.Nexthop)
		case *gobgp.PathAttributeLocalPref:
			out.LocalPref = a.Value
		case *gobgp.PathAttributeMultiExitDisc:
			out.MED = a.Value
		case *gobgp.PathAttributeOrigin:
			out.Origin = a.Value
		case *gobgp.PathAttributeAsPath:
			for _, seg := range a.Value {
				out.ASPathLen += seg.ASLen()
			}
		}
	}
	out.NextHop = out.NextHop.Unmap()
	return out, nil
}
