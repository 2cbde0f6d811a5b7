package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"weft.dev/weft/agent/kube"
)

// TestRunStopsWhileAPIServerIsDown: with the apiserver refusing connections
// the informers sleep between attempts (client-go's reflector does not end
// that sleep on cancel); Run must still return soon after its context ends,
// so a node's shutdown or a rollout is not held for it.
func TestRunStopsWhileAPIServerIsDown(t *testing.T) {
	// A loopback port nobody listens on any more: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := kube.New(&rest.Config{Host: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := New(Options{NodeName: "n", Client: c, Datapath: &fakeDatapath{}, Firewall: &fakeFirewall{}, Host: &fakeHost{},
		StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), CNIConfDir: filepath.Join(dir, "net.d"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	grace := informerStopGrace
	informerStopGrace = 300 * time.Millisecond
	t.Cleanup(func() { informerStopGrace = grace })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Long enough for a few refused attempts: the sleeps between them grow
	// (0.8 s doubling, jittered), so by now each of the four informers is
	// in one of several seconds.
	time.Sleep(8 * time.Second)
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
		if waited, limit := time.Since(start), informerStopGrace+time.Second; waited > limit {
			t.Errorf("Run returned %v after cancel, want within %v", waited, limit)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return within a minute of cancel")
	}
}
