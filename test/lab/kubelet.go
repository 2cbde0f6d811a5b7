package lab

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"weft.dev/weft/test/lab/controlplane"
	"weft.dev/weft/test/lab/image"
	"weft.dev/weft/test/poll"
)

// Real nodes (Options.Kubelets): each weft node runs containerd and a
// kubelet, as a kubeadm node does, and weft is installed as its DaemonSet.
// A node's processes share three namespaces held by an anchor process:
//
//	network  the node's lab namespace wl-<lab>.<node>
//	UTS      hostname <node> (hostNetwork pods see it)
//	mount    private: a sysfs of the node's network namespace, and the
//	         node's own directories bind-mounted over the paths a node's
//	         software expects (table nodeMounts), so the stock manifests'
//	         hostPath volumes (/opt/cni/bin, /etc/cni/net.d, /var/lib/weft,
//	         /run/weft) and the paths kubelet hard-codes land in
//	         <nodeDir>/..., never on the machine's own
//
// The anchor is `nsenter --net=<ns> unshare --mount --uts --propagation
// private sh -c <anchorScript>`; containerd and kubelet join it with
// `nsenter -t <anchor> -m -n -u`. When the anchor and every process in its
// mount namespace have exited, the namespace and all its mounts (container
// root filesystems, netns pins, the binds) are gone.
//
// kubelet runs with cgroupRoot /<cgroupName> (weft-lab.<lab>.<node>) in every
// cgroup v1 hierarchy, made before it starts; down kills every process in it
// and removes it. Global sysctls kubelet would rewrite (vm.overcommit_memory,
// kernel.panic, ...) are bind-mounted, in the node's mount namespace only,
// with files already holding kubelet's values, so kubelet changes nothing on
// the machine. Its credential is a client certificate for
// system:node:<node> in group system:nodes, so the Node authorizer and
// NodeRestriction hold it to its own Node and Pods.
//
// Files under <nodeDir>: anchor.pid, containerd/ (config, root, state,
// socket), kubelet/ (config, kubeconfig, serving certs), binds/ (sources of
// the bind mounts), sysctl/, containerd.log, kubelet.log and their pid files.

// nodeMounts are the paths bind-mounted in a real node's mount namespace,
// with their source under <nodeDir>.
var nodeMounts = []struct{ path, src string }{
	{"/etc/cni/net.d", "etc/cni/net.d"},
	{"/opt/cni/bin", "opt/cni/bin"},
	{"/var/lib/weft", "var/lib/weft"},
	{"/run/weft", "run/weft"},
	{"/var/lib/kubelet", "binds/var/lib/kubelet"},
	{"/var/log/pods", "binds/var/log/pods"},
	{"/var/log/containers", "binds/var/log/containers"},
	{"/run/containerd", "binds/run/containerd"},
	{"/var/lib/containerd", "binds/var/lib/containerd"},
	{"/usr/libexec/kubernetes", "binds/usr/libexec/kubernetes"},
}

// kubeletSysctls are the values kubelet sets at start (its kernel
// defaults), given to it as files in the node's mount namespace.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// anchorScript runs inside the node's fresh mount and UTS namespaces; $1 is
// the node name, $2 the node dir, then pairs of mount path and source.
const anchorScript = `set -eu
node=$1 dir=$2; shift 2
hostname "$node"
mkdir -p "$dir/mnt/cgroup"
mount --rbind /sys/fs/cgroup "$dir/mnt/cgroup"
mount -t sysfs "weft-lab-$node" /sys
mount --move "$dir/mnt/cgroup" /sys/fs/cgroup
for f in "$dir"/sysctl/*; do
  mount --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
done
while [ $# -gt 1 ]; do
  mount --bind "$2" "$1"
  shift 2
done
echo $$ > "$dir/anchor.pid"
exec sleep infinity
`

// cgroupName is the kubelet cgroupRoot of a node (without the slash).
func (l *Lab) cgroupName(node string) string { return "weft-lab." + l.Name + "." + node }

func (l *Lab) containerdSock(node string) string {
	return filepath.Join(l.NodeDir(node), "containerd", "containerd.sock")
}

func (l *Lab) anchorPid(node string) int {
	return pidFromFile(filepath.Join(l.NodeDir(node), "anchor.pid"))
}

// runtimeBin is a binary of the node runtime (containerd, ctr, runc ...).
func (l *Lab) runtimeBin(name string) string {
	if name == "runc" {
		return filepath.Join(l.opts.RuntimeDir, "deb", "usr", "sbin", "runc")
	}
	return filepath.Join(l.opts.RuntimeDir, name)
}

// ensureRealNode starts containerd and kubelet on a weft node unless they
// run, and imports the lab's images into its containerd.
func (l *Lab) ensureRealNode(ctx context.Context, n Node) error {
	d := l.NodeDir(n.Name)
	if pid := pidFromFile(filepath.Join(d, "kubelet.pid")); pid > 0 && alive(pid) {
		return nil
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc"} {
		if fi, err := os.Stat(l.runtimeBin(b)); err != nil || fi.IsDir() {
			return fmt.Errorf("no %s (run `make runtime`)", l.runtimeBin(b))
		}
	}
	if fi, err := os.Stat(filepath.Join(l.opts.K8sBinDir, "kubelet")); err != nil || fi.IsDir() {
		return fmt.Errorf("no kubelet in %s (run `make k8s`)", l.opts.K8sBinDir)
	}
	if err := setForwarding(l.NS(n.Name)); err != nil {
		return err
	}
	if err := l.ensureServiceRoutes(n); err != nil {
		return err
	}
	if err := l.prepareNodeDirs(n); err != nil {
		return err
	}
	if err := l.ensureCgroups(n.Name); err != nil {
		return err
	}
	if err := l.writeClientKubeconfig(filepath.Join(d, "kubelet", "kubeconfig"),
		"system:node:"+n.Name, []string{"system:nodes"}); err != nil {
		return err
	}
	if err := l.writeRuntimeConfigs(n); err != nil {
		return err
	}
	if err := l.startAnchor(ctx, n.Name); err != nil {
		return err
	}
	if err := l.startContainerd(ctx, n.Name); err != nil {
		return err
	}
	if err := l.importImages(ctx, n.Name); err != nil {
		return err
	}
	return l.KubeletStart(ctx, n.Name)
}

// ensureServiceRoutes routes the Service CIDRs out of the node's first
// interface, as a node's default route would: the node itself and its
// hostNetwork pods (the weft agent among them) reach ClusterIPs through
// kube-proxy's rules, which rewrite the destination after this lookup.
func (l *Lab) ensureServiceRoutes(n Node) error {
	ifaces := make([]string, 0, len(n.Addrs))
	for i := range n.Addrs {
		ifaces = append(ifaces, i)
	}
	sort.Strings(ifaces)
	if len(ifaces) == 0 {
		return fmt.Errorf("node %s has no address", n.Name)
	}
	var routes []Route
	for _, p := range l.Topo.Cluster.ServiceCIDRs {
		dev := ""
		for _, i := range ifaces {
			for _, a := range n.Addrs[i] {
				if dev == "" && a.Addr().Is4() == p.Addr().Is4() {
					dev = i
				}
			}
		}
		if dev == "" {
			continue
		}
		routes = append(routes, Route{Dst: p, Dev: dev})
	}
	return ensureRoutes(l.NS(n.Name), routes)
}

func (l *Lab) prepareNodeDirs(n Node) error {
	d := l.NodeDir(n.Name)
	dirs := []string{"containerd", "kubelet", "sysctl", "mnt"}
	for _, m := range nodeMounts {
		dirs = append(dirs, m.src)
	}
	for _, s := range dirs {
		if err := os.MkdirAll(filepath.Join(d, s), 0o755); err != nil {
			return err
		}
	}
	// Each node has a boot ID of its own (kubelet reports it; weft's IPAM
	// stamps reservations with it); RebootNode changes it.
	bootID := filepath.Join(d, "sysctl", "kernel.random.boot_id")
	if _, err := os.Stat(bootID); err != nil {
		if err := writeBootID(bootID); err != nil {
			return err
		}
	}
	for k, v := range kubeletSysctls {
		if err := os.WriteFile(filepath.Join(d, "sysctl", strings.ReplaceAll(k, "/", ".")), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
	}
	// The node's CNI plugin directory starts as a kubeadm node's does, with
	// the reference plugins; weft's install-cni adds weft.
	for _, p := range []string{"loopback", "portmap", "bridge", "host-local"} {
		dst := filepath.Join(d, "opt", "cni", "bin", p)
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := copyFile(filepath.Join(l.opts.CNIPluginDir, p), dst); err != nil {
			return fmt.Errorf("node %s: CNI plugin %s: %w", n.Name, p, err)
		}
		if err := os.Chmod(dst, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// ensureHostMountPoints makes the directories the node mounts need on the
// machine (empty; nothing is ever written into them outside a node's mount
// namespace) and records the ones it made, so the last lab down removes them.
func ensureHostMountPoints(baseDir string) error {
	mountPointsMu.Lock()
	defer mountPointsMu.Unlock()
	rec := filepath.Join(baseDir, "mountpoints")
	made := readLines(rec)
	for _, m := range nodeMounts {
		var missing []string
		for p := m.path; p != "/"; p = filepath.Dir(p) {
			if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
				missing = append(missing, p)
			}
		}
		if err := os.MkdirAll(m.path, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", m.path, err)
		}
		made = append(made, missing...)
	}
	if len(made) == 0 {
		return nil
	}
	return writeFileAtomic(rec, []byte(strings.Join(dedup(made), "\n")+"\n"), 0o644)
}

// mountPointsMu serialises the record of mount points within a process.
var mountPointsMu sync.Mutex

// removeHostMountPoints removes the mount points the labs made, deepest
// first and only when empty, once no lab is left under baseDir.
func removeHostMountPoints(baseDir string) error {
	mountPointsMu.Lock()
	defer mountPointsMu.Unlock()
	ents, _ := os.ReadDir(baseDir)
	for _, e := range ents {
		if e.IsDir() {
			return nil // another lab still runs
		}
	}
	rec := filepath.Join(baseDir, "mountpoints")
	made := readLines(rec)
	sort.Slice(made, func(i, j int) bool { return len(made[i]) > len(made[j]) })
	// A lab of another base dir (another test run) may still mount there:
	// removing a directory another mount namespace mounts on would detach
	// that mount.
	inUse := mountedAnywhere()
	var errs []error
	var kept []string
	for _, p := range made {
		if inUse[p] {
			kept = append(kept, p)
			continue
		}
		if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove mount point %s: %w", p, err))
		}
	}
	if len(kept) > 0 {
		return errors.Join(append(errs, writeFileAtomic(rec, []byte(strings.Join(kept, "\n")+"\n"), 0o644))...)
	}
	if err := os.Remove(rec); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// mountedAnywhere lists the mount points of every process's mount
// namespace on the machine.
func mountedAnywhere() map[string]bool {
	out := map[string]bool{}
	seen := map[string]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		ns, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "mnt"))
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		data, err := os.ReadFile(filepath.Join("/proc", p.Name(), "mountinfo"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 4 {
				out[f[4]] = true
			}
		}
	}
	return out
}

func readLines(file string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	return strings.Fields(string(data))
}

func dedup(xs []string) []string {
	sort.Strings(xs)
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// cgroupHierarchies lists the cgroup v1 hierarchies a node's cgroupRoot is
// made in (the named systemd one and the empty unified one included: runc
// writes into both).
func cgroupHierarchies() []string {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.Name()))
		if err != nil || !fi.IsDir() {
			continue // the cpu,cpuacct style links point at real hierarchies
		}
		if li, err := os.Lstat(filepath.Join("/sys/fs/cgroup", e.Name())); err == nil && li.Mode()&fs.ModeSymlink != 0 {
			continue
		}
		out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
	}
	return out
}

func (l *Lab) ensureCgroups(node string) error {
	for _, h := range cgroupHierarchies() {
		if filepath.Base(h) == "unified" {
			continue // runc makes it
		}
		p := filepath.Join(h, l.cgroupName(node))
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", p, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(p, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s/%s: %w", p, f, err)
				}
			}
		}
	}
	return nil
}

// removeCgroups kills every process in a node's cgroups, then removes them
// deepest first.
func removeCgroups(name string) error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, name)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		for range 50 {
			pids := cgroupPids(root)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupPids lists the processes in a cgroup and its children.
func cgroupPids(root string) []int {
	var out []int
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		return nil
	})
	return out
}

// clusterDNS is the kube-dns Service address: the tenth address of the first
// Service CIDR (kubeadm's choice).
func (l *Lab) clusterDNS() netip.Addr {
	if len(l.Topo.Cluster.ServiceCIDRs) == 0 {
		return netip.MustParseAddr("10.96.0.10")
	}
	a := l.Topo.Cluster.ServiceCIDRs[0].Addr()
	for range 10 {
		a = a.Next()
	}
	return a
}

func (l *Lab) writeRuntimeConfigs(n Node) error {
	d := l.NodeDir(n.Name)
	ctrd := filepath.Join(d, "containerd")
	// containerd v2 (config version 3). The CRI plugin finds the CNI
	// configuration and plugins where a node keeps them; those paths are
	// the node's own through the binds.
	toml := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
temp = %[3]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = %[4]q
[ttrpc]
  address = %[5]q
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = %[6]q
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[7]q
  [plugins.'io.containerd.cri.v1.runtime']
    # No process here may lower its OOM score (the machine's bounding set
    # lacks CAP_SYS_RESOURCE); containerd then keeps every score >= its own.
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = %[8]q
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/opt/cni/bin"]
      conf_dir = "/etc/cni/net.d"
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`, filepath.Join(ctrd, "root"), filepath.Join(ctrd, "state"), filepath.Join(ctrd, "tmp"),
		l.containerdSock(n.Name), l.containerdSock(n.Name)+".ttrpc", filepath.Join(ctrd, "opt"),
		PauseImage, l.runtimeBin("runc"))
	if err := writeFileAtomic(filepath.Join(ctrd, "config.toml"), []byte(toml), 0o644); err != nil {
		return err
	}
	addr, _ := nodeAddr(n, true)
	if !addr.IsValid() {
		addr, _ = nodeAddr(n, false)
	}
	// failCgroupV1: the machine mounts cgroup v1. resolvConf "": pods with
	// dnsPolicy Default get no resolver from the machine.
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[1]q}
authorization: {mode: Webhook}
address: %[2]q
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /%[3]s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[4]s
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: [%[5]q]
serializeImagePulls: false
protectKernelDefaults: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
syncFrequency: 10s
fileCheckFrequency: 5s
`, filepath.Join(l.cpDir(), "pki", "ca.crt"), addr.String(), l.cgroupName(n.Name),
		l.containerdSock(n.Name), l.clusterDNS().String())
	return writeFileAtomic(filepath.Join(d, "kubelet", "config.yaml"), []byte(cfg), 0o644)
}

func (l *Lab) startAnchor(ctx context.Context, node string) error {
	d := l.NodeDir(node)
	if pid := l.anchorPid(node); pid > 0 && alive(pid) {
		return nil
	}
	_ = os.Remove(filepath.Join(d, "anchor.pid"))
	args := []string{"--net=" + filepath.Join(netnsDir, l.NS(node)), "--",
		"unshare", "--mount", "--uts", "--propagation", "private", "--",
		"sh", "-c", anchorScript, "anchor", node, d}
	for _, m := range nodeMounts {
		args = append(args, m.path, filepath.Join(d, m.src))
	}
	lf, err := os.OpenFile(filepath.Join(d, "anchor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %s: start anchor: %w", node, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return waitFor(ctx, 10*time.Second, exited, func() error {
		if l.anchorPid(node) == cmd.Process.Pid {
			return nil
		}
		return errors.New("not ready")
	}, "node "+node+" anchor", filepath.Join(d, "anchor.log"))
}

// waitFor polls ok every 50 ms until it returns nil, the process exits or
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, exited <-chan struct{}, ok func() error, what, log string) error {
	err := poll.Err(ctx, timeout, 50*time.Millisecond, func() error {
		select {
		case <-exited:
			return fmt.Errorf("%s exited: %s: %w", what, logTailOf(log), poll.ErrStop)
		default:
		}
		return ok()
	})
	if err != nil && !errors.Is(err, poll.ErrStop) {
		return fmt.Errorf("%s not ready: %w\n%s", what, err, logTailOf(log))
	}
	return err
}

// startInNode starts bin with args in a node's namespaces (anchor's
// network, mount and UTS), detached, logging to <nodeDir>/<name>.log.
func (l *Lab) startInNode(node, name, bin string, args ...string) (int, <-chan struct{}, error) {
	d := l.NodeDir(node)
	anchor := l.anchorPid(node)
	if anchor == 0 {
		return 0, nil, fmt.Errorf("node %s: no anchor", node)
	}
	lf, err := os.OpenFile(filepath.Join(d, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, nil, err
	}
	defer lf.Close()
	fmt.Fprintf(lf, "--- weft-lab: start %s at %s\n", name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(anchor), "-m", "-n", "-u", "--", bin}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+l.opts.RuntimeDir+":"+filepath.Dir(l.runtimeBin("runc"))+":/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("node %s: start %s: %w", node, name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(d, name+".pid"), fmt.Appendf(nil, "%d\n", pid), 0o644); err != nil {
		return 0, nil, err
	}
	return pid, exited, nil
}

func (l *Lab) startContainerd(ctx context.Context, node string) error {
	d := l.NodeDir(node)
	if pid := pidFromFile(filepath.Join(d, "containerd.pid")); pid > 0 && alive(pid) {
		return nil
	}
	_, exited, err := l.startInNode(node, "containerd", l.runtimeBin("containerd"),
		"--config", filepath.Join(d, "containerd", "config.toml"))
	if err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, exited, func() error {
		_, err := exec.CommandContext(ctx, l.runtimeBin("ctr"), "-a", l.containerdSock(node), "version").Output()
		return err
	}, "node "+node+" containerd", filepath.Join(d, "containerd.log"))
}

// KubeletStart starts a real node's kubelet unless it runs.
func (l *Lab) KubeletStart(ctx context.Context, node string) error {
	d := l.NodeDir(node)
	if pid := pidFromFile(filepath.Join(d, "kubelet.pid")); pid > 0 && alive(pid) {
		return nil
	}
	n, ok := l.Topo.Node(node)
	if !ok {
		return fmt.Errorf("no node %s", node)
	}
	var ips []string
	for _, v4 := range []bool{true, false} {
		if a, ok := nodeAddr(n, v4); ok {
			ips = append(ips, a.String())
		}
	}
	args := []string{
		"--config=" + filepath.Join(d, "kubelet", "config.yaml"),
		"--kubeconfig=" + filepath.Join(d, "kubelet", "kubeconfig"),
		"--cert-dir=" + filepath.Join(d, "kubelet", "pki"),
		"--hostname-override=" + node,
		"--node-ip=" + strings.Join(ips, ","),
		"--v=1",
	}
	if len(n.Labels) > 0 {
		var ls []string
		for k, v := range n.Labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		args = append(args, "--node-labels="+strings.Join(ls, ","))
	}
	_, exited, err := l.startInNode(node, "kubelet", filepath.Join(l.opts.K8sBinDir, "kubelet"), args...)
	if err != nil {
		return err
	}
	// Healthy once its healthz answers inside the node's namespace.
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: dialIn(l.NS(node)), DisableKeepAlives: true,
	}}
	return waitFor(ctx, 60*time.Second, exited, func() error {
		return controlplane.GetOK(ctx, client, "http://127.0.0.1:10248/healthz")
	}, "node "+node+" kubelet", filepath.Join(d, "kubelet.log"))
}

// KubeletStop stops a real node's kubelet (SIGTERM, then SIGKILL); its
// containers keep running, as on a node whose kubelet restarts.
func (l *Lab) KubeletStop(node string) error {
	f := filepath.Join(l.NodeDir(node), "kubelet.pid")
	if pid := pidFromFile(f); pid > 0 {
		killAll([]int{pid}, 10*time.Second)
	}
	if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func writeBootID(file string) error {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	id := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	return os.WriteFile(file, []byte(id+"\n"), 0o644)
}

// BootID is a real node's current boot ID.
func (l *Lab) BootID(node string) (string, error) {
	b, err := os.ReadFile(filepath.Join(l.NodeDir(node), "sysctl", "kernel.random.boot_id"))
	return strings.TrimSpace(string(b)), err
}

// RebootNode reboots a real node as far as its software can tell: every
// process of it is killed (kubelet, containers, containerd, the weft agent
// with them), what lives in /run is gone, the boot ID changes, and
// containerd and kubelet start again; the kubelet then recreates its pods.
// Files under /var (weft's IPAM store, kubelet's and containerd's state) and
// the node's kernel network state stay, as on a machine whose network
// namespace outlives it would.
func (l *Lab) RebootNode(ctx context.Context, node string) error {
	if err := l.checkWeftNode(node); err != nil {
		return err
	}
	if !l.opts.Kubelets {
		return fmt.Errorf("node %s is not a real node", node)
	}
	d := l.NodeDir(node)
	if err := stopRealNode(l.Name, d); err != nil {
		return err
	}
	// The pods' namespace names and records: their sandboxes are gone.
	pods, _ := l.Pods(node)
	if err := l.DetachPods(pods); err != nil {
		return err
	}
	for _, tmpfs := range []string{"run/weft", "binds/run/containerd", "containerd/state"} {
		if err := os.RemoveAll(filepath.Join(d, tmpfs)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(d, tmpfs), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"kubelet.pid", "containerd.pid", "anchor.pid"} {
		_ = os.Remove(filepath.Join(d, f))
	}
	if err := writeBootID(filepath.Join(d, "sysctl", "kernel.random.boot_id")); err != nil {
		return err
	}
	n, _ := l.Topo.Node(node)
	return l.ensureRealNode(ctx, n)
}

// TagWeftImage tags weft's image under ref in every real node's containerd
// (a new image tag for a DaemonSet roll, without a registry).
func (l *Lab) TagWeftImage(ctx context.Context, ref string) error {
	src, err := image.Ref(l.opts.WeftImage)
	if err != nil {
		return err
	}
	for _, n := range l.Topo.NodesOf(KindWeft) {
		out, err := exec.CommandContext(ctx, l.runtimeBin("ctr"), "-a", l.containerdSock(n.Name), "-n", "k8s.io",
			"images", "tag", "--force", src, ref).CombinedOutput()
		if err != nil {
			return fmt.Errorf("node %s: tag %s as %s: %w: %s", n.Name, src, ref, err, out)
		}
	}
	return nil
}

// stopRealNode ends everything of a real node: kubelet, every container
// (the node's cgroups), the shims and containerd (their command lines name
// the node dir), the anchor, then the cgroups.
func stopRealNode(labName, nodeDir string) error {
	node := filepath.Base(nodeDir)
	var errs []error
	if pid := pidFromFile(filepath.Join(nodeDir, "kubelet.pid")); pid > 0 {
		killAll([]int{pid}, 5*time.Second)
	}
	cg := "weft-lab." + labName + "." + node
	if err := removeCgroups(cg); err != nil {
		errs = append(errs, err)
	}
	killAll(pidsMentioning(nodeDir+"/"), 2*time.Second)
	for _, f := range []string{"containerd.pid", "anchor.pid"} {
		if pid := pidFromFile(filepath.Join(nodeDir, f)); pid > 0 {
			killAll([]int{pid}, 2*time.Second)
		}
	}
	// A second pass: a container started while the first ran.
	if err := removeCgroups(cg); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
