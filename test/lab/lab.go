// Package lab turns a topology file into a running weft lab on one machine:
// every topology node is a network namespace, every link a veth pair, and a
// control-plane node runs a real Kubernetes control plane
// (test/lab/controlplane). Pods are namespaces attached through the weft CNI
// binary via libcni, as a container runtime does.
//
// Nothing is ever created in the root network namespace: each veth is made
// inside one lab namespace with its peer placed straight into another.
// Everything a lab makes is named after it, so two labs never collide and
// Down finds all of it again, also after a crash or a half-finished Up:
//
//	namespaces     wl-<lab>.<node> and wl-<lab>.<node>.<pod> (under /run/netns)
//	files          <BaseDir>/<lab>/ (default /run/weft-lab/<lab>/)
//	FRR pathspace  wl_<lab>_<node> (/var/run/frr/wl_<lab>_<node>/)
//	processes      those inside the lab's namespaces, and any whose command
//	               line names the lab's directory
//
// Up is idempotent: a second Up of the same lab checks and repairs each piece
// and keeps what is already right.
package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"weft.dev/weft/test/lab/controlplane"
)

// Options are the machine-wide settings of a lab. The zero value works.
type Options struct {
	BaseDir      string       // default /run/weft-lab
	BinDir       string       // weft binaries (weft, weft-agent); default $WEFT_BIN, else bin/ at the repository root
	K8sBinDir    string       // Kubernetes binaries; default as test/lab/controlplane
	CNIPluginDir string       // reference CNI plugins (loopback, portmap); default /usr/lib/cni
	DeployDir    string       // Kubernetes manifests; default deploy/kubernetes at the repository root
	Log          *slog.Logger // default slog.Default()

	// Kubelets makes every weft node a real node: containerd + kubelet in
	// its namespaces, weft installed as its DaemonSet (deploy/weft.yaml),
	// kube-proxy and CoreDNS running, pods made through the apiserver (see
	// kubelet.go). Without it the lab runs each agent as a process and makes
	// pods through libcni. Default: $WEFT_LAB_KUBELETS=1.
	Kubelets   bool
	RuntimeDir string // containerd, runc, ctr, CoreDNS; default $WEFT_RUNTIME_BIN, else .cache/runtime at the repository root
	ImageDir   string // image archives the lab builds; default .cache/images at the repository root
	WeftImage  string // weft's image archive (make image); default <BinDir>/weft-image.tar
}

// DefaultBaseDir holds one directory per lab.
const DefaultBaseDir = "/run/weft-lab"

func (o Options) withDefaults() Options {
	if o.BaseDir == "" {
		o.BaseDir = DefaultBaseDir
	}
	root := repoRoot()
	if o.BinDir == "" {
		o.BinDir = os.Getenv("WEFT_BIN")
	}
	if o.BinDir == "" && root != "" {
		o.BinDir = filepath.Join(root, "bin")
	}
	if o.K8sBinDir == "" {
		o.K8sBinDir = os.Getenv("WEFT_K8S_BIN")
	}
	if o.K8sBinDir == "" {
		if dir, err := controlplane.DefaultBinDir(); err == nil {
			o.K8sBinDir = dir
		}
	}
	if os.Getenv("WEFT_LAB_KUBELETS") == "1" {
		o.Kubelets = true
	}
	if o.RuntimeDir == "" {
		o.RuntimeDir = os.Getenv("WEFT_RUNTIME_BIN")
	}
	if o.RuntimeDir == "" && root != "" {
		o.RuntimeDir = filepath.Join(root, ".cache", "runtime")
	}
	if o.ImageDir == "" && root != "" {
		o.ImageDir = filepath.Join(root, ".cache", "images")
	}
	if o.WeftImage == "" {
		o.WeftImage = filepath.Join(o.BinDir, "weft-image.tar")
	}
	if o.CNIPluginDir == "" {
		o.CNIPluginDir = "/usr/lib/cni"
	}
	if o.DeployDir == "" && root != "" {
		o.DeployDir = filepath.Join(root, "deploy", "kubernetes")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// repoRoot walks up from the working directory, then from the executable,
// to the directory holding weft's go.mod; "" when not found.
func repoRoot() string {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.HasPrefix(data, []byte("module weft.dev/weft\n")) {
				return dir
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return ""
}

// Lab is a running lab.
type Lab struct {
	Name string
	Topo *Topology
	Dir  string // <BaseDir>/<Name>

	opts Options
	log  *slog.Logger
	cp   cluster // nil without a control-plane node
}

// state is <Dir>/state.json. It is written before anything else is made,
// so Down knows the lab even when Up died half-way.
type state struct {
	Name     string    `json:"name"`
	Source   string    `json:"source"`   // the topology file Up was given
	TopoDir  string    `json:"topoDir"`  // where its startup-configs live
	Complete bool      `json:"complete"` // Up finished
	Kubelets bool      `json:"kubelets"` // real nodes (Options.Kubelets)
	Created  time.Time `json:"created"`
}

// Names of what a lab makes.

// NSPrefix starts every namespace of every lab.
const NSPrefix = "wl-"

func labNSPrefix(lab string) string        { return NSPrefix + lab + "." }
func nodeNS(lab, node string) string       { return labNSPrefix(lab) + node }
func podNS(lab, node, pod string) string   { return nodeNS(lab, node) + "." + pod }
func frrPathspace(lab, node string) string { return "wl_" + lab + "_" + node }

// frrRunDir is where FRR keeps the sockets of a pathspace.
const frrRunDir = "/var/run/frr"

// NS returns the namespace name of a topology node.
func (l *Lab) NS(node string) string { return nodeNS(l.Name, node) }

// NodeDir is the directory of a topology node.
func (l *Lab) NodeDir(node string) string { return filepath.Join(l.Dir, "nodes", node) }

func (l *Lab) cpDir() string { return filepath.Join(l.Dir, "controlplane") }

// Up brings up the lab described by file, named name (default: the file's
// name), with default Options.
func Up(ctx context.Context, file, name string) (*Lab, error) {
	return Options{}.Up(ctx, file, name)
}

// Down removes everything of lab name, with default Options.
func Down(name string) error { return Options{}.Down(name) }

// Open attaches to a running lab, with default Options.
func Open(name string) (*Lab, error) { return Options{}.Open(name) }

// Up brings up the lab described by file; see the package comment. When Up
// fails for a lab that did not exist before, it removes what it made.
func (o Options) Up(ctx context.Context, file, name string) (l *Lab, err error) {
	o = o.withDefaults()
	topo, err := Load(file)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = topo.Name
	}
	if err := CheckLabName(name); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("topology path %s: %w", file, err)
	}
	l = &Lab{Name: name, Topo: topo, Dir: filepath.Join(o.BaseDir, name), opts: o,
		log: o.Log.With("lab", name)}
	existed := false
	if st, err := readState(l.Dir); err == nil {
		existed = true
		if st.Source != abs {
			return nil, fmt.Errorf("lab %s already runs topology %s, not %s: run `weft-lab down %s` first", name, st.Source, abs, name)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	defer func() {
		if err != nil && !existed {
			if derr := o.Down(name); derr != nil {
				err = errors.Join(err, fmt.Errorf("clean up after failed up: %w", derr))
			}
		}
	}()
	t0 := time.Now()
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lab dir: %w", err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read topology: %w", err)
	}
	if err := os.WriteFile(filepath.Join(l.Dir, "topology.yml"), src, 0o644); err != nil {
		return nil, fmt.Errorf("copy topology: %w", err)
	}
	st := state{Name: name, Source: abs, TopoDir: topo.Dir, Created: time.Now(), Kubelets: o.Kubelets}
	if err := writeState(l.Dir, st); err != nil {
		return nil, err
	}
	if err := l.upNetwork(ctx); err != nil {
		return nil, err
	}
	if err := l.upRouters(ctx); err != nil {
		return nil, err
	}
	if err := l.upCluster(ctx); err != nil {
		return nil, err
	}
	st.Complete = true
	if err := writeState(l.Dir, st); err != nil {
		return nil, err
	}
	l.log.Info("lab up", "nodes", len(topo.Nodes), "links", len(topo.Links), "took", time.Since(t0).Round(time.Millisecond))
	return l, nil
}

// Open attaches to a lab brought up earlier (maybe by another process).
func (o Options) Open(name string) (*Lab, error) {
	o = o.withDefaults()
	if err := CheckLabName(name); err != nil {
		return nil, err
	}
	dir := filepath.Join(o.BaseDir, name)
	st, err := readState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no lab %s (no %s)", name, filepath.Join(dir, "state.json"))
	}
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, "topology.yml"))
	if err != nil {
		return nil, fmt.Errorf("read lab topology: %w", err)
	}
	topo, err := Parse(data, st.TopoDir)
	if err != nil {
		return nil, fmt.Errorf("lab %s topology: %w", name, err)
	}
	o.Kubelets = st.Kubelets
	l := &Lab{Name: name, Topo: topo, Dir: dir, opts: o, log: o.Log.With("lab", name)}
	if n, ok := topo.ControlPlane(); ok {
		cp, err := attachCluster(l.cpDir(), l.NS(n.Name), firstAddr(n))
		if err != nil {
			return nil, fmt.Errorf("lab %s control plane: %w", name, err)
		}
		l.cp = cp
	}
	return l, nil
}

func readState(dir string) (state, error) {
	var st state
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", filepath.Join(dir, "state.json"), err)
	}
	return st, nil
}

func writeState(dir string, st state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "state.json"), data, 0o644)
}

// writeFileAtomic writes a temp file and renames it into place.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// upNetwork makes the namespaces, links, bridges, addresses and routes.
func (l *Lab) upNetwork(ctx context.Context) error {
	for _, n := range l.Topo.Nodes {
		ns := l.NS(n.Name)
		if err := ensureNS(ctx, ns); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if n.Forward {
			if err := setForwarding(ns); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
		}
		if err := os.MkdirAll(l.NodeDir(n.Name), 0o755); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	for _, k := range l.Topo.Links {
		if err := ensureVeth(l.NS(k.A.Node), k.A.Iface, l.NS(k.B.Node), k.B.Iface, 1500); err != nil {
			return fmt.Errorf("link %s - %s: %w", k.A, k.B, err)
		}
	}
	for _, n := range l.Topo.Nodes {
		ns := l.NS(n.Name)
		if n.Kind == KindBridge {
			if err := ensureBridge(ns, "br0", l.Topo.Ifaces(n.Name)); err != nil {
				return fmt.Errorf("node %s: %w", n.Name, err)
			}
			continue
		}
		if err := ensureAddrs(ns, n.Addrs); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := ensureRoutes(ns, n.Routes); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// Down removes every namespace, process and file of lab name: first what the
// state dir records, then whatever else carries the lab's name. A lab that
// does not exist is not an error.
func (o Options) Down(name string) error {
	o = o.withDefaults()
	if err := CheckLabName(name); err != nil {
		return err
	}
	dir := filepath.Join(o.BaseDir, name)
	var errs []error
	// Real nodes first: their containers live in namespaces and cgroups
	// the rest of Down does not see.
	nodeDirs, _ := filepath.Glob(filepath.Join(dir, "nodes", "*"))
	for _, d := range nodeDirs {
		if err := stopRealNode(name, d); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", filepath.Base(d), err))
		}
	}
	// The control plane next, so the apiserver does not see nodes vanish.
	if err := controlplane.Cleanup(filepath.Join(dir, "controlplane")); err != nil {
		errs = append(errs, fmt.Errorf("control plane: %w", err))
	}
	// Pods before nodes (a pod namespace holds no process normally, but a
	// `weft-lab exec` into it may still run).
	nss, err := listNS(labNSPrefix(name))
	if err != nil {
		errs = append(errs, err)
	}
	var frrPids []int
	for i := len(nss) - 1; i >= 0; i-- { // longer (pod) names sort after their node
		pids, _ := nsPids(nss[i])
		pids = withoutSelf(pids)
		frrPids = append(frrPids, pids...)
		if err := removeNS(nss[i], 3*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	// Processes that escaped their namespace but name the lab directory.
	killAll(pidsMentioning(dir+"/"), 2*time.Second)
	// FRR: pathspace run dirs, and the per-process temp dirs a killed
	// daemon leaves behind.
	spaces, _ := filepath.Glob(filepath.Join(frrRunDir, frrPathspace(name, "*")))
	for _, s := range spaces {
		if err := os.RemoveAll(s); err != nil {
			errs = append(errs, err)
		}
	}
	for _, pid := range frrPids {
		for _, d := range []string{"zebra", "bgpd", "staticd", "mgmtd"} {
			_ = os.RemoveAll(fmt.Sprintf("/var/tmp/frr/%s.%d", d, pid))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	if err := removeHostMountPoints(o.BaseDir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pidsMentioning lists processes whose command line contains s.
func pidsMentioning(s string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmd), s) && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// List returns the names of the labs that have a state dir or namespaces.
func (o Options) List() ([]string, error) {
	o = o.withDefaults()
	seen := map[string]bool{}
	ents, err := os.ReadDir(o.BaseDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() {
			seen[e.Name()] = true
		}
	}
	nss, err := listNS(NSPrefix)
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		if lab, _, ok := strings.Cut(strings.TrimPrefix(ns, NSPrefix), "."); ok {
			seen[lab] = true
		}
	}
	var out []string
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}

// nodeAddr is the first address of a node in the given family.
func nodeAddr(n Node, v4 bool) (netip.Addr, bool) {
	for _, a := range n.NodeAddrs() {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}
