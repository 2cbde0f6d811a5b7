package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/kubernetes/fake"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/agent/kube/clientset"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/bgp"
)

// The status shows the IPAM store's use at the time it is asked, not at the
// last pass: the CNI binary adds pods between passes without waking the agent.
func TestStatusReadsIPAMUseWhenAsked(t *testing.T) {
	var used atomic.Uint64
	var reserved []netip.Addr
	a, err := New(Options{
		NodeName: "node-a", StateDir: t.TempDir(), RunDir: t.TempDir(), CNIConfDir: t.TempDir(),
		Client: clientset.Wrap(fake.NewClientset()), Datapath: &fakeDatapath{}, Firewall: &fakeFirewall{}, Host: &fakeHost{},
		IPAM: func(_ context.Context, ranges []netip.Prefix, res []netip.Addr) ([]status.IPAM, error) {
			reserved = res
			var out []status.IPAM
			for _, p := range ranges {
				out = append(out, status.IPAM{Prefix: p, Used: used.Load(), Total: 253})
			}
			return out, nil
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	pods := netip.MustParsePrefix("10.244.1.0/24")
	a.mu.Lock()
	a.st = status.Status{Node: "node-a", Ready: true, PodCIDRs: []netip.Prefix{pods},
		IPAM: []status.IPAM{{Prefix: pods, Used: 0, Total: 253}}} // as the last pass saw it
	a.mu.Unlock()

	get := func() []status.IPAM {
		t.Helper()
		rec := httptest.NewRecorder()
		a.LocalHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, status.Path, nil))
		var st status.Status
		if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
			t.Fatalf("decode %s: %v: %s", status.Path, err, rec.Body)
		}
		return st.IPAM
	}
	for _, n := range []uint64{2, 5, 1} {
		used.Store(n) // pods added or removed since the pass
		want := []status.IPAM{{Prefix: pods, Used: n, Total: 253}}
		if diff := cmp.Diff(want, get(), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
			t.Errorf("with %d used (-want +got):\n%s", n, diff)
		}
	}
	if want := []netip.Addr{netip.MustParseAddr("10.244.1.1")}; !cmp.Equal(want, reserved, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })) {
		t.Errorf("reserved %v, want the gateway %v", reserved, want)
	}
}

// The TCP port (reachable on every node address) serves health, readiness
// and metrics only; the status and bgp mode's status, which name nodes,
// addresses, peers and AS numbers, only on the root-only unix socket.
func TestTCPServesNoStatus(t *testing.T) {
	a, err := New(Options{
		NodeName: "node-a", StateDir: t.TempDir(), RunDir: t.TempDir(), CNIConfDir: t.TempDir(),
		Client: clientset.Wrap(fake.NewClientset()), Datapath: &fakeDatapath{}, Firewall: &fakeFirewall{}, Host: &fakeHost{},
	})
	if err != nil {
		t.Fatal(err)
	}
	a.beat()
	code := func(h http.Handler, path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	for path, want := range map[string][2]int{ // TCP, unix socket
		"/healthz": {200, 200}, "/readyz": {503, 503}, "/metrics": {200, 200},
		status.Path: {404, 200}, BGPPath: {404, 404 /* not in bgp mode */}, "/debug/pprof/": {404, 404},
	} {
		if got := [2]int{code(a.Handler(), path), code(a.LocalHandler(), path)}; got != want {
			t.Errorf("%s: TCP, socket = %v, want %v", path, got, want)
		}
	}
	rec := httptest.NewRecorder()
	a.LocalHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, BGPPath, nil))
	if !strings.Contains(rec.Body.String(), "does not run mode bgp") {
		t.Errorf("socket %s: %q, want the agent's not-bgp answer (not the mux's 404)", BGPPath, rec.Body)
	}
}

// A BGP session closed for its prefix limit is counted and reported.
func TestBGPPrefixLimitCounted(t *testing.T) {
	a, err := New(Options{
		NodeName: "node-a", StateDir: t.TempDir(), RunDir: t.TempDir(), CNIConfDir: t.TempDir(),
		Client: clientset.Wrap(fake.NewClientset()), Datapath: &fakeDatapath{}, Firewall: &fakeFirewall{}, Host: &fakeHost{},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &bgpRun{downSince: map[netip.Addr]time.Time{}, reported: map[netip.Addr]bool{}}
	a.nodes = listersv1.NewNodeLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))
	a.bgpEvent(r, bgpmode.Event{Peer: netip.MustParseAddr("10.0.0.9"), Name: "peer/10.0.0.9", Kind: bgp.PrefixLimit,
		Family: "ipv4-unicast", Retry: 30 * time.Second})
	if got := testutil.ToFloat64(a.m.bgpLimit.WithLabelValues("peer")); got != 1 {
		t.Errorf("weft_bgp_prefix_limit_total{kind=peer} = %v, want 1", got)
	}
}
