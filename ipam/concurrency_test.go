package ipam

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentStores: 64 goroutines, each with its own Store on one
// directory (so each holds its own flock), allocate at once; every address
// is handed out once.
func TestConcurrentStores(t *testing.T) {
	const workers, each = 64, 3
	dir := t.TempDir()
	ranges := []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}
	opts := Options{Dir: dir, Ranges: ranges, Reserved: gateways(ranges)}
	shared := newStore(t, opts) // also used by many goroutines at once
	var mu sync.Mutex
	got := map[netip.Addr]Owner{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			s := shared
			if w%2 == 0 {
				s = newStore(t, opts)
			}
			for i := range each {
				o := eth0(fmt.Sprintf("g%d-%d", w, i))
				addrs, err := s.Allocate(t.Context(), o)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, a := range addrs {
					if prev, ok := got[a]; ok {
						t.Errorf("%s handed to %s and %s", a, prev, o)
					}
					got[a] = o
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if want := 2 * workers * each; len(got) != want {
		t.Errorf("%d distinct addresses, want %d", len(got), want)
	}
	mustFsck(t, shared)
	checkUsed(t, shared, workers*each)
}

// TestConcurrentProcesses: child processes (copies of this test binary)
// allocate at once on one directory; every address is handed out once and
// Usage counts them all.
func TestConcurrentProcesses(t *testing.T) {
	const procs, each = 4, 50
	dir := t.TempDir()
	ranges := []netip.Prefix{mp("10.0.0.0/24"), mp("fd00::/120")}
	var cs []*child
	for i := range procs {
		cs = append(cs, startChild(t, childSpec{Dir: dir, Ranges: ranges, Boot: "boot-a", Mode: "loop", Prefix: fmt.Sprintf("p%d", i), Count: each}))
	}
	got := map[string]string{}
	for _, c := range cs {
		if err := c.wait(); err != nil {
			t.Fatalf("child: %v: %s", err, c.stderr.String())
		}
		if len(c.lines) != each {
			t.Errorf("child reported %d allocations, want %d", len(c.lines), each)
		}
		for _, line := range c.lines {
			f := strings.Fields(line)
			if len(f) != 4 || f[0] != "ok" {
				t.Fatalf("child said %q", line)
			}
			for _, a := range f[2:] {
				if prev, ok := got[a]; ok {
					t.Errorf("%s handed to %s and %s", a, prev, f[1])
				}
				got[a] = f[1]
			}
		}
	}
	if len(got) != 2*procs*each {
		t.Errorf("%d distinct addresses, want %d", len(got), 2*procs*each)
	}
	s := newStore(t, Options{Dir: dir, Ranges: ranges, Reserved: gateways(ranges)})
	mustFsck(t, s)
	checkUsed(t, s, procs*each)
}

func checkUsed(t *testing.T, s *Store, want int) {
	t.Helper()
	us, err := s.Usage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if u.Used != uint64(want) {
			t.Errorf("Usage %s: Used %d, want %d", u.Prefix, u.Used, want)
		}
	}
}
