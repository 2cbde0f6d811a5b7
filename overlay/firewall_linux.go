package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"weft.dev/weft/overlay/nsrun"
)

// Firewall keeps weft's iptables chains and the ipsets they match on in one
// network namespace. The iptables and ip6tables binaries act on the
// namespace of the thread that runs them, so with a namespace path every
// call runs on a locked OS thread switched into it (and thrown away after),
// never touching the caller's own firewall.
//
// The set of node addresses VXLAN is accepted from is an ipset (hash:ip,
// one per family), kept over netlink and matched with `-m set`: an O(1)
// lookup per packet, whose members are added and removed one by one — the
// set is never recreated, so no packet sees it empty. Debian's iptables-nft
// translates the match to nftables' `xt match set`, which uses the same
// kernel ipset.
type Firewall struct {
	path string // namespace path; "" for the process's own
	log  *slog.Logger
	h    *netlink.Handle

	mu     sync.Mutex
	ipt    map[bool]*iptables.IPTables // by v6
	writes int                         // firewall writes so far (tests check idempotence)
	checks int                         // chain checks so far (each runs iptables)
	// verified are the chains, by family (v6), found in place or written
	// by the last pass that checked them without an error; Sync does not
	// list those again.
	verified map[bool][]chain
}

// NewFirewall returns a Firewall for the namespace at nsPath ("" for the
// process's own). Close releases it.
func NewFirewall(nsPath string, log *slog.Logger) (*Firewall, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns := netns.None()
	if nsPath != "" {
		var err error
		if ns, err = netns.GetFromPath(nsPath); err != nil {
			return nil, fmt.Errorf("open namespace %s: %w", nsPath, err)
		}
		defer ns.Close()
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink handle in %q: %w", nsPath, err)
	}
	return &Firewall{path: nsPath, log: log, h: h, ipt: map[bool]*iptables.IPTables{}, verified: map[bool][]chain{}}, nil
}

// Close releases the netlink socket.
func (f *Firewall) Close() { f.h.Close() }

// inNS runs fn in the Firewall's namespace.
func (f *Firewall) inNS(fn func() error) error {
	if f.path == "" {
		return fn()
	}
	return nsrun.In(f.path, fn)
}

// iptables returns the iptables (or ip6tables) client of a family; call it
// inside inNS.
func (f *Firewall) iptables(fam ipFamily) (*iptables.IPTables, error) {
	if ipt := f.ipt[fam.v6]; ipt != nil {
		return ipt, nil
	}
	proto := iptables.ProtocolIPv4
	if fam.v6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("%s iptables: %w", fam.name, err)
	}
	f.ipt[fam.v6] = ipt
	return ipt, nil
}

// Reconcile makes weft's chains, jumps and sets match r in both families.
// Chains whose listing already matches are not touched, so a periodic pass
// over unchanged rules writes nothing.
func (f *Firewall) Reconcile(ctx context.Context, r Rules) error { return f.reconcile(ctx, r, true) }

// Sync is Reconcile for the passes between periodic ones: the sets are
// made to match (netlink, no process), but a chain whose rules are those
// the last check verified is not listed again. Each chain check runs the
// iptables program twice (list the chain, check the jump), which costs
// more than the rest of a pass on a small node; a chain changed by someone
// else is repaired by the next Reconcile.
func (f *Firewall) Sync(ctx context.Context, r Rules) error { return f.reconcile(ctx, r, false) }

func (f *Firewall) reconcile(ctx context.Context, r Rules, check bool) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("invalid firewall rules: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, fam := range ipFamilies {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := f.syncSet(fam, r.sources(fam)); err != nil {
			errs = append(errs, err)
			continue // the INPUT chain would refer to a missing set
		}
		chains := r.chains(fam)
		if !check && slices.EqualFunc(chains, f.verified[fam.v6], chain.equal) {
			continue
		}
		delete(f.verified, fam.v6)
		err := f.inNS(func() error {
			ipt, err := f.iptables(fam)
			if err != nil {
				return err
			}
			var errs []error
			for _, c := range chains {
				f.checks++
				if err := f.syncChain(ipt, c); err != nil {
					errs = append(errs, fmt.Errorf("%s %s/%s: %w", fam.name, c.table, c.name, err))
				}
			}
			return errors.Join(errs...)
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.verified[fam.v6] = chains
	}
	return errors.Join(errs...)
}

// syncChain creates the chain if needed, rewrites it when its listing
// differs, and makes sure the parent chain jumps to it.
func (f *Firewall) syncChain(ipt *iptables.IPTables, c chain) error {
	// One listing tells both whether the chain exists (iptables exits
	// with 1 when it does not) and what it holds.
	listed, err := ipt.List(c.table, c.name)
	var ierr *iptables.Error
	exists := err == nil
	if err != nil && (!errors.As(err, &ierr) || ierr.ExitStatus() != 1) {
		return fmt.Errorf("list: %w", err)
	}
	var have []string
	prefix := "-A " + c.name + " "
	for _, l := range listed {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			have = append(have, rest)
		}
	}
	if !exists || !slices.Equal(have, c.rules) {
		// ClearChain creates a missing chain and flushes an existing one.
		f.writes++
		if err := ipt.ClearChain(c.table, c.name); err != nil {
			return fmt.Errorf("clear: %w", err)
		}
		for _, rule := range c.rules {
			f.writes++
			if err := ipt.Append(c.table, c.name, strings.Fields(rule)...); err != nil {
				return fmt.Errorf("append %q: %w", rule, err)
			}
		}
		f.log.Info("firewall chain written", "table", c.table, "chain", c.name, "rules", len(c.rules))
	}
	jump := []string{"-j", c.name}
	ok, err := ipt.Exists(c.table, c.parent, jump...)
	if err != nil {
		return fmt.Errorf("check jump from %s: %w", c.parent, err)
	}
	if !ok {
		f.writes++
		if err := ipt.Insert(c.table, c.parent, 1, jump...); err != nil {
			return fmt.Errorf("insert jump from %s: %w", c.parent, err)
		}
	}
	return nil
}

// syncSet creates the family's ipset if missing and adds and removes
// members one by one.
func (f *Firewall) syncSet(fam ipFamily, want []netip.Addr) error {
	res, err := f.h.IpsetList(fam.set)
	if err != nil {
		family := uint8(unix.AF_INET)
		if fam.v6 {
			family = unix.AF_INET6
		}
		f.writes++
		if err := f.h.IpsetCreate(fam.set, "hash:ip", netlink.IpsetCreateOptions{Family: family}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create ipset %s: %w", fam.set, err)
		}
		res = &netlink.IPSetResult{}
	}
	var have []netip.Addr
	for _, e := range res.Entries {
		have = append(have, toNetip(e.IP))
	}
	var errs []error
	for _, a := range want {
		if !slices.Contains(have, a) {
			f.writes++
			if err := f.h.IpsetAdd(fam.set, &netlink.IPSetEntry{IP: net.IP(a.AsSlice()), Replace: true}); err != nil {
				errs = append(errs, fmt.Errorf("add %v to ipset %s: %w", a, fam.set, err))
			}
		}
	}
	for _, a := range have {
		if !slices.Contains(want, a) {
			f.writes++
			if err := f.h.IpsetDel(fam.set, &netlink.IPSetEntry{IP: net.IP(a.AsSlice())}); err != nil {
				errs = append(errs, fmt.Errorf("delete %v from ipset %s: %w", a, fam.set, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes weft's jumps, chains and sets in both families.
func (f *Firewall) Cleanup(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.verified)
	var errs []error
	for _, fam := range ipFamilies {
		err := f.inNS(func() error {
			ipt, err := f.iptables(fam)
			if err != nil {
				return err
			}
			var errs []error
			for _, c := range (Rules{}).chains(fam) {
				exists, err := ipt.ChainExists(c.table, c.name)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: check chain %s/%s: %w", fam.name, c.table, c.name, err))
					continue
				}
				if !exists {
					continue // no chain, so no jump to it either
				}
				if err := ipt.DeleteIfExists(c.table, c.parent, "-j", c.name); err != nil {
					errs = append(errs, fmt.Errorf("%s: delete jump %s/%s → %s: %w", fam.name, c.table, c.parent, c.name, err))
				}
				if err := ipt.ClearAndDeleteChain(c.table, c.name); err != nil {
					errs = append(errs, fmt.Errorf("%s: delete chain %s/%s: %w", fam.name, c.table, c.name, err))
				}
			}
			return errors.Join(errs...)
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := f.h.IpsetList(fam.set); err == nil {
			if err := f.h.IpsetDestroy(fam.set); err != nil {
				errs = append(errs, fmt.Errorf("destroy ipset %s: %w", fam.set, err))
			}
		}
	}
	return errors.Join(errs...)
}
