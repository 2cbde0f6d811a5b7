//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/test/conformance"
	"weft.dev/weft/test/nstest"
)

// ciConformanceTests is how many tests conformance.CIFocus selects: the
// four pod-to-pod granular checks, two Service endpoint tests and DNS for
// Services. All of them must run and pass in each mode.
const ciConformanceTests = 7

// TestConformance runs the subset of Kubernetes' own e2e suite that fits
// make test (conformance.CIFocus) against a real-node lab in each mode;
// make conformance runs all of sig-network's conformance tests.
func TestConformance(t *testing.T) {
	nstest.RequireRoot(t)
	requireK8s(t)
	e2eTest := filepath.Join(k8sBin, "e2e.test")
	if _, err := os.Stat(e2eTest); err != nil {
		t.Fatalf("the suite needs e2e.test (make k8s): %v", err)
	}
	for _, m := range conformance.Modes {
		t.Run(m.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
			defer cancel()
			name := labName("cf" + m.Name[:1])
			reports := t.TempDir()
			o := conformance.Options{Lab: options(t), Root: root, E2ETest: e2eTest, Focus: conformance.CIFocus,
				ReportDir: reports, Timeout: 20 * time.Minute, Name: name}
			res, err := conformance.Run(ctx, o, m)
			t.Logf("%s (lab up %s, suite %s)", res.Line(), res.Up.Round(time.Second), res.Took.Round(time.Second))
			if left := append(leftovers(o.Lab, name, nil), realNodeLeftovers(name)...); len(left) > 0 {
				t.Errorf("lab %s left behind:\n%s", name, strings.Join(left, "\n"))
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, logTail(filepath.Join(reports, m.Name, "e2e.log"), 6000))
			}
			for _, c := range res.Cases {
				t.Logf("%s: %s %s", c.State, c.Name, c.Reason)
			}
			if res.Passed != ciConformanceTests || res.Failed+res.Skipped > 0 {
				t.Errorf("%s, want %d passed and nothing else\n%s", res.Line(), ciConformanceTests,
					logTail(filepath.Join(reports, m.Name, "e2e.log"), 6000))
			}
		})
	}
}

// logTail is the last n bytes of a file.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
