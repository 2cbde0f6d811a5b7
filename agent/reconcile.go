package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"weft.dev/weft/agent/cniconf"
	"weft.dev/weft/agent/config"
	"weft.dev/weft/agent/plan"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/overlay"
)

// pass collects one reconcile pass's outcome.
type pass struct {
	a        *Agent
	st       status.Status
	notReady []string
	errs     []error
}

func (p *pass) fail(reconciler string, err error) {
	p.a.m.reconcileErrors.WithLabelValues(reconciler).Inc()
	p.errs = append(p.errs, fmt.Errorf("%s: %w", reconciler, err))
}

func (p *pass) block(reason string) { p.notReady = append(p.notReady, reason) }

// reconcile runs one full pass and reports whether any step failed.
func (a *Agent) reconcile(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, a.o.PassTimeout)
	defer cancel()
	start := time.Now()
	p := &pass{a: a, st: status.Status{Node: a.o.NodeName}}
	a.run(ctx, p)
	a.m.reconcile.Observe(time.Since(start).Seconds())

	if !a.programmed {
		p.block("datapath not programmed yet")
	}
	p.st.NotReady = p.notReady
	p.st.Ready = len(p.notReady) == 0
	p.st.LastReconcile = start
	if err := errors.Join(p.errs...); err != nil {
		p.st.LastError = err.Error()
		a.log.Error("reconcile failed", "err", err, "took", time.Since(start))
	} else {
		a.log.Debug("reconciled", "took", time.Since(start))
	}
	if p.st.Ready {
		a.m.ready.Set(1)
	} else {
		a.m.ready.Set(0)
	}
	a.mu.Lock()
	if a.statOK != p.st.Ready {
		a.log.Info("readiness changed", "ready", p.st.Ready, "reasons", p.notReady)
	}
	a.st, a.statOK = p.st, p.st.Ready
	a.mu.Unlock()
	return len(p.errs) > 0
}

func (a *Agent) run(ctx context.Context, p *pass) {
	self, err := a.nodes.Get(a.o.NodeName)
	if err != nil {
		p.block(fmt.Sprintf("own node %s not found: %v", a.o.NodeName, err))
		return
	}
	if err := a.loadConfig(self); err != nil {
		p.st.ConfigError = err.Error()
		p.block("config: " + err.Error())
	}
	if !a.haveCfg {
		return
	}
	cfg := a.cfg
	p.st.Mode = string(cfg.Mode)

	ip := a.o.NodeIP
	if !ip.IsValid() {
		ip, _ = nodeIP(self, netip.Addr{}) // its own annotation, which this agent wrote
	}
	if !ip.IsValid() {
		p.block("own node has no InternalIP (and no --node-ip)")
		return
	}
	p.st.NodeIP = ip
	if a.mac == nil {
		mac, err := stableMAC(a.o.StateDir, self.Annotations[AnnotationVTEPMAC])
		if err != nil {
			p.fail("datapath", err)
			p.block("no VTEP MAC")
			return
		}
		a.mac = mac
	}
	p.st.VTEPMAC = net.HardwareAddr(a.mac).String()

	all, err := a.nodes.List(labels.Everything())
	if err != nil {
		p.fail("plan", fmt.Errorf("list nodes: %w", err))
		return
	}
	pods, leased := specPodCIDRs(self), false
	if len(pods) == 0 {
		if pods, err = a.lease(ctx, cfg, self, all); err != nil {
			p.fail("lease", err)
			p.block("no pod CIDR: " + err.Error())
			return
		}
		leased = true
	}
	p.st.PodCIDRs, p.st.Leased = pods, leased

	under, mtu, err := a.o.Host.Underlay(ip)
	if err != nil {
		p.fail("plan", fmt.Errorf("underlay of %s: %w", ip, err))
	}
	var peers []plan.Node
	anyLeased := false
	for _, n := range all {
		if n.Name != self.Name {
			pr := peer(n, ip)
			peers = append(peers, pr)
			anyLeased = anyLeased || pr.Leased
		}
	}
	me := plan.Self{
		Node:     plan.Node{Name: self.Name, Created: self.CreationTimestamp.Time, IP: ip, PodCIDRs: pods, VTEPMAC: a.mac},
		Underlay: under, UnderlayMTU: mtu,
	}
	if anyLeased {
		// A peer's leased pod CIDRs count only with their block Lease.
		if me.Leases, err = a.blockHolders(ctx); err != nil {
			p.fail("lease", err)
		}
	}
	if cfg.Mode == config.BGP {
		believed, _ := plan.Vet(cfg, me, peers)
		me.Learned = a.reconcileBGP(ctx, p, cfg, self, ip, pods, all, believed)
	}
	res, err := plan.Plan(cfg, me, peers)
	if err != nil {
		p.fail("plan", err)
		p.block("plan: " + err.Error())
		return
	}
	p.st.PodMTU = res.PodMTU
	for _, pr := range res.Peers {
		p.st.Peers = append(p.st.Peers, status.Peer(pr))
	}
	programmed := a.reportPeers(self, res.Peers)

	var gws []netip.Prefix
	for i, gw := range res.Gateways {
		gws = append(gws, netip.PrefixFrom(gw, pods[i].Bits()))
	}
	// Gateways of pod CIDRs the node no longer has are removed: an address
	// in the cluster CIDRs is weft's.
	br := overlay.Bridge{Name: a.o.Bridge, MTU: res.PodMTU, Gateways: gws, Owned: cfg.ClusterCIDRs}
	if err := a.o.Host.EnsureBridge(ctx, br); err != nil {
		p.fail("bridge", err)
		p.block("bridge: " + err.Error()) // e.g. forwarding off and /proc/sys read-only
	}
	if cfg.Mode == config.VXLAN && a.lastMode != cfg.Mode {
		if err := a.clearForVXLAN(ctx, res.Desired); err != nil {
			p.fail("datapath", err)
		}
	}
	dpErr := a.o.Datapath.Reconcile(ctx, res.Desired)
	if dpErr != nil {
		p.fail("datapath", dpErr) // weft_peers_programmed keeps its last value
	} else {
		a.lastMode = cfg.Mode
		a.m.peersProgrammed.Set(float64(programmed))
	}
	if dpErr == nil && !a.programmed {
		a.log.Info("datapath programmed", "podCIDRs", pods, "peers", len(res.Peers))
		a.programmed = true
	}
	// The chains are listed (iptables runs, several times per chain) once
	// per resync period; passes woken by events in between only sync what
	// changed, so a burst of Node events costs no iptables runs.
	fw := a.o.Firewall.Reconcile
	if a.fwSynced {
		fw = a.o.Firewall.Sync
	}
	err = fw(ctx, res.Rules)
	if a.fwSynced = err == nil; err != nil {
		p.fail("firewall", err)
	}
	if cfg.Mode != config.BGP && dpErr == nil {
		// The other mode's datapath is in place: now drop the peers.
		a.stopBGP(ctx)
		a.retained = nil // what the kernel held at start is not bgp's anymore
	}
	if a.programmed {
		if err := a.writeCNI(self.Status.NodeInfo.ContainerRuntimeVersion, res.PodMTU, pods, res.Gateways); err != nil {
			p.fail("cni", err)
		}
	}
	capCond := a.capacity(self, pods, res.Gateways)
	if err := a.publish(ctx, self, ip, leased, pods, capCond); err != nil {
		p.fail("publish", err)
	}
	a.ipamUsage(ctx, p, pods, res.Gateways)
}

// loadConfig parses the ConfigMap. A bad one is reported once (log, Event,
// metric) and the last good one kept.
func (a *Agent) loadConfig(self *corev1.Node) error {
	cm, err := a.maps.ConfigMaps(a.o.Namespace).Get(a.o.ConfigMap)
	doc := ""
	var c config.Config
	switch {
	case err != nil:
		err = fmt.Errorf("configmap %s/%s: %w", a.o.Namespace, a.o.ConfigMap, err)
	default:
		var ok bool
		if doc, ok = cm.Data[config.Key]; !ok {
			err = &config.FieldError{Field: "data." + config.Key, Reason: "missing key in configmap " + a.o.ConfigMap}
			break
		}
		if c, err = config.Parse([]byte(doc)); err != nil {
			break
		}
		err = c.CheckPodCIDRs("node "+self.Name+" spec.podCIDRs (clusterCIDRs must contain it)", specPodCIDRs(self))
	}
	if err == nil {
		if !a.haveCfg || !equalConfig(a.cfg, c) {
			a.log.Info("configuration applied", "mode", c.Mode, "clusterCIDRs", c.ClusterCIDRs,
				"vni", c.VXLAN.VNI, "port", c.VXLAN.Port, "directRouting", c.VXLAN.DirectRouting, "resync", c.Resync)
		}
		a.cfg, a.haveCfg, a.lastBad = c, true, ""
		return nil
	}
	if key := doc + "\x00" + err.Error(); key != a.lastBad {
		a.lastBad = key
		a.m.configErrors.Inc()
		a.log.Error("configuration rejected; keeping the last good one", "err", err, "haveGood", a.haveCfg)
		// On the own Node, as every Event of the agent: admission lets an
		// agent write Events about its own Node only.
		a.recorder.Event(nodeRef(self), corev1.EventTypeWarning, "ConfigInvalid", err.Error())
	}
	return err
}

func equalConfig(x, y config.Config) bool {
	bx, _ := x.Marshal()
	by, _ := y.Marshal()
	return string(bx) == string(by)
}

func nodeRef(n *corev1.Node) *corev1.ObjectReference {
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}
}

// reportPeers emits an Event on the own Node when a peer becomes pending or
// its reason changes, and logs when it recovers. It returns how many peers
// the plan programs; the caller publishes that once the datapath holds them.
func (a *Agent) reportPeers(self *corev1.Node, peers []plan.Peer) int {
	seen := map[string]bool{}
	programmed := 0
	for _, pr := range peers {
		seen[pr.Name] = true
		if pr.Programmed {
			programmed++
		}
		old := a.pending[pr.Name]
		switch {
		case pr.Pending != "" && pr.Pending != old:
			a.log.Warn("peer not programmed", "peer", pr.Name, "reason", pr.Pending)
			a.recorder.Eventf(nodeRef(self), corev1.EventTypeWarning, "PeerPending", "peer %s not programmed: %s", pr.Name, pr.Pending)
			a.pending[pr.Name] = pr.Pending
		case pr.Pending == "" && old != "":
			a.log.Info("peer programmed", "peer", pr.Name, "via", pr.Via)
			delete(a.pending, pr.Name)
		}
	}
	maps.DeleteFunc(a.pending, func(k, _ string) bool { return !seen[k] })
	a.m.peers.Set(float64(len(peers)))
	return programmed
}

// blockHolders returns which node holds each pod CIDR block Lease.
func (a *Agent) blockHolders(ctx context.Context) (map[netip.Prefix]string, error) {
	held, err := a.alloc.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[netip.Prefix]string, len(held))
	for _, h := range held {
		if h.Block.IsValid() {
			out[h.Block.Masked()] = h.Holder
		}
	}
	return out, nil
}

// lease returns the pod CIDRs weft leased for this node.
func (a *Agent) lease(ctx context.Context, cfg config.Config, self *corev1.Node, all []*corev1.Node) ([]netip.Prefix, error) {
	if len(a.leased) == len(cfg.ClusterCIDRs) && cfg.CheckPodCIDRs("leased", a.leased) == nil {
		return a.leased, nil
	}
	var avoid []netip.Prefix
	for _, n := range all {
		if n.Name != self.Name {
			avoid = append(avoid, specPodCIDRs(n)...)
		}
	}
	blocks, err := a.alloc.Acquire(ctx, self, cfg.ClusterCIDRs, cfg.BlockSize, avoid)
	if err != nil {
		return nil, err
	}
	a.leased = blocks
	return blocks, nil
}

// writeCNI writes the conflist, at a version the node's container runtime
// (its Node's status.nodeInfo.containerRuntimeVersion) accepts, and the
// ready file.
func (a *Agent) writeCNI(runtime string, mtu int, pods []netip.Prefix, gws []netip.Addr) error {
	wrote, err := cniconf.Write(a.o.CNIConfDir, cniconf.Network{
		Bridge: a.o.Bridge, MTU: mtu, PodCIDRs: pods, Gateways: gws,
		DataDir: ipamDir(a.o.StateDir), ReadyFile: a.ReadyFile(), Chain: a.o.CNIChain.For(runtime),
	})
	if err != nil {
		return err
	}
	if wrote {
		a.log.Info("CNI configuration written", "dir", a.o.CNIConfDir, "mtu", mtu, "podCIDRs", pods)
	}
	_, err = cniconf.WriteFile(a.ReadyFile(), []byte("weft-agent ready\n"), 0o644)
	return err
}

func ipamDir(stateDir string) string { return stateDir + "/ipam" }

// publish patches the node's weft.dev/ annotations, (once programmed) the
// NetworkUnavailable=False condition and the capacity condition (capCond,
// nil when unknown) through nodes/status, only when they differ from what
// the node shows.
func (a *Agent) publish(ctx context.Context, self *corev1.Node, ip netip.Addr, leased bool, pods []netip.Prefix, capCond *corev1.NodeCondition) error {
	want := map[string]*string{
		AnnotationVTEPMAC:  ptr(net.HardwareAddr(a.mac).String()),
		AnnotationNodeIP:   ptr(ip.String()),
		AnnotationPodCIDRs: nil,
	}
	if leased {
		want[AnnotationPodCIDRs] = ptr(joinPrefixes(pods))
	}
	ann := map[string]*string{}
	for k, v := range want {
		cur, has := self.Annotations[k]
		if (v == nil && has) || (v != nil && (!has || cur != *v)) {
			ann[k] = v
		}
	}
	patch := map[string]any{}
	if len(ann) > 0 {
		patch["metadata"] = map[string]any{"annotations": ann}
	}
	now := metav1.Now()
	var conds []corev1.NodeCondition
	if a.programmed && !networkAvailable(self) {
		conds = append(conds, corev1.NodeCondition{
			Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: ConditionReason,
			Message: "weft-agent programmed the pod network", LastHeartbeatTime: now, LastTransitionTime: now,
		})
	}
	var capPatch *corev1.NodeCondition
	if capCond != nil {
		if capPatch = conditionPatch(self, *capCond, now); capPatch != nil {
			conds = append(conds, *capPatch)
		}
	}
	if len(conds) > 0 {
		patch["status"] = map[string]any{"conditions": conds}
	}
	if len(patch) == 0 {
		return nil
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("patch node %s status: %w", self.Name, err)
	}
	if _, err := a.o.Client.PatchNodeStatus(ctx, self.Name, types.StrategicMergePatchType, b, metav1.PatchOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("patch node %s status: node gone: %w", self.Name, err)
		}
		return fmt.Errorf("patch node %s status: %w", self.Name, err)
	}
	a.log.Info("published node status", "patch", string(b))
	if capPatch != nil {
		a.reportCapacity(self, *capPatch)
	}
	return nil
}

func networkAvailable(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse && c.Reason == ConditionReason
	})
}

func ptr[T any](v T) *T { return &v }

// ipamUsage fills the status and metrics with the IPAM store's use.
func (a *Agent) ipamUsage(ctx context.Context, p *pass, pods []netip.Prefix, gws []netip.Addr) {
	if a.o.IPAM == nil {
		return
	}
	use, err := a.o.IPAM(ctx, pods, gws)
	if err != nil {
		p.fail("ipam", err)
		return
	}
	p.st.IPAM = use
	for _, u := range use {
		fam := "ipv6"
		if u.Prefix.Addr().Is4() {
			fam = "ipv4"
		}
		a.m.ipamUsed.WithLabelValues(fam).Set(float64(u.Used))
		a.m.ipamCapacity.WithLabelValues(fam).Set(float64(u.Total))
	}
}
