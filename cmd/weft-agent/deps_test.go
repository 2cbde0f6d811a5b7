package main

import (
	"errors"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// notLinked are the packages weft-agent must not link: client-go's clientset
// and informer factory of every API group, their typed clients and their
// scheme register and initialise the types of all groups — half the binary
// and much of its resident memory. agent/kube is the agent's client instead.
var notLinked = regexp.MustCompile(`^k8s\.io/client-go/(kubernetes|informers)(/|$)`)

// TestNoClientsetLinked keeps weft-agent's resident memory from regressing
// silently: it lists the command's dependencies with the go tool and fails
// naming every forbidden one.
func TestNoClientsetLinked(t *testing.T) {
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
		if notLinked.MatchString(p) {
			t.Errorf("weft-agent links %s: the agent must reach the apiserver through agent/kube only (go list -deps ./cmd/weft-agent)", p)
		}
	}
}
