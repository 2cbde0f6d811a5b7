package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/bgp"
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
	maxPods         prometheus.Gauge
	podCIDRTooSmall *prometheus.GaugeVec

	bgpUp         *prometheus.GaugeVec
	bgpReceived   *prometheus.GaugeVec
	bgpAdvertised *prometheus.GaugeVec
	bgpInstalled  *prometheus.GaugeVec
	bgpRejected   *prometheus.CounterVec
	bgpLimit      *prometheus.CounterVec
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
		maxPods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_node_max_pods", Help: "The kubelet's maxPods as the Node reports it (status.capacity.pods); 0 when it reports none.",
		}),
		podCIDRTooSmall: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_pod_cidr_too_small",
			Help: "1 when the node's pod CIDR of the family has fewer usable addresses (weft_ipam_capacity) than weft_node_max_pods.",
		}, []string{"family"}),
		bgpUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_bgp_session_up", Help: "1 when the BGP session with the peer is established (bgp mode).",
		}, []string{"peer"}),
		bgpReceived: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_bgp_prefixes_received", Help: "Prefixes received from the BGP peer.",
		}, []string{"peer"}),
		bgpAdvertised: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_bgp_prefixes_advertised", Help: "Prefixes advertised to the BGP peer.",
		}, []string{"peer"}),
		bgpInstalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weft_bgp_prefixes_installed", Help: "Kernel routes with a next hop learned from the BGP peer.",
		}, []string{"peer"}),
		bgpRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_bgp_rejected_total", Help: "Learned BGP paths refused by the import policy or a per-peer cap, by reason (each path counted once while it stays refused).",
		}, []string{"reason"}),
		bgpLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_bgp_prefix_limit_total",
			Help: "BGP sessions closed because the peer announced more prefixes than the session's limit, by peer kind (node, peer).",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.peers, m.peersProgrammed, m.reconcile, m.reconcileErrors,
		m.configErrors, m.ipamUsed, m.ipamCapacity, m.ready, m.maxPods, m.podCIDRTooSmall,
		m.bgpUp, m.bgpReceived, m.bgpAdvertised, m.bgpInstalled, m.bgpRejected, m.bgpLimit} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	for _, r := range []string{"datapath", "firewall", "bridge", "publish", "lease", "cni", "plan", "ipam", "bgp"} {
		m.reconcileErrors.WithLabelValues(r) // export zeros
	}
	for _, r := range bgp.Reasons {
		m.bgpRejected.WithLabelValues(string(r))
	}
	for _, k := range []string{"node", "peer"} {
		m.bgpLimit.WithLabelValues(k)
	}
	return m, nil
}

// bgpSet sets the per-peer BGP series from a status (peers gone vanish).
func (m *metrics) bgpSet(st bgpmode.Status) {
	m.bgpReset()
	for _, p := range st.Peers {
		peer := p.Address.String()
		up := 0.0
		if p.Up {
			up = 1
		}
		m.bgpUp.WithLabelValues(peer).Set(up)
		m.bgpReceived.WithLabelValues(peer).Set(float64(p.Received))
		m.bgpAdvertised.WithLabelValues(peer).Set(float64(p.Advertised))
		m.bgpInstalled.WithLabelValues(peer).Set(float64(p.Installed))
	}
}

// bgpReset drops the per-peer series (bgp mode stopped).
func (m *metrics) bgpReset() {
	m.bgpUp.Reset()
	m.bgpReceived.Reset()
	m.bgpAdvertised.Reset()
	m.bgpInstalled.Reset()
}
