package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"

	"weft.dev/weft/agent/config"
)

// TestRenderedInSync fails when deploy/weft.yaml is not what kustomize
// renders from deploy/kubernetes (fix: make manifests).
func TestRenderedInSync(t *testing.T) {
	root := repoRoot(t)
	want := kustomize(t, filepath.Join(root, "deploy", "kubernetes"))
	file, err := os.ReadFile(filepath.Join(root, "deploy", "weft.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(file, []byte("# ")) {
		t.Errorf("deploy/weft.yaml has no header comment saying it is generated")
	}
	if d := cmp.Diff(string(want), string(stripComments(file))); d != "" {
		t.Errorf("deploy/weft.yaml drifted from deploy/kubernetes; run `make manifests` (-kustomize +file):\n%s", d)
	}
}

// TestOverlays renders each overlay: its ConfigMap parses with the agent's
// own parser in the overlay's mode, and every other object equals the base's.
func TestOverlays(t *testing.T) {
	root := repoRoot(t)
	base := decodeAll(t, "base", kustomize(t, filepath.Join(root, "deploy", "kubernetes")))
	for _, mode := range []config.Mode{config.VXLAN, config.BGP} {
		t.Run(string(mode), func(t *testing.T) {
			dir := filepath.Join(root, "deploy", "overlays", string(mode))
			objs := decodeAll(t, dir, kustomize(t, dir))
			cm := configMap(t, objs)
			c, err := config.Parse([]byte(cm.Data[config.Key]))
			if err != nil {
				t.Fatalf("overlay %s: %v", mode, err)
			}
			if c.Mode != mode {
				t.Errorf("overlay %s: mode %s", mode, c.Mode)
			}
			if d := cmp.Diff(withoutConfigMap(base), withoutConfigMap(objs)); d != "" {
				t.Errorf("overlay %s changes more than the ConfigMap (-base +overlay):\n%s", mode, d)
			}
		})
	}
}

func withoutConfigMap(objs []*unstructured.Unstructured) []map[string]any {
	var out []map[string]any
	for _, o := range objs {
		if o.GetKind() != "ConfigMap" {
			out = append(out, o.Object)
		}
	}
	return out
}

// TestConfigMapShowsEveryFieldWithItsDefault checks the base ConfigMap
// against the agent's config package: it parses; the values it shows are
// the defaults (parsing it gives the same Config as the two required fields
// alone); and every field the package knows is named in it, set or in a
// comment — so a new field without documentation here fails.
func TestConfigMapShowsEveryFieldWithItsDefault(t *testing.T) {
	objs := readObjects(t, filepath.Join(repoRoot(t), "deploy", "kubernetes", "configmap.yaml"))
	doc := configMap(t, objs).Data[config.Key]
	got, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("base ConfigMap: %v", err)
	}
	minimal, err := config.Parse([]byte("mode: vxlan\nclusterCIDRs: [10.244.0.0/16]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(marshal(t, minimal), marshal(t, got)); d != "" {
		t.Errorf("the ConfigMap shows values other than the defaults (-defaults +configmap):\n%s", d)
	}
	// Every field: the keys of a fully set configuration.
	full := minimal
	full.BGP.ASN = 64512
	b, err := full.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := sigsyaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := flatten("", m)
	if len(keys) < 10 {
		t.Fatalf("only %d fields found in %s; the check would be vacuous", len(keys), b)
	}
	for _, k := range keys {
		if !mentions(doc, k) {
			t.Errorf("field %s is not in deploy/kubernetes/configmap.yaml (set or commented)", k)
		}
	}
}

func marshal(t *testing.T, c config.Config) string {
	t.Helper()
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// flatten lists the dotted paths of the leaves of m.
func flatten(prefix string, m map[string]any) []string {
	var out []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			out = append(out, flatten(prefix+k+".", sub)...)
			continue
		}
		out = append(out, prefix+k)
	}
	sort.Strings(out)
	return out
}

// mentions reports whether doc has the dotted key: each part as "part:" at
// a deeper indentation than its parent, possibly behind a comment marker.
func mentions(doc, key string) bool {
	parts := strings.Split(key, ".")
	lines := strings.Split(doc, "\n")
	re := func(p string) *regexp.Regexp { return regexp.MustCompile(`^(\s*#?\s*)` + regexp.QuoteMeta(p) + `:`) }
	var search func(from, indent, i int) bool
	search = func(from, indent, i int) bool {
		r := re(parts[i])
		for l := from; l < len(lines); l++ {
			mm := r.FindStringSubmatch(lines[l])
			if mm == nil {
				continue
			}
			depth := len(strings.ReplaceAll(mm[1], "#", " "))
			if depth <= indent {
				continue
			}
			if i == len(parts)-1 || search(l+1, depth, i+1) {
				return true
			}
		}
		return false
	}
	return search(0, -1, 0)
}

// TestDaemonSet checks the agent DaemonSet's shape: what runs where, with
// which rights, and which host paths.
func TestDaemonSet(t *testing.T) {
	ds := daemonSet(t)
	spec := ds.Spec.Template.Spec
	if ds.Namespace != "kube-system" || spec.ServiceAccountName != "weft-agent" {
		t.Errorf("namespace %q serviceAccount %q", ds.Namespace, spec.ServiceAccountName)
	}
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("hostNetwork %t priorityClassName %q", spec.HostNetwork, spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("tolerations %+v: want one that tolerates everything", spec.Tolerations)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil || ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("update strategy %+v: want rolling, maxUnavailable 1", ds.Spec.UpdateStrategy)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("%d containers, %d init containers; want 1 and 1", len(spec.Containers), len(spec.InitContainers))
	}
	agent, install := spec.Containers[0], spec.InitContainers[0]

	for _, c := range []corev1.Container{agent, install} {
		sc := c.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("container %s: want capabilities dropped (ALL)", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation not false", c.Name)
		}
	}
	if d := cmp.Diff([]corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}, agent.SecurityContext.Capabilities.Add); d != "" {
		t.Errorf("agent capabilities (-want +got):\n%s", d)
	}
	if len(install.SecurityContext.Capabilities.Add) != 0 {
		t.Errorf("install-cni adds capabilities %v", install.SecurityContext.Capabilities.Add)
	}

	nodeName := false
	for _, e := range agent.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeName = true
		}
	}
	if !nodeName || !slices.Contains(agent.Args, "--node-name=$(NODE_NAME)") {
		t.Errorf("agent: want NODE_NAME from spec.nodeName passed as --node-name; env %+v args %q", agent.Env, agent.Args)
	}
	for probe, want := range map[*corev1.Probe]string{agent.LivenessProbe: "/healthz", agent.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want {
			t.Errorf("probe %+v: want an HTTP GET of %s", probe, want)
		}
	}

	// Host paths: every one the agent and the CNI plugin share with the node.
	vols := map[string]corev1.HostPathVolumeSource{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			vols[v.Name] = *v.HostPath
		}
	}
	typ := func(t corev1.HostPathType) *corev1.HostPathType { return &t }
	wantVols := map[string]corev1.HostPathVolumeSource{
		"cni-bin":      {Path: "/opt/cni/bin", Type: typ(corev1.HostPathDirectoryOrCreate)},
		"cni-conf":     {Path: "/etc/cni/net.d", Type: typ(corev1.HostPathDirectoryOrCreate)},
		"state":        {Path: "/var/lib/weft", Type: typ(corev1.HostPathDirectoryOrCreate)},
		"run":          {Path: "/run/weft", Type: typ(corev1.HostPathDirectoryOrCreate)},
		"xtables-lock": {Path: "/run/xtables.lock", Type: typ(corev1.HostPathFileOrCreate)},
	}
	if d := cmp.Diff(wantVols, vols); d != "" {
		t.Errorf("host path volumes (-want +got):\n%s", d)
	}
	mounts := func(c corev1.Container) map[string]string {
		m := map[string]string{}
		for _, vm := range c.VolumeMounts {
			m[vm.Name] = vm.MountPath
		}
		return m
	}
	// The agent sees the node's paths at the same place, so paths it writes
	// into the conflist are right for the CNI plugin on the host.
	for _, v := range []string{"cni-conf", "state", "run", "xtables-lock"} {
		if got := mounts(agent)[v]; got != wantVols[v].Path {
			t.Errorf("agent mounts %s at %q, want %s", v, got, wantVols[v].Path)
		}
	}
	if got := mounts(install)["cni-bin"]; got == "" || !slices.Contains(install.Args, "--dst="+got) {
		t.Errorf("install-cni: cni-bin mounted at %q, args %q: want --dst pointing at it", got, install.Args)
	}
	if agent.Image != install.Image {
		t.Errorf("agent image %s, install-cni image %s: want one image", agent.Image, install.Image)
	}
}

// TestDaemonSetFlagsAccepted runs the weft binaries with the DaemonSet's
// arguments: weft-install with --version (which it handles after parsing
// every flag), weft-agent with --help appended (the flag package parses
// every argument before it and rejects an unknown flag or bad value).
func TestDaemonSetFlagsAccepted(t *testing.T) {
	ds := daemonSet(t)
	spec := ds.Spec.Template.Spec
	expand := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			out[i] = strings.ReplaceAll(a, "$(NODE_NAME)", "node-a")
		}
		return out
	}
	for _, tc := range []struct {
		c     corev1.Container
		extra string
	}{
		{spec.InitContainers[0], "--version"},
		{spec.Containers[0], "--help"},
	} {
		t.Run(tc.c.Name, func(t *testing.T) {
			if len(tc.c.Command) != 1 {
				t.Fatalf("command %q: want the binary's name", tc.c.Command)
			}
			bin := weftBin(t, tc.c.Command[0])
			args := append(expand(tc.c.Args), tc.extra)
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil || bytes.Contains(out, []byte("not defined")) {
				t.Errorf("%s %q: %v\n%s", tc.c.Command[0], args, err, out)
			}
			// The same check fails for a flag the binary does not have.
			bad := append(expand(tc.c.Args), "--no-such-flag-"+tc.c.Name, tc.extra)
			if err := exec.Command(bin, bad...).Run(); err == nil {
				t.Errorf("%s accepted an unknown flag: the check proves nothing", tc.c.Command[0])
			}
		})
	}
}

// kindConfig mirrors the kind Cluster fields weft's config uses; decoding
// is strict, so a misspelt field fails.
type kindConfig struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Name       string `json:"name"`
	Networking struct {
		DisableDefaultCNI bool   `json:"disableDefaultCNI"`
		PodSubnet         string `json:"podSubnet"`
		ServiceSubnet     string `json:"serviceSubnet"`
	} `json:"networking"`
	Nodes []struct {
		Role string `json:"role"`
	} `json:"nodes"`
}

func TestKindConfig(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "kind", "kind-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kc kindConfig
	if err := sigsyaml.UnmarshalStrict(b, &kc); err != nil {
		t.Fatalf("kind config: %v", err)
	}
	if kc.Kind != "Cluster" || kc.APIVersion != "kind.x-k8s.io/v1alpha4" {
		t.Errorf("kind %q apiVersion %q", kc.Kind, kc.APIVersion)
	}
	if !kc.Networking.DisableDefaultCNI {
		t.Error("disableDefaultCNI is not true: kind would install its own CNI next to weft")
	}
	var roles []string
	for _, n := range kc.Nodes {
		roles = append(roles, n.Role)
	}
	if d := cmp.Diff([]string{"control-plane", "worker", "worker"}, roles); d != "" {
		t.Errorf("node roles (-want +got):\n%s", d)
	}
	// The pod subnet is the cluster CIDR deploy/weft.yaml configures.
	c, err := config.Parse([]byte(configMap(t, weftYAML(t)).Data[config.Key]))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.ClusterCIDRs); got != "["+kc.Networking.PodSubnet+"]" {
		t.Errorf("kind podSubnet %s, weft clusterCIDRs %s", kc.Networking.PodSubnet, got)
	}
	// The DaemonSet's image is the one make image tags.
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	img := daemonSet(t).Spec.Template.Spec.Containers[0].Image
	if !regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*` + regexp.QuoteMeta(img) + `$`).Match(mk) {
		t.Errorf("DaemonSet image %s is not the Makefile's IMAGE default", img)
	}
}

func TestMentions(t *testing.T) {
	doc := "mode: vxlan\nvxlan:\n  vni: 1\n# bgp:\n#   asn: 64512\nport: 1\n"
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"mode", true},
		{"vxlan.vni", true},
		{"bgp.asn", true},
		{"vxlan.port", false}, // port is not under vxlan
		{"resync", false},
	} {
		t.Run(tc.key, func(t *testing.T) {
			if got := mentions(doc, tc.key); got != tc.want {
				t.Errorf("mentions(%q) = %t, want %t", tc.key, got, tc.want)
			}
		})
	}
}
