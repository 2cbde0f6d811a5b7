package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// A pod is a namespace wl-<lab>.<node>.<pod> attached to its node through
// the node's CNI configuration, the way a container runtime does it: the
// first .conflist by name in the node's etc/cni/net.d, run by libcni with a
// per-node cache dir, the plugins executed inside the node's namespace,
// CNI_NETNS the pod's namespace, interface eth0.

// Pod is a pod the lab made.
type Pod struct {
	Node string       `json:"node"`
	Name string       `json:"name"`
	NS   string       `json:"netns"`
	IPs  []netip.Addr `json:"ips"`
}

// conflistWait bounds how long PodAdd waits for a running agent to write the
// node's CNI configuration.
const conflistWait = 30 * time.Second

func (l *Lab) cniConfDir(node string) string {
	return filepath.Join(l.NodeDir(node), "etc", "cni", "net.d")
}

// PodAdd makes pod on a weft node and returns its addresses.
func (l *Lab) PodAdd(ctx context.Context, node, pod string) (Pod, error) {
	if err := l.checkWeftNode(node); err != nil {
		return Pod{}, err
	}
	if len(pod) > MaxNodeName || !nodeNameRE.MatchString(pod) {
		return Pod{}, fmt.Errorf("pod name %q: want 1-%d of [a-z0-9-], starting and ending alphanumeric", pod, MaxNodeName)
	}
	p := Pod{Node: node, Name: pod, NS: podNS(l.Name, node, pod)}
	if _, err := os.Stat(l.podFile(node, pod)); err == nil {
		return Pod{}, fmt.Errorf("pod %s/%s exists", node, pod)
	}
	if l.opts.Kubelets {
		return l.podAddReal(ctx, node, pod)
	}
	list, err := l.conflist(ctx, node)
	if err != nil {
		return Pod{}, err
	}
	if err := ensureNS(ctx, p.NS); err != nil {
		return Pod{}, err
	}
	cni, rt := l.cniFor(node, p)
	res, err := cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		// Undo what the plugins may have done, then the namespace.
		_ = cni.DelNetworkList(context.WithoutCancel(ctx), list, rt)
		_ = removeNS(p.NS, time.Second)
		return Pod{}, fmt.Errorf("cni add %s/%s: %w", node, pod, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return Pod{}, fmt.Errorf("cni add %s/%s: result: %w", node, pod, err)
	}
	for _, ip := range r.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			p.IPs = append(p.IPs, a.Unmap())
		}
	}
	data, _ := json.MarshalIndent(p, "", "  ")
	if err := writeFileAtomic(l.podFile(node, pod), data, 0o644); err != nil {
		return Pod{}, err
	}
	return p, nil
}

// PodDel removes a pod: CNI DEL, then its namespace. Deleting a pod that is
// gone is not an error.
func (l *Lab) PodDel(ctx context.Context, node, pod string) error {
	if err := l.checkWeftNode(node); err != nil {
		return err
	}
	if l.opts.Kubelets {
		return l.podDelReal(ctx, node, pod)
	}
	p := Pod{Node: node, Name: pod, NS: podNS(l.Name, node, pod)}
	var errs []error
	if list, err := l.firstConflist(node); err == nil && list != nil {
		cni, rt := l.cniFor(node, p)
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("cni del %s/%s: %w", node, pod, err))
		}
	}
	if err := removeNS(p.NS, time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(l.podFile(node, pod)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Pods lists the pods of a node (all weft nodes when node is "").
func (l *Lab) Pods(node string) ([]Pod, error) {
	var out []Pod
	for _, n := range l.Topo.NodesOf(KindWeft) {
		if node != "" && n.Name != node {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(l.NodeDir(n.Name), "pods", "*.json"))
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			var p Pod
			if err := json.Unmarshal(data, &p); err != nil {
				return nil, fmt.Errorf("parse %s: %w", f, err)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

func (l *Lab) podFile(node, pod string) string {
	return filepath.Join(l.NodeDir(node), "pods", pod+".json")
}

func (l *Lab) checkWeftNode(node string) error {
	n, ok := l.Topo.Node(node)
	if !ok {
		return fmt.Errorf("no node %q in lab %s", node, l.Name)
	}
	if n.Kind != KindWeft {
		return fmt.Errorf("node %q is a %s node, pods need a weft node", node, n.Kind)
	}
	return nil
}

func (l *Lab) cniFor(node string, p Pod) (*libcni.CNIConfig, *libcni.RuntimeConf) {
	exec := &nsExec{ns: l.NS(node)}
	cni := libcni.NewCNIConfigWithCacheDir([]string{l.opts.BinDir, l.opts.CNIPluginDir},
		filepath.Join(l.NodeDir(node), "var", "lib", "cni"), exec)
	sum := sha256.Sum256([]byte(p.NS))
	id := hex.EncodeToString(sum[:])
	rt := &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       filepath.Join(netnsDir, p.NS),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", id},
		},
		CapabilityArgs: map[string]any{"portMappings": []any{}},
	}
	return cni, rt
}

// conflist returns the node's CNI configuration. Without one, it waits for a
// running agent to write it, or, when the node has no agent, writes the
// lab's own from the node's pod CIDRs.
func (l *Lab) conflist(ctx context.Context, node string) (*libcni.NetworkConfigList, error) {
	list, err := l.firstConflist(node)
	if err != nil || list != nil {
		return list, err
	}
	if l.AgentPid(node) > 0 {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(conflistWait)
		for {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-deadline:
				return nil, fmt.Errorf("node %s: weft-agent wrote no CNI config into %s within %s", node, l.cniConfDir(node), conflistWait)
			case <-tick.C:
			}
			if list, err := l.firstConflist(node); err != nil || list != nil {
				return list, err
			}
		}
	}
	cidrs, err := l.PodCIDRs(ctx, node)
	if err != nil {
		return nil, err
	}
	if len(cidrs) == 0 {
		return nil, fmt.Errorf("node %s has no pod CIDRs (is allocateNodeCIDRs off?)", node)
	}
	data, err := LabConflist(cidrs, filepath.Join(l.NodeDir(node), "var", "lib", "weft", "ipam"))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(l.cniConfDir(node), "10-weft.conflist")
	if err := writeFileAtomic(path, data, 0o644); err != nil {
		return nil, err
	}
	l.log.Info("wrote lab CNI config (no weft-agent on the node)", "node", node, "path", path)
	return l.firstConflist(node)
}

// LabConflist is the CNI configuration the lab writes for a node that runs
// no agent, in the weft CNI binary's format. It has no portmap plugin:
// Debian's reference plugins (v1.1.1) support CNI spec versions up to 1.0.0
// and refuse a 1.1.0 list ("incompatible CNI versions").
func LabConflist(podCIDRs []netip.Prefix, dataDir string) ([]byte, error) {
	cidrs := make([]string, len(podCIDRs))
	for i, p := range podCIDRs {
		cidrs[i] = p.String()
	}
	conf := map[string]any{
		"cniVersion": "1.1.0",
		"name":       "weft",
		"plugins": []any{
			map[string]any{"type": "weft", "bridge": "weft0", "mtu": 1500, "podCIDRs": cidrs, "dataDir": dataDir},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// firstConflist loads the first .conflist by name, as a container runtime
// does; nil when there is none.
func (l *Lab) firstConflist(node string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(l.cniConfDir(node), []string{".conflist"})
	if err != nil {
		return nil, fmt.Errorf("node %s: list CNI configs: %w", node, err)
	}
	if len(files) == 0 {
		return nil, nil
	}
	sort.Strings(files)
	list, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("node %s: load %s: %w", node, files[0], err)
	}
	return list, nil
}

// nsExec runs CNI plugins inside a node's namespace, as a runtime on that
// node would.
type nsExec struct {
	ns string
	version.PluginDecoder
}

func (e *nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// A plugin reports its error as JSON on stdout.
		if stdout.Len() > 0 {
			perr := &types.Error{}
			if json.Unmarshal(stdout.Bytes(), perr) == nil && perr.Msg != "" {
				return nil, perr
			}
		}
		return nil, fmt.Errorf("%s in %s: %w: %s%s", filepath.Base(pluginPath), e.ns, err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (e *nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}
