package ipam

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"testing"
)

// Usable is the arithmetic docs/capacity.md explains: the addresses of a
// block less network, IPv4 broadcast and the gateway.
func TestUsable(t *testing.T) {
	for _, c := range []struct {
		prefix   string
		reserved []string
		want     uint64
	}{
		{"10.244.1.0/24", []string{"10.244.1.1"}, 253},
		{"10.244.1.0/24", nil, 254},
		{"10.244.1.0/23", []string{"10.244.0.1"}, 509},
		{"10.244.1.0/25", []string{"10.244.1.1"}, 125},
		{"10.244.1.64/26", []string{"10.244.1.65"}, 61},
		{"10.244.1.0/27", []string{"10.244.1.1"}, 29},
		{"10.244.1.0/28", []string{"10.244.1.1"}, 13},
		{"10.244.1.0/30", []string{"10.244.1.1"}, 1},
		{"10.244.1.0/24", []string{"10.244.1.1", "10.244.1.1"}, 253},             // one gateway named twice
		{"10.244.1.0/24", []string{"10.244.1.0", "10.244.1.255"}, 254},           // network and broadcast are out anyway
		{"10.244.1.0/24", []string{"10.244.2.1", "fd00:10:244::1"}, 254},         // outside the block
		{"10.244.1.7/24", []string{"10.244.1.1"}, 253},                           // host bits ignored
		{"fd00:10:244:1::/120", []string{"fd00:10:244:1::1"}, 254},               // no broadcast in IPv6
		{"fd00:10:244:1::/112", []string{"fd00:10:244:1::1"}, 65534},             //
		{"fd00:10:244:1::/64", []string{"fd00:10:244:1::1"}, math.MaxUint64 - 1}, // 2^64 - 2
		{"fd00:10:244::/56", []string{"fd00:10:244::1"}, math.MaxUint64},         // saturates
	} {
		var res []netip.Addr
		for _, r := range c.reserved {
			res = append(res, netip.MustParseAddr(r))
		}
		if got := Usable(netip.MustParsePrefix(c.prefix), res); got != c.want {
			t.Errorf("Usable(%s, %v) = %d, want %d", c.prefix, c.reserved, got, c.want)
		}
	}
}

// A store hands out exactly Usable addresses, and Usage reports it as Total.
func TestUsableIsWhatTheStoreHandsOut(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ v4, gw4, v6, gw6 string }{
		{"10.0.0.0/28", "10.0.0.1", "fd00::/124", "fd00::1"},
		{"10.0.0.64/27", "10.0.0.65", "fd00::100/123", "fd00::101"},
	} {
		t.Run(c.v4, func(t *testing.T) {
			ranges := []netip.Prefix{mp(c.v4), mp(c.v6)}
			reserved := []netip.Addr{ma(c.gw4), ma(c.gw6)}
			s := newStore(t, Options{Ranges: ranges, Reserved: reserved})
			want := min(Usable(ranges[0], reserved), Usable(ranges[1], reserved))
			n := uint64(0)
			for ; ; n++ {
				_, err := s.Allocate(ctx, eth0(fmt.Sprint("c", n)))
				if errors.Is(err, ErrExhausted) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if n > 1000 {
					t.Fatal("no exhaustion after 1000 pods")
				}
			}
			if n != want {
				t.Errorf("store handed out %d pods, Usable says %d", n, want)
			}
			use, err := s.Usage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range use {
				if w := Usable(ranges[i], reserved); u.Total != w {
					t.Errorf("Usage()[%d].Total = %d, Usable = %d", i, u.Total, w)
				}
			}
		})
	}
}
