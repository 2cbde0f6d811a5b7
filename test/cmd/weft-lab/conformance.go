package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"weft.dev/weft/test/conformance"
	"weft.dev/weft/test/lab"
)

const conformanceUsage = `  conformance [--modes vxlan,bgp] [--focus RE] [--procs N] [--reports DIR] [--docs DIR]
                               Kubernetes' e2e suite (e2e.test) against a real-node
                               lab per mode; prints "conformance: MODE: N passed,
                               M failed, K skipped"; --docs writes conformance.md
                               and the JUnit reports there
`

// conformanceCmd runs the suite in each mode, one lab after the other.
func conformanceCmd(ctx context.Context, opts lab.Options, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modes := fs.String("modes", "vxlan,bgp", "modes to judge, in order")
	focus := fs.String("focus", conformance.Focus, "ginkgo focus (regular expression)")
	reports := fs.String("reports", filepath.Join(os.TempDir(), "weft-conformance"), "directory for the suite's reports and logs")
	docs := fs.String("docs", "", "directory to write conformance.md and <mode>.junit.xml into (e.g. docs)")
	root := fs.String("root", ".", "repository root")
	timeout := fs.Duration("timeout", 90*time.Minute, "bound on the suite per mode")
	procs := fs.Int("procs", 1, "parallel ginkgo processes ([Serial] tests run alone, last)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr("conformance: %v", err)
	}
	abs, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	k8s := os.Getenv("WEFT_K8S_BIN")
	if k8s == "" {
		k8s = filepath.Join(abs, ".cache", "k8s", "v1.37.2")
	}
	o := conformance.Options{Lab: opts, Root: abs, E2ETest: filepath.Join(k8s, "e2e.test"), Focus: *focus,
		ReportDir: *reports, Timeout: *timeout, Procs: *procs}
	var results []conformance.Result
	failed := false
	for _, name := range strings.Split(*modes, ",") {
		m, err := conformance.ModeNamed(strings.TrimSpace(name))
		if err != nil {
			return usageErr("conformance: --modes: %v", err)
		}
		fmt.Fprintf(stdout, "conformance: %s: lab up, e2e.test --ginkgo.focus=%q (log: %s)\n", m.Name, *focus,
			filepath.Join(*reports, m.Name, "e2e.log"))
		res, err := conformance.Run(ctx, o, m)
		if err != nil {
			return err
		}
		for _, c := range res.Cases {
			if c.State != "passed" && c.State != "skipped" {
				fmt.Fprintf(stdout, "conformance: %s: %s %s: %s\n", m.Name, c.State, c.Name, c.Reason)
			}
		}
		fmt.Fprintf(stdout, "%s (lab up %s, suite %s)\n", res.Line(), res.Up.Round(time.Second), res.Took.Round(time.Second))
		failed = failed || res.Failed > 0
		results = append(results, res)
	}
	if *docs != "" {
		if err := writeConformanceDocs(*docs, *focus, results); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "conformance: wrote %s\n", filepath.Join(*docs, "conformance.md"))
	}
	if failed {
		return exitError(1)
	}
	return nil
}

// writeConformanceDocs writes dir/conformance.md (summary, skip reasons,
// the table) and dir/conformance/<mode>.junit.xml.
func writeConformanceDocs(dir, focus string, results []conformance.Result) error {
	if err := os.MkdirAll(filepath.Join(dir, "conformance"), 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, `# Conformance: Kubernetes' own e2e suite against weft

Written by `+"`make conformance`"+` on %s (%d cores, Linux %s, host %s). Kubernetes
v1.37.2's `+"`e2e.test`"+` (built from k8s.io/kubernetes by `+"`make k8s`"+`) ran from the control-plane
namespace of a real-node lab: 3 nodes, each with containerd v2.4.2 and kubelet v1.37.2, weft installed
with `+"`kubectl apply -k`"+` as its DaemonSet, kube-proxy (iptables) and CoreDNS; no registry, every
image built locally and imported into the nodes. One lab per mode, one after the other.

Focus: `+"`%s`"+`

| mode | passed | failed | skipped | lab up | suite |
|---|---|---|---|---|---|
`, time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), host, focus)
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s |\n", r.Mode, r.Passed, r.Failed, r.Skipped,
			r.Up.Round(time.Second), r.Took.Round(time.Second))
	}
	b.WriteString("\n## What is skipped, and why\n\nOnly what cannot apply to a bare-metal lab:\n\n| pattern | reason |\n|---|---|\n")
	for _, s := range conformance.Skips {
		fmt.Fprintf(&b, "| `%s` | %s |\n", s.Pattern, s.Reason)
	}
	b.WriteString("\nA test the suite skips by itself says why in the table.\n\n## Results\n\n")
	if err := conformance.WriteMarkdown(&b, results); err != nil {
		return err
	}
	b.WriteString("\n## Reproduce\n\n```\nmake conformance                      # both modes, this focus, writes this page\n" +
		"make conformance CONFORMANCE_FOCUS='\\[sig-network\\]'   # every sig-network test\n```\n\n" +
		"`make test` runs a subset in both modes (TestConformance: the pod-to-pod granular checks, a Service's\n" +
		"endpoints and cluster DNS). JUnit reports of the tests above:")
	for _, r := range results {
		f, err := os.Create(filepath.Join(dir, "conformance", r.Mode+".junit.xml"))
		if err != nil {
			return err
		}
		err = conformance.WriteJUnit(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, " [%s](conformance/%s.junit.xml)", r.Mode, r.Mode)
	}
	b.WriteString(".\n")
	return os.WriteFile(filepath.Join(dir, "conformance.md"), b.Bytes(), 0o644)
}
