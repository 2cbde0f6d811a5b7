// Package bgp is weft's BGP speaker: a small net/netip-typed wrapper around
// an embedded GoBGP server.
//
// It only speaks BGP. The agent tells it which peers to have (SetPeers) and
// which of our prefixes to announce (SetPaths); the speaker reports what it
// learned (Watch, Routes) after the import policy, and session changes
// (Events). Turning learned prefixes into kernel routes is the agent's job.
//
// Contract with the agent:
//   - Start Run, then call SetPaths before the first SetPeers, so that every
//     peer gets our whole table (and End-of-RIB) in its first update.
//   - Set Config.RestartedWithState only when the kernel routes of the
//     previous run survived; then our peers keep (stale) our routes and we
//     advertise after their End-of-RIB, and the agent keeps its own kernel
//     routes until Table.EndOfRIB is true for a peer, then sweeps the routes
//     that peer no longer reports.
//   - Cancelling Run's context is a planned restart: peers are told with a
//     Cease that is not a Hard Reset, so (RFC 8538) they keep our routes for
//     the restart time. To really leave, SetPeers(nil) first.
//
// No gRPC API is started: the speaker is reachable only through this package.
package bgp

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

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Table is the learned table after the import policy.
type Table struct {
	// Routes are the accepted prefixes with all equal-cost next hops,
	// sorted by prefix. Our own paths are never in it.
	Routes []Learned
	// Rejected are the paths the import policy refused, sorted.
	Rejected []Rejected
	// EndOfRIB has one entry per configured peer: true once the peer's
	// current session delivered End-of-RIB for every family. After a
	// restart the agent removes stale kernel routes via a peer only when
	// this is true for it (or the peer is gone).
	EndOfRIB map[netip.Addr]bool
}

// EventKind is what happened to a session.
type EventKind string

// Session events.
const (
	SessionUp   EventKind = "up"
	SessionDown EventKind = "down"
	EndOfRIB    EventKind = "end-of-rib"
	// PrefixLimit: the peer announced more prefixes of Family than its
	// limit (Peer.MaxPrefixesV4/V6); the session was closed with a Cease
	// and comes back (GoBGP retries after its idle hold time) when the
	// peer announces fewer.
	PrefixLimit EventKind = "prefix-limit"
)

// Event reports a session change, e.g. for a Kubernetes Event.
type Event struct {
	Peer   netip.Addr
	Kind   EventKind
	State  string // session state after the change
	Family string // for EndOfRIB and PrefixLimit: "ipv4-unicast" or "ipv6-unicast"
	Time   time.Time
	// Retry is, for PrefixLimit, when the session is enabled again.
	Retry time.Duration
}

// Speaker is one BGP speaker. Its methods are safe for concurrent use; they
// wait until Run has started the server.
type Speaker struct {
	cfg    Config
	cfgErr error
	log    *slog.Logger
	srv    *server.BgpServer

	ready   chan struct{} // closed once the server runs
	stopped chan struct{} // closed when Run returns
	kick    chan struct{} // recompute the table

	setMu     sync.Mutex // serialises SetPeers and SetPaths
	peersSeen bool       // SetPeers ran once (restarting applies only then)

	mu        sync.Mutex
	policy    ImportPolicy
	table     Table
	watchers  map[chan Table]struct{}
	listeners map[chan Event]struct{}
	states    map[netip.Addr]api.PeerState_SessionState
	dropped   int
	limits    map[netip.Addr]*limitState // sessions closed for their prefix limit
	limitDue  chan struct{}              // a closed session is due to be enabled again
}

// limitState is a session closed for exceeding its prefix limit. GoBGP
// keeps such a peer administratively down (it refuses its connections);
// the speaker enables it again after delay, doubling the delay (up to
// maxLimitRetry) when it trips again within limitForget.
type limitState struct {
	pending bool          // closed; not enabled again yet
	due     time.Time     // when to enable it
	delay   time.Duration // the last delay
	last    time.Time     // when it last tripped
}

const (
	limitForget   = 10 * time.Minute
	maxLimitRetry = 5 * time.Minute
)

// New returns a speaker; the configuration is checked by Run.
func New(cfg Config, log *slog.Logger) *Speaker {
	if log == nil {
		log = slog.Default()
	}
	cfg, err := cfg.withDefaults()
	return &Speaker{
		cfg:       cfg,
		cfgErr:    err,
		log:       log,
		ready:     make(chan struct{}),
		stopped:   make(chan struct{}),
		kick:      make(chan struct{}, 1),
		table:     Table{EndOfRIB: map[netip.Addr]bool{}},
		watchers:  make(map[chan Table]struct{}),
		listeners: make(map[chan Event]struct{}),
		states:    make(map[netip.Addr]api.PeerState_SessionState),
		limits:    make(map[netip.Addr]*limitState),
		limitDue:  make(chan struct{}, 1),
	}
}

// Run starts the BGP server and serves until ctx is done. GoBGP's own loop
// never returns; on cancellation Run tells the peers we are restarting,
// stops every session and listener, and returns. (GoBGP's idle loop
// goroutine stays parked for the life of the process; it holds no sockets.)
func (s *Speaker) Run(ctx context.Context) error {
	if s.cfgErr != nil {
		return fmt.Errorf("bgp config: %w", s.cfgErr)
	}
	s.srv = server.NewBgpServer(server.LoggerOption(newLogAdapter(s.log, s.onPrefixLimit)))
	go s.srv.Serve()

	global := &api.Global{
		Asn:              s.cfg.ASN,
		RouterId:         s.cfg.RouterID.String(),
		ListenPort:       int32(s.cfg.ListenPort),
		UseMultiplePaths: true,
	}
	for _, a := range s.cfg.ListenAddrs {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	if err := s.call(ctx, "start bgp", func(ctx context.Context) error {
		return s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: global})
	}); err != nil {
		return err
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	req := &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_BEST},
			{Type: api.WatchEventRequest_Table_Filter_EOR},
		}},
	}
	if err := s.call(ctx, "watch events", func(context.Context) error {
		return s.srv.WatchEvent(watchCtx, req, s.onEvent)
	}); err != nil {
		s.shutdown()
		return err
	}
	close(s.ready)
	s.log.Info("bgp speaker started", "router-id", s.cfg.RouterID, "asn", s.cfg.ASN, "port", s.cfg.ListenPort,
		"restarting", s.cfg.RestartedWithState)

	tick := time.NewTicker(s.cfg.ResyncInterval)
	defer tick.Stop()
	s.refresh(ctx)
	for {
		select {
		case <-ctx.Done():
			stopWatch()
			s.shutdown()
			return nil
		case <-s.kick:
			s.refresh(ctx)
		case <-s.limitDue:
			s.enableLimited(ctx)
		case <-tick.C:
			s.refresh(ctx)
		}
	}
}

// shutdown stops the server: a Cease "administrative reset" first (not a
// Hard Reset, so peers with RFC 8538 keep our routes), then, once no
// session is up any more, StopBgp (whose "peer de-configured" would be a
// Hard Reset).
func (s *Speaker) shutdown() {
	defer close(s.stopped)
	defer s.closeSubscribers()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.CallTimeout)
	defer cancel()
	if !s.cfg.GracefulRestart.Disabled {
		err := s.call(ctx, "reset peers", func(ctx context.Context) error {
			return s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Communication: "weft restarting"})
		})
		if err != nil {
			s.log.Warn("bgp shutdown: reset peers", "err", err)
		}
		s.waitSessionsDown(ctx)
	}
	if err := s.call(ctx, "stop bgp", func(ctx context.Context) error {
		return s.srv.StopBgp(ctx, &api.StopBgpRequest{})
	}); err != nil {
		s.log.Warn("bgp shutdown", "err", err)
	}
	s.log.Info("bgp speaker stopped")
}

// waitSessionsDown polls until no session is established (the Cease went
// out) or ctx ends.
func (s *Speaker) waitSessionsDown(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		peers, err := s.listPeers(ctx, false)
		if err != nil {
			return
		}
		if !slices.ContainsFunc(peers, func(p *api.Peer) bool {
			return p.GetState().GetSessionState() == api.PeerState_ESTABLISHED
		}) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// call runs one GoBGP call under the call timeout. GoBGP's management calls
// ignore ctx and its list calls silently stop early when ctx ends, so a
// call that outlived its context is an error even if GoBGP said nil.
func (s *Speaker) call(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	select {
	case err := <-errc:
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
}

// wait blocks until Run started the server.
func (s *Speaker) wait(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return fmt.Errorf("bgp speaker not running: %w", ctx.Err())
	}
	select {
	case <-s.stopped:
		return errors.New("bgp speaker stopped")
	default:
		return nil
	}
}

func (s *Speaker) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// SetPeers makes the configured neighbours exactly peers: new ones are
// added, gone ones deleted, changed ones updated. Each existing peer is read
// back from GoBGP first and updated only if a field we set differs, so a
// repeated call never resets a session. It keeps going past failures and
// returns them joined.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	want := make(map[netip.Addr]Peer, len(peers))
	var errs []error
	for i, p := range peers {
		p = p.normalize(s.cfg)
		if err := p.validate(i); err != nil {
			errs = append(errs, err)
			continue
		}
		if p.Password != "" {
			if err := md5Supported(); err != nil {
				errs = append(errs, fmt.Errorf("peers[%d].Password (peer %s): %w", i, p.Address, err))
				continue
			}
		}
		if _, dup := want[p.Address]; dup {
			errs = append(errs, fmt.Errorf("peers[%d].Address %s: duplicate", i, p.Address))
			continue
		}
		want[p.Address] = p
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	s.setMu.Lock()
	defer s.setMu.Unlock()
	listed, err := s.listPeers(ctx, false)
	if err != nil {
		return err
	}
	have := make(map[netip.Addr]Peer, len(listed))
	for _, ap := range listed {
		p, err := peerFromAPI(ap)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		have[p.Address] = p
	}
	plan := diffPeers(want, have)
	restarting := s.cfg.RestartedWithState && !s.peersSeen
	for _, p := range plan.Add {
		s.log.Info("bgp add peer", "peer", p.Address, "asn", p.ASN, "passive", p.Passive, "restarting", restarting)
		err := s.call(ctx, "add peer "+p.Address.String(), func(ctx context.Context) error {
			return s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerToAPI(s.cfg, p, restarting)})
		})
		errs = append(errs, err)
	}
	for _, p := range plan.Update {
		s.log.Info("bgp update peer", "peer", p.Address, "asn", p.ASN)
		err := s.call(ctx, "update peer "+p.Address.String(), func(ctx context.Context) error {
			_, err := s.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: peerToAPI(s.cfg, p, false)})
			return err
		})
		errs = append(errs, err)
	}
	for _, a := range plan.Delete {
		s.log.Info("bgp delete peer", "peer", a)
		err := s.call(ctx, "delete peer "+a.String(), func(ctx context.Context) error {
			return s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()})
		})
		errs = append(errs, err)
	}
	s.peersSeen = true
	s.trigger()
	return errors.Join(errs...)
}

// SetPaths makes the announced paths exactly paths: new or changed ones are
// announced (before) gone ones are withdrawn. The current set is read from
// GoBGP's table, not remembered.
func (s *Speaker) SetPaths(ctx context.Context, paths []Path) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	want := make(map[netip.Prefix]netip.Addr, len(paths))
	var errs []error
	for i, p := range paths {
		if err := p.validate(i); err != nil {
			errs = append(errs, err)
			continue
		}
		if nh, dup := want[p.Prefix]; dup && nh != p.NextHop {
			errs = append(errs, fmt.Errorf("paths[%d].Prefix %s: announced twice (via %s and %s)", i, p.Prefix, nh, p.NextHop))
			continue
		}
		want[p.Prefix] = p.NextHop
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	s.setMu.Lock()
	defer s.setMu.Unlock()
	infos, err := s.listPaths(ctx)
	if err != nil {
		return err
	}
	have := make(map[netip.Prefix]netip.Addr)
	for _, in := range infos {
		if in.local {
			have[in.Prefix] = in.NextHop
		}
	}
	add, del := diffPaths(want, have)
	for _, p := range add {
		errs = append(errs, s.changePath(ctx, p, false))
	}
	for _, p := range del {
		errs = append(errs, s.changePath(ctx, p, true))
	}
	return errors.Join(errs...)
}

func (s *Speaker) changePath(ctx context.Context, p Path, withdraw bool) error {
	ap, err := pathToAPI(p, withdraw)
	if err != nil {
		return err
	}
	if withdraw {
		s.log.Info("bgp withdraw", "prefix", p.Prefix, "nexthop", p.NextHop)
		return s.call(ctx, "withdraw "+p.String(), func(ctx context.Context) error {
			return s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: ap.Family, Path: ap})
		})
	}
	s.log.Info("bgp announce", "prefix", p.Prefix, "nexthop", p.NextHop)
	return s.call(ctx, "announce "+p.String(), func(ctx context.Context) error {
		_, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: ap})
		return err
	})
}

// SetImportPolicy replaces the import policy and re-evaluates the learned
// table at once.
func (s *Speaker) SetImportPolicy(p ImportPolicy) {
	s.mu.Lock()
	s.policy = p
	s.mu.Unlock()
	s.trigger()
}

// Routes returns the latest learned table.
func (s *Speaker) Routes() Table {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.table
}

// Watch returns a channel that receives the learned table now and after
// every change. Only the newest table is kept for a slow reader. The
// channel is closed when ctx ends or the speaker stops.
func (s *Speaker) Watch(ctx context.Context) <-chan Table {
	ch := make(chan Table, 1)
	s.mu.Lock()
	ch <- s.table
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	dropWhenDone(ctx, s, s.watchers, ch)
	return ch
}

// Events returns a channel of session events (buffered; when a reader
// falls far behind, events are dropped and counted in the log). It is
// closed when ctx ends or the speaker stops.
func (s *Speaker) Events(ctx context.Context) <-chan Event {
	ch := make(chan Event, 256)
	s.mu.Lock()
	s.listeners[ch] = struct{}{}
	s.mu.Unlock()
	dropWhenDone(ctx, s, s.listeners, ch)
	return ch
}

// dropWhenDone removes the subscriber ch from subs (guarded by s.mu) and
// closes it when ctx ends or the speaker stops, unless closeSubscribers
// already has.
func dropWhenDone[T any](ctx context.Context, s *Speaker, subs map[chan T]struct{}, ch chan T) {
	go func() {
		select {
		case <-ctx.Done():
		case <-s.stopped:
		}
		s.mu.Lock()
		if _, ok := subs[ch]; ok {
			delete(subs, ch)
			close(ch)
		}
		s.mu.Unlock()
	}()
}

func (s *Speaker) closeSubscribers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watchers {
		close(ch)
		delete(s.watchers, ch)
	}
	for ch := range s.listeners {
		close(ch)
		delete(s.listeners, ch)
	}
}

// emit sends an event to every listener; s.mu must be held.
func (s *Speaker) emit(ev Event) {
	for ch := range s.listeners {
		select {
		case ch <- ev:
		default:
			s.dropped++
			s.log.Warn("bgp event dropped: reader too slow", "peer", ev.Peer, "kind", ev.Kind, "dropped", s.dropped)
		}
	}
}

// onEvent runs on GoBGP's watcher goroutine: record, emit, and ask the Run
// loop to re-read the table. It never calls back into GoBGP.
func (s *Speaker) onEvent(r *api.WatchEventResponse) {
	defer s.trigger()
	now := time.Now()
	if pe := r.GetPeer(); pe != nil {
		if pe.GetType() != api.WatchEventResponse_PeerEvent_STATE && pe.GetType() != api.WatchEventResponse_PeerEvent_INIT {
			return
		}
		addr, err := netip.ParseAddr(pe.GetPeer().GetState().GetNeighborAddress())
		if err != nil {
			return
		}
		state := pe.GetPeer().GetState().GetSessionState()
		s.mu.Lock()
		defer s.mu.Unlock()
		old := s.states[addr]
		s.states[addr] = state
		ev := Event{Peer: addr, State: sessionState(state), Time: now}
		switch {
		case state == api.PeerState_ESTABLISHED && old != api.PeerState_ESTABLISHED:
			ev.Kind = SessionUp
		case state != api.PeerState_ESTABLISHED && old == api.PeerState_ESTABLISHED:
			ev.Kind = SessionDown
		default:
			return
		}
		s.log.Info("bgp session "+string(ev.Kind), "peer", addr, "state", ev.State)
		s.emit(ev)
		return
	}
	for _, p := range r.GetTable().GetPaths() {
		if p.GetNlri() != nil || p.GetIsWithdraw() {
			continue // a best-path change: only the recompute matters
		}
		addr, err := netip.ParseAddr(p.GetNeighborIp())
		if err != nil {
			continue
		}
		f := families[0].name
		if p.GetFamily().GetAfi() == api.Family_AFI_IP6 {
			f = families[1].name
		}
		s.mu.Lock()
		s.emit(Event{Peer: addr, Kind: EndOfRIB, State: sessionState(s.states[addr]), Family: f, Time: now})
		s.mu.Unlock()
	}
}

// onPrefixLimit runs on GoBGP's goroutine when it closes a session for
// exceeding its prefix limit (once per UPDATE it had queued: only the
// first counts). It schedules the session's return and emits one Event.
func (s *Speaker) onPrefixLimit(peer, family string) {
	addr, err := netip.ParseAddr(peer)
	if err != nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.limits[addr]
	if st == nil {
		st = &limitState{}
		s.limits[addr] = st
	}
	if st.pending {
		return
	}
	if st.delay == 0 || now.Sub(st.last) > limitForget {
		st.delay = s.cfg.PrefixLimitRetry
	} else {
		st.delay = min(2*st.delay, max(maxLimitRetry, s.cfg.PrefixLimitRetry))
	}
	st.pending, st.last, st.due = true, now, now.Add(st.delay)
	time.AfterFunc(st.delay, func() {
		select {
		case s.limitDue <- struct{}{}:
		default:
		}
	})
	s.log.Warn("bgp session closed: prefix limit exceeded", "peer", addr, "family", family, "retry", st.delay)
	s.emit(Event{Peer: addr, Kind: PrefixLimit, State: sessionState(s.states[addr]), Family: family, Time: now, Retry: st.delay})
}

// enableLimited enables again the sessions closed for their prefix limit
// whose delay is over (on the Run goroutine: it calls GoBGP).
func (s *Speaker) enableLimited(ctx context.Context) {
	now := time.Now()
	var due []netip.Addr
	s.mu.Lock()
	for a, st := range s.limits {
		if st.pending && !now.Before(st.due) {
			due = append(due, a)
		}
	}
	s.mu.Unlock()
	for _, a := range due {
		err := s.call(ctx, "enable peer "+a.String(), func(ctx context.Context) error {
			return s.srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: a.String()})
		})
		if err != nil {
			s.log.Info("bgp: enabling a peer closed for its prefix limit failed (deleted meanwhile?)", "peer", a, "err", err)
		} else {
			s.log.Info("bgp: peer closed for its prefix limit enabled again", "peer", a)
		}
		s.mu.Lock()
		s.limits[a].pending = false
		s.mu.Unlock()
	}
}

func sessionState(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_UNKNOWN:
		return "unknown"
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return st.String()
}

// refresh re-reads peers and paths from GoBGP, applies the import policy
// and publishes the table if it changed.
func (s *Speaker) refresh(ctx context.Context) {
	peers, err := s.listPeers(ctx, false)
	if err != nil {
		s.log.Warn("bgp refresh", "err", err)
		return
	}
	infos, err := s.listPaths(ctx)
	if err != nil {
		s.log.Warn("bgp refresh", "err", err)
		return
	}
	eor := make(map[netip.Addr]bool, len(peers))
	for _, p := range peers {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		eor[addr] = endOfRIB(p)
	}
	var cands []Candidate
	for _, in := range infos {
		if !in.local {
			cands = append(cands, in.Candidate)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	learned, rejected := s.policy.Filter(cands)
	t := Table{Routes: learned, Rejected: rejected, EndOfRIB: eor}
	if reflect.DeepEqual(t, s.table) {
		return
	}
	s.table = t
	for ch := range s.watchers {
		select { // keep only the newest table
		case <-ch:
		default:
		}
		ch <- t
	}
}

// endOfRIB reports whether an established peer sent End-of-RIB for every
// configured family on its current session.
func endOfRIB(p *api.Peer) bool {
	if p.GetState().GetSessionState() != api.PeerState_ESTABLISHED {
		return false
	}
	for _, as := range p.GetAfiSafis() {
		if as.GetConfig().GetEnabled() && !as.GetMpGracefulRestart().GetState().GetEndOfRibReceived() {
			return false
		}
	}
	return true
}

func (s *Speaker) listPeers(ctx context.Context, advertised bool) ([]*api.Peer, error) {
	var out []*api.Peer
	err := s.call(ctx, "list peers", func(ctx context.Context) error {
		return s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: advertised}, func(p *api.Peer) {
			out = append(out, p)
		})
	})
	return out, err
}

// listPaths lists every path in the global table, both families.
func (s *Speaker) listPaths(ctx context.Context) ([]pathInfo, error) {
	var out []pathInfo
	for _, f := range families {
		err := s.call(ctx, "list "+f.name+" paths", func(ctx context.Context) error {
			return s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: f.api}, func(d *api.Destination) {
				pfx, err := netip.ParsePrefix(d.GetPrefix())
				if err != nil {
					s.log.Warn("bgp skip undecodable prefix", "prefix", d.GetPrefix(), "err", err)
					return
				}
				for _, p := range d.GetPaths() {
					in, err := pathFromAPI(pfx, p, s.cfg.ASN)
					if err != nil {
						s.log.Warn("bgp skip undecodable path", "prefix", pfx, "err", err)
						continue
					}
					out = append(out, in)
				}
			})
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
