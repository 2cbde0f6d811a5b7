package ipam

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHold: one owner's holds exclude each other, other owners' do not,
// a wait ends with ErrLocked after the lock timeout, and nothing is left
// under hold/ afterwards.
func TestHold(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24")}, LockTimeout: 300 * time.Millisecond})
	ctx := t.Context()
	release, err := s.Hold(ctx, eth0("a"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Hold(ctx, eth0("b"))
	if err != nil {
		t.Fatalf("Hold b while a is held: %v", err)
	}
	other()
	if _, err := s.Hold(ctx, eth0("a")); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Hold a: %v, want ErrLocked", err)
	}
	release()

	// Many holders in turn: never two inside at once.
	s.timeout = 10 * time.Second
	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 20 {
				rel, err := s.Hold(ctx, eth0("a"))
				if err != nil {
					t.Error(err)
					return
				}
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				rel()
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("two holders of one owner at once %d times, want never", n)
	}
	if names, err := readNames(s.path(holdDir)); err != nil || len(names) != 0 {
		t.Errorf("hold/ after every release = %v (%v), want empty", names, err)
	}
	if _, err := s.Hold(ctx, Owner{ContainerID: "../x", IfName: "eth0"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Hold of an invalid owner: %v, want ErrInvalid", err)
	}
}

// TestGCSkipsHeldOwner: GC does not release an owner with a command in
// flight; a later GC does.
func TestGCSkipsHeldOwner(t *testing.T) {
	s := newStore(t, Options{Ranges: []netip.Prefix{mp("10.0.0.0/24")}})
	ctx := t.Context()
	for _, id := range []string{"busy", "idle"} {
		if _, err := s.Allocate(ctx, eth0(id)); err != nil {
			t.Fatal(err)
		}
	}
	release, err := s.Hold(ctx, eth0("busy"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GC(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Owner{eth0("idle")}, got); diff != "" {
		t.Errorf("GC with busy held (-want +got):\n%s", diff)
	}
	release()
	if got, err = s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Owner{eth0("busy")}, got); diff != "" {
		t.Errorf("GC after the release (-want +got):\n%s", diff)
	}
	mustDrain(t, s)
}
