package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// The kernel-only paths are the datapath benchmark's second reference: in
// the same node namespaces, over the same underlay, pods and routes made by
// hand with `ip`, without the weft CNI binary or overlay package. One has
// weft's shape (pod veth → node bridge → route, over a VXLAN device in
// vxlan mode); one has no bridge (the pod veth's node end routed directly,
// a /32 per pod). They tell what the kernel itself charges for each shape
// on this machine, so that the weft path can be read against the floor of
// its design and against the next cheaper design.

// kernelShape is one hand-built pod shape.
type kernelShape struct {
	kind   string // path kind in the report
	bridge bool
	octet  byte // pod CIDRs 10.octet.N.0/24
}

var kernelShapes = []kernelShape{
	{kind: "kernel only, bridge (weft's shape)", bridge: true, octet: 210},
	{kind: "kernel only, no bridge", bridge: false, octet: 220},
}

const (
	kernVXLAN    = "kref.vxlan" // the kernel-only paths' own VXLAN device
	kernVNI      = "2"
	kernVXLANUDP = "4790"
)

// ipIn runs ip (or, with a leading "bridge" or "sysctl", that command) in
// ns.
func ipIn(ctx context.Context, ns string, argv ...string) error {
	cmd := "ip"
	if argv[0] == "bridge" || argv[0] == "sysctl" {
		cmd, argv = argv[0], argv[1:]
	}
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, cmd}, argv...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s in %s: %v: %s", cmd, strings.Join(argv, " "), ns, err, out)
	}
	return nil
}

// kernelPaths builds the kernel-only shapes on t (IPv4) and returns their
// paths, client on node 0's pod, server on node 1's.
func (e *dpEnv) kernelPaths(ctx context.Context, t *dpTopo, idx int) ([]dpPath, error) {
	mtu := fmt.Sprint(t.podMTU)
	// In vxlan mode the shapes share one VXLAN device per node, on a VNI
	// and port of their own; the peer's pod CIDRs are routed onlink via its
	// device address (10.230+idx.0.N), as weft routes them via its VTEP.
	vtep := func(i int) string { return fmt.Sprintf("10.%d.0.%d", 230+idx, i+1) }
	vmac := func(i int) string { return fmt.Sprintf("0a:57:ef:%02x:01:%02x", idx, i+1) }
	for _, n := range t.nodes {
		if err := ipIn(ctx, n.name, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
			return nil, err
		}
	}
	if t.mode == "vxlan" {
		for i, n := range t.nodes {
			for _, argv := range [][]string{
				{"link", "add", kernVXLAN, "type", "vxlan", "id", kernVNI, "dstport", kernVXLANUDP, "local", n.ip.String(), "nolearning", "dev", "eth0"},
				{"link", "set", kernVXLAN, "address", vmac(i), "mtu", mtu, "up"},
				{"addr", "add", vtep(i) + "/32", "dev", kernVXLAN},
			} {
				if err := ipIn(ctx, n.name, argv...); err != nil {
					return nil, err
				}
			}
		}
	}
	var paths []dpPath
	for _, s := range kernelShapes {
		var podIPs [2]netip.Addr
		for i, n := range t.nodes {
			cidr := fmt.Sprintf("10.%d.%d", s.octet+byte(idx), i+1)
			podIPs[i] = netip.MustParseAddr(cidr + ".2")
			pod, err := e.mkns("dpk")
			if err != nil {
				return nil, err
			}
			if err := kernelPod(ctx, n.name, pod, s, cidr, mtu); err != nil {
				return nil, err
			}
			peer := t.nodes[1-i]
			peerCIDR := fmt.Sprintf("10.%d.%d.0/24", s.octet+byte(idx), 2-i)
			route := []string{"route", "add", peerCIDR, "via", peer.ip.String()}
			if t.mode == "vxlan" {
				route = []string{"route", "add", peerCIDR, "via", vtep(1 - i), "dev", kernVXLAN, "onlink"}
			}
			if err := ipIn(ctx, n.name, route...); err != nil {
				return nil, err
			}
			if i == 0 {
				paths = append(paths, dpPath{topo: t, kind: s.kind, src: pod})
			} else {
				paths[len(paths)-1].srv = pod
			}
		}
		paths[len(paths)-1].dst = podIPs[1]
	}
	if t.mode == "vxlan" {
		for i, n := range t.nodes {
			p := 1 - i
			for _, argv := range [][]string{
				{"neigh", "add", vtep(p), "lladdr", vmac(p), "dev", kernVXLAN, "nud", "permanent"},
				{"bridge", "fdb", "add", vmac(p), "dev", kernVXLAN, "dst", t.nodes[p].ip.String(), "self", "permanent"},
			} {
				if err := ipIn(ctx, n.name, argv...); err != nil {
					return nil, err
				}
			}
		}
	}
	return paths, nil
}

// kernelPod attaches pod to node in shape s: address cidr.2, gateway cidr.1
// on a bridge of the shape's own, or, without a bridge, a /32 routed to the
// veth's node end and a link-local gateway resolved to that end's MAC.
func kernelPod(ctx context.Context, node, pod string, s kernelShape, cidr, mtu string) error {
	host := fmt.Sprintf("kref%d", s.octet)
	steps := [][]string{
		{"link", "add", host, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", pod},
	}
	podSteps := [][]string{{"link", "set", "eth0", "up"}}
	if s.bridge {
		br := host + "br"
		steps = append(steps,
			[]string{"link", "add", br, "mtu", mtu, "type", "bridge"},
			[]string{"addr", "add", cidr + ".1/24", "dev", br},
			[]string{"link", "set", br, "up"},
			[]string{"link", "set", host, "master", br, "up"})
		podSteps = append(podSteps,
			[]string{"addr", "add", cidr + ".2/24", "dev", "eth0"},
			[]string{"route", "add", "default", "via", cidr + ".1"})
	} else {
		steps = append(steps,
			[]string{"link", "set", host, "up"},
			[]string{"route", "add", cidr + ".2/32", "dev", host})
	}
	for _, argv := range steps {
		if err := ipIn(ctx, node, argv...); err != nil {
			return err
		}
	}
	if !s.bridge {
		mac, err := exec.CommandContext(ctx, "ip", "netns", "exec", node, "cat", "/sys/class/net/"+host+"/address").Output()
		if err != nil {
			return fmt.Errorf("MAC of %s in %s: %w", host, node, err)
		}
		podSteps = append(podSteps,
			[]string{"addr", "add", cidr + ".2/32", "dev", "eth0"},
			[]string{"route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
			[]string{"route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
			[]string{"neigh", "add", "169.254.1.1", "lladdr", strings.TrimSpace(string(mac)), "dev", "eth0", "nud", "permanent"})
	}
	for _, argv := range podSteps {
		if err := ipIn(ctx, pod, argv...); err != nil {
			return err
		}
	}
	return nil
}
