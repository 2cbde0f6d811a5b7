package lab

import (
	"maps"
	"slices"
	"testing"
)

func TestKubeProxySyncedFamilies(t *testing.T) {
	for _, tc := range []struct {
		name, metrics string
		want          []string
	}{
		{"before the first sync", `# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds [ALPHA] The last time proxy rules were successfully synced
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 0
`, nil},
		{"IPv4 synced, IPv6 not yet", `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.7959e+09
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"} 0
kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv6"} 1.7959e+09
`, []string{"IPv4"}},
		{"both synced", `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"} 1.795924e+09
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.795924e+09
`, []string{"IPv4", "IPv6"}},
		{"malformed value", `kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} soon
`, nil},
	} {
		got := slices.Sorted(maps.Keys(kubeProxySyncedFamilies(tc.metrics)))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: synced %v, want %v", tc.name, got, tc.want)
		}
	}
}
