// Package config parses and validates weft's cluster-wide configuration: the
// YAML document under the key "config.yaml" of the ConfigMap
// kube-system/weft-config.
//
// Parse never panics; every error names the offending field and its value, so
// the agent can keep its last good configuration and report exactly what is
// wrong. A parsed Config is canonical: prefixes are masked, defaults filled.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	yamlv3 "go.yaml.in/yaml/v3"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Key is the ConfigMap data key holding the YAML document.
const Key = "config.yaml"

// Mode names how pods of different nodes reach each other.
type Mode string

const (
	// VXLAN tunnels pod traffic between nodes through a kernel VXLAN device.
	VXLAN Mode = "vxlan"
	// BGP announces each node's pod CIDRs over BGP; learned prefixes become
	// plain kernel routes.
	BGP Mode = "bgp"
)

// Defaults for omitted fields.
const (
	DefaultVNI         = 1
	DefaultVXLANPort   = 4789
	DefaultResync      = 30 * time.Second
	DefaultBlockSizeV4 = 24
	DefaultBlockSizeV6 = 64
	minResync          = time.Second
	maxResync          = time.Hour
	maxVNI             = 1<<24 - 1
	minMTU             = 1280 // IPv6 minimum; also a sane floor for IPv4 pods
	maxMTU             = 65535
)

// Config is weft's validated cluster configuration.
type Config struct {
	// Mode is vxlan or bgp.
	Mode Mode `json:"mode"`
	// ClusterCIDRs are the pod networks of the whole cluster, at most one per
	// family. Traffic from pods to them is not masqueraded, and when the
	// controller-manager allocates no pod CIDR to a node, the agent leases a
	// block from them.
	ClusterCIDRs []netip.Prefix `json:"clusterCIDRs"`
	// BlockSizeV4 / BlockSizeV6 are the prefix lengths of the blocks the
	// agent leases per node (only used when it leases).
	BlockSizeV4 int `json:"blockSizeV4,omitempty"`
	BlockSizeV6 int `json:"blockSizeV6,omitempty"`
	// Masquerade source-NATs pod traffic leaving the cluster CIDRs.
	Masquerade bool `json:"masquerade"`
	// MTU of pod interfaces; 0 derives it from the underlay (minus the
	// tunnel overhead in vxlan mode).
	MTU int `json:"mtu,omitempty"`
	// Resync is the period of the full drift-repairing reconcile.
	Resync time.Duration `json:"resync"`
	VXLAN  VXLANConfig   `json:"vxlan"`
	BGP    BGPConfig     `json:"bgp"`
}

// VXLANConfig configures vxlan mode.
type VXLANConfig struct {
	VNI  uint32 `json:"vni"`
	Port uint16 `json:"port"`
	// DirectRouting routes to peers on the same L2 subnet via their node
	// address instead of the tunnel.
	DirectRouting bool `json:"directRouting"`
}

// FieldError is a bad value in the configuration.
type FieldError struct {
	Field  string // dotted path, e.g. "vxlan.vni"
	Value  string // the offending value as written
	Reason string
}

// Error names the field and its value. Field, value and reason are clipped
// (see clip): a value is echoed into logs, Events and /status, so a huge
// value must not make a huge error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("config field %s=%q: %s", clip(e.Field, maxFieldEcho), clip(e.Value, maxValueEcho), clip(e.Reason, maxReasonEcho))
}

// Bounds on what an error echoes, in bytes.
const (
	maxValueEcho  = 64
	maxFieldEcho  = 128
	maxReasonEcho = 256
)

// clip shortens s to at most n bytes (cut at a rune boundary) and says how
// long it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

// parseError is a document that does not decode; its text is clipped, as
// the decoders quote keys and content of any size.
func parseError(format string, args ...any) error {
	return fmt.Errorf("parse %s: %s", Key, clip(fmt.Sprintf(format, args...), maxReasonEcho))
}

// raw mirrors the YAML document with every field optional and loosely typed,
// so errors can name the field and value.
type raw struct {
	Mode         *string  `json:"mode"`
	ClusterCIDRs []string `json:"clusterCIDRs"`
	BlockSizeV4  *int     `json:"blockSizeV4"`
	BlockSizeV6  *int     `json:"blockSizeV6"`
	Masquerade   *bool    `json:"masquerade"`
	MTU          *int     `json:"mtu"`
	Resync       *string  `json:"resync"`
	VXLAN        *struct {
		VNI           *int64 `json:"vni"`
		Port          *int64 `json:"port"`
		DirectRouting *bool  `json:"directRouting"`
	} `json:"vxlan"`
	BGP *rawBGP `json:"bgp"`
}

// Parse reads and validates a YAML (or JSON) configuration document.
// Decoding is strict, so a typo never silently falls back to a default: one
// document only (no second document, no trailing content), and unknown,
// duplicate and case-variant keys ("Mode:") are errors naming the key.
func Parse(doc []byte) (Config, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return Config{}, &FieldError{Field: Key, Value: "", Reason: "empty configuration"}
	}
	if err := oneDocument(doc); err != nil {
		return Config{}, err
	}
	js, err := yaml.YAMLToJSONStrict(doc) // refuses duplicate keys
	if err != nil {
		return Config{}, parseError("%v", err)
	}
	var r raw
	// Case-sensitive (encoding/json would match "Mode" to mode), refusing
	// unknown and duplicate keys.
	strict, err := kjson.UnmarshalStrict(js, &r, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return Config{}, parseError("%v", err)
	}
	if len(strict) > 0 {
		return Config{}, parseError("%v", errors.Join(strict...))
	}
	return r.validate()
}

// oneDocument refuses a second YAML document and content after the first.
func oneDocument(doc []byte) error {
	dec := yamlv3.NewDecoder(bytes.NewReader(doc))
	var first, next yamlv3.Node
	if err := dec.Decode(&first); err != nil {
		return parseError("%v", err)
	}
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return parseError("content after the document: %v", err)
	default:
		return parseError("a second YAML document at line %d: want exactly one", next.Line)
	}
}

func (r *raw) validate() (Config, error) {
	c := Config{
		Masquerade:  true,
		Resync:      DefaultResync,
		BlockSizeV4: DefaultBlockSizeV4,
		BlockSizeV6: DefaultBlockSizeV6,
		VXLAN:       VXLANConfig{VNI: DefaultVNI, Port: DefaultVXLANPort},
	}
	if r.Mode == nil || *r.Mode == "" {
		return Config{}, &FieldError{Field: "mode", Value: "", Reason: "missing; want vxlan or bgp"}
	}
	switch m := Mode(strings.ToLower(*r.Mode)); m {
	case VXLAN, BGP:
		c.Mode = m
	default:
		return Config{}, &FieldError{Field: "mode", Value: *r.Mode, Reason: "unknown mode; want vxlan or bgp"}
	}
	if len(r.ClusterCIDRs) == 0 {
		return Config{}, &FieldError{Field: "clusterCIDRs", Value: "", Reason: "missing; want one prefix per family"}
	}
	seen := map[bool]bool{}
	for i, s := range r.ClusterCIDRs {
		field := fmt.Sprintf("clusterCIDRs[%d]", i)
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return Config{}, &FieldError{Field: field, Value: s, Reason: "not a CIDR prefix"}
		}
		if p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return Config{}, &FieldError{Field: field, Value: s, Reason: "want a plain IPv4 or IPv6 prefix"}
		}
		if p.Bits() == 0 {
			return Config{}, &FieldError{Field: field, Value: s, Reason: "a /0 prefix would make every address a pod address"}
		}
		if seen[p.Addr().Is4()] {
			return Config{}, &FieldError{Field: field, Value: s, Reason: "more than one prefix of the same family"}
		}
		seen[p.Addr().Is4()] = true
		c.ClusterCIDRs = append(c.ClusterCIDRs, p.Masked())
	}
	if r.BlockSizeV4 != nil {
		c.BlockSizeV4 = *r.BlockSizeV4
	}
	if r.BlockSizeV6 != nil {
		c.BlockSizeV6 = *r.BlockSizeV6
	}
	for _, p := range c.ClusterCIDRs {
		field, size, maxBits := "blockSizeV6", c.BlockSizeV6, 126
		if p.Addr().Is4() {
			field, size, maxBits = "blockSizeV4", c.BlockSizeV4, 30
		}
		if size < p.Bits() || size > maxBits {
			return Config{}, &FieldError{Field: field, Value: fmt.Sprint(size),
				Reason: fmt.Sprintf("want a prefix length between %d (cluster CIDR %s) and %d", p.Bits(), p, maxBits)}
		}
	}
	if r.Masquerade != nil {
		c.Masquerade = *r.Masquerade
	}
	if r.MTU != nil {
		if *r.MTU != 0 && (*r.MTU < minMTU || *r.MTU > maxMTU) {
			return Config{}, &FieldError{Field: "mtu", Value: fmt.Sprint(*r.MTU),
				Reason: fmt.Sprintf("want 0 (auto) or %d..%d", minMTU, maxMTU)}
		}
		c.MTU = *r.MTU
	}
	if r.Resync != nil {
		d, err := time.ParseDuration(*r.Resync)
		if err != nil || d < minResync || d > maxResync {
			return Config{}, &FieldError{Field: "resync", Value: *r.Resync,
				Reason: fmt.Sprintf("want a duration between %s and %s, e.g. 30s", minResync, maxResync)}
		}
		c.Resync = d
	}
	if v := r.VXLAN; v != nil {
		if v.VNI != nil {
			if *v.VNI < 1 || *v.VNI > maxVNI {
				return Config{}, &FieldError{Field: "vxlan.vni", Value: fmt.Sprint(*v.VNI),
					Reason: fmt.Sprintf("out of range 1..%d", maxVNI)}
			}
			c.VXLAN.VNI = uint32(*v.VNI)
		}
		if v.Port != nil {
			if *v.Port < 1 || *v.Port > 65535 {
				return Config{}, &FieldError{Field: "vxlan.port", Value: fmt.Sprint(*v.Port), Reason: "out of range 1..65535"}
			}
			c.VXLAN.Port = uint16(*v.Port)
		}
		if v.DirectRouting != nil {
			c.VXLAN.DirectRouting = *v.DirectRouting
		}
	}
	bgp, err := r.BGP.validate() // see bgp.go
	if err != nil {
		return Config{}, err
	}
	c.BGP = bgp
	// A prefix in an external range is accepted from any peer; inside the
	// cluster CIDRs only a node may announce its own pod CIDR.
	for i, e := range c.BGP.ExternalRanges {
		for _, cl := range c.ClusterCIDRs {
			if e.Overlaps(cl) {
				return Config{}, &FieldError{Field: fmt.Sprintf("bgp.externalRanges[%d]", i), Value: e.String(),
					Reason: fmt.Sprintf("overlaps cluster CIDR %s (pod CIDRs are accepted only from their own nodes)", cl)}
			}
		}
	}
	return c, nil
}

// Marshal renders c as the YAML document Parse reads (Parse(Marshal(c)) == c).
func (c Config) Marshal() ([]byte, error) {
	cidrs := make([]string, len(c.ClusterCIDRs))
	for i, p := range c.ClusterCIDRs {
		cidrs[i] = p.String()
	}
	m := map[string]any{
		"mode":         string(c.Mode),
		"clusterCIDRs": cidrs,
		"blockSizeV4":  c.BlockSizeV4,
		"blockSizeV6":  c.BlockSizeV6,
		"masquerade":   c.Masquerade,
		"mtu":          c.MTU,
		"resync":       c.Resync.String(),
		"vxlan": map[string]any{
			"vni": c.VXLAN.VNI, "port": c.VXLAN.Port, "directRouting": c.VXLAN.DirectRouting,
		},
	}
	m["bgp"] = c.BGP.marshal()
	return yaml.Marshal(m)
}

// ClusterCIDR returns the cluster CIDR of the family of a (is4), if any.
func (c Config) ClusterCIDR(is4 bool) (netip.Prefix, bool) {
	for _, p := range c.ClusterCIDRs {
		if p.Addr().Is4() == is4 {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// BlockSize returns the lease block prefix length for the family of p.
func (c Config) BlockSize(p netip.Prefix) int {
	if p.Addr().Is4() {
		return c.BlockSizeV4
	}
	return c.BlockSizeV6
}

// CheckPodCIDRs reports a pod CIDR that lies outside every cluster CIDR of
// its family (or has no cluster CIDR of its family).
func (c Config) CheckPodCIDRs(field string, pods []netip.Prefix) error {
	for _, p := range pods {
		cl, ok := c.ClusterCIDR(p.Addr().Is4())
		if !ok || cl.Bits() > p.Bits() || !cl.Contains(p.Addr()) {
			return &FieldError{Field: field, Value: p.String(),
				Reason: fmt.Sprintf("pod CIDR outside the cluster CIDRs %v", c.ClusterCIDRs)}
		}
	}
	return nil
}

// IsFieldError reports whether err is (or wraps) a FieldError.
func IsFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}
