package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"weft.dev/weft/agent/plan"
	"weft.dev/weft/agent/status"
)

// Status returns the last pass's status snapshot.
func (a *Agent) Status() status.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// statusNow is the last pass's status with the IPAM use read now: pods come
// and go between passes (the CNI binary does not wake the agent), so the
// pass's figure can be a resync period old. On error the pass's figure stays.
func (a *Agent) statusNow(ctx context.Context) status.Status {
	st := a.Status()
	if a.o.IPAM == nil || len(st.PodCIDRs) == 0 {
		return st
	}
	gws := make([]netip.Addr, len(st.PodCIDRs))
	for i, p := range st.PodCIDRs {
		gws[i] = plan.Gateway(p)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if use, err := a.o.IPAM(ctx, st.PodCIDRs, gws); err == nil {
		st.IPAM = use
	} else {
		a.log.Warn("read IPAM use for status", "err", err)
	}
	return st
}

// Live reports whether the worker loop ran within the liveness timeout.
func (a *Agent) Live() bool {
	return time.Since(time.Unix(0, a.lastBeat.Load())) < a.o.LivenessTimeout
}

// Handler serves what the TCP port (HTTPAddr) may show to anyone who
// reaches the node: /healthz (the worker loop is alive), /readyz (datapath
// programmed and configuration good) and /metrics. Everything else is 404:
// the status and bgp mode's status (node names, addresses, peers, AS
// numbers, rejected routes, configuration errors) are served only on the
// root-only unix socket (LocalHandler).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	a.health(mux)
	return mux
}

// LocalHandler serves the unix status socket: what Handler serves, plus
// /status (status.Path) and /bgp (BGPPath), which weftctl reads.
func (a *Agent) LocalHandler() http.Handler {
	mux := http.NewServeMux()
	a.health(mux)
	a.local(mux)
	return mux
}

func (a *Agent) health(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Live() {
			http.Error(w, fmt.Sprintf("worker silent since %s", time.Unix(0, a.lastBeat.Load()).Format(time.RFC3339)), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := a.Status()
		if !st.Ready || !a.Live() {
			http.Error(w, "not ready: "+strings.Join(st.NotReady, "; "), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
}

func (a *Agent) local(mux *http.ServeMux) {
	mux.HandleFunc("GET "+status.Path, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.statusNow(r.Context()))
	})
	mux.HandleFunc("GET "+BGPPath, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		st, err := a.BGPStatus(ctx)
		switch {
		case errors.Is(err, ErrNotBGP):
			http.Error(w, err.Error()+" (mode "+a.Status().Mode+")", http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, "bgp status: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, st)
	})
}

// BGPPath serves bgp mode's status (bgpmode.Status) as JSON; 404 when the
// agent does not run bgp mode.
const BGPPath = "/bgp"

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (a *Agent) serveHTTP(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.o.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.o.HTTPAddr, err)
	}
	a.log.Info("serving /healthz /readyz /metrics", "addr", ln.Addr().String())
	return serve(ctx, ln, a.Handler())
}

// serveStatus serves the status JSON on the unix socket in the run dir
// (root only: the directory is 0755, the socket 0600).
func (a *Agent) serveStatus(ctx context.Context) error {
	if err := os.MkdirAll(a.o.RunDir, 0o755); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	path := a.StatusSocket()
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return serve(ctx, ln, a.LocalHandler())
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve %s: %w", ln.Addr(), err)
}
