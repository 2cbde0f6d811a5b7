package main

import (
	"errors"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// notLinked are the packages weft-agent must not link, as one pattern per
// reason. Every linked package costs resident memory: the kernel maps the
// program text around whatever code runs, and package initialisers (protobuf
// descriptors, schemes) run at start.
var notLinked = []*regexp.Regexp{
	// client-go's clientset and informer factory of every API group: their
	// typed clients and scheme register and initialise the types of all
	// groups, half the binary. agent/kube is the agent's client instead.
	regexp.MustCompile(`^k8s\.io/client-go/(kubernetes|informers)(/|$)`),
	// client-go's event recorder: its strategic merge patch brings
	// kube-openapi's models and gnostic's OpenAPI v2/v3 protobufs.
	// agent/events records the agent's Events instead.
	regexp.MustCompile(`^k8s\.io/client-go/tools/record(/|$)`),
	regexp.MustCompile(`^k8s\.io/apimachinery/pkg/util/strategicpatch(/|$)`),
	regexp.MustCompile(`^github\.com/google/gnostic-models(/|$)`),
	regexp.MustCompile(`^k8s\.io/kube-openapi/pkg/(util/.+|internal|validation|schemaconv|spec3|common|cached|handler3?|builder3?)(/|$)`),
	// client-go's generic typed client: it links its fake-client testing
	// package, managed fields and structured-merge-diff's typed merging.
	// agent/kube builds its requests on the REST client instead.
	regexp.MustCompile(`^k8s\.io/client-go/(gentype|testing)(/|$)`),
	regexp.MustCompile(`^k8s\.io/apimachinery/pkg/util/managedfields(/|$)`),
	regexp.MustCompile(`^sigs\.k8s\.io/structured-merge-diff/v[0-9]+/(typed|merge|schema|fieldpath)(/|$)`),
}

// TestNotLinked keeps weft-agent's resident memory from regressing silently:
// it lists the command's dependencies with the go tool and fails naming
// every forbidden one.
func TestNotLinked(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipped: the go tool is not on PATH, cannot list weft-agent's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			t.Fatalf("go list -deps: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 || !slices.Contains(deps, "weft.dev/weft/agent/kube") {
		t.Fatalf("go list -deps printed %d packages without weft.dev/weft/agent/kube: not weft-agent's dependency list", len(deps))
	}
	for _, p := range deps {
		for _, re := range notLinked {
			if re.MatchString(p) {
				t.Errorf("weft-agent links %s (forbidden by %s): the agent reaches the apiserver through agent/kube and records Events through agent/events only (go list -deps ./cmd/weft-agent)", p, re)
			}
		}
	}
}

// TestNotLinkedPatterns pins what the patterns forbid and what they must let
// through: apimachinery's runtime needs kube-openapi's name helpers and
// structured-merge-diff's value package, and agent/kube the REST client.
func TestNotLinkedPatterns(t *testing.T) {
	for _, tc := range []struct {
		pkg       string
		forbidden bool
	}{
		{"k8s.io/client-go/kubernetes", true},
		{"k8s.io/client-go/kubernetes/typed/core/v1", true},
		{"k8s.io/client-go/informers", true},
		{"k8s.io/client-go/tools/record", true},
		{"k8s.io/client-go/tools/record/util", true},
		{"k8s.io/apimachinery/pkg/util/strategicpatch", true},
		{"github.com/google/gnostic-models/openapiv2", true},
		{"k8s.io/kube-openapi/pkg/util/proto", true},
		{"k8s.io/kube-openapi/pkg/validation/spec", true},
		{"k8s.io/kube-openapi/pkg/internal/third_party/go-json-experiment/json", true},
		{"k8s.io/kube-openapi/pkg/schemaconv", true},
		{"k8s.io/client-go/gentype", true},
		{"k8s.io/client-go/testing", true},
		{"k8s.io/apimachinery/pkg/util/managedfields/internal", true},
		{"sigs.k8s.io/structured-merge-diff/v6/typed", true},
		{"sigs.k8s.io/structured-merge-diff/v6/fieldpath", true},
		{"k8s.io/kube-openapi/pkg/util", false},
		{"sigs.k8s.io/structured-merge-diff/v6/value", false},
		{"k8s.io/client-go/rest", false},
		{"k8s.io/client-go/tools/cache", false},
		{"k8s.io/client-go/kubernetesx", false},
		{"k8s.io/apimachinery/pkg/runtime", false},
	} {
		got := slices.ContainsFunc(notLinked, func(re *regexp.Regexp) bool { return re.MatchString(tc.pkg) })
		if got != tc.forbidden {
			t.Errorf("%s forbidden = %v, want %v", tc.pkg, got, tc.forbidden)
		}
	}
}
