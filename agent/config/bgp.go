package config

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// Defaults of the bgp section.
const (
	DefaultBGPASN          = 64512
	DefaultBGPPort         = 179
	DefaultBGPRestartTime  = 120 * time.Second
	DefaultBGPPasswordName = "weft-bgp-passwords" // the one Secret the agent may read
	maxRestartTime         = 4095 * time.Second   // RFC 4724: 12 bits
	defaultHoldTime        = 90 * time.Second     // the speaker's default
)

// BGPConfig configures bgp mode. Every field is applied live.
type BGPConfig struct {
	// ASN is the cluster's AS number; a node's weft.dev/bgp-asn annotation
	// overrides it for that node.
	ASN uint32 `json:"asn"`
	// ListenPort is the TCP port every node's speaker accepts sessions on
	// (and dials other nodes on).
	ListenPort uint16 `json:"listenPort"`
	// NodeMesh peers every node with every other node (iBGP full mesh), or,
	// when route reflectors are labelled, every node with the reflectors.
	NodeMesh bool `json:"nodeMesh"`
	// NodeMeshPasswordSecretRef, when set, protects every session between
	// nodes (mesh and route reflectors) with TCP MD5: the key of a Secret of
	// kube-system (the agent may read only weft-bgp-passwords). Every node
	// must have it: a node without it cannot peer with one that has it.
	NodeMeshPasswordSecretRef *SecretKeyRef `json:"nodeMeshPasswordSecretRef,omitempty"`
	// Peers are routers outside the cluster.
	Peers []BGPPeer `json:"peers,omitempty"`
	// RouteReflectors: nodes matching NodeSelector reflect routes for the
	// others; the others then peer only with them.
	RouteReflectors RouteReflectors `json:"routeReflectors"`
	// AdvertiseServices announces Service load-balancer ingress IPs and
	// external IPs as host routes from every node.
	AdvertiseServices bool `json:"advertiseServices"`
	// ExternalRanges are prefixes accepted from peers besides node pod CIDRs
	// (a load-balancer range, say); anything inside them is accepted.
	ExternalRanges  []netip.Prefix     `json:"externalRanges,omitempty"`
	GracefulRestart BGPGracefulRestart `json:"gracefulRestart"`
}

// BGPPeer is a router outside the cluster that (some) nodes peer with.
type BGPPeer struct {
	Address netip.Addr `json:"address"`
	// ASN is the peer's AS number; 0 means the node's own (iBGP).
	ASN  uint32 `json:"asn,omitempty"`
	Port uint16 `json:"port"`
	// PasswordSecretRef names the TCP MD5 password's key in a Secret of
	// kube-system (the agent may read only weft-bgp-passwords).
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	// EBGPMultihop > 0 allows an eBGP peer this many hops away (TTL).
	EBGPMultihop uint8 `json:"ebgpMultihop,omitempty"`
	// Timers; zero means the speaker's default (90s hold, hold/3
	// keepalive, 5s connect retry).
	HoldTime         time.Duration `json:"holdTime,omitempty"`
	KeepaliveTime    time.Duration `json:"keepaliveTime,omitempty"`
	ConnectRetryTime time.Duration `json:"connectRetryTime,omitempty"`
	// NodeSelector picks the nodes that peer with this router by their
	// labels (all must match); empty: every node.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// MaxPrefixes caps the prefixes accepted from this peer (0: no cap).
	MaxPrefixes uint32 `json:"maxPrefixes,omitempty"`
}

// SecretKeyRef is one key of a Secret in kube-system.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func (r SecretKeyRef) String() string { return r.Name + "/" + r.Key }

// RouteReflectors selects the nodes that act as route reflectors.
type RouteReflectors struct {
	// NodeSelector matches the reflector nodes' labels, e.g.
	// {weft.dev/route-reflector: "true"}; empty: no reflectors (full mesh).
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// ClusterID (IPv4) is the reflectors' cluster identifier; invalid: each
	// reflector uses its own router ID.
	ClusterID netip.Addr `json:"clusterID,omitzero"`
}

// BGPGracefulRestart configures RFC 4724 graceful restart.
type BGPGracefulRestart struct {
	Enabled bool `json:"enabled"`
	// RestartTime is how long peers keep a restarting node's routes.
	RestartTime time.Duration `json:"restartTime"`
}

func defaultBGP() BGPConfig {
	return BGPConfig{
		ASN:             DefaultBGPASN,
		ListenPort:      DefaultBGPPort,
		NodeMesh:        true,
		GracefulRestart: BGPGracefulRestart{Enabled: true, RestartTime: DefaultBGPRestartTime},
	}
}

// rawBGP mirrors the bgp section with every field optional.
type rawBGP struct {
	ASN              *int64           `json:"asn"`
	ListenPort       *int64           `json:"listenPort"`
	NodeMesh         *bool            `json:"nodeMesh"`
	NodeMeshPassword *rawSecretKeyRef `json:"nodeMeshPasswordSecretRef"`
	Peers            []rawPeer        `json:"peers"`
	RouteReflectors  *struct {
		NodeSelector map[string]string `json:"nodeSelector"`
		ClusterID    *string           `json:"clusterID"`
	} `json:"routeReflectors"`
	AdvertiseServices *bool    `json:"advertiseServices"`
	ExternalRanges    []string `json:"externalRanges"`
	GracefulRestart   *struct {
		Enabled     *bool   `json:"enabled"`
		RestartTime *string `json:"restartTime"`
	} `json:"gracefulRestart"`
}

type rawSecretKeyRef struct {
	Name *string `json:"name"`
	Key  *string `json:"key"`
}

// validate returns the reference with the default Secret name filled in.
func (ref *rawSecretKeyRef) validate(field string) (*SecretKeyRef, error) {
	r := SecretKeyRef{Name: DefaultBGPPasswordName}
	if ref.Name != nil && *ref.Name != "" {
		r.Name = *ref.Name
	}
	if ref.Key != nil {
		r.Key = *ref.Key
	}
	if r.Key == "" {
		return nil, &FieldError{Field: field + ".key", Value: "", Reason: "missing; want the key holding the password"}
	}
	return &r, nil
}

type rawPeer struct {
	Address           *string           `json:"address"`
	ASN               *int64            `json:"asn"`
	Port              *int64            `json:"port"`
	PasswordSecretRef *rawSecretKeyRef  `json:"passwordSecretRef"`
	EBGPMultihop      *int64            `json:"ebgpMultihop"`
	HoldTime          *string           `json:"holdTime"`
	KeepaliveTime     *string           `json:"keepaliveTime"`
	ConnectRetryTime  *string           `json:"connectRetryTime"`
	NodeSelector      map[string]string `json:"nodeSelector"`
	MaxPrefixes       *int64            `json:"maxPrefixes"`
}

// CheckASN reports why n cannot be an AS number ("" when it can): out of
// range, or reserved (0, AS_TRANS 23456, 65535, 4294967295).
func CheckASN(n int64) string {
	switch {
	case n < 1 || n > 1<<32-1:
		return "out of range 1..4294967294"
	case n == 23456 || n == 65535 || n == 1<<32-1:
		return "reserved AS number"
	}
	return ""
}

func (r *rawBGP) validate() (BGPConfig, error) {
	b := defaultBGP()
	if r == nil {
		return b, nil
	}
	if r.ASN != nil {
		if why := CheckASN(*r.ASN); why != "" {
			return b, &FieldError{Field: "bgp.asn", Value: fmt.Sprint(*r.ASN), Reason: why}
		}
		b.ASN = uint32(*r.ASN)
	}
	if r.ListenPort != nil {
		if *r.ListenPort < 1 || *r.ListenPort > 65535 {
			return b, &FieldError{Field: "bgp.listenPort", Value: fmt.Sprint(*r.ListenPort), Reason: "out of range 1..65535"}
		}
		b.ListenPort = uint16(*r.ListenPort)
	}
	if r.NodeMesh != nil {
		b.NodeMesh = *r.NodeMesh
	}
	if r.NodeMeshPassword != nil {
		ref, err := r.NodeMeshPassword.validate("bgp.nodeMeshPasswordSecretRef")
		if err != nil {
			return b, err
		}
		b.NodeMeshPasswordSecretRef = ref
	}
	seen := map[netip.Addr]int{}
	for i, rp := range r.Peers {
		p, err := rp.validate(fmt.Sprintf("bgp.peers[%d]", i))
		if err != nil {
			return b, err
		}
		if j, dup := seen[p.Address]; dup {
			return b, &FieldError{Field: fmt.Sprintf("bgp.peers[%d].address", i), Value: p.Address.String(),
				Reason: fmt.Sprintf("same address as bgp.peers[%d]", j)}
		}
		seen[p.Address] = i
		b.Peers = append(b.Peers, p)
	}
	if rr := r.RouteReflectors; rr != nil {
		if err := checkSelector("bgp.routeReflectors.nodeSelector", rr.NodeSelector); err != nil {
			return b, err
		}
		if len(rr.NodeSelector) > 0 {
			b.RouteReflectors.NodeSelector = maps.Clone(rr.NodeSelector)
		}
		if rr.ClusterID != nil && *rr.ClusterID != "" {
			a, err := netip.ParseAddr(strings.TrimSpace(*rr.ClusterID))
			if err != nil || !a.Is4() {
				return b, &FieldError{Field: "bgp.routeReflectors.clusterID", Value: *rr.ClusterID, Reason: "want an IPv4 address"}
			}
			b.RouteReflectors.ClusterID = a
		}
	}
	if r.AdvertiseServices != nil {
		b.AdvertiseServices = *r.AdvertiseServices
	}
	for i, s := range r.ExternalRanges {
		field := fmt.Sprintf("bgp.externalRanges[%d]", i)
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return b, &FieldError{Field: field, Value: s, Reason: "not a plain IPv4 or IPv6 CIDR prefix"}
		}
		if p.Bits() == 0 {
			return b, &FieldError{Field: field, Value: s, Reason: "a default route is never accepted from peers"}
		}
		b.ExternalRanges = append(b.ExternalRanges, p.Masked())
	}
	if g := r.GracefulRestart; g != nil {
		if g.Enabled != nil {
			b.GracefulRestart.Enabled = *g.Enabled
		}
		if g.RestartTime != nil {
			d, err := parseSeconds(*g.RestartTime)
			if err != nil || d < time.Second || d > maxRestartTime {
				return b, &FieldError{Field: "bgp.gracefulRestart.restartTime", Value: *g.RestartTime,
					Reason: fmt.Sprintf("want whole seconds between 1s and %s", maxRestartTime)}
			}
			b.GracefulRestart.RestartTime = d
		}
	}
	return b, nil
}

func (rp rawPeer) validate(field string) (BGPPeer, error) {
	p := BGPPeer{Port: DefaultBGPPort}
	if rp.Address == nil || *rp.Address == "" {
		return p, &FieldError{Field: field + ".address", Value: "", Reason: "missing; want the router's IP address"}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(*rp.Address))
	if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		return p, &FieldError{Field: field + ".address", Value: *rp.Address, Reason: "not a unicast IP address"}
	}
	p.Address = a.Unmap()
	if rp.ASN != nil {
		if why := CheckASN(*rp.ASN); why != "" {
			return p, &FieldError{Field: field + ".asn", Value: fmt.Sprint(*rp.ASN), Reason: why}
		}
		p.ASN = uint32(*rp.ASN)
	}
	if rp.Port != nil {
		if *rp.Port < 1 || *rp.Port > 65535 {
			return p, &FieldError{Field: field + ".port", Value: fmt.Sprint(*rp.Port), Reason: "out of range 1..65535"}
		}
		p.Port = uint16(*rp.Port)
	}
	if ref := rp.PasswordSecretRef; ref != nil {
		r, err := ref.validate(field + ".passwordSecretRef")
		if err != nil {
			return p, err
		}
		p.PasswordSecretRef = r
	}
	if rp.EBGPMultihop != nil {
		if *rp.EBGPMultihop < 0 || *rp.EBGPMultihop > 255 {
			return p, &FieldError{Field: field + ".ebgpMultihop", Value: fmt.Sprint(*rp.EBGPMultihop), Reason: "want a TTL 0..255"}
		}
		p.EBGPMultihop = uint8(*rp.EBGPMultihop)
	}
	timers := []struct {
		name     string
		raw      *string
		dst      *time.Duration
		min, max time.Duration
	}{
		{"holdTime", rp.HoldTime, &p.HoldTime, 3 * time.Second, 65535 * time.Second},
		{"keepaliveTime", rp.KeepaliveTime, &p.KeepaliveTime, time.Second, 65535 * time.Second},
		{"connectRetryTime", rp.ConnectRetryTime, &p.ConnectRetryTime, time.Second, 65535 * time.Second},
	}
	for _, tm := range timers {
		if tm.raw == nil || *tm.raw == "" {
			continue
		}
		d, err := parseSeconds(*tm.raw)
		if err != nil || d < tm.min || d > tm.max {
			return p, &FieldError{Field: field + "." + tm.name, Value: *tm.raw,
				Reason: fmt.Sprintf("want whole seconds between %s and %s", tm.min, tm.max)}
		}
		*tm.dst = d
	}
	if hold := cmp.Or(p.HoldTime, defaultHoldTime); p.KeepaliveTime > hold {
		return p, &FieldError{Field: field + ".keepaliveTime", Value: p.KeepaliveTime.String(),
			Reason: fmt.Sprintf("longer than holdTime %s", hold)}
	}
	if err := checkSelector(field+".nodeSelector", rp.NodeSelector); err != nil {
		return p, err
	}
	if len(rp.NodeSelector) > 0 {
		p.NodeSelector = maps.Clone(rp.NodeSelector)
	}
	if rp.MaxPrefixes != nil {
		if *rp.MaxPrefixes < 0 || *rp.MaxPrefixes > 1<<32-1 {
			return p, &FieldError{Field: field + ".maxPrefixes", Value: fmt.Sprint(*rp.MaxPrefixes), Reason: "want 0 (no limit) .. 4294967295"}
		}
		p.MaxPrefixes = uint32(*rp.MaxPrefixes)
	}
	return p, nil
}

// parseSeconds parses a duration that must be whole seconds.
func parseSeconds(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	if d%time.Second != 0 {
		return 0, fmt.Errorf("%s: not whole seconds", d)
	}
	return d, nil
}

// checkSelector checks that every key and value is a valid label key/value.
func checkSelector(field string, sel map[string]string) error {
	if _, err := labels.ValidatedSelectorFromSet(sel); err != nil {
		keys := slices.Sorted(maps.Keys(sel))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + sel[k]
		}
		return &FieldError{Field: field, Value: strings.Join(parts, ","), Reason: "invalid label selector: " + err.Error()}
	}
	return nil
}

// marshal renders b as the bgp section Parse reads.
func (b BGPConfig) marshal() map[string]any {
	m := map[string]any{
		"asn":               b.ASN,
		"listenPort":        b.ListenPort,
		"nodeMesh":          b.NodeMesh,
		"advertiseServices": b.AdvertiseServices,
		"gracefulRestart": map[string]any{
			"enabled": b.GracefulRestart.Enabled, "restartTime": b.GracefulRestart.RestartTime.String(),
		},
	}
	if r := b.NodeMeshPasswordSecretRef; r != nil {
		m["nodeMeshPasswordSecretRef"] = map[string]any{"name": r.Name, "key": r.Key}
	}
	rr := map[string]any{}
	if len(b.RouteReflectors.NodeSelector) > 0 {
		rr["nodeSelector"] = b.RouteReflectors.NodeSelector
	}
	if b.RouteReflectors.ClusterID.IsValid() {
		rr["clusterID"] = b.RouteReflectors.ClusterID.String()
	}
	m["routeReflectors"] = rr
	ranges := make([]string, len(b.ExternalRanges))
	for i, p := range b.ExternalRanges {
		ranges[i] = p.String()
	}
	m["externalRanges"] = ranges
	peers := make([]map[string]any, len(b.Peers))
	for i, p := range b.Peers {
		pm := map[string]any{"address": p.Address.String(), "port": p.Port}
		if p.ASN != 0 {
			pm["asn"] = p.ASN
		}
		if p.PasswordSecretRef != nil {
			pm["passwordSecretRef"] = map[string]any{"name": p.PasswordSecretRef.Name, "key": p.PasswordSecretRef.Key}
		}
		if p.EBGPMultihop != 0 {
			pm["ebgpMultihop"] = p.EBGPMultihop
		}
		for k, d := range map[string]time.Duration{"holdTime": p.HoldTime, "keepaliveTime": p.KeepaliveTime, "connectRetryTime": p.ConnectRetryTime} {
			if d != 0 {
				pm[k] = d.String()
			}
		}
		if len(p.NodeSelector) > 0 {
			pm["nodeSelector"] = p.NodeSelector
		}
		if p.MaxPrefixes != 0 {
			pm["maxPrefixes"] = p.MaxPrefixes
		}
		peers[i] = pm
	}
	m["peers"] = peers
	return m
}
