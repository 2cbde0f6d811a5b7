package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/test/nstest"
)

// The flood benchmark measures one real weft-agent in bgp mode whose only
// external peer (FRR, in the bgp benchmark's environment) announces
// floodRoutes /32s that belong to no Node, all at once: the agent's memory,
// and what its prefix limit does. Two runs, each with a fresh agent:
//
//   - limit: the peer without maxPrefixes (weft's default limit per family):
//     the session must be closed (weft_bgp_prefix_limit_total{kind="peer"}),
//     and be Established again after the flood stops;
//   - no limit: maxPrefixes set above the flood (the limit out of reach): the
//     agent holds and rejects every path, the memory it costs.
//
// Memory is the agent's peak RSS (VmHWM) over the run, read from /proc.
var floodRoutes = flag.Int("flood.routes", 150000, "flood: /32 prefixes the rogue peer announces")

// floodTarget is the bound on the agent's RSS under a flood.
const floodTarget = 64 << 20

type floodRun struct {
	name              string
	baseRSS, peakRSS  int64
	closedAfter, back time.Duration // limit run only
	closed            bool
}

func runFlood(ctx context.Context, out *strings.Builder) error {
	if err := requireK8s(); err != nil {
		return err
	}
	var runs []floodRun
	for _, limited := range []bool{true, false} {
		r, err := floodOnce(ctx, limited)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	fmt.Fprintf(out, "## BGP prefix flood\n\n")
	fmt.Fprintf(out, "One weft-agent in bgp mode (the bgp benchmark's environment); its external peer, FRR, announces %d /32s that "+
		"belong to no Node at once (`redistribute static`). Peak RSS (VmHWM) of a fresh agent per run. Target: ≤ %d MiB with the "+
		"default limit, the session closed with an Event and metric, back when the flood stops.\n\n", *floodRoutes, floodTarget>>20)
	fmt.Fprintf(out, "| run | RSS before | peak RSS | session |\n|---|---|---|---|\n")
	for _, r := range runs {
		sess := "held every path"
		if r.closed {
			sess = fmt.Sprintf("closed %.1f s after the flood began; Established again %.1f s after it stopped", r.closedAfter.Seconds(), r.back.Seconds())
		}
		fmt.Fprintf(out, "| %s | %.1f MiB | %.1f MiB | %s |\n", r.name, mib(r.baseRSS), mib(r.peakRSS), sess)
	}
	fmt.Fprintf(out, "\nPeak RSS with the limit / without: %.2f.\n\n", float64(runs[0].peakRSS)/float64(runs[1].peakRSS))
	if !runs[0].closed || runs[0].peakRSS > floodTarget {
		return fmt.Errorf("with the default limit: session closed %v, peak RSS %.1f MiB (target %d MiB)", runs[0].closed, mib(runs[0].peakRSS), floodTarget>>20)
	}
	return nil
}

func floodOnce(ctx context.Context, limited bool) (floodRun, error) {
	r := floodRun{name: "default limit (10000 per family)"}
	e, err := startAgEnv(ctx, "flood", 3)
	if err != nil {
		return r, err
	}
	defer e.close()
	peer := fmt.Sprintf("    - address: %s\n      connectRetryTime: 1s\n", agCPAddr)
	if !limited {
		r.name = fmt.Sprintf("maxPrefixes %d (limit out of reach)", 2**floodRoutes)
		peer += fmt.Sprintf("      maxPrefixes: %d\n", 2**floodRoutes)
	}
	doc := fmt.Sprintf("mode: bgp\nclusterCIDRs:\n  - %s\nbgp:\n  asn: %d\n  nodeMesh: false\n  peers:\n%s", agCluster, bgpASN, peer)
	if err := e.setConfig(ctx, doc); err != nil {
		return r, err
	}
	f := &frrd{ns: e.cpNS, ps: "wf_" + nstest.Unique("")}
	defer f.stop()
	if err := f.start(ctx); err != nil {
		return r, err
	}
	if err := f.redistribute(ctx, false); err != nil {
		return r, err
	}
	add := filepath.Join(f.run, "flood.conf")
	var b strings.Builder
	base := netip.MustParseAddr("100.64.0.0").As4()
	for i := range *floodRoutes {
		a := netip.AddrFrom4([4]byte{base[0], base[1] + byte(i>>16), byte(i >> 8), byte(i)})
		fmt.Fprintf(&b, "ip route %s/32 blackhole\n", a)
	}
	if err := os.WriteFile(add, []byte(b.String()), 0o644); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "  %s: loading %d static routes into FRR\n", r.name, *floodRoutes)
	if err := f.batch(ctx, add); err != nil {
		return r, err
	}
	if err := e.startAgent(); err != nil {
		return r, err
	}
	if err := f.waitEstablished(ctx, agNodeAddr.String(), time.Minute); err != nil {
		return r, fmt.Errorf("%w (agent log: %s)", err, e.agentLog)
	}
	time.Sleep(2 * time.Second)
	pid := e.agent.Process.Pid
	if r.baseRSS, _, err = procMem(pid); err != nil {
		return r, err
	}
	limits0, _ := prefixLimitCount(ctx, e)
	t0 := time.Now()
	if err := f.redistribute(ctx, true); err != nil {
		return r, err
	}
	// Watch for 60 s (limited: until the session is closed, at most 60 s).
	deadline := t0.Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if n, err := prefixLimitCount(ctx, e); err == nil && n > limits0 && !r.closed {
			r.closed, r.closedAfter = true, time.Since(t0)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if limited && !r.closed {
		return r, fmt.Errorf("session not closed within 60 s of a %d-prefix flood (agent log: %s)", *floodRoutes, e.agentLog)
	}
	if _, r.peakRSS, err = procMem(pid); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "  %s: peak RSS %.1f MiB, closed %v after %s\n", r.name, mib(r.peakRSS), r.closed, r.closedAfter.Round(time.Millisecond))
	if !limited {
		return r, nil
	}
	t1 := time.Now()
	if err := f.redistribute(ctx, false); err != nil {
		return r, err
	}
	if err := f.waitEstablished(ctx, agNodeAddr.String(), 6*time.Minute); err != nil {
		return r, fmt.Errorf("session not back after the flood: %w (agent log: %s)", err, e.agentLog)
	}
	r.back = time.Since(t1)
	if _, hwm, err := procMem(pid); err == nil && hwm > r.peakRSS {
		r.peakRSS = hwm
	}
	return r, nil
}

// prefixLimitCount reads weft_bgp_prefix_limit_total{kind="peer"} from the
// agent's metrics.
func prefixLimitCount(ctx context.Context, e *agEnv) (float64, error) {
	body, err := e.metricsText(ctx)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, `weft_bgp_prefix_limit_total{kind="peer"} `); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}
