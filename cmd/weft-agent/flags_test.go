package main

import (
	"flag"
	"os"
	"strings"
	"testing"
)

// docs/configuration.md lists every flag of weft-agent (as `--name`): a new
// flag without a line there fails this test.
func TestFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var f flags
	seen := map[string]bool{}
	for _, all := range []bool{true, false} { // the agent's and cleanup's
		fs, _ := newFlagSet("weft-agent", &f, all)
		fs.VisitAll(func(fl *flag.Flag) {
			if seen[fl.Name] {
				return
			}
			seen[fl.Name] = true
			if !strings.Contains(string(doc), "`--"+fl.Name+"`") {
				t.Errorf("docs/configuration.md does not mention weft-agent's flag `--%s` (%s)", fl.Name, fl.Usage)
			}
		})
	}
	if len(seen) < 10 {
		t.Errorf("only %d flags found; the test no longer sees the agent's command line", len(seen))
	}
}
