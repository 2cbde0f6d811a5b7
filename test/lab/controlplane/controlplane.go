// Package controlplane runs a real Kubernetes control plane for the weft lab:
// etcd, kube-apiserver and kube-controller-manager as processes inside one
// network namespace on the lab underlay.
//
// The test process itself stays in the root namespace. It reaches the
// apiserver through RESTConfig, whose Dial creates each TCP socket inside the
// lab namespace, so no route or address is ever added to the root namespace.
// Processes inside the lab (agents, kubectl) use the kubeconfig files this
// package writes, with server https://<Addr>:6443.
//
// Every daemon runs with `ip netns exec` in its own process group; its pid
// is recorded in the state dir, its output goes to <Dir>/<daemon>.log. Stop
// kills them all and removes the state dir; Cleanup does the same from the
// pid files alone, after a crash of the process that called Start.
//
// The kube-controller-manager runs only the controllers in
// Config.Controllers (DefaultControllers). The node-lifecycle controller is
// left out on purpose: without kubelets the lab registers nodes as a kubelet
// would but sends no heartbeats, so that controller would mark every node
// NotReady and taint it unreachable after its grace period.
//
// With Config.Kubelets the nodes are real kubelets: the control plane also
// runs kube-scheduler and the workload controllers (WorkloadControllers),
// and the apiserver reaches kubelets (exec, logs, port-forward) at their
// InternalIP with a client certificate of its own.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Ports inside the control-plane namespace. The namespace is the lab's own,
// so fixed ports cannot collide with another lab.
const (
	APIServerPort = 6443
	etcdPort      = 2379
	etcdPeerPort  = 2380
	kcmPort       = 10257
	schedPort     = 10259
)

// DefaultControllers are the kube-controller-manager controllers the lab
// runs: node IPAM (pod CIDRs), service accounts and their root CA config map,
// namespace deletion and EndpointSlices for Services. node-lifecycle is left
// out (see the package comment).
var DefaultControllers = []string{
	"node-ipam-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"namespace-controller",
	"endpointslice-controller",
}

// WorkloadControllers are added to the controllers when the nodes are real
// kubelets: Deployments, ReplicaSets, DaemonSets, StatefulSets, Jobs, the
// garbage collector that deletes what they own, and node lifecycle (real
// kubelets send heartbeats; it lifts the not-ready taint a kubelet registers
// with, and marks a node whose kubelet stopped).
var WorkloadControllers = []string{
	"node-lifecycle-controller",
	"deployment-controller",
	"replicaset-controller",
	"replicationcontroller-controller",
	"daemonset-controller",
	"statefulset-controller",
	"job-controller",
	"garbage-collector-controller",
	"disruption-controller",
	"ttl-after-finished-controller",
	"endpoints-controller",
}

// MaxTokenExpiration is the apiserver's --service-account-max-token-expiration;
// AgentKubeconfig asks for tokens this long.
const MaxTokenExpiration = 365 * 24 * time.Hour

// Config describes one control plane.
type Config struct {
	Netns             string         // existing named netns (/run/netns/<Netns>) to run in
	Addr              netip.Addr     // underlay address in Netns: apiserver bind and advertise address
	Dir               string         // state dir (certs, etcd data, logs, kubeconfigs, pids); must be empty or absent; removed by Stop
	BinDir            string         // kube-* binaries; default $WEFT_K8S_BIN, else .cache/k8s/v1.37.2 at the repository root
	EtcdBin           string         // default /usr/bin/etcd
	ClusterCIDRs      []netip.Prefix // pod CIDRs, at most one per family; default 10.244.0.0/16
	NodeMaskV4        int            // per-node pod CIDR size for IPv4; default 24
	NodeMaskV6        int            // per-node pod CIDR size for IPv6; default 64
	ServiceCIDRs      []netip.Prefix // at most one per family; default 10.96.0.0/16
	AllocateNodeCIDRs bool           // kube-controller-manager --allocate-node-cidrs
	Controllers       []string       // kube-controller-manager --controllers; default DefaultControllers (+ WorkloadControllers with Kubelets)
	Kubelets          bool           // nodes are real kubelets: run kube-scheduler and the workload controllers
	StartTimeout      time.Duration  // bound on Start when ctx has no deadline; default 3m
	Log               *slog.Logger   // default slog.Default()
}

// ControlPlane is a running control plane. Its methods are safe for
// concurrent use.
type ControlPlane struct {
	cfg    Config
	log    *slog.Logger
	pki    *pki
	files  pkiFiles
	dial   netnsDialer
	server string // https://<Addr>:6443

	mu      sync.Mutex
	daemons map[string]*daemon // by name; absent when stopped
	stopped bool
	client  kubernetes.Interface
}

// Daemon names; also the base names of their log and pid files in Dir.
const (
	etcdName      = "etcd"
	apiserverName = "kube-apiserver"
	kcmName       = "kube-controller-manager"
	schedName     = "kube-scheduler"
)

func (c *Config) setDefaults() error {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.BinDir == "" {
		c.BinDir = os.Getenv("WEFT_K8S_BIN")
	}
	if c.BinDir == "" {
		dir, err := DefaultBinDir()
		if err != nil {
			return err
		}
		c.BinDir = dir
	}
	if c.EtcdBin == "" {
		c.EtcdBin = "/usr/bin/etcd"
	}
	if len(c.ClusterCIDRs) == 0 {
		c.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	}
	if len(c.ServiceCIDRs) == 0 {
		c.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	}
	if c.NodeMaskV4 == 0 {
		c.NodeMaskV4 = 24
	}
	if c.NodeMaskV6 == 0 {
		c.NodeMaskV6 = 64
	}
	if len(c.Controllers) == 0 {
		c.Controllers = DefaultControllers
		if c.Kubelets {
			c.Controllers = append(append([]string(nil), DefaultControllers...), WorkloadControllers...)
		}
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 3 * time.Minute
	}
	return nil
}

// DefaultBinDir is .cache/k8s/v1.37.2 at the root of the repository holding
// this package (found by walking up from the working directory to go.mod).
func DefaultBinDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil &&
			!strings.HasSuffix(dir, filepath.Join("test", "k8s")) {
			return filepath.Join(dir, ".cache", "k8s", "v1.37.2"), nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("find repository root: no go.mod above %s; set WEFT_K8S_BIN", wd)
		}
	}
}

// MissingBinaries lists the binaries a control plane needs that are not
// executable files in binDir (kube-apiserver, kube-controller-manager,
// kubectl) or at etcdBin. Tests use it to skip with a hint to run `make k8s`.
func MissingBinaries(binDir, etcdBin string) []string {
	var missing []string
	for _, p := range []string{
		filepath.Join(binDir, apiserverName), filepath.Join(binDir, kcmName),
		filepath.Join(binDir, "kubectl"), etcdBin,
	} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	return missing
}

// validatePrefixes checks a CIDR list: valid, canonical, one per family.
func validatePrefixes(field string, ps []netip.Prefix) error {
	var seen [2]bool
	for _, p := range ps {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("%s: %s is not a canonical prefix (want %s)", field, p, p.Masked())
		}
		fam := familyIndex(p.Addr())
		if seen[fam] {
			return fmt.Errorf("%s: %s is a second prefix of the same family", field, p)
		}
		seen[fam] = true
	}
	return nil
}

func familyIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func (c *Config) validate() error {
	switch {
	case c.Netns == "" || strings.ContainsRune(c.Netns, '/'):
		return fmt.Errorf("Netns: %q is not a namespace name", c.Netns)
	case !c.Addr.IsValid() || c.Addr.IsLoopback() || c.Addr.IsUnspecified() || c.Addr.Zone() != "":
		return fmt.Errorf("Addr: %s is not a usable underlay address (the apiserver refuses loopback)", c.Addr)
	case c.Dir == "":
		return errors.New("Dir: empty")
	case len(c.ClusterCIDRs) > 2:
		return fmt.Errorf("ClusterCIDRs: %v has more than two prefixes", c.ClusterCIDRs)
	case len(c.ServiceCIDRs) > 2:
		return fmt.Errorf("ServiceCIDRs: %v has more than two prefixes", c.ServiceCIDRs)
	}
	if err := validatePrefixes("ClusterCIDRs", c.ClusterCIDRs); err != nil {
		return err
	}
	if err := validatePrefixes("ServiceCIDRs", c.ServiceCIDRs); err != nil {
		return err
	}
	if fam := c.ServiceCIDRs[0].Addr(); familyIndex(fam) != familyIndex(c.Addr) {
		return fmt.Errorf("ServiceCIDRs: the first prefix %s must be of the family of Addr %s (the apiserver requires it)",
			c.ServiceCIDRs[0], c.Addr)
	}
	for _, p := range c.ClusterCIDRs {
		field, mask := "NodeMaskV4", c.NodeMaskV4
		if p.Addr().Is6() {
			field, mask = "NodeMaskV6", c.NodeMaskV6
		}
		// kube-controller-manager allows at most 2^16 node CIDRs per prefix.
		if mask < p.Bits() || mask > p.Addr().BitLen() || mask-p.Bits() > 16 {
			return fmt.Errorf("%s: %d does not fit cluster CIDR %s (want %d..%d)",
				field, mask, p, p.Bits(), min(p.Bits()+16, p.Addr().BitLen()))
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", c.Netns)); err != nil {
		return fmt.Errorf("Netns: %w", err)
	}
	if m := MissingBinaries(c.BinDir, c.EtcdBin); len(m) > 0 {
		return fmt.Errorf("BinDir: missing %s (build them with `make k8s`)", strings.Join(m, ", "))
	}
	return nil
}

// firstServiceIPs are the first usable address of each service CIDR, the
// ClusterIP of the default/kubernetes Service.
func firstServiceIPs(ps []netip.Prefix) []netip.Addr {
	var ips []netip.Addr
	for _, p := range ps {
		ips = append(ips, p.Masked().Addr().Next())
	}
	return ips
}

func join[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// Start runs etcd, kube-apiserver and kube-controller-manager in cfg.Netns
// and returns when the apiserver's /readyz and the controller manager's
// /healthz answer ok. (The controller manager starts its controllers a
// moment after /healthz is ok: wait for their effects, such as pod CIDRs,
// not for Start.) On failure it stops what it started, removes cfg.Dir and
// returns an error with the tail of the failing daemon's log.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("control plane config: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.StartTimeout)
		defer cancel()
	}
	if err := ensureEmptyDir(cfg.Dir); err != nil {
		return nil, fmt.Errorf("Dir: %w", err)
	}
	cp := &ControlPlane{
		cfg:     cfg,
		log:     cfg.Log.With("netns", cfg.Netns, "addr", cfg.Addr),
		dial:    netnsDialer{path: filepath.Join("/run/netns", cfg.Netns)},
		server:  "https://" + netip.AddrPortFrom(cfg.Addr, APIServerPort).String(),
		daemons: map[string]*daemon{},
	}
	if err := cp.start(ctx); err != nil {
		if stopErr := cp.Stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		return nil, err
	}
	return cp, nil
}

func ensureEmptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty (a previous control plane? see Cleanup)", dir)
	}
	return nil
}

func (cp *ControlPlane) start(ctx context.Context) error {
	t0 := time.Now()
	apiIPs := append([]netip.Addr{cp.cfg.Addr, netip.MustParseAddr("127.0.0.1")},
		firstServiceIPs(cp.cfg.ServiceCIDRs)...)
	p, err := newPKI(apiIPs)
	if err != nil {
		return err
	}
	cp.pki = p
	if cp.client, err = kubernetes.NewForConfig(cp.RESTConfig()); err != nil {
		return fmt.Errorf("admin clientset: %w", err)
	}
	if cp.files, err = p.write(cp.cfg.Dir); err != nil {
		return err
	}
	if err := writeKubeconfig(cp.AdminKubeconfig(), cp.server, p.ca.certPEM, "admin",
		credential{certPEM: p.admin.certPEM, keyPEM: p.admin.keyPEM}); err != nil {
		return err
	}
	if err := writeKubeconfig(cp.kcmKubeconfig(), cp.server, p.ca.certPEM, "kube-controller-manager",
		credential{certPEM: p.kcm.certPEM, keyPEM: p.kcm.keyPEM}); err != nil {
		return err
	}
	if err := writeKubeconfig(cp.schedKubeconfig(), cp.server, p.ca.certPEM, "kube-scheduler",
		credential{certPEM: p.sched.certPEM, keyPEM: p.sched.keyPEM}); err != nil {
		return err
	}

	cp.mu.Lock()
	defer cp.mu.Unlock()
	if err := cp.startLocked(ctx, etcdName, cp.etcdArgs(), cp.etcdReady); err != nil {
		return err
	}
	t1 := time.Now()
	if err := cp.startLocked(ctx, apiserverName, cp.apiserverArgs(), cp.apiserverReady); err != nil {
		return err
	}
	t2 := time.Now()
	if err := cp.startLocked(ctx, kcmName, cp.kcmArgs(), cp.kcmReady); err != nil {
		return err
	}
	if cp.cfg.Kubelets {
		if err := cp.startLocked(ctx, schedName, cp.schedArgs(), cp.schedReady); err != nil {
			return err
		}
	}
	t3 := time.Now()
	cp.log.Info("control plane ready", "dir", cp.cfg.Dir,
		"etcd", t1.Sub(t0).Round(time.Millisecond), "apiserver", t2.Sub(t1).Round(time.Millisecond),
		"controllerManager", t3.Sub(t2).Round(time.Millisecond), "total", t3.Sub(t0).Round(time.Millisecond))
	return nil
}

func (cp *ControlPlane) bin(name string) string {
	if name == etcdName {
		return cp.cfg.EtcdBin
	}
	return filepath.Join(cp.cfg.BinDir, name)
}

func (cp *ControlPlane) kcmKubeconfig() string {
	return filepath.Join(cp.cfg.Dir, "controller-manager.kubeconfig")
}

func (cp *ControlPlane) schedKubeconfig() string {
	return filepath.Join(cp.cfg.Dir, "scheduler.kubeconfig")
}

func (cp *ControlPlane) schedArgs() []string {
	f := cp.files
	kc := cp.schedKubeconfig()
	return []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedPort),
		"--tls-cert-file=" + f.kcmServeCert,
		"--tls-private-key-file=" + f.kcmServeKey,
		"--leader-elect=false",
	}
}

func (cp *ControlPlane) etcdArgs() []string {
	client := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	return []string{
		"--name=weft-lab",
		"--data-dir=" + filepath.Join(cp.cfg.Dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=weft-lab=" + peer,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-outputs=stderr",
	}
}

func (cp *ControlPlane) apiserverArgs() []string {
	f := cp.files
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address=" + cp.cfg.Addr.String(),
		"--advertise-address=" + cp.cfg.Addr.String(),
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--cert-dir=" + filepath.Join(cp.cfg.Dir, "apiserver"),
		"--tls-cert-file=" + f.apiCert,
		"--tls-private-key-file=" + f.apiKey,
		"--client-ca-file=" + f.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f.saPub,
		"--service-account-signing-key-file=" + f.saKey,
		"--service-account-max-token-expiration=" + MaxTokenExpiration.String(),
		"--service-cluster-ip-range=" + join(cp.cfg.ServiceCIDRs),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// Kubelets are reached at the address they report, not by a host
		// name nothing in the lab resolves, with the apiserver's own client
		// certificate (kubectl exec, logs, port-forward).
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--kubelet-client-certificate=" + f.kubeletClientCert,
		"--kubelet-client-key=" + f.kubeletClientKey,
	}
}

func (cp *ControlPlane) kcmArgs() []string {
	f := cp.files
	kc := cp.kcmKubeconfig()
	args := []string{
		"--kubeconfig=" + kc,
		"--authentication-kubeconfig=" + kc,
		"--authorization-kubeconfig=" + kc,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--tls-cert-file=" + f.kcmServeCert,
		"--tls-private-key-file=" + f.kcmServeKey,
		"--leader-elect=false",
		"--controllers=" + strings.Join(cp.cfg.Controllers, ","),
		"--use-service-account-credentials=true",
		"--root-ca-file=" + f.caCert,
		"--service-account-private-key-file=" + f.saKey,
		"--service-cluster-ip-range=" + join(cp.cfg.ServiceCIDRs),
		"--allocate-node-cidrs=" + strconv.FormatBool(cp.cfg.AllocateNodeCIDRs),
		"--cluster-cidr=" + join(cp.cfg.ClusterCIDRs),
	}
	// Only the flags of the families present: the controller manager
	// rejects an IPv6 mask for a single-stack IPv4 cluster and vice versa.
	for _, p := range cp.cfg.ClusterCIDRs {
		if p.Addr().Is4() {
			args = append(args, "--node-cidr-mask-size-ipv4="+strconv.Itoa(cp.cfg.NodeMaskV4))
		} else {
			args = append(args, "--node-cidr-mask-size-ipv6="+strconv.Itoa(cp.cfg.NodeMaskV6))
		}
	}
	return args
}

// startLocked starts one daemon and waits until ready returns nil, the daemon
// exits or ctx ends. cp.mu is held.
func (cp *ControlPlane) startLocked(ctx context.Context, name string, args []string, ready func(context.Context) error) error {
	if cp.stopped {
		return errors.New("control plane stopped")
	}
	if d := cp.daemons[name]; d != nil && !d.exited() {
		return fmt.Errorf("%s already running", name)
	}
	t0 := time.Now()
	d, err := startDaemon(cp.cfg.Dir, cp.cfg.Netns, name, cp.bin(name), args...)
	if err != nil {
		return err
	}
	cp.daemons[name] = d
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		probeCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		lastErr = ready(probeCtx)
		cancel()
		if lastErr == nil {
			cp.log.Debug("daemon ready", "daemon", name, "pid", d.cmd.Process.Pid, "took", time.Since(t0))
			return nil
		}
		select {
		case <-d.done:
			return d.exitError(cp.cfg.Dir)
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to be ready (%s): %w (last probe: %v)\n%s",
				name, time.Since(t0).Round(time.Millisecond), ctx.Err(), lastErr, logTail(cp.cfg.Dir, name))
		case <-tick.C:
		}
	}
}

// GetOK fetches url with client (e.g. one dialing inside a namespace) and
// wants status 200.
func GetOK(ctx context.Context, client *http.Client, url string) error {
	_, err := Get(ctx, client, url)
	return err
}

// Get fetches url with client, wants status 200 and returns the body.
func Get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func (cp *ControlPlane) etcdReady(ctx context.Context) error {
	client := &http.Client{Transport: &http.Transport{DialContext: cp.dial.DialContext, DisableKeepAlives: true}}
	return GetOK(ctx, client, fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort))
}

func (cp *ControlPlane) apiserverReady(ctx context.Context) error {
	return cp.Readyz(ctx)
}

// Readyz asks the apiserver's /readyz through RESTConfig.
func (cp *ControlPlane) Readyz(ctx context.Context) error {
	body, err := cp.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("GET /readyz: %w", err)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("GET /readyz: %q", body)
	}
	return nil
}

func (cp *ControlPlane) kcmReady(ctx context.Context) error {
	return cp.localHealthz(ctx, kcmPort)
}

func (cp *ControlPlane) schedReady(ctx context.Context) error {
	return cp.localHealthz(ctx, schedPort)
}

// localHealthz asks /healthz of a daemon serving on the control-plane
// namespace's loopback with the lab's controller-manager serving cert.
func (cp *ControlPlane) localHealthz(ctx context.Context, port int) error {
	tlsCfg, err := rest.TLSConfigFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: cp.pki.ca.certPEM}})
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: cp.dial.DialContext, TLSClientConfig: tlsCfg, DisableKeepAlives: true,
	}}
	return GetOK(ctx, client, fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
}

// RESTConfig returns a new admin (system:masters) config whose Dial opens
// connections inside the lab namespace, for use from the root namespace.
func (cp *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host: cp.server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.pki.ca.certPEM,
			CertData: cp.pki.admin.certPEM,
			KeyData:  cp.pki.admin.keyPEM,
		},
		Dial:      cp.dial.DialContext,
		QPS:       50,
		Burst:     100,
		UserAgent: "weft-lab",
	}
}

// RESTConfigWithToken is RESTConfig authenticated by a bearer token instead of
// the admin certificate (for checking what a ServiceAccount may do).
func (cp *ControlPlane) RESTConfigWithToken(token string) *rest.Config {
	c := cp.RESTConfig()
	c.CertData, c.KeyData = nil, nil
	c.BearerToken = token
	return c
}

// Dialer returns a DialContext that connects from inside the lab namespace,
// for any other client a test in the root namespace needs.
func (cp *ControlPlane) Dialer() func(ctx context.Context, network, address string) (net.Conn, error) {
	return cp.dial.DialContext
}

// Client returns an admin clientset built on RESTConfig.
func (cp *ControlPlane) Client() kubernetes.Interface { return cp.client }

// Server is the apiserver URL, https://<Addr>:6443.
func (cp *ControlPlane) Server() string { return cp.server }

// Dir is the state dir.
func (cp *ControlPlane) Dir() string { return cp.cfg.Dir }

// AdminKubeconfig is the path of an admin kubeconfig for processes inside the
// lab namespaces.
func (cp *ControlPlane) AdminKubeconfig() string {
	return filepath.Join(cp.cfg.Dir, "admin.kubeconfig")
}

// CA returns the PEM certificate of the lab CA.
func (cp *ControlPlane) CA() []byte {
	return append([]byte(nil), cp.pki.ca.certPEM...)
}

// LogFile is the path of a daemon's log ("etcd", "kube-apiserver",
// "kube-controller-manager").
func (cp *ControlPlane) LogFile(daemon string) string { return logFile(cp.cfg.Dir, daemon) }

// Pids returns the pids of the daemons running now, by name.
func (cp *ControlPlane) Pids() map[string]int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	pids := map[string]int{}
	for name, d := range cp.daemons {
		if !d.exited() {
			pids[name] = d.cmd.Process.Pid
		}
	}
	return pids
}

// StopAPIServer kills kube-apiserver with SIGKILL, as a crash would; etcd
// and the controller manager keep running. A no-op when it is not running.
func (cp *ControlPlane) StopAPIServer() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return errors.New("control plane stopped")
	}
	if d := cp.daemons[apiserverName]; d != nil {
		d.kill(cp.cfg.Dir)
		delete(cp.daemons, apiserverName)
		cp.log.Info("kube-apiserver stopped", "pid", d.cmd.Process.Pid)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer (same flags,
// same etcd data) and waits for /readyz.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	t0 := time.Now()
	if err := cp.startLocked(ctx, apiserverName, cp.apiserverArgs(), cp.apiserverReady); err != nil {
		return err
	}
	cp.log.Info("kube-apiserver started", "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// Stop ends every daemon (controller manager, apiserver, etcd, in that
// order), waits for them to exit and removes Dir. Idempotent.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return nil
	}
	cp.stopped = true
	for _, name := range []string{schedName, kcmName, apiserverName, etcdName} {
		if d := cp.daemons[name]; d != nil {
			d.stop(cp.cfg.Dir)
			delete(cp.daemons, name)
		}
	}
	// Cleanup also catches a daemon recorded on disk but not in memory.
	return Cleanup(cp.cfg.Dir)
}
