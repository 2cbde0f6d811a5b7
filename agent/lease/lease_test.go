package lease

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"weft.dev/weft/agent/kube/clientset"
)

var pfx = netip.MustParsePrefix

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"10.244.3.0/24":      "weft-block-10-244-3-0-24",
		"10.244.3.7/24":      "weft-block-10-244-3-0-24",
		"fd00:10:244:3::/64": "weft-block-fd00-10-244-3---64",
		"fd00::/64":          "weft-block-fd00---64",
	} {
		if got := Name(pfx(in)); got != want {
			t.Errorf("Name(%s) = %s, want %s", in, got, want)
		}
	}
}

func node(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}}
}

func size(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 24
	}
	return 64
}

func newAlloc(objs ...corev1.Node) *Allocator {
	c := fake.NewClientset()
	for i := range objs {
		if _, err := c.CoreV1().Nodes().Create(context.Background(), &objs[i], metav1.CreateOptions{}); err != nil {
			panic(err)
		}
	}
	return &Allocator{Client: clientset.Wrap(c), Namespace: "kube-system", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestAcquireDistinctConcurrent(t *testing.T) {
	a := newAlloc()
	cl := []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/56")}
	const n = 8
	got := make([][]netip.Prefix, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := a.Acquire(context.Background(), node(fmt.Sprintf("n%d", i)), cl, size, nil)
			if err != nil {
				t.Errorf("Acquire n%d: %v", i, err)
			}
			got[i] = b
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]string{}
	for i, bs := range got {
		if len(bs) != 2 || !bs[0].Addr().Is4() || bs[1].Addr().Is4() || bs[0].Bits() != 24 || bs[1].Bits() != 64 {
			t.Fatalf("n%d got %v, want one /24 and one /64", i, bs)
		}
		for _, b := range bs {
			if other, dup := seen[b]; dup {
				t.Errorf("block %s given to n%d and %s", b, i, other)
			}
			seen[b] = fmt.Sprintf("n%d", i)
		}
	}
	// The blocks are the first n of each family.
	var v4 []netip.Prefix
	for b := range seen {
		if b.Addr().Is4() {
			v4 = append(v4, b)
		}
	}
	slices.SortFunc(v4, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	if v4[0] != pfx("10.244.0.0/24") || v4[n-1] != pfx(fmt.Sprintf("10.244.%d.0/24", n-1)) {
		t.Errorf("v4 blocks %v, want 10.244.0.0/24 .. 10.244.%d.0/24", v4, n-1)
	}
}

func TestAcquireReusesAndAvoids(t *testing.T) {
	a := newAlloc()
	ctx := context.Background()
	cl := []netip.Prefix{pfx("10.244.0.0/22")}
	avoid := []netip.Prefix{pfx("10.244.0.0/24")} // allocated by the controller-manager to another node
	first, err := a.Acquire(ctx, node("a"), cl, size, avoid)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]netip.Prefix{pfx("10.244.1.0/24")}, first, cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Fatalf("first block (-want +got):\n%s", diff)
	}
	again, err := a.Acquire(ctx, node("a"), cl, size, avoid)
	if err != nil || again[0] != first[0] {
		t.Fatalf("second Acquire = %v, %v; want the same %v", again, err, first)
	}
	// Recreated node (new UID): same block, owner reference adopted.
	re := node("a")
	re.UID = "uid-a2"
	again, err = a.Acquire(ctx, re, cl, size, avoid)
	if err != nil || again[0] != first[0] {
		t.Fatalf("Acquire after recreate = %v, %v; want %v", again, err, first)
	}
	le, err := a.Client.GetLease(ctx, "kube-system", Name(first[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(le.OwnerReferences) != 1 || le.OwnerReferences[0].UID != "uid-a2" || le.OwnerReferences[0].Kind != "Node" {
		t.Errorf("owner references after adopt = %+v, want Node a uid-a2", le.OwnerReferences)
	}
	if *le.Spec.HolderIdentity != "a" {
		t.Errorf("holder = %s, want a", *le.Spec.HolderIdentity)
	}
	// The /22 has 4 blocks: one avoided, a, and two more; the fifth node finds none.
	for _, n := range []string{"b", "c"} {
		if _, err := a.Acquire(ctx, node(n), cl, size, avoid); err != nil {
			t.Fatalf("Acquire %s: %v", n, err)
		}
	}
	if b, err := a.Acquire(ctx, node("d"), cl, size, avoid); err == nil {
		t.Fatalf("Acquire in a full range = %v, want an error", b)
	}
}

func TestNextBlock(t *testing.T) {
	cl := pfx("fd00:10:244::/62")
	var got []string
	for b, ok := netip.PrefixFrom(cl.Addr(), 64), true; ok; b, ok = next(b, cl) {
		got = append(got, b.String())
	}
	want := []string{"fd00:10:244::/64", "fd00:10:244:1::/64", "fd00:10:244:2::/64", "fd00:10:244:3::/64"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("blocks (-want +got):\n%s", diff)
	}
	if _, ok := next(pfx("255.255.255.0/24"), pfx("0.0.0.0/0")); ok {
		t.Error("next after the last IPv4 block reported a block")
	}
}
