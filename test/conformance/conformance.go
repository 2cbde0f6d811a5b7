// Package conformance judges weft with Kubernetes' own e2e suite: it brings
// up a real-node lab (containerd + kubelet on every node, weft installed as
// its DaemonSet) in one mode, runs e2e.test (built from k8s.io/kubernetes by
// test/k8s) from the control-plane namespace against it, takes the lab
// down, and reads the suite's JUnit report into a Result.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"weft.dev/weft/test/lab"
)

// Mode is one way weft runs: the lab topology and the manifests it is
// installed from, both relative to the repository root.
type Mode struct {
	Name     string
	Topology string
	Deploy   string
}

// Modes are the modes the suite judges, in order.
var Modes = []Mode{
	{Name: "vxlan", Topology: "test/topologies/vxlan-3node.clab.yml", Deploy: "deploy/kubernetes"},
	{Name: "bgp", Topology: "test/e2e/testdata/bgp-3node.clab.yml", Deploy: "deploy/overlays/bgp"},
}

// ModeNamed returns the mode called name.
func ModeNamed(name string) (Mode, error) {
	var names []string
	for _, m := range Modes {
		if m.Name == name {
			return m, nil
		}
		names = append(names, m.Name)
	}
	return Mode{}, fmt.Errorf("mode %q: want one of %s", name, strings.Join(names, ", "))
}

// Focus selects sig-network's conformance tests: the networking granular
// checks, Services, DNS, HostPort, EndpointSlice, Endpoints, Proxy,
// Ingress and ServiceCIDR APIs.
const Focus = `\[sig-network\].*\[Conformance\]`

// CIFocus is the subset make test runs in both modes: pod-to-pod over
// HTTP and UDP on one node and across nodes, a selector Service's
// endpoints and multiport endpoints, and cluster DNS for a Service.
const CIFocus = `\[sig-network\] (Networking Granular Checks: Pods should function for (intra|node)-pod communication: (http|udp)|` +
	`Services should serve (a basic endpoint|multiport endpoints) from pods|DNS should provide DNS for services)( \[[^]]+\])* \[Conformance\]`

// Skip is a pattern of tests the lab cannot host, with the reason.
type Skip struct {
	Pattern string
	Reason  string
}

// Skips are the tests left out of every run, each with its reason. A test
// is skipped only when it cannot apply to a bare-metal lab; everything else
// runs, and fails if weft fails it.
var Skips = []Skip{
	{`\[Disruptive\]`, "restarts or breaks nodes and the control plane, which the e2e framework does over SSH to cloud machines; the lab's own tests cover node reboot and kubelet restart (TestRealNodes)"},
	{`\[Flaky\]`, "marked flaky upstream and left out of upstream's own conformance jobs"},
	{`\[Feature:`, "needs a feature gate or an optional component the lab's cluster does not enable"},
}

// Options say where the suite and the lab come from.
type Options struct {
	Lab     lab.Options // Kubelets is always on
	Root    string      // repository root (Mode paths are relative to it)
	E2ETest string      // e2e.test binary
	// Procs > 1 runs the suite with ginkgo (next to E2ETest) in that many
	// parallel processes; [Serial] tests still run one at a time, last.
	Procs int
	Focus string // default Focus
	Skips []Skip // default Skips
	// ReportDir receives <mode>/junit_01.xml (the suite's report) and
	// <mode>/e2e.log (its output).
	ReportDir string
	Timeout   time.Duration // bound on the suite, default 90 minutes
	Name      string        // lab name; default cf<mode initial><pid>
}

func (o Options) withDefaults(m Mode) Options {
	if o.Focus == "" {
		o.Focus = Focus
	}
	if o.Skips == nil {
		o.Skips = Skips
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Minute
	}
	if o.Name == "" {
		o.Name = fmt.Sprintf("cf%c%d", m.Name[0], os.Getpid()%100000)
	}
	o.Lab.Kubelets = true
	o.Lab.DeployDir = filepath.Join(o.Root, m.Deploy)
	return o
}

// skipRegexp joins the skip patterns for --ginkgo.skip.
func skipRegexp(skips []Skip) string {
	var ps []string
	for _, s := range skips {
		ps = append(ps, s.Pattern)
	}
	return strings.Join(ps, "|")
}

// Run brings up mode's lab, runs the suite against it and takes the lab
// down again (also on error or cancellation). A suite that ran to the end
// with failing tests is no error: the failures are in the Result.
func Run(ctx context.Context, o Options, m Mode) (res Result, err error) {
	o = o.withDefaults(m)
	focus, err := regexp.Compile(o.Focus)
	if err != nil {
		return res, fmt.Errorf("focus %q: %w", o.Focus, err)
	}
	for _, s := range o.Skips {
		if _, err := regexp.Compile(s.Pattern); err != nil {
			return res, fmt.Errorf("skip %q: %w", s.Pattern, err)
		}
	}
	if _, err := os.Stat(o.E2ETest); err != nil {
		return res, fmt.Errorf("e2e.test (make k8s): %w", err)
	}
	dir := filepath.Join(o.ReportDir, m.Name)
	if err := os.RemoveAll(dir); err != nil {
		return res, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	t0 := time.Now()
	l, err := o.Lab.Up(ctx, filepath.Join(o.Root, m.Topology), o.Name)
	if err != nil {
		return res, fmt.Errorf("mode %s: lab up: %w", m.Name, errors.Join(err, o.Lab.Down(o.Name)))
	}
	defer func() {
		if derr := o.Lab.Down(l.Name); derr != nil {
			err = errors.Join(err, fmt.Errorf("lab %s down: %w", l.Name, derr))
		}
	}()
	res.Up = time.Since(t0)
	cp, ok := l.Topo.ControlPlane()
	if !ok {
		return res, fmt.Errorf("mode %s: topology %s has no control-plane node", m.Name, m.Topology)
	}
	logf, err := os.Create(filepath.Join(dir, "e2e.log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	// In the control-plane namespace, e2e.test reaches the apiserver, the
	// nodes' addresses (NodePort, hostPort) and nothing outside the lab.
	suite := []string{
		"--kubeconfig=" + l.AdminKubeconfig(),
		"--provider=skeleton",
		"--kubectl-path=" + filepath.Join(filepath.Dir(o.E2ETest), "kubectl"),
		"--report-dir=" + dir,
	}
	ginkgo := []string{
		"focus=" + o.Focus,
		"skip=" + skipRegexp(o.Skips),
		"timeout=" + o.Timeout.String(),
		"no-color",
		"v",
	}
	argv := []string{"netns", "exec", l.NS(cp.Name)}
	if o.Procs > 1 {
		argv = append(argv, filepath.Join(filepath.Dir(o.E2ETest), "ginkgo"), fmt.Sprintf("--procs=%d", o.Procs))
		for _, g := range ginkgo {
			argv = append(argv, "--"+g)
		}
		argv = append(append(argv, o.E2ETest, "--"), suite...)
	} else {
		argv = append(argv, o.E2ETest)
		for _, g := range ginkgo {
			argv = append(argv, "--ginkgo."+g)
		}
		argv = append(argv, suite...)
	}
	// In the control-plane namespace, e2e.test reaches the apiserver, the
	// nodes' addresses (NodePort, hostPort) and nothing outside the lab.
	cmd := exec.CommandContext(sctx, "ip", argv...)
	fmt.Fprintf(logf, "# ip %s\n", strings.Join(argv, " "))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = 10 * time.Second
	t1 := time.Now()
	runErr := cmd.Run()
	res.Took = time.Since(t1)
	report := filepath.Join(dir, "junit_01.xml")
	f, err := os.Open(report)
	if err != nil {
		return res, fmt.Errorf("mode %s: e2e.test (%v) wrote no report, see %s: %w", m.Name, runErr, logf.Name(), err)
	}
	defer f.Close()
	cases, err := ParseJUnit(f)
	if err != nil {
		return res, fmt.Errorf("mode %s: %s: %w", m.Name, report, err)
	}
	res = summarise(m.Name, cases, focus, o.Skips, res)
	var exit *exec.ExitError
	if runErr != nil && !(errors.As(runErr, &exit) && res.Failed > 0) {
		// e2e.test exits non-zero when a test fails; anything else (a
		// timeout, a crash, no failure recorded) is the run's own error.
		return res, fmt.Errorf("mode %s: e2e.test: %w (see %s)", m.Name, runErr, logf.Name())
	}
	return res, nil
}
