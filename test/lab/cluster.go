package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"weft.dev/weft/test/lab/controlplane"
)

// cluster is what the lab needs from its control plane after Up.
// *controlplane.ControlPlane is one (in the process that ran Up); attached is
// the other (any later process, see Open).
type cluster interface {
	Client() kubernetes.Interface
	RESTConfig() *rest.Config
	StopAPIServer() error
	StartAPIServer(ctx context.Context) error
}

// ConfigMap that holds weft's settings; Up writes the topology's mode into it.
const (
	configMapNamespace = "kube-system"
	configMapName      = "weft-config"
)

func (l *Lab) upCluster(ctx context.Context) error {
	n, ok := l.Topo.ControlPlane()
	if !ok {
		return nil
	}
	ns := l.NS(n.Name)
	addr := firstAddr(n)
	if cp, err := attachCluster(l.cpDir(), ns, addr); err == nil && readyz(ctx, cp.Client()) == nil {
		l.cp = cp // a second Up: the control plane runs already
	} else {
		if err := controlplane.Cleanup(l.cpDir()); err != nil {
			return fmt.Errorf("clean old control plane: %w", err)
		}
		c := l.Topo.Cluster
		cp, err := controlplane.Start(ctx, controlplane.Config{
			Netns:             ns,
			Addr:              addr,
			Dir:               l.cpDir(),
			BinDir:            l.opts.K8sBinDir,
			ClusterCIDRs:      c.ClusterCIDRs,
			NodeMaskV4:        c.NodeMaskV4,
			NodeMaskV6:        c.NodeMaskV6,
			ServiceCIDRs:      c.ServiceCIDRs,
			AllocateNodeCIDRs: c.AllocateNodeCIDRs,
			Kubelets:          l.opts.Kubelets,
			Log:               l.log,
		})
		if err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
		l.cp = cp
		if l.opts.Kubelets {
			err = l.installWeft(ctx)
		} else {
			err = l.applyDeploy(ctx, cp)
		}
		if err != nil {
			return err
		}
	}
	if err := l.setMode(ctx, l.Topo.Cluster.Mode); err != nil {
		return err
	}
	if l.opts.Kubelets {
		for _, w := range l.Topo.NodesOf(KindWeft) {
			for _, d := range []string{"etc/cni/net.d", "var/lib/weft", "run/weft", "pods"} {
				if err := os.MkdirAll(filepath.Join(l.NodeDir(w.Name), d), 0o755); err != nil {
					return err
				}
			}
		}
		return l.upRealNodes(ctx)
	}
	for _, w := range l.Topo.NodesOf(KindWeft) {
		if err := l.ensureWeftNode(ctx, w); err != nil {
			return fmt.Errorf("node %s: %w", w.Name, err)
		}
	}
	if l.Topo.Cluster.AllocateNodeCIDRs {
		for _, w := range l.Topo.NodesOf(KindWeft) {
			if _, err := l.WaitPodCIDRs(ctx, w.Name, 30*time.Second); err != nil {
				return err
			}
		}
	}
	if l.AgentBuilt() {
		for _, w := range l.Topo.NodesOf(KindWeft) {
			if l.AgentPid(w.Name) > 0 {
				continue
			}
			if err := l.AgentStart(ctx, w.Name); err != nil {
				return err
			}
		}
	} else {
		l.log.Info("weft-agent not built: nodes run without agents", "want", l.agentBin())
	}
	return nil
}

// applyDeploy applies deploy/kubernetes (RBAC, ConfigMap) when it holds
// manifests.
func (l *Lab) applyDeploy(ctx context.Context, cp *controlplane.ControlPlane) error {
	files, _ := filepath.Glob(filepath.Join(l.opts.DeployDir, "*.yaml"))
	if len(files) == 0 {
		l.log.Warn("no manifests to apply", "dir", l.opts.DeployDir)
		return nil
	}
	if err := cp.ApplyDeploy(ctx, l.opts.DeployDir); err != nil {
		return fmt.Errorf("apply %s: %w", l.opts.DeployDir, err)
	}
	return nil
}

// ensureWeftNode makes the node's directories, registers its Node object
// and writes the agent's kubeconfig.
func (l *Lab) ensureWeftNode(ctx context.Context, n Node) error {
	for _, d := range []string{"etc/cni/net.d", "var/lib/weft", "run/weft", "var/lib/cni", "pods"} {
		if err := os.MkdirAll(filepath.Join(l.NodeDir(n.Name), d), 0o755); err != nil {
			return err
		}
	}
	cp, ok := l.cp.(*controlplane.ControlPlane)
	if !ok {
		// Attached to a running control plane (a second Up): the node was
		// registered by the first.
		return nil
	}
	if err := cp.RegisterNode(ctx, n.Name, n.NodeAddrs(), n.Labels); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if err := cp.AgentKubeconfig(ctx, n.Name, l.agentKubeconfig(n.Name)); err != nil {
		return fmt.Errorf("agent kubeconfig: %w", err)
	}
	return nil
}

func (l *Lab) agentKubeconfig(node string) string {
	return filepath.Join(l.NodeDir(node), "kubeconfig")
}

// Client is an admin clientset for the lab's apiserver, usable from the
// root namespace.
func (l *Lab) Client() (kubernetes.Interface, error) {
	if l.cp == nil {
		return nil, fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	return l.cp.Client(), nil
}

// RESTConfig is the admin config behind Client.
func (l *Lab) RESTConfig() (*rest.Config, error) {
	if l.cp == nil {
		return nil, fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	return l.cp.RESTConfig(), nil
}

// AdminKubeconfig is the admin kubeconfig for processes inside the lab.
func (l *Lab) AdminKubeconfig() string { return filepath.Join(l.cpDir(), "admin.kubeconfig") }

// AgentKubeconfig is the kubeconfig of a node's weft-agent (its
// ServiceAccount token).
func (l *Lab) AgentKubeconfig(node string) string { return l.agentKubeconfig(node) }

// Kubectl runs kubectl with the admin kubeconfig inside the control-plane
// namespace and returns its standard output.
func (l *Lab) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	n, ok := l.Topo.ControlPlane()
	if !ok {
		return nil, fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	return l.output(ctx, l.NS(n.Name), filepath.Join(l.opts.K8sBinDir, "kubectl"),
		append([]string{"--kubeconfig", l.AdminKubeconfig()}, args...)...)
}

// KubectlCommand is kubectl with the admin kubeconfig inside the
// control-plane namespace, for a caller that wires its standard streams
// (kubectl apply -f - reads standard input).
func (l *Lab) KubectlCommand(ctx context.Context, args ...string) (*exec.Cmd, error) {
	n, ok := l.Topo.ControlPlane()
	if !ok {
		return nil, fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	argv := append([]string{"netns", "exec", l.NS(n.Name), filepath.Join(l.opts.K8sBinDir, "kubectl"),
		"--kubeconfig", l.AdminKubeconfig()}, args...)
	return exec.CommandContext(ctx, "ip", argv...), nil
}

// APIServerStop kills kube-apiserver; etcd and the controller manager stay.
func (l *Lab) APIServerStop() error {
	if l.cp == nil {
		return fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	return l.cp.StopAPIServer()
}

// APIServerStart starts kube-apiserver again and waits until it is ready.
func (l *Lab) APIServerStart(ctx context.Context) error {
	if l.cp == nil {
		return fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	return l.cp.StartAPIServer(ctx)
}

// Readyz asks the apiserver's /readyz.
func (l *Lab) Readyz(ctx context.Context) error {
	if l.cp == nil {
		return fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	return readyz(ctx, l.cp.Client())
}

func readyz(ctx context.Context, c kubernetes.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("GET /readyz: %w", err)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("GET /readyz: %q", body)
	}
	return nil
}

// ConfigMap key holding weft's configuration document (YAML).
const configKey = "config.yaml"

// setMode writes the topology's mode and cluster CIDRs into the weft
// ConfigMap (when it exists: deploy/kubernetes makes it).
func (l *Lab) setMode(ctx context.Context, mode string) error {
	c := l.cp.Client()
	if _, err := c.CoreV1().ConfigMaps(configMapNamespace).Get(ctx, configMapName, metav1.GetOptions{}); err != nil {
		l.log.Warn("weft ConfigMap missing: mode not set", "configmap", configMapNamespace+"/"+configMapName, "err", err)
		return nil
	}
	cidrs := make([]string, len(l.Topo.Cluster.ClusterCIDRs))
	for i, p := range l.Topo.Cluster.ClusterCIDRs {
		cidrs[i] = p.String()
	}
	return l.updateConfig(ctx, map[string]any{"mode": mode, "clusterCIDRs": cidrs})
}

// SetMode switches the datapath mode ("vxlan" or "bgp") in the weft
// ConfigMap; running agents follow it.
func (l *Lab) SetMode(ctx context.Context, mode string) error {
	if mode != "vxlan" && mode != "bgp" {
		return fmt.Errorf("mode %q: want vxlan or bgp", mode)
	}
	return l.updateConfig(ctx, map[string]any{"mode": mode})
}

// SetConfig sets top-level keys of the weft ConfigMap's configuration
// document, keeping the others, without checking them: tests use it to
// hand the agents bad documents too.
func (l *Lab) SetConfig(ctx context.Context, set map[string]any) error {
	return l.updateConfig(ctx, set)
}

// updateConfig sets top-level keys of the ConfigMap's configuration
// document, keeping the others.
func (l *Lab) updateConfig(ctx context.Context, set map[string]any) error {
	if l.cp == nil {
		return fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	cms := l.cp.Client().CoreV1().ConfigMaps(configMapNamespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, configMapName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get %s/%s: %w", configMapNamespace, configMapName, err)
		}
		doc := map[string]any{}
		if err := yaml.Unmarshal([]byte(cm.Data[configKey]), &doc); err != nil {
			return fmt.Errorf("%s/%s: parse %s: %w", configMapNamespace, configMapName, configKey, err)
		}
		maps.Copy(doc, set)
		out, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[configKey] = string(out)
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update %s/%s: %w", configMapNamespace, configMapName, err)
		}
		return nil
	})
}

// Config returns the weft configuration document in the ConfigMap.
func (l *Lab) Config(ctx context.Context) (map[string]any, error) {
	if l.cp == nil {
		return nil, fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	cm, err := l.cp.Client().CoreV1().ConfigMaps(configMapNamespace).Get(ctx, configMapName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", configMapNamespace, configMapName, err)
	}
	doc := map[string]any{}
	if err := yaml.Unmarshal([]byte(cm.Data[configKey]), &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", configKey, err)
	}
	return doc, nil
}

// PodCIDRs returns the pod CIDRs the controller manager gave a node.
func (l *Lab) PodCIDRs(ctx context.Context, node string) ([]netip.Prefix, error) {
	if l.cp == nil {
		return nil, fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := l.cp.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", node, err)
	}
	var out []netip.Prefix
	for _, s := range n.Spec.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("node %s: spec.podCIDRs %q: %w", node, s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// WaitPodCIDRs waits until a node has pod CIDRs.
func (l *Lab) WaitPodCIDRs(ctx context.Context, node string, timeout time.Duration) ([]netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		cidrs, err := l.PodCIDRs(ctx, node)
		if err == nil && len(cidrs) > 0 {
			return cidrs, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s has no pod CIDRs after %s (last error: %v)", node, timeout, err)
		case <-tick.C:
		}
	}
}

// attached is a control plane started by another process: the lab reaches
// it with the admin kubeconfig, dialing from inside the control-plane
// namespace. It is a local stand-in until the controlplane package can
// re-attach to its own daemons: it stops and starts kube-apiserver from the
// pid file the controlplane package keeps (<dir>/kube-apiserver.pid, "pid
// starttime") and the apiserver's own command line.
type attached struct {
	dir, ns string
	cfg     *rest.Config
	client  kubernetes.Interface
}

func attachCluster(dir, ns string, addr netip.Addr) (*attached, error) {
	kc := filepath.Join(dir, "admin.kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", kc, err)
	}
	cfg.Dial = dialIn(ns)
	cfg.UserAgent = "weft-lab"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", addr, err)
	}
	return &attached{dir: dir, ns: ns, cfg: cfg, client: client}, nil
}

func (a *attached) Client() kubernetes.Interface { return a.client }
func (a *attached) RESTConfig() *rest.Config     { return rest.CopyConfig(a.cfg) }

func (a *attached) pidFile() string  { return filepath.Join(a.dir, "kube-apiserver.pid") }
func (a *attached) argvFile() string { return filepath.Join(a.dir, "kube-apiserver.argv") }

func (a *attached) StopAPIServer() error {
	pid := pidFromFile(a.pidFile())
	if pid == 0 {
		return nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Errorf("read kube-apiserver command line: %w", err)
	}
	argv := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	data, _ := json.Marshal(argv)
	if err := os.WriteFile(a.argvFile(), data, 0o600); err != nil {
		return err
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	killAll([]int{pid}, 0)
	return os.Remove(a.pidFile())
}

func (a *attached) StartAPIServer(ctx context.Context) error {
	if pidFromFile(a.pidFile()) > 0 {
		return errors.New("kube-apiserver already running")
	}
	data, err := os.ReadFile(a.argvFile())
	if err != nil {
		return fmt.Errorf("kube-apiserver command line (stop it with this tool first): %w", err)
	}
	var argv []string
	if err := json.Unmarshal(data, &argv); err != nil || len(argv) == 0 {
		return fmt.Errorf("parse %s: %v", a.argvFile(), err)
	}
	lf, err := os.OpenFile(filepath.Join(a.dir, "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", a.ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	st, err := procStartTime(pid)
	if err != nil {
		return err
	}
	if err := os.WriteFile(a.pidFile(), fmt.Appendf(nil, "%d %d\n", pid, st), 0o644); err != nil {
		return err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for {
		if err := readyz(ctx, a.client); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return errors.New("kube-apiserver not ready after 60s")
		case <-tick.C:
		}
	}
}

// procStartTime is field 22 of /proc/<pid>/stat.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	var st uint64
	_, err = fmt.Sscanf(f[19], "%d", &st)
	return st, err
}

// dialIn returns a dialer whose sockets are made inside namespace ns.
func dialIn(ns string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		var conn net.Conn
		err := inNS(ns, func() error {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, address)
			conn = c
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("dial %s in %s: %w", address, ns, err)
		}
		return conn, nil
	}
}
