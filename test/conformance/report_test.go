package conformance

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseAndSummarise(t *testing.T) {
	f, err := os.Open("testdata/junit_sample.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases, err := ParseJUnit(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) != 5 {
		t.Fatalf("%d specs, want 5 (the suite's setup and report nodes left out): %+v", len(cases), cases)
	}
	res := summarise("vxlan", cases, regexp.MustCompile(Focus), Skips, Result{Took: time.Minute})
	if got, want := res.Line(), "conformance: vxlan: 1 passed, 1 failed, 2 skipped"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}
	if res.Took != time.Minute {
		t.Errorf("Took %s, want the run's minute kept", res.Took)
	}
	by := map[string]Case{}
	for _, c := range res.Cases {
		by[Area(c.Name)] = c
		if strings.Contains(c.Name, "sig-storage") {
			t.Errorf("case %q outside the focus kept", c.Name)
		}
	}
	if c := by["Services"]; c.State != "failed" || c.Reason != "failed to validate endpoints for service endpoint-test2 in namespace: services-1234" {
		t.Errorf("failed case %+v: want its first line as the reason", c)
	}
	if c := by["HostPort"]; c.State != "skipped" || !strings.HasPrefix(c.Reason, "weft's skip list: ") {
		t.Errorf("case named by a skip pattern %+v: want the pattern's reason", c)
	}
	if c := by["Networking Granular Checks: Pods"]; c.Reason != "Requires at least 2 nodes (not -1)" {
		t.Errorf("skipped at run time %+v: want the suite's reason", c)
	}
	if c := by["DNS"]; c.State != "passed" || c.Took != 30100*time.Millisecond {
		t.Errorf("passed case %+v", c)
	}
	var j strings.Builder
	if err := WriteJUnit(&j, res); err != nil {
		t.Fatal(err)
	}
	back, err := ParseJUnit(strings.NewReader(j.String()))
	if err != nil {
		t.Fatalf("own report unreadable: %v\n%s", err, j.String())
	}
	if again := summarise("vxlan", back, regexp.MustCompile(Focus), Skips, Result{}); again.Line() != res.Line() || len(again.Cases) != len(res.Cases) {
		t.Errorf("own report reads back as %q (%d cases), want %q (%d)", again.Line(), len(again.Cases), res.Line(), len(res.Cases))
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, []Result{res, {Mode: "bgp"}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| area | test | vxlan | bgp |",
		"| DNS | should provide DNS for services [Conformance] | passed | – |",
		"| Services | should serve a basic endpoint from pods [Conformance] | failed: failed to validate endpoints",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseJUnitBad(t *testing.T) {
	for _, in := range []string{"", "<testsuites><testsuite><testcase name=\"[It] x\"></testcase></testsuite></testsuites>", "not xml"} {
		if _, err := ParseJUnit(strings.NewReader(in)); err == nil {
			t.Errorf("ParseJUnit(%q): no error", in)
		}
	}
}

func TestCIFocusSelects(t *testing.T) {
	re := regexp.MustCompile(CIFocus)
	for _, name := range []string{
		"[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [Conformance] [NodeConformance]",
		"[sig-network] Networking Granular Checks: Pods should function for node-pod communication: udp [LinuxOnly] [Conformance] [NodeConformance]",
		"[sig-network] Services should serve a basic endpoint from pods [Conformance]",
		"[sig-network] DNS should provide DNS for services [Conformance]",
	} {
		if !re.MatchString(name) {
			t.Errorf("CIFocus does not select %q", name)
		}
	}
	if re.MatchString("[sig-network] DNS should provide DNS for the cluster [Conformance]") {
		t.Error("CIFocus selects a test outside the subset")
	}
}
