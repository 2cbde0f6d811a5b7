package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/agent/config"
	"weft.dev/weft/agent/plan"
	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

// bgp mode's side of the agent: the bgpmode.Controller runs only while the
// configuration says mode bgp. Each pass hands it the whole input (config,
// nodes, services, passwords) and takes its routes as the datapath's
// routes; a switch to vxlan withdraws our routes from the peers and stops
// it. The datapath reconcile does the rest of a mode switch: a Desired
// without devices removes the VXLAN device, a vxlan Desired replaces or
// removes the BGP routes (both carry weft's route protocol).

// bgpRun is one run of the BGP controller (from a switch to bgp mode, or
// the start in bgp mode, until a switch away or the agent's end).
type bgpRun struct {
	ctrl   *bgpmode.Controller
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Worker-only.
	last    *bgpmode.Input // last input Update accepted
	lastErr string         // last input error reported

	mu        sync.Mutex
	downSince map[netip.Addr]time.Time // peers not established, since
	reported  map[netip.Addr]bool      // not-established Event sent
	rejected  map[string]bool          // rejections counted already
}

// bgpNotEstablishedAfter is how long a peer may stay not established before
// the agent says so with an Event (a wrong address, AS or password).
const bgpNotEstablishedAfter = 30 * time.Second

// retainable keeps the kernel routes found at start that bgp mode may have
// installed: not those through the VXLAN devices.
func retainable(routes []overlay.Route) []overlay.Route {
	var out []overlay.Route
	for _, r := range routes {
		vxlan := slices.ContainsFunc(r.NextHops, func(h overlay.NextHop) bool {
			return h.Onlink || h.Dev == overlay.VXLANDevice || h.Dev == overlay.VXLAN6Device
		})
		if !vxlan && len(r.NextHops) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// ensureBGP starts the controller unless it runs. Only the first run of the
// agent's life gets the routes found in the kernel at start.
func (a *Agent) ensureBGP() *bgpRun {
	if r := a.bgp.Load(); r != nil {
		return r
	}
	retained := a.retained
	a.retained = nil
	ctrl := bgpmode.New(bgpmode.Options{
		NodeName:           a.o.NodeName,
		ListenPort:         a.o.BGPListenPort,
		CallTimeout:        a.o.BGPCallTimeout,
		RestartedWithState: len(retained) > 0,
		Retained:           retained,
	}, a.log.With("component", "bgp"))
	ctx, cancel := context.WithCancel(a.runCtx)
	r := &bgpRun{ctrl: ctrl, cancel: cancel, downSince: map[netip.Addr]time.Time{},
		reported: map[netip.Addr]bool{}, rejected: map[string]bool{}}
	r.wg.Add(2)
	a.group.Go(func() error { defer r.wg.Done(); return ctrl.Run(ctx) })
	a.group.Go(func() error { defer r.wg.Done(); a.pumpBGP(ctx, r); return nil })
	a.bgp.Store(r)
	a.bgpMode.Store(true)
	a.log.Info("bgp mode: controller started", "retainedRoutes", len(retained))
	return r
}

// stopBGP withdraws our routes from every peer (no peers left: the
// sessions close) and stops the controller.
func (a *Agent) stopBGP(ctx context.Context) {
	r := a.bgp.Load()
	if r == nil {
		return
	}
	a.bgpMode.Store(false)
	if r.last != nil {
		in := *r.last
		in.Config.NodeMesh, in.Config.Peers = false, nil
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := r.ctrl.Update(wctx, in); err != nil {
			a.log.Warn("bgp mode: withdrawing from peers failed; stopping anyway", "err", err)
		}
		cancel()
	}
	r.cancel()
	r.wg.Wait()
	a.bgp.Store(nil)
	a.m.bgpReset()
	a.log.Info("bgp mode: controller stopped; peers dropped")
}

// reconcileBGP hands the controller this pass's input and returns the
// routes it wants installed. A bad input (an annotation, a password) blocks
// readiness and is reported once with an Event naming the field; the
// controller keeps its last good state.
func (a *Agent) reconcileBGP(ctx context.Context, p *pass, cfg config.Config, self *corev1.Node, ip netip.Addr,
	pods []netip.Prefix, all []*corev1.Node, believed []plan.Node) []overlay.Route {
	r := a.ensureBGP()
	in, err := a.bgpInput(cfg, self, ip, pods, all, believed)
	if err == nil {
		err = r.ctrl.Update(ctx, in)
	}
	if err != nil {
		p.fail("bgp", err)
		p.block("bgp: " + err.Error())
		if msg := err.Error(); msg != r.lastErr {
			r.lastErr = msg
			a.log.Error("bgp mode: configuration not applied", "err", err)
			a.recorder.Event(nodeRef(self), corev1.EventTypeWarning, "BGPConfigInvalid", msg)
		}
	} else {
		r.last, r.lastErr = &in, ""
	}
	return r.ctrl.Routes()
}

// bgpInput collects the controller's input from the informers' caches. Of
// the other nodes it takes only those plan.Vet believes (believed), with the
// address and pod CIDRs Vet checked: a node squatting on another's address
// or pod CIDR gets no session and no route accepted.
func (a *Agent) bgpInput(cfg config.Config, self *corev1.Node, ip netip.Addr, pods []netip.Prefix, all []*corev1.Node,
	believed []plan.Node) (bgpmode.Input, error) {
	if !a.servicesSynced() || !a.secretsSynced() {
		return bgpmode.Input{}, errors.New("waiting for the Services and Secret caches")
	}
	me := bgpmode.NodeFromAPI(self, pods)
	if ip.IsValid() { // the --node-ip override goes first
		me.Addrs = append([]netip.Addr{ip}, slices.DeleteFunc(me.Addrs, func(x netip.Addr) bool { return x == ip })...)
	}
	in := bgpmode.Input{Config: cfg.BGP, Self: bgpmode.Self{Node: me}}
	for _, addr := range me.Addrs {
		under, _, err := a.o.Host.Underlay(addr)
		if err != nil {
			continue // an address not on this host (a stale InternalIP)
		}
		in.Self.Underlay = append(in.Self.Underlay, under)
	}
	ok := map[string]plan.Node{}
	for _, n := range believed {
		ok[n.Name] = n
	}
	for _, n := range all {
		if n.Name == self.Name {
			in.Nodes = append(in.Nodes, me)
			continue
		}
		v, believed := ok[n.Name]
		if !believed {
			continue
		}
		bn := bgpmode.NodeFromAPI(n, v.PodCIDRs)
		// The vetted address goes first: the session and next hops use it.
		if v.IP.IsValid() {
			bn.Addrs = append([]netip.Addr{v.IP}, slices.DeleteFunc(bn.Addrs, func(x netip.Addr) bool { return x == v.IP })...)
		}
		in.Nodes = append(in.Nodes, bn)
	}
	if cfg.BGP.AdvertiseServices {
		svcs, err := a.services.List(labels.Everything())
		if err != nil {
			return bgpmode.Input{}, fmt.Errorf("list services: %w", err)
		}
		for _, s := range svcs {
			if sv := bgpmode.ServiceFromAPI(s); len(sv.IPs) > 0 {
				in.Services = append(in.Services, sv)
			}
		}
		slices.SortFunc(in.Services, func(x, y bgpmode.Service) int { return strings.Compare(x.Name, y.Name) })
	}
	pw, err := bgpmode.ResolvePasswords(cfg.BGP, func(name string) (map[string][]byte, error) {
		if name != config.DefaultBGPPasswordName {
			return nil, fmt.Errorf("weft-agent may read only Secret %s", config.DefaultBGPPasswordName)
		}
		s, err := a.secrets.Secrets(a.o.Namespace).Get(name)
		if err != nil {
			return nil, err
		}
		return s.Data, nil
	})
	if err != nil {
		return bgpmode.Input{}, err
	}
	in.Passwords = pw
	return in, nil
}

// pumpBGP turns the controller's route changes into reconciles, its session
// changes into Events, and its status into metrics, until ctx ends.
func (a *Agent) pumpBGP(ctx context.Context, r *bgpRun) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.ctrl.Changed():
			a.kick()
		case ev := <-r.ctrl.Events():
			a.bgpEvent(r, ev)
		case <-t.C:
			a.bgpObserve(ctx, r)
		}
	}
}

func (a *Agent) ownRef() *corev1.ObjectReference {
	if n, err := a.nodes.Get(a.o.NodeName); err == nil {
		return nodeRef(n)
	}
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: a.o.NodeName}
}

func (a *Agent) bgpEvent(r *bgpRun, ev bgpmode.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.Kind {
	case bgp.SessionUp:
		delete(r.downSince, ev.Peer)
		delete(r.reported, ev.Peer)
		a.log.Info("bgp session up", "peer", ev.Peer, "name", ev.Name)
		a.recorder.Eventf(a.ownRef(), corev1.EventTypeNormal, "BGPSessionUp", "BGP session with %s (%s) established", ev.Peer, ev.Name)
	case bgp.PrefixLimit:
		kind, _, _ := strings.Cut(ev.Name, "/")
		a.m.bgpLimit.WithLabelValues(kind).Inc()
		a.log.Warn("bgp session closed: prefix limit exceeded", "peer", ev.Peer, "name", ev.Name, "family", ev.Family, "retry", ev.Retry)
		a.recorder.Eventf(a.ownRef(), corev1.EventTypeWarning, "BGPPrefixLimit",
			"BGP session with %s (%s) closed: it announced more %s prefixes than its limit; enabled again in %s",
			ev.Peer, ev.Name, ev.Family, ev.Retry)
	case bgp.SessionDown:
		r.downSince[ev.Peer] = ev.Time // bgpObserve says so again if it stays down
		delete(r.reported, ev.Peer)
		a.log.Warn("bgp session down", "peer", ev.Peer, "name", ev.Name, "state", ev.State)
		a.recorder.Eventf(a.ownRef(), corev1.EventTypeWarning, "BGPSessionDown", "BGP session with %s (%s) down (state %s)", ev.Peer, ev.Name, ev.State)
	}
}

// bgpObserve refreshes the metrics and reports peers that never came up.
func (a *Agent) bgpObserve(ctx context.Context, r *bgpRun) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := r.ctrl.Status(sctx)
	if err != nil {
		return
	}
	now := time.Now()
	a.m.bgpSet(st)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rj := range st.Rejected {
		k := fmt.Sprintf("%s|%s|%s|%s", rj.Peer, rj.Prefix, rj.NextHop, rj.Reason)
		if !r.rejected[k] {
			r.rejected[k] = true
			a.m.bgpRejected.WithLabelValues(string(rj.Reason)).Inc()
		}
	}
	for _, ps := range st.Peers {
		if ps.Up {
			delete(r.downSince, ps.Address)
			delete(r.reported, ps.Address)
			continue
		}
		since, ok := r.downSince[ps.Address]
		if !ok {
			r.downSince[ps.Address] = now
			continue
		}
		if !r.reported[ps.Address] && now.Sub(since) >= bgpNotEstablishedAfter {
			r.reported[ps.Address] = true
			a.log.Warn("bgp session not established", "peer", ps.Address, "name", ps.Name, "state", ps.State, "for", now.Sub(since).Round(time.Second))
			a.recorder.Eventf(a.ownRef(), corev1.EventTypeWarning, "BGPSessionDown",
				"BGP session with %s (%s) not established for %s (state %s): check its address, AS number and password",
				ps.Address, ps.Name, now.Sub(since).Round(time.Second), ps.State)
		}
	}
}

// BGPStatus is bgp mode's status (weftctl bgp peers / routes), or an error
// when the agent does not run bgp mode.
func (a *Agent) BGPStatus(ctx context.Context) (bgpmode.Status, error) {
	r := a.bgp.Load()
	if r == nil {
		return bgpmode.Status{}, ErrNotBGP
	}
	return r.ctrl.Status(ctx)
}

// ErrNotBGP says the agent does not run bgp mode.
var ErrNotBGP = errors.New("weft-agent does not run mode bgp")

// clearForVXLAN runs before the first vxlan pass (a switch from bgp mode,
// or the start): it first removes weft's routes that the VXLAN routes will
// replace but which do not go through a VXLAN device (BGP's). The kernel
// refuses to replace an IPv6 route by one with an on-link gateway that the
// old route itself covers (EINVAL); without the old route the VXLAN route
// goes in. The VXLAN device, neighbours and FDB entries are set up by the
// same step, so the routes follow a moment later.
func (a *Agent) clearForVXLAN(ctx context.Context, want overlay.Desired) error {
	if a.o.KernelRoutes == nil {
		return nil
	}
	have, err := a.o.KernelRoutes(ctx)
	if err != nil {
		return fmt.Errorf("read kernel routes: %w", err)
	}
	wanted := map[netip.Prefix]bool{}
	for _, r := range want.Routes {
		wanted[r.Dst] = true
	}
	clear := map[netip.Prefix]bool{}
	for _, r := range retainable(have) { // not through a VXLAN device
		if wanted[r.Dst] {
			clear[r.Dst] = true
		}
	}
	if len(clear) == 0 {
		return nil
	}
	step := want
	step.Routes = slices.DeleteFunc(slices.Clone(want.Routes), func(r overlay.Route) bool { return clear[r.Dst] })
	a.log.Info("switching to vxlan: removing the routes the VXLAN routes replace first", "routes", len(clear))
	if err := a.o.Datapath.Reconcile(ctx, step); err != nil {
		return fmt.Errorf("remove routes before the VXLAN routes: %w", err)
	}
	return nil
}
