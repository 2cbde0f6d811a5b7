package overlay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Fake is an in-memory Kernel for tests of code above the datapath. It keeps
// real state with the kernel's rules that matter to weft (deleting a device
// takes its neighbours, FDB entries and routes with it; an entry needs its
// device; immutable device attributes cannot change), records every write,
// and dumps its state as text.
type Fake struct {
	// Underlay is the device a next hop without Dev resolves to ("eth0").
	Underlay string
	// Fail, when set, is asked before each write (its text as in Ops) and
	// makes it fail with the returned error.
	Fail func(op string) error

	mu     sync.Mutex
	devs   map[string]DeviceState
	neighs map[string]Neighbor
	fdb    map[string]FDBEntry
	routes map[string]fakeRoute
	ops    []string
	subs   map[int]func(Change)
	nextID int
}

type fakeRoute struct {
	Route
	proto int
}

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{
		Underlay: "eth0",
		devs:     map[string]DeviceState{},
		neighs:   map[string]Neighbor{},
		fdb:      map[string]FDBEntry{},
		routes:   map[string]fakeRoute{},
		subs:     map[int]func(Change){},
	}
}

var errFakeNoDevice = errors.New("no such device")

// Ops returns the writes recorded since the last call and forgets them.
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// Dump renders the whole state, one sorted line per object; routes of
// other protocols are shown with theirs.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, d := range f.devs {
		state := "down"
		if d.Up {
			state = "up"
		}
		lines = append(lines, fmt.Sprintf("device %s %s %s", d.Kind, d.Device, state))
	}
	for _, n := range f.neighs {
		lines = append(lines, "neigh "+n.String())
	}
	for _, e := range f.fdb {
		lines = append(lines, "fdb "+e.String())
	}
	for _, r := range f.routes {
		lines = append(lines, fmt.Sprintf("route %v proto %d", r.Route, r.proto))
	}
	// devices, fdb, neigh, route: the order of their first words.
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// AddForeignDevice puts a device weft did not make (any kind) in place.
func (f *Fake) AddForeignDevice(d DeviceState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devs[d.Name] = d
}

// AddForeignRoute puts a route of another protocol in place, as an
// administrator or another daemon would.
func (f *Fake) AddForeignRoute(r Route, proto int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[fakeRouteKey(r.Dst, proto)] = fakeRoute{r, proto}
}

func fakeRouteKey(dst netip.Prefix, proto int) string {
	return fmt.Sprintf("%v|%d", dst, proto)
}

// write records a write, consults Fail and, when it passes, applies fn and
// tells subscribers about c.
func (f *Fake) write(text string, c Change, fn func() error) error {
	f.mu.Lock()
	f.ops = append(f.ops, text)
	var err error
	if f.Fail != nil {
		err = f.Fail(text)
	}
	if err == nil {
		err = fn()
	}
	subs := make([]func(Change), 0, len(f.subs))
	for _, s := range f.subs {
		subs = append(subs, s)
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	for _, s := range subs {
		s(c)
	}
	return nil
}

func (f *Fake) Observe(ctx context.Context, devices []string, proto int) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s State
	for _, name := range devices {
		if d, ok := f.devs[name]; ok {
			d.Addrs = slices.Clone(d.Addrs)
			s.Devices = append(s.Devices, d)
		}
	}
	for _, n := range f.neighs {
		if slices.Contains(devices, n.Dev) {
			s.Neighbors = append(s.Neighbors, n)
		}
	}
	for _, e := range f.fdb {
		if slices.Contains(devices, e.Dev) {
			s.FDB = append(s.FDB, e)
		}
	}
	for _, r := range f.routes {
		if r.proto == proto {
			s.Routes = append(s.Routes, Route{Dst: r.Dst, NextHops: slices.Clone(r.NextHops)})
		}
	}
	return s, nil
}

func (f *Fake) SetDevice(ctx context.Context, d Device) error {
	return f.write("set device "+d.String(), Change{Kind: LinkChange, Dev: d.Name}, func() error {
		if h, ok := f.devs[d.Name]; ok && needsRecreate(d, h) {
			return fmt.Errorf("device %s exists with other immutable attributes", d.Name)
		}
		mac := d.MAC
		if mac == nil {
			mac = f.devs[d.Name].MAC
		}
		d.MAC = slices.Clone(mac)
		d.Addrs = slices.Clone(d.Addrs)
		d.Port = portOrDefault(d.Port)
		f.devs[d.Name] = DeviceState{Device: d, Up: true, Kind: "vxlan"}
		return nil
	})
}

func (f *Fake) DeleteDevice(ctx context.Context, name string) error {
	return f.write("del device "+name, Change{Kind: LinkChange, Dev: name, Deleted: true}, func() error {
		delete(f.devs, name)
		for k, n := range f.neighs {
			if n.Dev == name {
				delete(f.neighs, k)
			}
		}
		for k, e := range f.fdb {
			if e.Dev == name {
				delete(f.fdb, k)
			}
		}
		for k, r := range f.routes {
			if usesAny(r.Route, map[string]bool{name: true}) {
				delete(f.routes, k)
			}
		}
		return nil
	})
}

func (f *Fake) SetNeighbor(ctx context.Context, n Neighbor) error {
	return f.write("set neigh "+n.String(), Change{Kind: NeighborChange, Dev: n.Dev}, func() error {
		if _, ok := f.devs[n.Dev]; !ok {
			return fmt.Errorf("%s: %w", n.Dev, errFakeNoDevice)
		}
		n.MAC = slices.Clone(n.MAC)
		f.neighs[n.Dev+"|"+n.IP.String()] = n
		return nil
	})
}

func (f *Fake) DeleteNeighbor(ctx context.Context, n Neighbor) error {
	return f.write("del neigh "+n.String(), Change{Kind: NeighborChange, Dev: n.Dev, Deleted: true}, func() error {
		delete(f.neighs, n.Dev+"|"+n.IP.String())
		return nil
	})
}

func (f *Fake) SetFDB(ctx context.Context, e FDBEntry) error {
	return f.write("set fdb "+e.String(), Change{Kind: NeighborChange, Dev: e.Dev}, func() error {
		if _, ok := f.devs[e.Dev]; !ok {
			return fmt.Errorf("%s: %w", e.Dev, errFakeNoDevice)
		}
		e.MAC = slices.Clone(e.MAC)
		f.fdb[e.Dev+"|"+e.MAC.String()] = e
		return nil
	})
}

func (f *Fake) DeleteFDB(ctx context.Context, e FDBEntry) error {
	return f.write("del fdb "+e.String(), Change{Kind: NeighborChange, Dev: e.Dev, Deleted: true}, func() error {
		for k, h := range f.fdb {
			if h.Dev == e.Dev && bytes.Equal(h.MAC, e.MAC) && h.Dst == e.Dst {
				delete(f.fdb, k)
			}
		}
		return nil
	})
}

func (f *Fake) SetRoute(ctx context.Context, r Route, proto int) error {
	return f.write("set route "+r.String(), Change{Kind: RouteChange, Protocol: proto}, func() error {
		hops := slices.Clone(r.NextHops)
		for i, h := range hops {
			if h.Dev == "" {
				hops[i].Dev = f.Underlay
				continue
			}
			if _, ok := f.devs[h.Dev]; !ok {
				return fmt.Errorf("%s: %w", h.Dev, errFakeNoDevice)
			}
		}
		// Replace semantics: same destination, whichever protocol had it.
		for k, old := range f.routes {
			if old.Dst == r.Dst {
				delete(f.routes, k)
			}
		}
		f.routes[fakeRouteKey(r.Dst, proto)] = fakeRoute{Route{Dst: r.Dst, NextHops: hops}, proto}
		return nil
	})
}

func (f *Fake) DeleteRoute(ctx context.Context, r Route, proto int) error {
	return f.write("del route "+r.String(), Change{Kind: RouteChange, Protocol: proto, Deleted: true}, func() error {
		delete(f.routes, fakeRouteKey(r.Dst, proto))
		return nil
	})
}

func (f *Fake) Subscribe(ctx context.Context, fn func(Change)) error {
	f.mu.Lock()
	id := f.nextID
	f.nextID++
	f.subs[id] = fn
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	delete(f.subs, id)
	f.mu.Unlock()
	return nil
}
