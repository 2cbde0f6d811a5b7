package ipam

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkAllocateRelease allocates and releases one owner in a store that
// already holds 0 or 1000 reservations; the cost per pair must not grow
// with them.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, held := range []int{0, 1000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			s := benchStore(b, held)
			ctx := b.Context()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				o := eth0(fmt.Sprintf("bench-%d", i))
				if _, err := s.Allocate(ctx, o); err != nil {
					b.Fatal(err)
				}
				if err := s.Release(ctx, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReleaseUnknown releases an owner holding nothing (a repeated
// DEL); its cost must not grow with the reservations held.
func BenchmarkReleaseUnknown(b *testing.B) {
	for _, held := range []int{0, 1000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			s := benchStore(b, held)
			ctx := b.Context()
			for b.Loop() {
				if err := s.Release(ctx, eth0("never-held")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchStore(b *testing.B, held int) *Store {
	ranges := []netip.Prefix{mp("10.0.0.0/16"), mp("fd00::/112")}
	s := newStore(b, Options{Ranges: ranges, Reserved: gateways(ranges)})
	for i := range held {
		if _, err := s.Allocate(b.Context(), eth0(fmt.Sprintf("held-%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	return s
}
