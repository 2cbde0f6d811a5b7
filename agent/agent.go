// Package agent is weft-agent: it watches Node objects and the weft-config
// ConfigMap through client-go informers over agent/kube's client, plans the node's datapath with the
// pure plan package and hands the result to the overlay reconcilers.
//
// It is level-triggered: informer handlers, netlink notifications and a
// resync ticker only wake one worker, which runs a full pass (config → own
// node → pod CIDRs → plan → bridge, datapath, firewall → CNI conflist →
// publish). Nothing is flushed on start or stop; what is weft's
// but no longer planned is removed by the same pass that adds new peers.
// A bad configuration is rejected with an Event and a log line naming the
// field; the agent keeps running on the last good one and reports not ready.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/agent/cniconf"
	"weft.dev/weft/agent/config"
	"weft.dev/weft/agent/events"
	"weft.dev/weft/agent/kube"
	"weft.dev/weft/agent/lease"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/overlay"
)

// Datapath reconciles the kernel's VXLAN devices, neighbours, FDB entries and
// routes (overlay.Datapath).
type Datapath interface {
	Reconcile(ctx context.Context, want overlay.Desired) error
	// Watch calls notify when something weft owns changes in the kernel.
	Watch(ctx context.Context, notify func()) error
	Cleanup(ctx context.Context) error
}

// Firewall reconciles weft's chains (overlay.Firewall): Reconcile checks
// every chain, Sync only those whose rules changed (and the sets).
type Firewall interface {
	Reconcile(ctx context.Context, r overlay.Rules) error
	Sync(ctx context.Context, r overlay.Rules) error
	Cleanup(ctx context.Context) error
}

// Host is what the agent needs from the node itself.
type Host interface {
	// Underlay returns the subnet and MTU of the interface holding addr.
	Underlay(addr netip.Addr) (netip.Prefix, int, error)
	// EnsureBridge makes the pod bridge exist, up, with its gateways and
	// MTU and without stale gateways, and turns on forwarding for the
	// gateways' families.
	EnsureBridge(ctx context.Context, b overlay.Bridge) error
}

// IPAMUsage reports the use of the node's pod CIDRs (the CNI binary's store).
type IPAMUsage func(ctx context.Context, ranges []netip.Prefix, reserved []netip.Addr) ([]status.IPAM, error)

// Options configure an Agent. Paths and names default as documented.
type Options struct {
	NodeName   string
	NodeIP     netip.Addr    // optional: overrides the node's InternalIP / weft.dev/node-ip
	Namespace  string        // default kube-system
	ConfigMap  string        // default weft-config
	StateDir   string        // default /var/lib/weft (VTEP MAC, IPAM store under ipam/)
	RunDir     string        // default /run/weft (ready file, status socket)
	CNIConfDir string        // default /etc/cni/net.d
	CNIChain   cniconf.Chain // the plugins chained after weft (cniconf.Negotiate)
	Bridge     string        // default weft0
	// HTTPAddr serves /healthz, /readyz and /metrics; empty: no listener
	// (Handler still works).
	HTTPAddr string

	Client   kube.Client // kube.New; tests may wrap a clientset (kube/clientset)
	Datapath Datapath
	Firewall Firewall
	Host     Host
	IPAM     IPAMUsage // optional
	Log      *slog.Logger

	Heartbeat       time.Duration // worker wake-up for liveness, default 5s
	LivenessTimeout time.Duration // /healthz fails when the worker was silent this long, default 60s
	PassTimeout     time.Duration // bound on one reconcile pass's outbound calls, default 30s

	// KernelRoutes reads weft's routes (its route protocol) from the kernel;
	// the agent calls it once at start so bgp mode keeps the routes that
	// survived a restart until its peers are back (optional).
	KernelRoutes func(ctx context.Context) ([]overlay.Route, error)
	// BGPListenPort overrides the configuration's bgp.listenPort (0: the
	// configuration's; -1: accept no sessions).
	BGPListenPort int
	// BGPCallTimeout bounds calls into the BGP speaker (default 10s).
	BGPCallTimeout time.Duration
}

// Agent is one node's weft agent.
type Agent struct {
	o        Options
	log      *slog.Logger
	reg      *prometheus.Registry
	m        *metrics
	alloc    *lease.Allocator
	recorder *events.Recorder

	kickCh    chan struct{}
	lastBeat  atomic.Int64 // unix nanoseconds
	nodes     listersv1.NodeLister
	maps      listersv1.ConfigMapLister
	nodesSync cache.InformerSynced
	services  listersv1.ServiceLister
	secrets   listersv1.SecretLister

	servicesSynced, secretsSynced cache.InformerSynced

	// bgp mode: the controller while the mode is bgp (started and stopped by
	// the worker), the group and context it runs in.
	bgp      atomic.Pointer[bgpRun]
	bgpMode  atomic.Bool
	group    *errgroup.Group
	runCtx   context.Context
	retained []overlay.Route // kernel routes found at start, for bgp mode's first run

	// Worker-only state.
	cfg        config.Config
	haveCfg    bool
	lastBad    string // last rejected config document + error, to report once
	mac        []byte
	leased     []netip.Prefix
	programmed bool
	lastMode   config.Mode       // mode of the last successful datapath pass
	pending    map[string]string // peer → reason last reported
	capWarned  string            // message of the last capacity Event, to report once
	backoff    time.Duration
	// fwSynced: the last pass's firewall call succeeded; until the next
	// resync tick, passes only sync it (see reconcile).
	fwSynced bool

	mu     sync.Mutex // guards st
	st     status.Status
	statOK bool // st.Ready
}

// New checks o and returns an Agent; Run starts it.
func New(o Options) (*Agent, error) {
	switch {
	case o.NodeName == "":
		return nil, errors.New("agent: node name is empty")
	case o.Client == nil || o.Datapath == nil || o.Firewall == nil || o.Host == nil:
		return nil, errors.New("agent: Client, Datapath, Firewall and Host are required")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Namespace, "kube-system")
	def(&o.ConfigMap, "weft-config")
	def(&o.StateDir, "/var/lib/weft")
	def(&o.RunDir, "/run/weft")
	def(&o.CNIConfDir, "/etc/cni/net.d")
	def(&o.Bridge, "weft0")
	if o.Heartbeat <= 0 {
		o.Heartbeat = 5 * time.Second
	}
	if o.LivenessTimeout <= 0 {
		o.LivenessTimeout = 60 * time.Second
	}
	if o.PassTimeout <= 0 {
		o.PassTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		o: o, log: o.Log.With("node", o.NodeName), reg: reg, m: m,
		alloc:   &lease.Allocator{Client: o.Client, Namespace: o.Namespace, Log: o.Log},
		kickCh:  make(chan struct{}, 1),
		pending: map[string]string{},
	}
	a.st = status.Status{Node: o.NodeName, NotReady: []string{"starting"}}
	a.recorder = events.New(events.Options{
		Sink: o.Client, Scheme: kube.Scheme(), Component: "weft-agent", Host: o.NodeName, Log: a.log,
	})
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "weft_events_dropped_total",
		Help: "Kubernetes Events recorded but not written: queue full, over the object's budget, or the write failed.",
	}, func() float64 { return float64(a.recorder.Dropped()) })); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return a, nil
}

// ReadyFile is the file the CNI binary checks before it attaches pods.
func (a *Agent) ReadyFile() string { return filepath.Join(a.o.RunDir, "ready") }

// StatusSocket is the path of the local status socket.
func (a *Agent) StatusSocket() string { return filepath.Join(a.o.RunDir, status.SocketName) }

// kickIfBGP wakes the worker for a change only bgp mode reads.
func (a *Agent) kickIfBGP() {
	if a.bgpMode.Load() {
		a.kick()
	}
}

// kick wakes the worker; it never blocks and coalesces.
func (a *Agent) kick() {
	select {
	case a.kickCh <- struct{}{}:
	default:
	}
}

// Run starts the informers, the worker, the datapath watch and the HTTP and
// status servers, and returns when ctx is done (nil) or a part fails. The
// datapath is left as it is.
func (a *Agent) Run(ctx context.Context) error {
	a.beat()
	c, ns := a.o.Client, a.o.Namespace
	nodeInf := newInformer(c, &corev1.Node{}, nil, c.ListNodes, c.WatchNodes)
	// Only the one ConfigMap, by field selector, so RBAC can name it.
	cmInf := newInformer(c, &corev1.ConfigMap{}, byName(a.o.ConfigMap),
		inNamespace(ns, c.ListConfigMaps), inNamespace(ns, c.WatchConfigMaps))
	// bgp mode: Services (load-balancer addresses) and the one passwords
	// Secret, by name.
	svcInf := newInformer(c, &corev1.Service{}, nil,
		inNamespace(metav1.NamespaceAll, c.ListServices), inNamespace(metav1.NamespaceAll, c.WatchServices))
	secInf := newInformer(c, &corev1.Secret{}, byName(config.DefaultBGPPasswordName),
		inNamespace(ns, c.ListSecrets), inNamespace(ns, c.WatchSecrets))
	kickBGP := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.kickIfBGP() },
		UpdateFunc: func(any, any) { a.kickIfBGP() },
		DeleteFunc: func(any) { a.kickIfBGP() },
	}
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.kick() },
		UpdateFunc: func(any, any) { a.kick() },
		DeleteFunc: func(any) { a.kick() },
	}
	if err := nodeInf.SetTransform(slimNode); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	if _, err := nodeInf.AddEventHandler(kick); err != nil {
		return fmt.Errorf("node informer: %w", err)
	}
	if _, err := cmInf.AddEventHandler(kick); err != nil {
		return fmt.Errorf("configmap informer: %w", err)
	}
	if _, err := svcInf.AddEventHandler(kickBGP); err != nil {
		return fmt.Errorf("service informer: %w", err)
	}
	if _, err := secInf.AddEventHandler(kickBGP); err != nil {
		return fmt.Errorf("secret informer: %w", err)
	}
	a.nodes, a.maps = listersv1.NewNodeLister(nodeInf.GetIndexer()), listersv1.NewConfigMapLister(cmInf.GetIndexer())
	a.services, a.secrets = listersv1.NewServiceLister(svcInf.GetIndexer()), listersv1.NewSecretLister(secInf.GetIndexer())
	a.servicesSynced, a.secretsSynced = svcInf.HasSynced, secInf.HasSynced
	// The informers stop when Run returns, also when a part failed while
	// ctx lives on; Run waits for them, but no longer than
	// informerStopGrace.
	var informers sync.WaitGroup
	infCtx, stopInformers := context.WithCancel(ctx)
	for _, inf := range []cache.SharedIndexInformer{nodeInf, cmInf, svcInf, secInf} {
		informers.Go(func() { inf.RunWithContext(infCtx) })
	}
	defer a.stopInformers(stopInformers, &informers)

	if a.o.KernelRoutes != nil {
		rctx, cancel := context.WithTimeout(ctx, a.o.PassTimeout)
		routes, err := a.o.KernelRoutes(rctx)
		cancel()
		if err != nil {
			a.log.Warn("reading weft's kernel routes at start failed; bgp mode starts without retained routes", "err", err)
		}
		a.retained = retainable(routes)
	}

	g, ctx := errgroup.WithContext(ctx)
	a.group, a.runCtx = g, ctx
	g.Go(func() error { return a.recorder.Run(ctx) })
	g.Go(func() error { return a.serveStatus(ctx) })
	if a.o.HTTPAddr != "" {
		g.Go(func() error { return a.serveHTTP(ctx) })
	}
	g.Go(func() error {
		a.log.Info("waiting for informer caches")
		if !cache.WaitForCacheSync(ctx.Done(), nodeInf.HasSynced, cmInf.HasSynced) {
			return nil // ctx done
		}
		return a.work(ctx)
	})
	g.Go(func() error { return a.watchDatapath(ctx) })
	err := g.Wait()
	a.log.Info("weft-agent stopped; datapath left in place")
	return err
}

// informerStopGrace bounds Run's wait for its informers to stop. While the
// apiserver is unreachable, an informer sleeps between attempts to stream
// its list (up to 30 s), and client-go's reflector does not end that sleep
// when its context is cancelled; the agent should not hold a node's
// shutdown (or a DaemonSet's rollout) for it. An informer left running
// ends when its sleep does. A variable for the test.
var informerStopGrace = 2 * time.Second

// stopInformers cancels the informers and waits for them, at most
// informerStopGrace.
func (a *Agent) stopInformers(cancel context.CancelFunc, running *sync.WaitGroup) {
	cancel()
	done := make(chan struct{})
	go func() { running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(informerStopGrace):
		a.log.Info("informers still waiting to retry the apiserver; not waiting for them", "waited", informerStopGrace)
	}
}

// newInformer is a shared informer of one kind (its cache indexed by
// namespace, no resync) over list and watch, with tweak (optional) applied to
// every request. Informers stream their initial list in a watch unless the
// client says it cannot (kube/clientset over the fake clientset).
func newInformer[L runtime.Object](c kube.Client, example runtime.Object, tweak func(*metav1.ListOptions),
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.SharedIndexInformer {
	if tweak == nil {
		tweak = func(*metav1.ListOptions) {}
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return watchFn(ctx, o)
		},
	}
	return cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, c), example, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// inNamespace binds a namespaced list or watch to namespace ns.
func inNamespace[R any](ns string, f func(context.Context, string, metav1.ListOptions) (R, error)) func(context.Context, metav1.ListOptions) (R, error) {
	return func(ctx context.Context, o metav1.ListOptions) (R, error) { return f(ctx, ns, o) }
}

// byName selects the one object called name.
func byName(name string) func(*metav1.ListOptions) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return func(o *metav1.ListOptions) { o.FieldSelector = sel }
}

// watchDatapath reconciles on kernel changes to what weft owns, resubscribing
// after a broken subscription.
func (a *Agent) watchDatapath(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		err := a.o.Datapath.Watch(ctx, a.kick)
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("datapath watch ended; resubscribing", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		a.kick() // changes were missed meanwhile
	}
}

func (a *Agent) beat() { a.lastBeat.Store(time.Now().UnixNano()) }

// work is the single worker: one reconcile pass per wake-up.
func (a *Agent) work(ctx context.Context) error {
	beat := time.NewTicker(a.o.Heartbeat)
	defer beat.Stop()
	period := config.DefaultResync
	resync := time.NewTicker(period)
	defer resync.Stop()
	var retry <-chan time.Time
	a.kick()
	for {
		a.beat()
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			continue
		case <-a.kickCh:
		case <-resync.C:
			a.fwSynced = false
		case <-retry:
		}
		failed := a.reconcile(ctx)
		a.beat()
		if a.haveCfg && a.cfg.Resync != period {
			period = a.cfg.Resync
			resync.Reset(period)
		}
		retry = nil
		if failed {
			// Retry sooner than the resync, backing off.
			a.backoff = min(max(2*a.backoff, 500*time.Millisecond), period)
			retry = time.After(a.backoff)
		} else {
			a.backoff = 0
		}
	}
}
