// Package bgpmode is the agent's side of bgp mode: it turns the cluster
// (configuration, Nodes, Services, BGP passwords) into the configuration of
// the node's BGP speaker, and the speaker's learned table into kernel routes
// for the overlay route reconciler.
//
// Contract with the agent:
//   - Run the Controller (it runs the bgp.Speaker and restarts it when the
//     global settings — AS number, router ID, port, graceful restart —
//     change); call Update on every reconcile with the whole input. Update
//     is level-triggered and cheap when nothing changed. A bad input (an
//     annotation, a missing password) is an error and nothing is applied:
//     the agent keeps the last good state and reports not ready.
//   - Install Routes() (one overlay.Route per prefix, ECMP next hops, the
//     BGP next hop as gateway resolved through the underlay) through the
//     overlay route reconciler, and re-reconcile when Changed() fires.
//   - Options.RestartedWithState / Options.Retained: when the agent found
//     its own kernel routes at start (it restarted, the node did not), it
//     passes them in; they stay in Routes() until every peer sent
//     End-of-RIB (or the graceful restart time passed), so a restart does
//     not drop a packet. Next hops the speaker marks stale (a peer is
//     restarting) stay installed until that peer's End-of-RIB replaces them
//     or the restart time passes.
//   - Status for weftctl and metrics, Events for Kubernetes Events.
package bgpmode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"weft.dev/weft/bgp"
	"weft.dev/weft/overlay"
)

// Options configure a Controller.
type Options struct {
	NodeName string
	// ListenPort overrides the configuration's listenPort when non-zero
	// (-1: accept no sessions, dial every peer).
	ListenPort int
	// ListenAddrs restricts the speaker's listeners (default: all).
	ListenAddrs []netip.Addr
	// CallTimeout bounds each call into the speaker (default 10 s).
	CallTimeout time.Duration
	// RestartedWithState: the agent restarted and its kernel routes (route
	// protocol 87) survived; Retained are those routes.
	RestartedWithState bool
	Retained           []overlay.Route
	// SweepInterval is how often retained and stale routes are aged
	// (default 1 s).
	SweepInterval time.Duration
	// SettleTime is how long every peer's End-of-RIB must hold before
	// retained routes are swept (default 2 s).
	SettleTime time.Duration
}

// Event is a session change of one peer.
type Event struct {
	Peer  netip.Addr
	Name  string // "node/<name>" or "peer/<address>"
	Kind  bgp.EventKind
	State string
	Time  time.Time
	// For bgp.PrefixLimit: the family over its limit and when the session
	// is enabled again.
	Family string
	Retry  time.Duration
}

// Controller runs the node's BGP speaker for bgp mode.
type Controller struct {
	opts    Options
	log     *slog.Logger
	kick    chan struct{} // Update → Run: look at the wanted global config
	changed chan struct{}
	events  chan Event

	applyMu sync.Mutex // serialises apply

	mu         sync.Mutex
	want       *Desired
	cur        *instance
	lastErr    string
	table      bgp.Table
	routes     []overlay.Route
	capped     []bgp.Rejected
	installed  map[netip.Addr]int
	staleSince map[hopKey]time.Time
	retained   []overlay.Route
	retainTill time.Time
	eorSince   time.Time // every peer's End-of-RIB seen since (retained routes pending)
	dropped    int
}

// instance is one run of a speaker.
type instance struct {
	sp      *bgp.Speaker
	cfg     bgp.Config
	applied *Desired // last Desired applied completely
	cancel  context.CancelFunc
	done    chan error
	tables  <-chan bgp.Table
	events  <-chan bgp.Event
}

// New returns a controller; nothing runs until Run.
func New(opts Options, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.Default()
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = bgp.DefaultCallTimeout
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = time.Second
	}
	if opts.SettleTime == 0 {
		opts.SettleTime = 2 * time.Second
	}
	c := &Controller{
		opts:       opts,
		log:        log,
		kick:       make(chan struct{}, 1),
		changed:    make(chan struct{}, 1),
		events:     make(chan Event, 256),
		staleSince: map[hopKey]time.Time{},
		installed:  map[netip.Addr]int{},
	}
	if opts.RestartedWithState {
		c.retained = toRetained(opts.Retained)
		c.routes = c.retained
	}
	return c
}

// Changed fires (coalesced) whenever Routes() changed.
func (c *Controller) Changed() <-chan struct{} { return c.changed }

// Events delivers session changes (buffered; dropped when the reader
// falls far behind).
func (c *Controller) Events() <-chan Event { return c.events }

// Routes returns the kernel routes bgp mode wants, sorted by prefix.
func (c *Controller) Routes() []overlay.Route {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.routes)
}

// Update plans the speaker's configuration from in and applies it. When
// the global settings changed, the running speaker is restarted by Run
// (Update returns at once; the new speaker gets the configuration when it
// starts).
func (c *Controller) Update(ctx context.Context, in Input) error {
	if in.Self.Name == "" {
		in.Self.Name = c.opts.NodeName
	}
	d, err := Plan(in)
	if err != nil {
		return err
	}
	d.Global = c.global(d.Global)
	c.mu.Lock()
	c.want = &d
	inst := c.cur
	c.mu.Unlock()
	if inst == nil || !sameGlobal(inst.cfg, d.Global) {
		c.poke()
		return nil
	}
	return c.apply(ctx, inst, d)
}

func (c *Controller) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// global fills the speaker settings that come from Options.
func (c *Controller) global(g bgp.Config) bgp.Config {
	if c.opts.ListenPort != 0 {
		g.ListenPort = c.opts.ListenPort
	}
	g.ListenAddrs = c.opts.ListenAddrs
	g.CallTimeout = c.opts.CallTimeout
	return g
}

// sameGlobal compares what needs a restart (RestartedWithState is decided
// per start).
func sameGlobal(a, b bgp.Config) bool {
	a.RestartedWithState, b.RestartedWithState = false, false
	return reflect.DeepEqual(a, b)
}

// apply makes the speaker match d: import policy, paths before peers (so
// every peer gets our whole table and End-of-RIB in its first update).
func (c *Controller) apply(ctx context.Context, inst *instance, d Desired) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if inst.applied != nil && reflect.DeepEqual(*inst.applied, d) {
		return nil
	}
	inst.sp.SetImportPolicy(d.Policy)
	if err := inst.sp.SetPaths(ctx, d.Paths); err != nil {
		return fmt.Errorf("bgp paths: %w", err)
	}
	if err := inst.sp.SetPeers(ctx, d.Peers); err != nil {
		return fmt.Errorf("bgp peers: %w", err)
	}
	c.mu.Lock()
	inst.applied = &d
	c.recomputeLocked(time.Now())
	c.mu.Unlock()
	return nil
}

// Run runs the speaker until ctx ends. It starts it once the first Update
// planned a configuration, and restarts it when the global settings change.
// A speaker that fails to start is retried; Run returns only when ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	sweep := time.NewTicker(c.opts.SweepInterval)
	defer sweep.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	first := true
	for {
		var tables <-chan bgp.Table
		var events <-chan bgp.Event
		var done chan error
		c.mu.Lock()
		inst := c.cur
		c.mu.Unlock()
		if inst != nil {
			tables, events, done = inst.tables, inst.events, inst.done
		}
		select {
		case <-ctx.Done():
			c.stop(inst)
			return nil
		case <-c.kick:
		case <-retry.C:
		case <-sweep.C:
			c.mu.Lock()
			c.recomputeLocked(time.Now())
			c.mu.Unlock()
			continue
		case t, ok := <-tables:
			if ok {
				c.mu.Lock()
				c.table = t
				c.recomputeLocked(time.Now())
				c.mu.Unlock()
			}
			continue
		case ev, ok := <-events:
			if ok {
				c.forward(ev)
			}
			continue
		case err := <-done:
			c.log.Error("bgp speaker stopped", "err", err)
			c.mu.Lock()
			c.cur = nil
			c.lastErr = fmt.Sprintf("bgp speaker stopped: %v", err)
			c.mu.Unlock()
			retry.Reset(5 * time.Second)
			continue
		}
		c.mu.Lock()
		want := c.want
		c.mu.Unlock()
		if want == nil {
			continue
		}
		if inst != nil && sameGlobal(inst.cfg, want.Global) {
			c.applyOrRetry(ctx, inst, *want, retry)
			continue
		}
		if inst != nil {
			c.log.Info("bgp settings changed: restarting the speaker", "asn", want.Global.ASN, "router-id", want.Global.RouterID)
			c.stop(inst)
		}
		cfg := want.Global
		// Our kernel routes survive a restart of the speaker inside the
		// agent, and at start when the agent says so.
		cfg.RestartedWithState = !cfg.GracefulRestart.Disabled && (!first || c.opts.RestartedWithState)
		inst, err := c.start(ctx, cfg)
		if err != nil {
			c.log.Error("bgp speaker start failed", "err", err)
			c.mu.Lock()
			c.lastErr = err.Error()
			c.mu.Unlock()
			retry.Reset(5 * time.Second)
			continue
		}
		first = false
		c.applyOrRetry(ctx, inst, *want, retry)
	}
}

func (c *Controller) applyOrRetry(ctx context.Context, inst *instance, d Desired, retry *time.Timer) {
	err := c.apply(ctx, inst, d)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.lastErr = err.Error()
		c.log.Warn("bgp apply failed; retrying", "err", err)
		retry.Reset(2 * time.Second)
		return
	}
	c.lastErr = ""
}

// start runs a speaker with cfg and waits until it serves.
func (c *Controller) start(ctx context.Context, cfg bgp.Config) (*instance, error) {
	sp := bgp.New(cfg, c.log)
	sctx, cancel := context.WithCancel(context.Background())
	inst := &instance{sp: sp, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { inst.done <- sp.Run(sctx) }()
	// Peers answers once the server runs (or fails when Run failed).
	wctx, wcancel := context.WithTimeout(ctx, cfg.CallTimeout+5*time.Second)
	defer wcancel()
	if _, err := sp.Peers(wctx); err != nil {
		cancel()
		select {
		case rerr := <-inst.done:
			if rerr != nil {
				err = rerr
			}
		case <-time.After(cfg.CallTimeout):
		}
		return nil, fmt.Errorf("start bgp speaker: %w", err)
	}
	inst.tables = sp.Watch(sctx)
	inst.events = sp.Events(sctx)
	c.mu.Lock()
	if len(c.routes) > 0 && cfg.RestartedWithState {
		// Keep what is installed until the new speaker's peers are back.
		c.retained = toRetained(c.routes)
		c.retainTill = time.Now().Add(cfg.GracefulRestart.RestartTime)
	} else {
		c.retained = nil
	}
	c.cur = inst
	c.table = bgp.Table{}
	c.lastErr = ""
	c.mu.Unlock()
	return inst, nil
}

// stop ends a speaker as a planned restart (peers keep our routes).
func (c *Controller) stop(inst *instance) {
	if inst == nil {
		return
	}
	inst.cancel()
	select {
	case err := <-inst.done:
		if err != nil {
			c.log.Warn("bgp speaker stop", "err", err)
		}
	case <-time.After(2*inst.cfg.CallTimeout + 5*time.Second):
		c.log.Warn("bgp speaker did not stop in time")
	}
	c.mu.Lock()
	if c.cur == inst {
		c.cur = nil
	}
	c.mu.Unlock()
}

func (c *Controller) forward(ev bgp.Event) {
	if ev.Kind != bgp.SessionUp && ev.Kind != bgp.SessionDown && ev.Kind != bgp.PrefixLimit {
		return
	}
	c.mu.Lock()
	name := ev.Peer.String()
	if c.want != nil && c.want.Names[ev.Peer] != "" {
		name = c.want.Names[ev.Peer]
	}
	c.mu.Unlock()
	select {
	case c.events <- Event{Peer: ev.Peer, Name: name, Kind: ev.Kind, State: ev.State, Time: ev.Time, Family: ev.Family, Retry: ev.Retry}:
	default:
		c.mu.Lock()
		c.dropped++
		c.mu.Unlock()
	}
}

// recomputeLocked rebuilds Routes() from the table; c.mu must be held.
func (c *Controller) recomputeLocked(now time.Time) {
	var applied *Desired
	if c.cur != nil {
		applied = c.cur.applied
	}
	if len(c.retained) > 0 && applied != nil {
		// The speaker may publish a family's last paths just after its
		// End-of-RIB: sweep only once every peer's End-of-RIB held for
		// the settle time.
		eor := allEndOfRIB(c.table, applied.Peers)
		switch {
		case !eor:
			c.eorSince = time.Time{}
		case c.eorSince.IsZero():
			c.eorSince = now
		}
		if eor && now.Sub(c.eorSince) >= c.opts.SettleTime || now.After(c.retainTill) {
			c.log.Info("bgp: peers complete after restart; sweeping retained routes", "retained", len(c.retained))
			c.retained = nil
			c.eorSince = time.Time{}
		}
	}
	v := view{
		Table:        c.table,
		StaleSince:   c.staleSince,
		StaleTimeout: defaultRestartTime,
		Retained:     c.retained,
		Announced:    map[netip.Prefix]bool{},
	}
	if c.want != nil {
		v.Caps = c.want.MaxPrefixes
		v.StaleTimeout = c.want.Global.GracefulRestart.RestartTime
		for _, p := range c.want.Paths {
			v.Announced[p.Prefix] = true
		}
	}
	res := v.compute(now)
	c.staleSince = res.StaleSince
	c.capped = res.Capped
	c.installed = res.Installed
	if reflect.DeepEqual(res.Routes, c.routes) {
		return
	}
	c.log.Debug("bgp routes changed", "routes", len(res.Routes), "retained", len(c.retained), "learned", len(c.table.Routes))
	c.routes = res.Routes
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// ErrNotRunning is returned by Status before the speaker runs.
var ErrNotRunning = errors.New("bgp speaker not running")
