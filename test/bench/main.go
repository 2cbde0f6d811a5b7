// Command bench runs weft's benchmarks (`make bench`, as root) and prints
// one Markdown section per benchmark, ready for docs/benchmarks.md.
//
// Each benchmark is a function registered in benchmarks (one file each);
// -run selects them by name, comma-separated; the default runs all.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// benchmark measures one thing and writes its Markdown section to out.
type benchmark struct {
	name string
	desc string
	run  func(ctx context.Context, out *strings.Builder) error
}

// benchmarks lists every benchmark; add new ones here (one file each).
var benchmarks = []benchmark{
	{name: "cni", desc: "CNI ADD/DEL latency, weft vs the reference bridge + host-local plugins", run: runCNI},
	{name: "datapath", desc: "pod-to-pod TCP throughput across nodes (vxlan, bgp) vs the underlay, iperf3", run: runDatapath},
	{name: "agent", desc: "weft-agent control plane: start, burst and deletion against a real apiserver with 1000 peers; RSS", run: runAgent},
	{name: "bgp", desc: "bgp mode: 1000 pod CIDRs announced by FRR → in the node's kernel, and withdrawn", run: runBGP},
	{name: "pods", desc: "real nodes: 30 Pods created → Ready and deleted → gone, weft vs the reference plugins on the same kubelets", run: runPods},
	{name: "flood", desc: "bgp mode: a peer floods 150k prefixes: the agent's memory with its prefix limit and without", run: runFlood},
	{name: "bgpmesh", desc: "bgp mode, node mesh of 3 real agents: a node's agent restarted → its pod CIDRs on the others", run: runBGPMesh},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var names []string
	for _, b := range benchmarks {
		names = append(names, b.name)
	}
	sel := flag.String("run", strings.Join(names, ","), "benchmarks to run, comma-separated ("+strings.Join(names, ", ")+")")
	flag.Parse()
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var out strings.Builder
	fmt.Fprintf(&out, "Machine: %d CPUs (`nproc`), %s, kernel %s, %s. Date: %s. Command: `%s`.\n\n",
		runtime.NumCPU(), cpuModel(), kernel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"), "make bench")
	for _, want := range strings.Split(*sel, ",") {
		i := slices.IndexFunc(benchmarks, func(b benchmark) bool { return b.name == strings.TrimSpace(want) })
		if i < 0 {
			return fmt.Errorf("-run: unknown benchmark %q (have %s)", want, strings.Join(names, ", "))
		}
		b := benchmarks[i]
		fmt.Fprintf(os.Stderr, "running %s: %s\n", b.name, b.desc)
		if err := b.run(ctx, &out); err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
	}
	fmt.Print(out.String())
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
