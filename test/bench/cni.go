package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"

	"weft.dev/weft/cni/cnitest"
	"weft.dev/weft/ipam"
	"weft.dev/weft/test/nstest"
)

// The CNI benchmark drives weft and the reference plugins (Debian's
// containernetworking-plugins: bridge with host-local IPAM) through libcni,
// each inside its own throwaway node namespace, on the same pod namespaces,
// in the same run: sequential ADDs then DELs, concurrent ADDs then DELs,
// and sequential ADD/DEL with 1000 addresses already allocated.
const (
	cniSeq        = 100
	cniConcurrent = 50
	cniFilled     = 1000
	refPluginDir  = "/usr/lib/cni"
)

type cniSubject struct {
	name    string
	node    string // netns name
	dataDir string
	list    *libcni.NetworkConfigList
	cni     *libcni.CNIConfig
	fill    func(ctx context.Context, n int) error
}

type cniSample struct{ add, del []time.Duration }

func runCNI(ctx context.Context, out *strings.Builder) error {
	if _, err := os.Stat(filepath.Join(refPluginDir, "bridge")); err != nil {
		return fmt.Errorf("reference plugins missing (apt-get install containernetworking-plugins): %w", err)
	}
	tmp, err := os.MkdirTemp("", "weft-bench-cni")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	weftDir, err := weftBinary(tmp)
	if err != nil {
		return err
	}
	var netnses []string
	defer func() {
		for _, n := range netnses {
			_ = exec.Command("ip", "netns", "del", n).Run()
		}
	}()
	mkns := func(tag string) (string, error) {
		name := nstest.Unique(tag)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
		}
		netnses = append(netnses, name)
		return name, exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").Run()
	}
	pods := make([]string, cniSeq)
	for i := range pods {
		if pods[i], err = mkns("bpod"); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "## CNI ADD/DEL latency\n\n")
	fmt.Fprintf(out, "Each call through libcni (as a container runtime makes it), plugin process started inside a node network namespace; "+
		"cniVersion 1.0.0, MTU 1500, hairpin on. Reference: `%s/bridge` with `host-local` IPAM (Debian containernetworking-plugins). "+
		"Times in milliseconds: median (p90). Two stacks, each with fresh node namespaces: IPv4 only (pod CIDR /16), and dual-stack "+
		"(plus an IPv6 /64).\n\n", refPluginDir)
	for _, st := range []stack{{"IPv4", false}, {"dual-stack", true}} {
		if err := runCNIStack(ctx, out, tmp, weftDir, mkns, pods, st); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}
	return nil
}

// stack is one address family set the benchmark runs with.
type stack struct {
	name string
	dual bool
}

func runCNIStack(ctx context.Context, out *strings.Builder, tmp, weftDir string, mkns func(string) (string, error), pods []string, st stack) error {
	weft, err := newWeftSubject(tmp, weftDir, mkns, st.dual)
	if err != nil {
		return err
	}
	ref, err := newRefSubject(tmp, mkns, st.dual)
	if err != nil {
		return err
	}
	subjects := []*cniSubject{weft, ref}

	type row struct {
		scenario string
		res      map[string]cniSample
	}
	var rows []row
	scenarios := []struct {
		name string
		fn   func(ctx context.Context, s *cniSubject) (cniSample, error)
	}{
		{fmt.Sprintf("%d sequential", cniSeq), func(ctx context.Context, s *cniSubject) (cniSample, error) {
			return cniSequential(ctx, s, pods, "seq")
		}},
		{fmt.Sprintf("%d concurrent", cniConcurrent), func(ctx context.Context, s *cniSubject) (cniSample, error) {
			return cniParallel(ctx, s, pods[:cniConcurrent], "par")
		}},
		{fmt.Sprintf("%d sequential, %d allocated", cniSeq, cniFilled), func(ctx context.Context, s *cniSubject) (cniSample, error) {
			if err := s.fill(ctx, cniFilled); err != nil {
				return cniSample{}, fmt.Errorf("fill %s store: %w", s.name, err)
			}
			return cniSequential(ctx, s, pods, "full")
		}},
	}
	for _, s := range subjects { // warm up: bridge made, binaries in page cache
		if _, err := cniSequential(ctx, s, pods[:2], "warm"); err != nil {
			return err
		}
	}
	// The floor: one plugin process that does nothing (VERSION), started
	// the same way.
	floor := map[string]time.Duration{}
	for _, s := range subjects {
		var d []time.Duration
		for i := 0; i < cniSeq; i++ {
			t, err := timed(func() error { _, err := s.cni.GetVersionInfo(ctx, s.list.Plugins[0].Network.Type); return err })
			if err != nil {
				return fmt.Errorf("%s VERSION: %w", s.name, err)
			}
			d = append(d, t)
		}
		floor[s.name] = quantile(d, 0.5)
	}
	for _, sc := range scenarios {
		r := row{scenario: sc.name, res: map[string]cniSample{}}
		// Alternate the order per scenario so neither side always runs on
		// a warmer machine.
		order := subjects
		if len(rows)%2 == 1 {
			order = []*cniSubject{ref, weft}
		}
		for _, s := range order {
			fmt.Fprintf(os.Stderr, "  %s %s: %s\n", st.name, s.name, sc.name)
			res, err := sc.fn(ctx, s)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", s.name, sc.name, err)
			}
			r.res[s.name] = res
		}
		rows = append(rows, r)
	}

	// The kernel's floor: the requests of one ADD from a warm process, in
	// a node namespace of its own and the benchmark's pods, empty again
	// after the scenarios' DELs.
	kNode, err := mkns("bkflr")
	if err != nil {
		return err
	}
	kernel, err := kernelAddFloor(kNode, pods, st.dual)
	if err != nil {
		return fmt.Errorf("kernel floor: %w", err)
	}

	fmt.Fprintf(out, "### %s\n\n", st.name)
	fmt.Fprintf(out, "| scenario | op | weft | reference | weft/reference (median) |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		for _, op := range []string{"ADD", "DEL"} {
			w, f := r.res["weft"], r.res["reference"]
			wd, fd := w.add, f.add
			if op == "DEL" {
				wd, fd = w.del, f.del
			}
			fmt.Fprintf(out, "| %s | %s | %s | %s | %.2f× |\n", r.scenario, op, stat(wd), stat(fd),
				float64(quantile(wd, 0.5))/float64(quantile(fd, 0.5)))
		}
	}
	fmt.Fprintf(out, "| process start floor (VERSION, %d sequential) | — | %.2f | %.2f | %.2f× |\n", cniSeq,
		ms(floor["weft"]), ms(floor["reference"]), float64(floor["weft"])/float64(floor["reference"]))
	fmt.Fprintf(out, "| kernel requests of one ADD from a warm process, no plugin (%d sequential) | ADD | %.2f | | |\n", cniSeq, ms(kernel))
	refSeq := quantile(rows[0].res["reference"].add, 0.5)
	fmt.Fprintf(out, "\nThe two floors together (VERSION of weft + the kernel's requests): %.2f ms, %.2f× the reference's sequential ADD median.\n",
		ms(floor["weft"]+kernel), float64(floor["weft"]+kernel)/float64(refSeq))
	seqW, fullW := rows[0].res["weft"].add, rows[2].res["weft"].add
	fmt.Fprintf(out, "\nweft ADD median with %d allocated / empty store: %.2f×.\n\n",
		cniFilled, float64(quantile(fullW, 0.5))/float64(quantile(seqW, 0.5)))
	return nil
}

// weftBinary returns a directory holding the weft plugin: $WEFT_BIN (set by
// make after `make build`) if it has one, else a fresh build.
func weftBinary(tmp string) (string, error) {
	if dir := os.Getenv("WEFT_BIN"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "weft")); err == nil {
			return dir, nil
		}
	}
	build := exec.Command("go", "build", "-o", filepath.Join(tmp, "weft"), "weft.dev/weft/cmd/weft")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build and the image ship it
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build weft: %v: %s", err, out)
	}
	return tmp, nil
}

func conflist(plugin map[string]any) (*libcni.NetworkConfigList, error) {
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bench", "plugins": []any{plugin}})
	if err != nil {
		return nil, err
	}
	return libcni.NetworkConfFromBytes(b)
}

func newWeftSubject(tmp, pluginDir string, mkns func(string) (string, error), dual bool) (*cniSubject, error) {
	node, err := mkns("bweft")
	if err != nil {
		return nil, err
	}
	s := &cniSubject{name: "weft", node: node, dataDir: filepath.Join(tmp, node, "ipam")}
	cidrs := []netip.Prefix{netip.MustParsePrefix("10.91.0.0/16")}
	if dual {
		cidrs = append(cidrs, netip.MustParsePrefix("fd00:91::/64"))
	}
	var gws []netip.Addr
	for _, c := range cidrs {
		gws = append(gws, c.Addr().Next())
	}
	s.list, err = conflist(map[string]any{"type": "weft", "podCIDRs": cidrs, "dataDir": s.dataDir})
	if err != nil {
		return nil, err
	}
	s.cni = cnitest.NewConfig("/run/netns/"+node, filepath.Join(tmp, node, "cache"), pluginDir)
	s.fill = func(ctx context.Context, n int) error {
		st, err := ipam.Open(ipam.Options{Dir: s.dataDir, Ranges: cidrs, Reserved: gws})
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if _, err := st.Allocate(ctx, ipam.Owner{ContainerID: fmt.Sprintf("fill%d", i), IfName: "eth0"}); err != nil {
				return err
			}
		}
		return nil
	}
	return s, nil
}

func newRefSubject(tmp string, mkns func(string) (string, error), dual bool) (*cniSubject, error) {
	node, err := mkns("bref")
	if err != nil {
		return nil, err
	}
	s := &cniSubject{name: "reference", node: node, dataDir: filepath.Join(tmp, node, "ipam")}
	ranges := [][]map[string]string{{{"subnet": "10.92.0.0/16"}}}
	routes := []map[string]string{{"dst": "0.0.0.0/0"}}
	if dual {
		ranges = append(ranges, []map[string]string{{"subnet": "fd00:92::/64"}})
		routes = append(routes, map[string]string{"dst": "::/0"})
	}
	ipamConf := map[string]any{"type": "host-local", "ranges": ranges, "routes": routes, "dataDir": s.dataDir}
	s.list, err = conflist(map[string]any{"type": "bridge", "bridge": "refbr0", "isGateway": true, "mtu": 1500,
		"hairpinMode": true, "ipam": ipamConf})
	if err != nil {
		return nil, err
	}
	s.cni = cnitest.NewConfig("/run/netns/"+node, filepath.Join(tmp, node, "cache"), refPluginDir)
	// host-local's own ADD fills its store: the same files a running node
	// would have.
	s.fill = func(ctx context.Context, n int) error {
		conf, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "bench", "ipam": ipamConf})
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			cmd := exec.CommandContext(ctx, filepath.Join(refPluginDir, "host-local"))
			cmd.Env = []string{"CNI_COMMAND=ADD", fmt.Sprintf("CNI_CONTAINERID=fill%d", i), "CNI_IFNAME=eth0",
				"CNI_NETNS=/run/netns/" + node, "CNI_PATH=" + refPluginDir}
			cmd.Stdin = strings.NewReader(string(conf))
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("host-local ADD %d: %v: %s", i, err, out)
			}
		}
		return nil
	}
	return s, nil
}

func rt(pod, tag string, i int) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%s-%d", tag, i), NetNS: "/run/netns/" + pod, IfName: "eth0"}
}

func timed(fn func() error) (time.Duration, error) {
	start := time.Now()
	err := fn()
	return time.Since(start), err
}

func cniSequential(ctx context.Context, s *cniSubject, pods []string, tag string) (cniSample, error) {
	var r cniSample
	for i, p := range pods {
		d, err := timed(func() error { _, err := s.cni.AddNetworkList(ctx, s.list, rt(p, tag, i)); return err })
		if err != nil {
			return r, fmt.Errorf("ADD %d: %w", i, err)
		}
		r.add = append(r.add, d)
	}
	for i, p := range pods {
		d, err := timed(func() error { return s.cni.DelNetworkList(ctx, s.list, rt(p, tag, i)) })
		if err != nil {
			return r, fmt.Errorf("DEL %d: %w", i, err)
		}
		r.del = append(r.del, d)
	}
	return r, nil
}

func cniParallel(ctx context.Context, s *cniSubject, pods []string, tag string) (cniSample, error) {
	var r cniSample
	for _, op := range []string{"ADD", "DEL"} {
		durs := make([]time.Duration, len(pods))
		errs := make([]error, len(pods))
		var wg sync.WaitGroup
		for i, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				durs[i], errs[i] = timed(func() error {
					if op == "ADD" {
						_, err := s.cni.AddNetworkList(ctx, s.list, rt(p, tag, i))
						return err
					}
					return s.cni.DelNetworkList(ctx, s.list, rt(p, tag, i))
				})
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return r, fmt.Errorf("%s: %w", op, err)
		}
		if op == "ADD" {
			r.add = durs
		} else {
			r.del = durs
		}
	}
	return r, nil
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }

func stat(d []time.Duration) string {
	return fmt.Sprintf("%.2f (%.2f)", ms(quantile(d, 0.5)), ms(quantile(d, 0.9)))
}
