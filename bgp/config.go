package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Defaults used when a Config or Peer field is left zero.
const (
	DefaultASN            = 64512
	DefaultPort           = 179
	DefaultRestartTime    = 120 * time.Second
	DefaultDeferralTime   = 30 * time.Second
	DefaultHoldTime       = 90 * time.Second
	DefaultKeepalive      = 30 * time.Second
	DefaultConnectRetry   = 5 * time.Second
	DefaultCallTimeout    = 10 * time.Second
	DefaultResyncInterval = 30 * time.Second
	// DefaultMaxPrefixes is a session's prefix limit per family when the
	// Peer sets none: every session has one, so no peer can grow the
	// speaker's memory without bound.
	DefaultMaxPrefixes = 10000
	// DefaultPrefixLimitRetry is how long a session closed for exceeding
	// its prefix limit stays down before it is enabled again.
	DefaultPrefixLimitRetry = 30 * time.Second
)

// Config is the speaker's global configuration.
type Config struct {
	// RouterID is the BGP identifier; it must be an IPv4 address (RFC 6286
	// allows any 32-bit value, GoBGP wants dotted quad), usually the node's
	// IPv4 address.
	RouterID netip.Addr
	// ASN is the local AS number (default DefaultASN).
	ASN uint32
	// ListenPort is the TCP port to accept sessions on (default 179);
	// -1 accepts none (every peer is dialled).
	ListenPort int
	// ListenAddrs are the addresses to listen on (default: all, both families).
	ListenAddrs []netip.Addr
	// GracefulRestart is on unless Disabled is set.
	GracefulRestart GracefulRestart
	// RestartedWithState says the agent restarted and the kernel still holds
	// the routes it installed before: only then do we tell peers we are
	// restarting (RFC 4724 R bit) and defer our own advertisement until their
	// End-of-RIB. A fresh start must not set it.
	RestartedWithState bool
	// CallTimeout bounds every call into GoBGP (default DefaultCallTimeout).
	CallTimeout time.Duration
	// ResyncInterval re-reads the learned table even without events
	// (default DefaultResyncInterval).
	ResyncInterval time.Duration
	// PrefixLimitRetry is how long a session closed for exceeding its
	// prefix limit stays down (default DefaultPrefixLimitRetry; doubled,
	// up to 5 minutes, when it trips again within 10 minutes).
	PrefixLimitRetry time.Duration
}

// GracefulRestart configures RFC 4724 graceful restart for every peer.
type GracefulRestart struct {
	Disabled bool
	// RestartTime is how long peers keep our routes after we go away
	// (default 120 s, at most 4095 s).
	RestartTime time.Duration
	// DeferralTime bounds how long a restarting speaker waits for peers'
	// End-of-RIB before it advertises anyway (default 30 s).
	DeferralTime time.Duration
}

// Peer is one BGP neighbour.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	// Port is the peer's TCP port (default 179).
	Port int
	// LocalAddress is the source address of the session; when invalid, the
	// first ListenAddrs entry of the same family is used (if any).
	LocalAddress netip.Addr
	// Password enables TCP MD5 signatures (RFC 2385).
	Password string
	// Passive waits for the peer to connect. In a node mesh exactly one side
	// of each pair should be passive, so both restarts never race.
	Passive bool
	// EBGPMultihopTTL > 0 enables eBGP multihop with this TTL.
	EBGPMultihopTTL uint8
	// Timers; zero means the default.
	HoldTime     time.Duration
	Keepalive    time.Duration
	ConnectRetry time.Duration
	// RouteReflectorClient makes this peer our route-reflector client, with
	// ClusterID (IPv4) as the cluster identifier (default: RouterID).
	RouteReflectorClient bool
	ClusterID            netip.Addr
	// MaxPrefixes limits the prefixes the peer may announce per family (0:
	// DefaultMaxPrefixes); GoBGP closes the session with a Cease when the
	// peer's adj-RIB-in goes over it (a PrefixLimit Event) and takes it
	// back after its idle hold time.
	MaxPrefixesV4 uint32
	MaxPrefixesV6 uint32
	// Description is free text (shown in status, e.g. the node name).
	Description string
}

// Path is a route we originate: one of our prefixes via our next hop.
type Path struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
}

func (p Path) String() string { return p.Prefix.String() + " via " + p.NextHop.String() }

// reservedASN reports whether a number must not be used as an AS number.
func reservedASN(asn uint32) bool {
	switch asn {
	case 0, 23456, 65535, 4294967295: // RFC 7607, AS_TRANS, RFC 7300
		return true
	}
	return false
}

// withDefaults returns cfg with zero fields filled and checks it.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.ASN == 0 {
		cfg.ASN = DefaultASN
	}
	if cfg.ListenPort == 0 {
		cfg.ListenPort = DefaultPort
	}
	if cfg.GracefulRestart.RestartTime == 0 {
		cfg.GracefulRestart.RestartTime = DefaultRestartTime
	}
	if cfg.GracefulRestart.DeferralTime == 0 {
		cfg.GracefulRestart.DeferralTime = DefaultDeferralTime
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.PrefixLimitRetry <= 0 {
		cfg.PrefixLimitRetry = DefaultPrefixLimitRetry
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	return cfg, cfg.validate()
}

func (cfg Config) validate() error {
	var errs []error
	if !cfg.RouterID.Is4() {
		errs = append(errs, fmt.Errorf("RouterID %s: must be an IPv4 address", cfg.RouterID))
	}
	if reservedASN(cfg.ASN) {
		errs = append(errs, fmt.Errorf("ASN %d: reserved AS number", cfg.ASN))
	}
	if cfg.ListenPort < -1 || cfg.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("ListenPort %d: must be 1..65535 or -1", cfg.ListenPort))
	}
	for i, a := range cfg.ListenAddrs {
		if !a.IsValid() || a.Zone() != "" {
			errs = append(errs, fmt.Errorf("ListenAddrs[%d] %s: must be an address without zone", i, a))
		}
	}
	if t := cfg.GracefulRestart.RestartTime; t < time.Second || t > 4095*time.Second {
		errs = append(errs, fmt.Errorf("GracefulRestart.RestartTime %s: must be 1s..4095s", t))
	}
	if t := cfg.GracefulRestart.DeferralTime; t < time.Second || t > 65535*time.Second {
		errs = append(errs, fmt.Errorf("GracefulRestart.DeferralTime %s: must be 1s..65535s", t))
	}
	if cfg.RestartedWithState && cfg.GracefulRestart.Disabled {
		errs = append(errs, errors.New("RestartedWithState true: needs GracefulRestart enabled"))
	}
	if cfg.CallTimeout < 0 || cfg.ResyncInterval < 0 {
		errs = append(errs, fmt.Errorf("CallTimeout %s / ResyncInterval %s: must not be negative", cfg.CallTimeout, cfg.ResyncInterval))
	}
	return errors.Join(errs...)
}

// normalize fills a peer's defaults so that a peer read back from GoBGP
// compares equal to the one we configured.
func (p Peer) normalize(cfg Config) Peer {
	if p.Port == 0 {
		p.Port = DefaultPort
	}
	if !p.LocalAddress.IsValid() {
		for _, a := range cfg.ListenAddrs {
			if a.Is4() == p.Address.Is4() && !a.IsUnspecified() {
				p.LocalAddress = a
				break
			}
		}
	}
	if p.HoldTime == 0 {
		p.HoldTime = DefaultHoldTime
	}
	if p.Keepalive == 0 {
		p.Keepalive = p.HoldTime / 3
	}
	if p.ConnectRetry == 0 {
		p.ConnectRetry = DefaultConnectRetry
	}
	if p.MaxPrefixesV4 == 0 {
		p.MaxPrefixesV4 = DefaultMaxPrefixes
	}
	if p.MaxPrefixesV6 == 0 {
		p.MaxPrefixesV6 = DefaultMaxPrefixes
	}
	if p.RouteReflectorClient && !p.ClusterID.IsValid() {
		p.ClusterID = cfg.RouterID
	}
	if !p.RouteReflectorClient {
		p.ClusterID = netip.Addr{}
	}
	return p
}

// validate checks one (normalized) peer; i is its index for messages.
func (p Peer) validate(i int) error {
	var errs []error
	field := func(name string) string { return fmt.Sprintf("peers[%d].%s", i, name) }
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.Zone() != "" {
		errs = append(errs, fmt.Errorf("%s %s: must be a unicast address without zone", field("Address"), p.Address))
	}
	if reservedASN(p.ASN) {
		errs = append(errs, fmt.Errorf("%s %d: reserved AS number", field("ASN"), p.ASN))
	}
	if p.Port < 1 || p.Port > 65535 {
		errs = append(errs, fmt.Errorf("%s %d: must be 1..65535", field("Port"), p.Port))
	}
	if p.LocalAddress.IsValid() && p.LocalAddress.Is4() != p.Address.Is4() {
		errs = append(errs, fmt.Errorf("%s %s: family differs from Address %s", field("LocalAddress"), p.LocalAddress, p.Address))
	}
	if len(p.Password) > 80 { // TCP_MD5SIG_MAXKEYLEN
		errs = append(errs, fmt.Errorf("%s: %d bytes, at most 80", field("Password"), len(p.Password)))
	}
	if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second) {
		errs = append(errs, fmt.Errorf("%s %s: must be 3s..65535s", field("HoldTime"), p.HoldTime))
	}
	if p.Keepalive < 0 || p.Keepalive > p.HoldTime {
		errs = append(errs, fmt.Errorf("%s %s: must be 0..HoldTime (%s)", field("Keepalive"), p.Keepalive, p.HoldTime))
	}
	if p.ConnectRetry < 0 {
		errs = append(errs, fmt.Errorf("%s %s: must not be negative", field("ConnectRetry"), p.ConnectRetry))
	}
	for name, d := range map[string]time.Duration{"HoldTime": p.HoldTime, "Keepalive": p.Keepalive, "ConnectRetry": p.ConnectRetry} {
		if d%time.Second != 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be whole seconds", field(name), d))
		}
	}
	if p.ClusterID.IsValid() && !p.ClusterID.Is4() {
		errs = append(errs, fmt.Errorf("%s %s: must be an IPv4 address", field("ClusterID"), p.ClusterID))
	}
	return errors.Join(errs...)
}

// validate checks one path; i is its index for messages.
func (p Path) validate(i int) error {
	switch {
	case !p.Prefix.IsValid():
		return fmt.Errorf("paths[%d].Prefix %s: invalid", i, p.Prefix)
	case p.Prefix != p.Prefix.Masked():
		return fmt.Errorf("paths[%d].Prefix %s: host bits set (want %s)", i, p.Prefix, p.Prefix.Masked())
	case !p.NextHop.IsValid() || p.NextHop.IsUnspecified() || p.NextHop.Zone() != "":
		return fmt.Errorf("paths[%d].NextHop %s: must be a unicast address without zone", i, p.NextHop)
	case p.NextHop.Is4() != p.Prefix.Addr().Is4():
		return fmt.Errorf("paths[%d].NextHop %s: family differs from prefix %s", i, p.NextHop, p.Prefix)
	}
	return nil
}
