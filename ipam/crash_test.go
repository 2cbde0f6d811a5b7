package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

var crashRanges = []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}

// crashScenario is an operation on a prepared store, to be killed at every
// step it passes.
type crashScenario struct {
	name  string
	setup func(t *testing.T, dir string) // prepares the store (boot-a)
	boot  string                         // the operation's boot ID
	op    string                         // see runOp
	// check inspects the recovered store after a crash at point.
	check func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr)
}

func allocate(t *testing.T, dir string, ids ...string) {
	t.Helper()
	s := newStore(t, Options{Dir: dir, Ranges: crashRanges, Reserved: gateways(crashRanges)})
	for _, id := range ids {
		if _, err := s.Allocate(t.Context(), eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
}

func wantHeld(t *testing.T, held map[Owner][]netip.Addr, id string, want bool) {
	t.Helper()
	if _, ok := held[eth0(id)]; ok != want {
		t.Errorf("%s held = %v, want %v; store:\n%s", id, ok, want, dumpHeld(held))
	}
}

var crashScenarios = []crashScenario{
	{
		name:  "allocate",
		setup: func(t *testing.T, dir string) { allocate(t, dir, "pre") },
		op:    "alloc victim",
		check: func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr) {
			wantHeld(t, held, "pre", true)
			// All or nothing, decided by the owner link.
			committed := !strings.HasPrefix(point, "alloc/txn-") && !strings.HasPrefix(point, "alloc/addr-linked")
			wantHeld(t, held, "victim", committed)
		},
	},
	{
		name:  "release",
		setup: func(t *testing.T, dir string) { allocate(t, dir, "victim", "post") },
		op:    "release victim",
		check: func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr) {
			wantHeld(t, held, "victim", false) // released from the rename on
			wantHeld(t, held, "post", true)
		},
	},
	{
		name:  "reclaim after reboot",
		setup: func(t *testing.T, dir string) { allocate(t, dir, "a", "b", "c") },
		boot:  "boot-b",
		op:    "check", // Usage, a reader, never reclaims
		check: func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr) {
			if len(held) != 0 {
				t.Errorf("reservations of the earlier boot survive:\n%s", dumpHeld(held))
			}
		},
	},
	{
		name:  "gc",
		setup: func(t *testing.T, dir string) { allocate(t, dir, "a", "b", "c") },
		op:    "gc b",
		check: func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr) {
			wantHeld(t, held, "b", true)
			released, err := s.GC(t.Context(), []Owner{eth0("b")})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range released {
				if o == eth0("b") {
					t.Errorf("second GC released the kept owner")
				}
			}
			if got := mustFsck(t, s); got != "b/eth0 10.0.0.3, fd00::3" {
				t.Errorf("after the second GC: %q, want only b", got)
			}
		},
	},
	{
		name: "gc of an address whose owner record was lost",
		setup: func(t *testing.T, dir string) {
			allocate(t, dir, "victim", "other")
			if err := os.Remove(dir + "/owner/victim=eth0"); err != nil {
				t.Fatal(err)
			}
		},
		op: "gc other",
		check: func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr) {
			// fsck saw at most the orphan of victim; a retried GC clears it.
			wantHeld(t, held, "other", true)
			if _, err := s.GC(t.Context(), []Owner{eth0("other")}); err != nil {
				t.Fatal(err)
			}
			if fileExists(s.addrPath(ma("10.0.0.2"))) || fileExists(s.addrPath(ma("fd00::2"))) {
				t.Error("victim's addresses survive a retried GC")
			}
		},
	},
	{
		name: "recovery of an interrupted allocation",
		setup: func(t *testing.T, dir string) {
			allocate(t, dir, "pre")
			c := startChild(t, childSpec{Dir: dir, Ranges: crashRanges, Boot: "boot-a", Mode: "op", Op: "alloc victim", CrashAt: "alloc/addr-linked-1"})
			if err := c.wait(); !killed(err) {
				t.Fatalf("setup child: %v, %s", err, c.stderr.String())
			}
		},
		op: "usage",
		check: func(t *testing.T, s *Store, point string, held map[Owner][]netip.Addr) {
			wantHeld(t, held, "victim", false)
			wantHeld(t, held, "pre", true)
		},
	},
}

// openRecovered opens the store after a crash, lets an operation recover
// it and checks the invariants; an orphan is allowed only in the scenario
// that made one by hand.
func openRecovered(t *testing.T, dir, boot string) (*Store, map[Owner][]netip.Addr) {
	t.Helper()
	s := newStore(t, Options{Dir: dir, Ranges: crashRanges, Reserved: gateways(crashRanges), BootID: boot})
	if err := s.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	held, err := fsck(s)
	if err != nil {
		// An orphan is legitimate only in the scenario that made one by hand.
		if !strings.Contains(err.Error(), "orphan") || !strings.Contains(t.Name(), "owner_record_was_lost") {
			t.Fatalf("store inconsistent after recovery:\n%v", err)
		}
	}
	return s, held
}

// TestCrashPoints kills a child process at every step of each scenario's
// operation, found by running it once with a recording hook, and checks
// that the next operation recovers a consistent store in which the
// operation happened entirely or not at all, and that draining it leaves
// nothing held.
func TestCrashPoints(t *testing.T) {
	seen := map[string]bool{}
	for _, sc := range crashScenarios {
		boot := sc.boot
		if boot == "" {
			boot = "boot-a"
		}
		// Discover the steps.
		dir := t.TempDir()
		sc.setup(t, dir)
		s := newStore(t, Options{Dir: dir, Ranges: crashRanges, Reserved: gateways(crashRanges), BootID: boot})
		var points []string
		s.hook = func(p string) error { points = append(points, p); return nil }
		if err := runOp(t.Context(), s, sc.op); err != nil {
			t.Fatalf("%s: %s without crash: %v", sc.name, sc.op, err)
		}
		if len(points) == 0 {
			t.Fatalf("%s: %s passed no step", sc.name, sc.op)
		}
		hits := map[string]int{}
		for _, p := range points {
			hit := hits[p]
			hits[p]++
			seen[p] = true
			t.Run(fmt.Sprintf("%s/%s#%d", sc.name, p, hit), func(t *testing.T) {
				dir := t.TempDir()
				sc.setup(t, dir)
				c := startChild(t, childSpec{Dir: dir, Ranges: crashRanges, Boot: boot, Mode: "op", Op: sc.op, CrashAt: p, CrashHit: hit})
				if err := c.wait(); !killed(err) {
					t.Fatalf("child was not killed at %s #%d: %v, %s", p, hit, err, c.stderr.String())
				}
				s, held := openRecovered(t, dir, boot)
				sc.check(t, s, p, held)
				mustDrain(t, s)
			})
		}
	}
	// Every step of the commit and release protocol must have been hit.
	for _, p := range []string{"alloc/txn-partial", "alloc/txn-written", "alloc/addr-linked-0", "alloc/addr-linked-1",
		"alloc/owner-linked", "cursor/partial", "alloc/cursors-saved", "release/owner-moved",
		"txn/addr-unlinked-0", "txn/addr-unlinked-1", "txn/addrs-unlinked", "reclaim/owner-released",
		"replace/boot-tmp-written", "gc/owner-released", "orphan/addr-removed"} {
		if !seen[p] {
			t.Errorf("no scenario passes step %s", p)
		}
	}
}

// TestCrashRandom kills children that allocate and release in a loop at
// random instants, round after round on one store, and checks after each
// round that the store is consistent, that every allocation a child saw
// succeed is held with the addresses it got, that nothing is held twice,
// and that releasing everything leaves nothing held.
func TestCrashRandom(t *testing.T) {
	rounds, children := 30, 3
	if testing.Short() {
		rounds = 5
	}
	dir := t.TempDir()
	ranges := []netip.Prefix{mp("10.0.0.0/16"), mp("fd00::/112")}
	opts := Options{Dir: dir, Ranges: ranges, Reserved: gateways(ranges)}
	var allocated, interrupted int
	for round := range rounds {
		var cs []*child
		for i := range children {
			c := startChild(t, childSpec{Dir: dir, Ranges: ranges, Boot: "boot-a", Mode: "loop",
				Prefix: fmt.Sprintf("r%d-c%d", round, i), ReleaseEvery: 3})
			cs = append(cs, c)
		}
		for _, c := range cs {
			c.waitReady(t)
		}
		time.Sleep(time.Duration(rand.IntN(25_000)) * time.Microsecond)
		for _, c := range cs {
			c.cmd.Process.Kill()
		}
		state := map[string]string{} // container ID → "ok <addrs>", "del <addrs>" or "rel"
		for _, c := range cs {
			if err := c.wait(); !killed(err) {
				t.Fatalf("round %d: child ended by %v, not SIGKILL: %s", round, err, c.stderr.String())
			}
			for _, line := range c.lines {
				verb, rest, _ := strings.Cut(line, " ")
				id, addrs, _ := strings.Cut(rest, " ")
				switch verb {
				case "ok":
					state[id] = "ok " + addrs
					allocated++
				case "del":
					state[id] = "del " + strings.TrimPrefix(state[id], "ok ")
				case "rel":
					state[id] = "rel"
				default:
					t.Fatalf("child said %q", line)
				}
			}
		}
		if fileExists(dir+"/"+txnName) || fileExists(dir+"/"+tmpName) {
			interrupted++
		}

		s := newStore(t, opts)
		mustFsck(t, s)
		held, _ := fsck(s)
		var keep []Owner
		for id, st := range state {
			got, ok := held[eth0(id)]
			gotText := strings.ReplaceAll(addrList(got), ",", "")
			verb, addrs, _ := strings.Cut(st, " ")
			switch {
			case verb == "ok" && (!ok || gotText != addrs):
				t.Errorf("round %d: %s reported allocated %s, store has %q (held %v)", round, id, addrs, gotText, ok)
			case verb == "del" && ok && gotText != addrs:
				t.Errorf("round %d: %s being released holds %q, was given %s", round, id, gotText, addrs)
			case verb == "rel" && ok:
				t.Errorf("round %d: %s reported released, store holds %s", round, id, gotText)
			}
			if verb == "ok" {
				keep = append(keep, eth0(id))
			}
		}
		unreported := 0
		for o := range held {
			if _, ok := state[o.ContainerID]; !ok {
				unreported++
			}
		}
		if unreported > children {
			t.Errorf("round %d: %d reservations nobody reported, more than one in flight per child:\n%s", round, unreported, dumpHeld(held))
		}
		if unreported > 0 {
			interrupted++
		}
		released, err := s.GC(t.Context(), keep)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range released {
			if slices.Contains(keep, o) {
				t.Errorf("round %d: GC released kept owner %s", round, o)
			}
		}
		mustDrain(t, s)
	}
	t.Logf("%d rounds: %d allocations reported by children, %d interrupted operations seen", rounds, allocated, interrupted)
	if allocated == 0 {
		t.Fatal("children allocated nothing: the test exercised nothing")
	}
	if interrupted == 0 && !testing.Short() {
		t.Error("no kill landed inside an operation in any round")
	}
}

// TestDamagedTxn covers a txn that does not parse but has other names
// (only damage, never a crash, makes one): it is resolved by its inode.
func TestDamagedTxn(t *testing.T) {
	for _, committed := range []bool{false, true} {
		t.Run(fmt.Sprint("committed=", committed), func(t *testing.T) {
			s := newStore(t, Options{Ranges: crashRanges})
			if err := s.Check(t.Context()); err != nil {
				t.Fatal(err)
			}
			txn := s.path(txnName)
			if err := os.WriteFile(txn, []byte("weft-ipam 1\nowner x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(txn, s.addrPath(ma("10.0.0.9"))); err != nil {
				t.Fatal(err)
			}
			if committed {
				if err := os.Link(txn, s.ownerPath(eth0("x"))); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Check(t.Context()); err != nil {
				t.Fatal(err)
			}
			if fileExists(txn) {
				t.Error("txn survives recovery")
			}
			if got := fileExists(s.addrPath(ma("10.0.0.9"))); got != committed {
				t.Errorf("addr/10.0.0.9 exists = %v, want %v", got, committed)
			}
		})
	}
}
