package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// Datapath reconciles a node's VXLAN devices, neighbour and FDB entries and
// routes through a Kernel. It is safe for concurrent use; passes are
// serialised.
type Datapath struct {
	kernel Kernel
	proto  int
	log    *slog.Logger

	pass  sync.Mutex // serialises Reconcile passes
	mu    sync.Mutex // guards owned
	owned []string   // device names weft owns: its defaults plus the last Desired's
}

// New returns a Datapath writing through k and marking routes with proto
// (DefaultRouteProtocol when 0).
func New(k Kernel, proto int, log *slog.Logger) *Datapath {
	if proto == 0 {
		proto = DefaultRouteProtocol
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Datapath{kernel: k, proto: proto, log: log, owned: []string{VXLANDevice, VXLAN6Device}}
}

// Reconcile makes the kernel match want: it reads what weft owns, diffs,
// and applies the difference — adds before deletes, continuing past
// failures; the error joins every failed write. An invalid want is rejected
// before anything is written.
func (d *Datapath) Reconcile(ctx context.Context, want Desired) error {
	if err := validate(want); err != nil {
		return fmt.Errorf("invalid desired datapath: %w", err)
	}
	d.pass.Lock()
	defer d.pass.Unlock()
	names := []string{VXLANDevice, VXLAN6Device}
	for _, dev := range want.Devices {
		if !slices.Contains(names, dev.Name) {
			names = append(names, dev.Name)
		}
	}
	// Remember the union with the previous names until this pass has removed
	// the old ones, so Watch keeps reporting on them meanwhile.
	d.mu.Lock()
	d.owned = union(d.owned, names)
	observe := slices.Clone(d.owned)
	d.mu.Unlock()
	have, err := d.kernel.Observe(ctx, observe, d.proto)
	if err != nil {
		return fmt.Errorf("observe datapath: %w", err)
	}
	errs := d.apply(ctx, diff(want, have))
	if errs == nil {
		d.mu.Lock()
		d.owned = names
		d.mu.Unlock()
	}
	return errs
}

// Cleanup removes everything weft owns in the kernel: its devices (with
// their neighbour and FDB entries) and every route marked with its
// protocol. Firewall chains are Firewall.Cleanup's.
func (d *Datapath) Cleanup(ctx context.Context) error {
	return d.Reconcile(ctx, Desired{})
}

func (d *Datapath) apply(ctx context.Context, ops []op) error {
	var errs []error
	for _, o := range ops {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		var err error
		switch o.kind {
		case opRecreateDevice, opDelDevice:
			err = d.kernel.DeleteDevice(ctx, o.device.Name)
		case opSetDevice:
			err = d.kernel.SetDevice(ctx, o.device)
		case opSetNeighbor:
			err = d.kernel.SetNeighbor(ctx, o.neighbor)
		case opDelNeighbor:
			err = d.kernel.DeleteNeighbor(ctx, o.neighbor)
		case opSetFDB:
			err = d.kernel.SetFDB(ctx, o.fdb)
		case opDelFDB:
			err = d.kernel.DeleteFDB(ctx, o.fdb)
		case opSetRoute:
			err = d.kernel.SetRoute(ctx, o.route, d.proto)
		case opDelRoute:
			err = d.kernel.DeleteRoute(ctx, o.route, d.proto)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%v: %w", o, err))
			continue
		}
		d.log.Debug("datapath write", "op", o.String())
	}
	return errors.Join(errs...)
}

// Watch calls notify whenever something weft owns changes or disappears
// (a device with one of its names, a neighbour or FDB entry on one, a route
// with its protocol) — e.g. someone deleted a weft route — so the caller
// runs Reconcile again. notify must not block. Watch returns nil when ctx
// is done and an error when the kernel subscription breaks.
func (d *Datapath) Watch(ctx context.Context, notify func()) error {
	return d.kernel.Subscribe(ctx, func(c Change) {
		if d.concerns(c) {
			notify()
		}
	})
}

func (d *Datapath) concerns(c Change) bool {
	switch c.Kind {
	case RouteChange:
		return c.Protocol == d.proto
	case LinkChange, NeighborChange:
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Contains(d.owned, c.Dev)
	}
	return false
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
