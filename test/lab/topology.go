package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Kind is what a topology node is.
type Kind string

// The node kinds the lab knows.
const (
	KindWeft         Kind = "weft"          // a Kubernetes node that runs weft-agent
	KindLinux        Kind = "linux"         // a plain host
	KindBridge       Kind = "bridge"        // an L2 switch: a Linux bridge its links join
	KindFRR          Kind = "frr"           // FRR's zebra + bgpd with the node's startup-config
	KindBIRD         Kind = "bird"          // BIRD 2 with the node's startup-config
	KindControlPlane Kind = "control-plane" // etcd + kube-apiserver + kube-controller-manager
)

// Topology is a parsed and checked topology file.
type Topology struct {
	Name    string
	Dir     string // directory of the file; startup-configs are relative to it
	Cluster Cluster
	Nodes   []Node // sorted by name
	Links   []Link
}

// Cluster holds the Kubernetes settings of the lab.
type Cluster struct {
	Mode              string // "vxlan" or "bgp", written into the weft ConfigMap
	ClusterCIDRs      []netip.Prefix
	ServiceCIDRs      []netip.Prefix
	NodeMaskV4        int
	NodeMaskV6        int
	AllocateNodeCIDRs bool
}

// Node is one topology node.
type Node struct {
	Name          string
	Kind          Kind
	StartupConfig string            // absolute path (frr, bird)
	Labels        map[string]string // Kubernetes node labels (weft)
	Addrs         map[string][]netip.Prefix
	Routes        []Route
	Forward       bool // IPv4/IPv6 forwarding on inside the node
}

// Route is a static route inside a node.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
	Dev string
}

// Endpoint is one end of a link.
type Endpoint struct {
	Node  string
	Iface string
}

func (e Endpoint) String() string { return e.Node + ":" + e.Iface }

// Link joins two endpoints with a veth pair.
type Link struct {
	A, B Endpoint
}

// Node returns the named node.
func (t *Topology) Node(name string) (Node, bool) {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// NodesOf returns the nodes of one kind, sorted by name.
func (t *Topology) NodesOf(k Kind) []Node {
	var out []Node
	for _, n := range t.Nodes {
		if n.Kind == k {
			out = append(out, n)
		}
	}
	return out
}

// Ifaces returns the interface names a node has links on, sorted.
func (t *Topology) Ifaces(node string) []string {
	var out []string
	for _, l := range t.Links {
		for _, e := range []Endpoint{l.A, l.B} {
			if e.Node == node {
				out = append(out, e.Iface)
			}
		}
	}
	sort.Strings(out)
	return out
}

// NodeAddrs returns every address of a node (interfaces by name, addresses
// in file order), without prefix length.
func (n Node) NodeAddrs() []netip.Addr {
	ifaces := make([]string, 0, len(n.Addrs))
	for i := range n.Addrs {
		ifaces = append(ifaces, i)
	}
	sort.Strings(ifaces)
	var out []netip.Addr
	for _, i := range ifaces {
		for _, p := range n.Addrs[i] {
			out = append(out, p.Addr())
		}
	}
	return out
}

// The file's shape. Fields outside it are an error, except the containerlab
// fields listed as ignored, so a typo in a weft field never goes unnoticed.
type fileTopology struct {
	Name     string          `json:"name"`
	Prefix   *string         `json:"prefix,omitempty"` // containerlab, ignored
	Mgmt     any             `json:"mgmt,omitempty"`   // containerlab, ignored
	Weft     *fileCluster    `json:"weft,omitempty"`
	Topology fileTopologyDef `json:"topology"`
}

type fileTopologyDef struct {
	Nodes map[string]fileNode `json:"nodes"`
	Links []fileLink          `json:"links"`
}

type fileCluster struct {
	Mode              string   `json:"mode"`
	ClusterCIDRs      []string `json:"clusterCIDRs"`
	ServiceCIDRs      []string `json:"serviceCIDRs"`
	NodeMaskV4        int      `json:"nodeMaskV4"`
	NodeMaskV6        int      `json:"nodeMaskV6"`
	AllocateNodeCIDRs *bool    `json:"allocateNodeCIDRs"`
}

type fileNode struct {
	Kind          string            `json:"kind"`
	StartupConfig string            `json:"startup-config"`
	Labels        map[string]string `json:"labels"`
	Weft          *fileNodeWeft     `json:"weft"`
	// containerlab fields accepted and ignored by the lab.
	Image    string   `json:"image"`
	Binds    []string `json:"binds"`
	Env      any      `json:"env"`
	Group    string   `json:"group"`
	MgmtIPv4 string   `json:"mgmt-ipv4"`
	MgmtIPv6 string   `json:"mgmt-ipv6"`
}

type fileNodeWeft struct {
	Addrs   map[string][]string `json:"addrs"`
	Routes  []fileRoute         `json:"routes"`
	Forward *bool               `json:"forward"`
}

type fileRoute struct {
	Dst string `json:"dst"`
	Via string `json:"via"`
	Dev string `json:"dev"`
}

type fileLink struct {
	Endpoints []string `json:"endpoints"`
}

var (
	labNameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	nodeNameRE = labNameRE
	ifaceRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]*$`)
)

// MaxLabName and MaxNodeName bound names so the namespace, FRR pathspace and
// socket paths built from them stay short.
const (
	MaxLabName  = 16
	MaxNodeName = 20
)

// CheckLabName reports whether name can name a lab.
func CheckLabName(name string) error {
	if len(name) > MaxLabName || !labNameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1-%d of [a-z0-9-], starting and ending alphanumeric", name, MaxLabName)
	}
	return nil
}

// Load reads and checks a topology file.
func Load(path string) (*Topology, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("topology path %s: %w", path, err)
	}
	t, err := Parse(data, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", path, err)
	}
	for _, n := range t.Nodes {
		if n.StartupConfig == "" {
			continue
		}
		if _, err := os.Stat(n.StartupConfig); err != nil {
			return nil, fmt.Errorf("topology %s: node %q: startup-config: %w", path, n.Name, err)
		}
	}
	return t, nil
}

// Parse checks a topology; dir resolves relative startup-config paths.
func Parse(data []byte, dir string) (*Topology, error) {
	var f fileTopology
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if err := CheckLabName(f.Name); err != nil {
		return nil, fmt.Errorf("name: %w", err)
	}
	t := &Topology{Name: f.Name, Dir: dir}
	c, err := parseCluster(f.Weft)
	if err != nil {
		return nil, err
	}
	t.Cluster = c

	if len(f.Topology.Nodes) == 0 {
		return nil, fmt.Errorf("topology.nodes: empty")
	}
	for name, fn := range f.Topology.Nodes {
		n, err := parseNode(name, fn, dir)
		if err != nil {
			return nil, err
		}
		t.Nodes = append(t.Nodes, n)
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })

	used := map[Endpoint]bool{}
	for i, fl := range f.Topology.Links {
		if len(fl.Endpoints) != 2 {
			return nil, fmt.Errorf("topology.links[%d].endpoints: want 2 endpoints, have %d", i, len(fl.Endpoints))
		}
		var ends [2]Endpoint
		for j, s := range fl.Endpoints {
			e, err := parseEndpoint(s)
			if err != nil {
				return nil, fmt.Errorf("topology.links[%d].endpoints[%d]: %w", i, j, err)
			}
			if _, ok := t.Node(e.Node); !ok {
				return nil, fmt.Errorf("topology.links[%d].endpoints[%d] %q: no node %q", i, j, s, e.Node)
			}
			if used[e] {
				return nil, fmt.Errorf("topology.links[%d].endpoints[%d] %q: endpoint used twice", i, j, s)
			}
			used[e] = true
			ends[j] = e
		}
		if ends[0].Node == ends[1].Node {
			return nil, fmt.Errorf("topology.links[%d]: both ends on node %q", i, ends[0].Node)
		}
		t.Links = append(t.Links, Link{A: ends[0], B: ends[1]})
	}

	cps := 0
	for _, n := range t.Nodes {
		if n.Kind == KindControlPlane {
			cps++
			if !firstAddr(n).IsValid() {
				return nil, fmt.Errorf("node %q: a control-plane needs an address (weft.addrs)", n.Name)
			}
		}
		for iface := range n.Addrs {
			if !used[Endpoint{n.Name, iface}] {
				return nil, fmt.Errorf("node %q: weft.addrs.%s: no link on that interface", n.Name, iface)
			}
		}
		for i, r := range n.Routes {
			if r.Dev != "" && !used[Endpoint{n.Name, r.Dev}] {
				return nil, fmt.Errorf("node %q: weft.routes[%d].dev %q: no link on that interface", n.Name, i, r.Dev)
			}
		}
	}
	if cps > 1 {
		return nil, fmt.Errorf("topology.nodes: %d control-plane nodes, want at most 1", cps)
	}
	if cps == 0 && len(t.NodesOf(KindWeft)) > 0 {
		return nil, fmt.Errorf("topology.nodes: weft nodes need a control-plane node")
	}
	return t, nil
}

// ControlPlane returns the control-plane node, if any.
func (t *Topology) ControlPlane() (Node, bool) {
	cps := t.NodesOf(KindControlPlane)
	if len(cps) == 0 {
		return Node{}, false
	}
	return cps[0], true
}

// firstAddr is a node's first IPv4 address, else its first address.
func firstAddr(n Node) netip.Addr {
	addrs := n.NodeAddrs()
	for _, a := range addrs {
		if a.Is4() {
			return a
		}
	}
	if len(addrs) > 0 {
		return addrs[0]
	}
	return netip.Addr{}
}

func parseCluster(f *fileCluster) (Cluster, error) {
	c := Cluster{
		Mode:              "vxlan",
		ClusterCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")},
		ServiceCIDRs:      []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")},
		NodeMaskV4:        24,
		NodeMaskV6:        64,
		AllocateNodeCIDRs: true,
	}
	if f == nil {
		return c, nil
	}
	if f.Mode != "" {
		if f.Mode != "vxlan" && f.Mode != "bgp" {
			return c, fmt.Errorf("weft.mode %q: want vxlan or bgp", f.Mode)
		}
		c.Mode = f.Mode
	}
	var err error
	if f.ClusterCIDRs != nil {
		if c.ClusterCIDRs, err = parseCIDRs("weft.clusterCIDRs", f.ClusterCIDRs); err != nil {
			return c, err
		}
	}
	if f.ServiceCIDRs != nil {
		if c.ServiceCIDRs, err = parseCIDRs("weft.serviceCIDRs", f.ServiceCIDRs); err != nil {
			return c, err
		}
	}
	if f.NodeMaskV4 != 0 {
		c.NodeMaskV4 = f.NodeMaskV4
	}
	if f.NodeMaskV6 != 0 {
		c.NodeMaskV6 = f.NodeMaskV6
	}
	for _, p := range c.ClusterCIDRs {
		mask, field := c.NodeMaskV4, "weft.nodeMaskV4"
		if p.Addr().Is6() {
			mask, field = c.NodeMaskV6, "weft.nodeMaskV6"
		}
		if mask < p.Bits() || mask > p.Addr().BitLen() {
			return c, fmt.Errorf("%s %d: must lie between the cluster CIDR %s's length and %d", field, mask, p, p.Addr().BitLen())
		}
	}
	if f.AllocateNodeCIDRs != nil {
		c.AllocateNodeCIDRs = *f.AllocateNodeCIDRs
	}
	return c, nil
}

// parseCIDRs parses masked prefixes, at most one per family.
func parseCIDRs(field string, in []string) ([]netip.Prefix, error) {
	if len(in) == 0 || len(in) > 2 {
		return nil, fmt.Errorf("%s: want 1 or 2 prefixes (one per family), have %d", field, len(in))
	}
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d] %q: %w", field, i, s, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s[%d] %q: host bits set (want %s)", field, i, s, p.Masked())
		}
		if i == 1 && p.Addr().Is4() == out[0].Addr().Is4() {
			return nil, fmt.Errorf("%s[%d] %q: second prefix of the same family", field, i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

func parseNode(name string, fn fileNode, dir string) (Node, error) {
	if len(name) > MaxNodeName || !nodeNameRE.MatchString(name) {
		return Node{}, fmt.Errorf("topology.nodes %q: want 1-%d of [a-z0-9-], starting and ending alphanumeric", name, MaxNodeName)
	}
	n := Node{Name: name, Kind: Kind(fn.Kind), Labels: fn.Labels, Addrs: map[string][]netip.Prefix{}}
	switch n.Kind {
	case KindWeft, KindLinux, KindBridge, KindControlPlane:
		if fn.StartupConfig != "" {
			return n, fmt.Errorf("node %q: startup-config: only frr and bird nodes take one", name)
		}
	case KindFRR, KindBIRD:
		if fn.StartupConfig == "" {
			return n, fmt.Errorf("node %q: kind %s needs startup-config", name, n.Kind)
		}
		n.StartupConfig = fn.StartupConfig
		if !filepath.IsAbs(n.StartupConfig) {
			n.StartupConfig = filepath.Join(dir, n.StartupConfig)
		}
	default:
		return n, fmt.Errorf("node %q: kind %q: want one of weft, linux, bridge, frr, bird, control-plane", name, fn.Kind)
	}
	n.Forward = n.Kind == KindFRR || n.Kind == KindBIRD || n.Kind == KindWeft
	if fn.Weft == nil {
		return n, nil
	}
	if n.Kind == KindBridge && (len(fn.Weft.Addrs) > 0 || len(fn.Weft.Routes) > 0) {
		return n, fmt.Errorf("node %q: a bridge takes no weft.addrs or weft.routes", name)
	}
	if fn.Weft.Forward != nil {
		n.Forward = *fn.Weft.Forward
	}
	for iface, list := range fn.Weft.Addrs {
		if err := checkIface(iface); err != nil {
			return n, fmt.Errorf("node %q: weft.addrs: %w", name, err)
		}
		for i, s := range list {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return n, fmt.Errorf("node %q: weft.addrs.%s[%d] %q: %w", name, iface, i, s, err)
			}
			if p.Addr().Zone() != "" || p == p.Masked() && p.Bits() < p.Addr().BitLen() {
				return n, fmt.Errorf("node %q: weft.addrs.%s[%d] %q: want a host address with prefix length, like 172.30.1.11/24", name, iface, i, s)
			}
			n.Addrs[iface] = append(n.Addrs[iface], p)
		}
	}
	for i, fr := range fn.Weft.Routes {
		r, err := parseRoute(fr)
		if err != nil {
			return n, fmt.Errorf("node %q: weft.routes[%d]: %w", name, i, err)
		}
		n.Routes = append(n.Routes, r)
	}
	return n, nil
}

func parseRoute(fr fileRoute) (Route, error) {
	var r Route
	if fr.Via == "" && fr.Dev == "" {
		return r, fmt.Errorf("want via, dev or both")
	}
	if fr.Via != "" {
		a, err := netip.ParseAddr(fr.Via)
		if err != nil {
			return r, fmt.Errorf("via %q: %w", fr.Via, err)
		}
		r.Via = a
	}
	if fr.Dev != "" {
		if err := checkIface(fr.Dev); err != nil {
			return r, fmt.Errorf("dev: %w", err)
		}
		r.Dev = fr.Dev
	}
	switch {
	case fr.Dst == "default" || fr.Dst == "default6":
		if fr.Dst == "default6" || r.Via.Is6() {
			r.Dst = netip.MustParsePrefix("::/0")
		} else {
			r.Dst = netip.MustParsePrefix("0.0.0.0/0")
		}
	default:
		p, err := netip.ParsePrefix(fr.Dst)
		if err != nil {
			return r, fmt.Errorf("dst %q: %w", fr.Dst, err)
		}
		if p != p.Masked() {
			return r, fmt.Errorf("dst %q: host bits set (want %s)", fr.Dst, p.Masked())
		}
		r.Dst = p
	}
	if r.Via.IsValid() && r.Via.Is4() != r.Dst.Addr().Is4() {
		return r, fmt.Errorf("via %s and dst %s: different families", r.Via, r.Dst)
	}
	return r, nil
}

func parseEndpoint(s string) (Endpoint, error) {
	node, iface, ok := strings.Cut(s, ":")
	if !ok || node == "" {
		return Endpoint{}, fmt.Errorf("%q: want node:iface", s)
	}
	if err := checkIface(iface); err != nil {
		return Endpoint{}, fmt.Errorf("%q: %w", s, err)
	}
	return Endpoint{Node: node, Iface: iface}, nil
}

func checkIface(name string) error {
	if name == "lo" || len(name) > 15 || !ifaceRE.MatchString(name) {
		return fmt.Errorf("interface %q: want 1-15 of [a-zA-Z0-9_-], not lo", name)
	}
	return nil
}
