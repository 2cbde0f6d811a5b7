package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"weft.dev/weft/agent/cniconf"
	"weft.dev/weft/agent/kube/clientset"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/overlay"
)

// fakeDatapath keeps the last desired datapath it was given.
type fakeDatapath struct {
	mu      sync.Mutex
	want    overlay.Desired
	passes  int
	fail    error
	notify  func()
	cleaned bool
}

func (f *fakeDatapath) Reconcile(_ context.Context, d overlay.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.passes++
	if f.fail != nil {
		return f.fail
	}
	f.want = d
	return nil
}

func (f *fakeDatapath) Watch(ctx context.Context, notify func()) error {
	f.mu.Lock()
	f.notify = notify
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (f *fakeDatapath) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.want, f.cleaned = overlay.Desired{}, true
	return nil
}

// dump is a stable text form of the routes (destination → gateway).
func (f *fakeDatapath) dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b strings.Builder
	for _, d := range f.want.Devices {
		fmt.Fprintf(&b, "dev %s vni %d mtu %d local %s addrs %v\n", d.Name, d.VNI, d.MTU, d.Local, d.Addrs)
	}
	for _, r := range f.want.Routes {
		fmt.Fprintf(&b, "route %s via %s\n", r.Dst, r.NextHops[0].Gateway)
	}
	return b.String()
}

type fakeFirewall struct {
	mu      sync.Mutex
	rules   overlay.Rules
	checks  int // Reconcile calls
	cleaned bool
}

func (f *fakeFirewall) Reconcile(_ context.Context, r overlay.Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = r
	f.checks++
	return nil
}

func (f *fakeFirewall) Sync(_ context.Context, r overlay.Rules) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = r
	return nil
}

func (f *fakeFirewall) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules, f.cleaned = overlay.Rules{}, true
	return nil
}

type fakeHost struct {
	mu     sync.Mutex
	bridge string
}

func (h *fakeHost) Underlay(a netip.Addr) (netip.Prefix, int, error) {
	return netip.PrefixFrom(a, 24).Masked(), 1500, nil
}

func (h *fakeHost) EnsureBridge(_ context.Context, b overlay.Bridge) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bridge = fmt.Sprintf("%s mtu %d %v owned %v", b.Name, b.MTU, b.Gateways, b.Owned)
	return nil
}

func kubeNode(name, ip, cidr, mac string) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Annotations: map[string]string{}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
	if cidr != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
	}
	if mac != "" {
		n.Annotations[AnnotationVTEPMAC] = mac
	}
	return n
}

func configMap(doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-config", Namespace: "kube-system"},
		Data:       map[string]string{"config.yaml": doc},
	}
}

const goodConfig = "mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nresync: 1h\n"

type harness struct {
	t      *testing.T
	a      *Agent
	client *fake.Clientset
	dp     *fakeDatapath
	fw     *fakeFirewall
	host   *fakeHost
	dir    string
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, objs ...any) *harness {
	t.Helper()
	h := &harness{t: t, client: fake.NewClientset(), dp: &fakeDatapath{}, fw: &fakeFirewall{}, host: &fakeHost{}, dir: t.TempDir()}
	ctx := context.Background()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.Node:
			_, err = h.client.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ConfigMap:
			_, err = h.client.CoreV1().ConfigMaps("kube-system").Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	a, err := New(Options{
		NodeName: "node-a", StateDir: filepath.Join(h.dir, "state"), RunDir: filepath.Join(h.dir, "run"),
		CNIConfDir: filepath.Join(h.dir, "net.d"), Client: clientset.Wrap(h.client), Datapath: h.dp, Firewall: h.fw, Host: h.host,
		IPAM: func(_ context.Context, ranges []netip.Prefix, _ []netip.Addr) ([]status.IPAM, error) {
			var out []status.IPAM
			for _, p := range ranges {
				out = append(out, status.IPAM{Prefix: p, Used: 3, Total: 253})
			}
			return out, nil
		},
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Heartbeat: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	rctx, cancel := context.WithCancel(ctx)
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- a.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return h
}

// eventually polls cond until it holds or 10 s pass.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; status %+v; datapath:\n%s", what, h.a.Status(), h.dp.dump())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) get(path string) int {
	rec := httptest.NewRecorder()
	h.a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code
}

func TestAgentReconcilesFromInformers(t *testing.T) {
	h := start(t,
		kubeNode("node-a", "192.168.1.1", "10.244.1.0/24", ""),
		kubeNode("node-b", "192.168.1.2", "10.244.2.0/24", "02:00:00:00:00:0b"),
		configMap(goodConfig))
	ctx := context.Background()
	h.eventually("ready", func() bool { return h.a.Status().Ready })

	wantDP := "dev weft.vxlan vni 1 mtu 1450 local 192.168.1.1 addrs [10.244.1.0]\nroute 10.244.2.0/24 via 10.244.2.0\n"
	if got := h.dp.dump(); got != wantDP {
		t.Errorf("datapath:\n%s\nwant:\n%s", got, wantDP)
	}
	h.host.mu.Lock()
	if got, want := h.host.bridge, "weft0 mtu 1450 [10.244.1.1/24] owned [10.244.0.0/16]"; got != want {
		t.Errorf("bridge = %q, want %q", got, want)
	}
	h.host.mu.Unlock()
	h.fw.mu.Lock()
	if got := fmt.Sprint(h.fw.rules.VTEPSources, h.fw.rules.PodCIDRs, h.fw.rules.Masquerade); got != "[192.168.1.2] [10.244.1.0/24] true" {
		t.Errorf("firewall rules = %s", got)
	}
	h.fw.mu.Unlock()
	conf, err := os.ReadFile(filepath.Join(h.dir, "net.d", cniconf.FileName))
	if err != nil {
		t.Fatalf("conflist not written: %v", err)
	}
	for _, s := range []string{`"mtu": 1450`, `"10.244.1.0/24"`, `"10.244.1.1"`, filepath.Join(h.dir, "state", "ipam"), filepath.Join(h.dir, "run", "ready")} {
		if !strings.Contains(string(conf), s) {
			t.Errorf("conflist lacks %s:\n%s", s, conf)
		}
	}
	if _, err := os.Stat(filepath.Join(h.dir, "run", "ready")); err != nil {
		t.Errorf("ready file: %v", err)
	}
	if c := h.get("/readyz"); c != 200 {
		t.Errorf("/readyz = %d, want 200", c)
	}
	if c := h.get("/healthz"); c != 200 {
		t.Errorf("/healthz = %d, want 200", c)
	}

	// Published: annotations and the condition, on the Node object.
	h.eventually("node annotations and condition", func() bool {
		n, err := h.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && n.Annotations[AnnotationNodeIP] == "192.168.1.1" &&
			len(n.Annotations[AnnotationVTEPMAC]) == 17 && networkAvailable(n)
	})
	n, _ := h.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	persisted, _ := os.ReadFile(filepath.Join(h.dir, "state", vtepMACFile))
	if strings.TrimSpace(string(persisted)) != n.Annotations[AnnotationVTEPMAC] {
		t.Errorf("persisted MAC %q != published %q", persisted, n.Annotations[AnnotationVTEPMAC])
	}
	h.dp.mu.Lock()
	if h.dp.want.Devices[0].MAC.String() != n.Annotations[AnnotationVTEPMAC] {
		t.Errorf("device MAC %s != published %s", h.dp.want.Devices[0].MAC, n.Annotations[AnnotationVTEPMAC])
	}
	h.dp.mu.Unlock()

	// A new peer appears: enqueue → reconcile.
	if _, err := h.client.CoreV1().Nodes().Create(ctx, kubeNode("node-c", "192.168.1.3", "10.244.3.0/24", "02:00:00:00:00:0c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("route to node-c", func() bool { return strings.Contains(h.dp.dump(), "route 10.244.3.0/24 via 10.244.3.0") })

	// A peer without MAC is pending, not programmed.
	if _, err := h.client.CoreV1().Nodes().Create(ctx, kubeNode("node-d", "192.168.1.4", "10.244.4.0/24", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("node-d pending", func() bool {
		for _, p := range h.a.Status().Peers {
			if p.Name == "node-d" {
				return !p.Programmed && strings.Contains(p.Pending, "VTEP MAC")
			}
		}
		return false
	})
	if strings.Contains(h.dp.dump(), "10.244.4.0") {
		t.Errorf("pending node-d programmed:\n%s", h.dp.dump())
	}
	if got := testutil.ToFloat64(h.a.m.peersProgrammed); got != 2 {
		t.Errorf("weft_peers_programmed = %v, want 2", got)
	}
	if got := testutil.ToFloat64(h.a.m.peers); got != 3 {
		t.Errorf("weft_peers = %v, want 3", got)
	}
	if got := testutil.ToFloat64(h.a.m.ipamCapacity.WithLabelValues("ipv4")); got != 253 {
		t.Errorf("weft_ipam_capacity{ipv4} = %v, want 253", got)
	}

	// A deleted node's route goes.
	if err := h.client.CoreV1().Nodes().Delete(ctx, "node-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("route to node-b removed", func() bool { return !strings.Contains(h.dp.dump(), "10.244.2.0") })
	// Those passes synced the firewall (its rules follow the nodes) but
	// listed its chains only in the first: the resync (1h here) is not due.
	h.fw.mu.Lock()
	if got := fmt.Sprint(h.fw.rules.VTEPSources, h.fw.checks); got != "[192.168.1.3 192.168.1.4] 1" {
		t.Errorf("firewall VTEP sources and chain checks = %s, want [192.168.1.3 192.168.1.4] 1", got)
	}
	h.fw.mu.Unlock()

	// A kernel change notification triggers a pass.
	h.dp.mu.Lock()
	before, notify := h.dp.passes, h.dp.notify
	h.dp.mu.Unlock()
	if notify == nil {
		t.Fatal("datapath Watch was not started")
	}
	notify()
	h.eventually("pass after netlink notification", func() bool {
		h.dp.mu.Lock()
		defer h.dp.mu.Unlock()
		return h.dp.passes > before
	})
}

func TestAgentBadConfigKeepsLastGood(t *testing.T) {
	h := start(t,
		kubeNode("node-a", "192.168.1.1", "10.244.1.0/24", ""),
		kubeNode("node-b", "192.168.1.2", "10.244.2.0/24", "02:00:00:00:00:0b"),
		configMap(goodConfig))
	ctx := context.Background()
	h.eventually("ready", func() bool { return h.a.Status().Ready })

	for _, tc := range []struct{ doc, field string }{
		{"mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\nvxlan: {vni: 0}\n", "vxlan.vni"},
		{"mode: gre\nclusterCIDRs: [10.244.0.0/16]\n", "mode"},
		{"mode: vxlan\nclusterCIDRs: [10.99.0.0/16]\n", "spec.podCIDRs"},
		{"mode: bgp\nclusterCIDRs: [10.244.0.0/16]\nbgp: {asn: 23456}\n", "bgp.asn"},
	} {
		if _, err := h.client.CoreV1().ConfigMaps("kube-system").Update(ctx, configMap(tc.doc), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		h.eventually("config error on "+tc.field, func() bool {
			st := h.a.Status()
			return !st.Ready && strings.Contains(st.ConfigError, tc.field)
		})
		if c := h.get("/readyz"); c != http.StatusServiceUnavailable {
			t.Errorf("%s: /readyz = %d, want 503", tc.field, c)
		}
		if c := h.get("/healthz"); c != 200 {
			t.Errorf("%s: /healthz = %d, want 200 (alive)", tc.field, c)
		}
		// The last good config still drives the datapath.
		if got := h.dp.dump(); !strings.Contains(got, "vni 1 ") || !strings.Contains(got, "route 10.244.2.0/24") {
			t.Errorf("%s: datapath not kept:\n%s", tc.field, got)
		}
	}
	if got := testutil.ToFloat64(h.a.m.configErrors); got != 4 {
		t.Errorf("weft_config_errors_total = %v, want 4", got)
	}
	h.eventually("ConfigInvalid events", func() bool {
		l, err := h.client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		n := 0
		for _, e := range l.Items {
			if e.Reason == "ConfigInvalid" && e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "node-a" {
				n++
			}
		}
		return n == 4
	})

	// A good change applies live, without restart.
	if _, err := h.client.CoreV1().ConfigMaps("kube-system").Update(ctx, configMap(goodConfig+"vxlan: {vni: 7}\n"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("vni 7 applied and ready", func() bool {
		return h.a.Status().Ready && strings.Contains(h.dp.dump(), "vni 7 ")
	})
}

func TestAgentNotReadyUntilProgrammed(t *testing.T) {
	h := start(t, kubeNode("node-a", "192.168.1.1", "10.244.1.0/24", ""),
		kubeNode("node-b", "192.168.1.2", "10.244.2.0/24", "02:00:00:00:00:0b"), configMap(goodConfig))
	h.dp.mu.Lock()
	h.dp.fail = fmt.Errorf("netlink: operation not permitted")
	h.dp.mu.Unlock()
	h.eventually("a failed datapath pass", func() bool { return h.a.Status().LastError != "" })
	if st := h.a.Status(); st.Ready {
		t.Fatalf("ready although the datapath failed: %+v", st)
	}
	// The plan programs node-b, but the kernel holds nothing yet.
	if got := testutil.ToFloat64(h.a.m.peersProgrammed); got != 0 {
		t.Errorf("weft_peers_programmed = %v while every datapath pass failed, want 0", got)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "net.d", cniconf.FileName)); !os.IsNotExist(err) {
		t.Errorf("conflist written before the datapath was programmed: %v", err)
	}
	if got := testutil.ToFloat64(h.a.m.reconcileErrors.WithLabelValues("datapath")); got < 1 {
		t.Errorf("weft_reconcile_errors_total{reconciler=datapath} = %v, want >= 1", got)
	}
	h.dp.mu.Lock()
	h.dp.fail = nil
	h.dp.mu.Unlock()
	// The retry with backoff programs it without any new event.
	h.eventually("ready after retry", func() bool { return h.a.Status().Ready })
	if _, err := os.Stat(filepath.Join(h.dir, "net.d", cniconf.FileName)); err != nil {
		t.Errorf("conflist after programming: %v", err)
	}
	if got := testutil.ToFloat64(h.a.m.peersProgrammed); got != 1 {
		t.Errorf("weft_peers_programmed = %v after the datapath took node-b, want 1", got)
	}
}

func TestAgentLeasesPodCIDR(t *testing.T) {
	h := start(t, kubeNode("node-a", "192.168.1.1", "", ""), configMap(goodConfig))
	ctx := context.Background()
	h.eventually("ready", func() bool { return h.a.Status().Ready })
	st := h.a.Status()
	if !st.Leased || len(st.PodCIDRs) != 1 || st.PodCIDRs[0].String() != "10.244.0.0/24" {
		t.Fatalf("status pod CIDRs %v leased=%v, want leased 10.244.0.0/24", st.PodCIDRs, st.Leased)
	}
	h.eventually("pod-cidrs annotation", func() bool {
		n, err := h.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		return err == nil && n.Annotations[AnnotationPodCIDRs] == "10.244.0.0/24"
	})
	if _, err := h.client.CoordinationV1().Leases("kube-system").Get(ctx, "weft-block-10-244-0-0-24", metav1.GetOptions{}); err != nil {
		t.Errorf("lease object: %v", err)
	}
}

func TestAgentHealthzFailsWhenWorkerStalls(t *testing.T) {
	a, err := New(Options{NodeName: "n", Client: clientset.Wrap(fake.NewClientset()), Datapath: &fakeDatapath{}, Firewall: &fakeFirewall{},
		Host: &fakeHost{}, LivenessTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	a.lastBeat.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/healthz with a silent worker = %d, want 503", rec.Code)
	}
	a.beat()
	rec = httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/healthz after a beat = %d, want 200", rec.Code)
	}
}

func TestCleanup(t *testing.T) {
	dir := t.TempDir()
	dp, fw := &fakeDatapath{want: overlay.Desired{Devices: []overlay.Device{{Name: "weft.vxlan"}}}}, &fakeFirewall{}
	n := cniconf.Network{Bridge: "weft0", MTU: 1450, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.244.1.1")}, DataDir: "/x"}
	if _, err := cniconf.Write(filepath.Join(dir, "net.d"), n); err != nil {
		t.Fatal(err)
	}
	if _, err := cniconf.WriteFile(filepath.Join(dir, "run", "ready"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(context.Background(), dp, fw, filepath.Join(dir, "net.d"), filepath.Join(dir, "run")); err != nil {
		t.Fatal(err)
	}
	if !dp.cleaned || !fw.cleaned {
		t.Errorf("datapath cleaned %v, firewall cleaned %v; want both", dp.cleaned, fw.cleaned)
	}
	for _, p := range []string{filepath.Join(dir, "net.d", cniconf.FileName), filepath.Join(dir, "run", "ready")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
}

// A node publishing another node's VTEP MAC is pending on every other node,
// with an Event naming both nodes; the node it squats on and a node added
// meanwhile are programmed as usual.
func TestAgentSquatterPendingOthersProgrammed(t *testing.T) {
	older := metav1.NewTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	b := kubeNode("node-b", "192.168.1.2", "10.244.2.0/24", "02:00:00:00:00:0b")
	b.CreationTimestamp = older
	z := kubeNode("node-z", "192.168.1.26", "10.244.26.0/24", "02:00:00:00:00:0b") // b's MAC
	z.CreationTimestamp = metav1.NewTime(older.Add(time.Hour))
	h := start(t, kubeNode("node-a", "192.168.1.1", "10.244.1.0/24", ""), b, z, configMap(goodConfig))
	ctx := context.Background()
	h.eventually("ready with node-z pending", func() bool {
		st := h.a.Status()
		for _, p := range st.Peers {
			if p.Name == "node-z" {
				return st.Ready && !p.Programmed && strings.Contains(p.Pending, "node-b")
			}
		}
		return false
	})
	h.dp.mu.Lock()
	fdb := fmt.Sprint(h.dp.want.FDB)
	h.dp.mu.Unlock()
	if strings.Contains(fdb, "192.168.1.26") || !strings.Contains(fdb, "192.168.1.2") {
		t.Errorf("FDB %s: want node-b's MAC to node-b only", fdb)
	}
	if got := h.dp.dump(); strings.Contains(got, "10.244.26.0") || !strings.Contains(got, "route 10.244.2.0/24") {
		t.Errorf("datapath:\n%s\nwant node-b's route and none to node-z", got)
	}
	h.fw.mu.Lock()
	if got := fmt.Sprint(h.fw.rules.VTEPSources); got != "[192.168.1.2]" {
		t.Errorf("VXLAN sources %s, want only node-b's address", got)
	}
	h.fw.mu.Unlock()
	h.eventually("a PeerPending Event naming both nodes", func() bool {
		l, err := h.client.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, e := range l.Items {
			if e.Reason == "PeerPending" && e.InvolvedObject.Name == "node-a" &&
				strings.Contains(e.Message, "node-z") && strings.Contains(e.Message, "node-b") {
				return true
			}
		}
		return false
	})
	// An unrelated new node is programmed meanwhile.
	if _, err := h.client.CoreV1().Nodes().Create(ctx, kubeNode("node-c", "192.168.1.3", "10.244.3.0/24", "02:00:00:00:00:0c"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("route to node-c", func() bool { return strings.Contains(h.dp.dump(), "route 10.244.3.0/24 via 10.244.3.0") })
}
