package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus series (weft_*).
type metrics struct {
	peers           prometheus.Gauge
	peersProgrammed prometheus.Gauge
	reconcile       prometheus.Histogram
	reconcileErrors *prometheus.CounterVec
	configErrors    prometheus.Counter
	ipamUsed        *prometheus.GaugeVec
	ipamCapacity    *prometheus.GaugeVec
	ready           prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_peers", Help: "Other nodes known to this agent.",
		}),
		peersProgrammed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_peers_programmed", Help: "Other nodes whose routes are programmed in the datapath.",
		}),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_reconcile_duration_seconds", Help: "Duration of a full reconcile pass.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_reconcile_errors_total", Help: "Failed reconcile steps, by reconciler.",
		}, []string{"reconciler"}),
		configErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_config_errors_total", Help: "Rejected versions of the weft-config ConfigMap.",
		}),
		ipamUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_ipam_used", Help: "Pod addresses handed out, by family.",
		}, []string{"family"}),
		ipamCapacity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_ipam_capacity", Help: "Pod addresses available in the node's pod CIDR, by family.",
		}, []string{"family"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_ready", Help: "1 when the datapath is programmed and the configuration is good.",
		}),
	}
	for _, c := range []prometheus.Collector{m.peers, m.peersProgrammed, m.reconcile, m.reconcileErrors,
		m.configErrors, m.ipamUsed, m.ipamCapacity, m.ready} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	for _, r := range []string{"datapath", "firewall", "bridge", "publish", "lease", "cni", "plan", "ipam"} {
		m.reconcileErrors.WithLabelValues(r) // export zeros
	}
	return m, nil
}
