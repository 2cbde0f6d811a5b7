package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"weft.dev/weft/test/lab/controlplane"
)

// Each weft node can run a real kube-proxy ($WEFT_K8S_BIN/kube-proxy)
// inside its namespace, as a kubeadm node runs it next to weft:
//
//	kube-proxy --kubeconfig=<nodeDir>/kube-proxy.kubeconfig
//	  --hostname-override=<node> --cluster-cidr=<cluster CIDRs>
//	  --proxy-mode=iptables|nftables
//	  --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249
//	  --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0
//	  --conntrack-tcp-timeout-close-wait=0 --nodeport-addresses=primary
//
// Its credential is a client certificate for the user system:kube-proxy,
// signed by the lab CA: the apiserver's bootstrap RBAC binds that user to
// the ClusterRole system:node-proxier (read Services, EndpointSlices and
// Nodes, write Events), so kube-proxy runs with exactly the rights it has
// in a kubeadm cluster.
//
// The healthz and metrics addresses are fixed, but inside the node's own
// namespace, so they never collide. The conntrack flags keep kube-proxy
// from writing nf_conntrack_max (global, read-only in a non-initial
// namespace) and from changing the per-namespace TCP timeouts: the lab
// changes no sysctl outside its namespaces, and inside them only what
// kube-proxy needs for Services (route_localnet for localhost NodePorts in
// iptables mode, which is per namespace).
//
// Its pid is in <nodeDir>/kube-proxy.pid, its output in
// <nodeDir>/kube-proxy.log. Lab down kills it with everything else in the
// node's namespace.

// Proxy modes the lab runs kube-proxy in.
const (
	ProxyIPTables = "iptables"
	ProxyNFTables = "nftables"
	ProxyIPVS     = "ipvs"
)

// kube-proxy's ports inside a node namespace.
const (
	kubeProxyHealthz = "127.0.0.1:10256"
	kubeProxyMetrics = "127.0.0.1:10249"
)

// kubeProxyUser is the user the bootstrap ClusterRoleBinding
// system:node-proxier binds to the ClusterRole of the same name.
const kubeProxyUser = "system:kube-proxy"

func (l *Lab) kubeProxyBin() string { return filepath.Join(l.opts.K8sBinDir, "kube-proxy") }

func (l *Lab) kubeProxyPidFile(node string) string {
	return filepath.Join(l.NodeDir(node), "kube-proxy.pid")
}

// KubeProxyKubeconfig is the kubeconfig a node's kube-proxy uses.
func (l *Lab) KubeProxyKubeconfig(node string) string {
	return filepath.Join(l.NodeDir(node), "kube-proxy.kubeconfig")
}

// KubeProxyLog is the path of a node's kube-proxy output.
func (l *Lab) KubeProxyLog(node string) string {
	return filepath.Join(l.NodeDir(node), "kube-proxy.log")
}

// KubeProxyPid is the pid of a node's kube-proxy, 0 when none runs.
func (l *Lab) KubeProxyPid(node string) int { return pidFromFile(l.kubeProxyPidFile(node)) }

// KubeProxyArgs are the flags the lab gives a node's kube-proxy.
func (l *Lab) KubeProxyArgs(node, mode string) []string {
	cidrs := make([]string, len(l.Topo.Cluster.ClusterCIDRs))
	for i, p := range l.Topo.Cluster.ClusterCIDRs {
		cidrs[i] = p.String()
	}
	return []string{
		"--kubeconfig=" + l.KubeProxyKubeconfig(node),
		"--hostname-override=" + node,
		"--cluster-cidr=" + strings.Join(cidrs, ","),
		"--proxy-mode=" + mode,
		"--healthz-bind-address=" + kubeProxyHealthz,
		"--metrics-bind-address=" + kubeProxyMetrics,
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--nodeport-addresses=primary",
	}
}

func checkProxyMode(mode string) error {
	switch mode {
	case ProxyIPTables, ProxyNFTables, ProxyIPVS:
		return nil
	}
	return fmt.Errorf("kube-proxy mode %q: want %s, %s or %s", mode, ProxyIPTables, ProxyNFTables, ProxyIPVS)
}

// KubeProxyStart starts kube-proxy in mode on a weft node and waits until
// its /healthz answers 200 and its metrics show a first successful rule
// sync for every family of the cluster (/healthz alone answers 200 while
// kube-proxy is still starting up, before any rule exists). A kube-proxy
// that runs already is stopped first, so a second call switches modes
// (kube-proxy removes the other modes' rules when it starts).
func (l *Lab) KubeProxyStart(ctx context.Context, node, mode string) error {
	if err := l.checkWeftNode(node); err != nil {
		return err
	}
	if err := checkProxyMode(mode); err != nil {
		return err
	}
	if fi, err := os.Stat(l.kubeProxyBin()); err != nil || fi.IsDir() {
		return fmt.Errorf("node %s: no kube-proxy at %s (run `make k8s`)", node, l.kubeProxyBin())
	}
	if err := l.KubeProxyStop(node); err != nil {
		return err
	}
	if err := l.writeKubeProxyKubeconfig(node); err != nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	lf, err := os.OpenFile(l.KubeProxyLog(node), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node %s: kube-proxy log: %w", node, err)
	}
	defer lf.Close()
	fmt.Fprintf(lf, "--- weft-lab: start kube-proxy mode %s at %s\n", mode, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.NS(node), l.kubeProxyBin()}, l.KubeProxyArgs(node, mode)...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %s: start kube-proxy: %w", node, err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := os.WriteFile(l.kubeProxyPidFile(node), fmt.Appendf(nil, "%d\n", pid), 0o644); err != nil {
		return err
	}
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: dialIn(l.NS(node)), DisableKeepAlives: true,
	}}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for {
		err := controlplane.GetOK(ctx, client, "http://"+kubeProxyHealthz+"/healthz")
		if err == nil {
			err = l.kubeProxySynced(ctx, client)
		}
		if err == nil {
			l.log.Info("kube-proxy started", "node", node, "mode", mode, "pid", pid)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("node %s: kube-proxy exited: %s", node, logTailOf(l.KubeProxyLog(node)))
		case <-deadline:
			return fmt.Errorf("node %s: kube-proxy not healthy after 60s: %w\n%s", node, err, logTailOf(l.KubeProxyLog(node)))
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// kubeProxySyncMetric is the gauge kube-proxy sets, per IP family, after
// each successful sync of its rules; it is absent before the first one.
const kubeProxySyncMetric = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"

// kubeProxySynced reads a node's kube-proxy metrics and fails unless every
// family of the cluster's CIDRs has synced its rules at least once.
func (l *Lab) kubeProxySynced(ctx context.Context, client *http.Client) error {
	body, err := controlplane.Get(ctx, client, "http://"+kubeProxyMetrics+"/metrics")
	if err != nil {
		return err
	}
	synced := kubeProxySyncedFamilies(string(body))
	for _, p := range l.Topo.Cluster.ClusterCIDRs {
		fam := "IPv4"
		if p.Addr().Is6() {
			fam = "IPv6"
		}
		if !synced[fam] {
			return fmt.Errorf("kube-proxy has not synced its %s rules yet (%s)", fam, kubeProxySyncMetric)
		}
	}
	return nil
}

// kubeProxySyncedFamilies returns the families whose sync timestamp in a
// Prometheus text exposition is set and positive.
func kubeProxySyncedFamilies(metrics string) map[string]bool {
	synced := map[string]bool{}
	for line := range strings.Lines(metrics) {
		rest, ok := strings.CutPrefix(line, kubeProxySyncMetric+`{ip_family="`)
		if !ok {
			continue
		}
		fam, rest, ok := strings.Cut(rest, `"}`)
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil && v > 0 {
			synced[fam] = true
		}
	}
	return synced
}

// KubeProxyStartAll starts kube-proxy in mode on every weft node.
func (l *Lab) KubeProxyStartAll(ctx context.Context, mode string) error {
	for _, n := range l.Topo.NodesOf(KindWeft) {
		if err := l.KubeProxyStart(ctx, n.Name, mode); err != nil {
			return err
		}
	}
	return nil
}

// KubeProxyStop stops a node's kube-proxy (SIGTERM, then SIGKILL); none
// running is not an error. It leaves kube-proxy's rules in place, as a
// crashed or upgraded kube-proxy does.
func (l *Lab) KubeProxyStop(node string) error {
	if err := l.checkWeftNode(node); err != nil {
		return err
	}
	if pid := l.KubeProxyPid(node); pid > 0 {
		killAll([]int{pid}, 5*time.Second)
	}
	if err := os.Remove(l.kubeProxyPidFile(node)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// logTailOf returns the last lines of a log file for an error message.
func logTailOf(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "--- last lines of " + path + " ---\n" + strings.Join(lines, "\n")
}

// writeKubeProxyKubeconfig signs a client certificate for system:kube-proxy
// with the lab CA (<controlplane>/pki/ca.{crt,key}) and writes the node's
// kube-proxy kubeconfig, unless one exists.
func (l *Lab) writeKubeProxyKubeconfig(node string) error {
	return l.writeClientKubeconfig(l.KubeProxyKubeconfig(node), kubeProxyUser, nil)
}

// writeClientKubeconfig writes (once) a kubeconfig for the lab's apiserver
// with a client certificate for user and groups, signed by the lab CA.
func (l *Lab) writeClientKubeconfig(path, user string, groups []string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	cpNode, ok := l.Topo.ControlPlane()
	if !ok {
		return fmt.Errorf("lab %s has no control-plane node", l.Name)
	}
	caPEM, err := os.ReadFile(filepath.Join(l.cpDir(), "pki", "ca.crt"))
	if err != nil {
		return fmt.Errorf("lab CA: %w", err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(l.cpDir(), "pki", "ca.key"))
	if err != nil {
		return fmt.Errorf("lab CA key: %w", err)
	}
	certPEM, keyPEM, err := signClientCert(caPEM, caKeyPEM, user, groups)
	if err != nil {
		return err
	}
	server := "https://" + netip.AddrPortFrom(firstAddr(cpNode), controlplane.APIServerPort).String()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weft-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "weft-lab", AuthInfo: user}
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return writeFileAtomic(path, data, 0o600)
}

// signClientCert makes a key and a client certificate for user (CN) and
// groups (O), signed by the CA in caPEM/caKeyPEM.
func signClientCert(caPEM, caKeyPEM []byte, user string, groups []string) (certPEM, keyPEM []byte, err error) {
	cb, _ := pem.Decode(caPEM)
	if cb == nil {
		return nil, nil, errors.New("lab CA: no PEM certificate")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("lab CA: %w", err)
	}
	kb, _ := pem.Decode(caKeyPEM)
	if kb == nil {
		return nil, nil, errors.New("lab CA key: no PEM block")
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("lab CA key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key for %s: %w", user, err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", user, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
