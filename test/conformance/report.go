package conformance

import (
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"
)

// Case is one test of the suite as its JUnit report records it.
type Case struct {
	Name   string        // full spec text, e.g. "[sig-network] DNS should provide DNS for services [Conformance]"
	State  string        // passed, failed, skipped (or another ginkgo state: panicked, timedout, interrupted, aborted)
	Reason string        // first line of the failure, or why it was skipped
	Took   time.Duration // as reported
}

// Result is a mode's run: the selected tests and their counts.
type Result struct {
	Mode                    string
	Cases                   []Case // the selected tests (matching the focus), by name
	Passed, Failed, Skipped int
	Up, Took                time.Duration // lab up; the suite's run
}

// Line is the one-line summary make conformance prints per mode.
func (r Result) Line() string {
	return fmt.Sprintf("conformance: %s: %d passed, %d failed, %d skipped", r.Mode, r.Passed, r.Failed, r.Skipped)
}

// The JUnit report's shape, as ginkgo writes it and WriteJUnit writes it
// back (only the parts used here).
type (
	junit struct {
		XMLName xml.Name     `xml:"testsuites"`
		Suites  []junitSuite `xml:"testsuite"`
	}
	junitSuite struct {
		Name     string      `xml:"name,attr"`
		Tests    int         `xml:"tests,attr"`
		Failures int         `xml:"failures,attr"`
		Skipped  int         `xml:"skipped,attr"`
		Time     string      `xml:"time,attr"`
		Cases    []junitCase `xml:"testcase"`
	}
	junitCase struct {
		Name    string        `xml:"name,attr"`
		Status  string        `xml:"status,attr"`
		Time    float64       `xml:"time,attr"`
		Failure *junitMessage `xml:"failure,omitempty"`
		Error   *junitMessage `xml:"error,omitempty"`
		Skipped *junitMessage `xml:"skipped,omitempty"`
	}
	junitMessage struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
)

// ParseJUnit reads the specs of a ginkgo JUnit report ("[It] …" test
// cases; the suite's setup and report nodes are left out).
func ParseJUnit(r io.Reader) ([]Case, error) {
	var j junit
	if err := xml.NewDecoder(r).Decode(&j); err != nil {
		return nil, fmt.Errorf("junit report: %w", err)
	}
	var out []Case
	for _, s := range j.Suites {
		for _, c := range s.Cases {
			name, ok := strings.CutPrefix(c.Name, "[It] ")
			if !ok {
				continue
			}
			k := Case{Name: name, State: c.Status, Took: time.Duration(c.Time * float64(time.Second))}
			switch {
			case c.Failure != nil:
				k.Reason = firstLine(c.Failure.Message, c.Failure.Text)
			case c.Error != nil:
				k.Reason = firstLine(c.Error.Message, c.Error.Text)
			case c.Skipped != nil:
				k.Reason = strings.TrimSpace(strings.TrimPrefix(c.Skipped.Message, "skipped"))
				k.Reason = strings.TrimSpace(strings.TrimPrefix(k.Reason, "-"))
			}
			if k.State == "" {
				return nil, fmt.Errorf("junit report: test %q has no status", name)
			}
			out = append(out, k)
		}
	}
	return out, nil
}

// firstLine is the first non-empty line of the message, else of the text
// (ginkgo starts a failure's text with "[FAILED] ").
func firstLine(msg, text string) string {
	for _, s := range []string{msg, text} {
		for l := range strings.SplitSeq(s, "\n") {
			if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "[FAILED]")); l != "" {
				return l
			}
		}
	}
	return ""
}

// summarise keeps the cases the focus selects and counts them: a case a
// skip pattern names counts as skipped with that pattern's reason (ginkgo
// records it as skipped without one).
func summarise(mode string, cases []Case, focus *regexp.Regexp, skips []Skip, res Result) Result {
	res.Mode = mode
	res.Cases = nil
	res.Passed, res.Failed, res.Skipped = 0, 0, 0
	for _, c := range cases {
		if !focus.MatchString(c.Name) {
			continue
		}
		for _, s := range skips {
			if regexp.MustCompile(s.Pattern).MatchString(c.Name) {
				c.State, c.Reason = "skipped", "weft's skip list: "+s.Reason
				break
			}
		}
		switch c.State {
		case "passed":
			res.Passed++
		case "skipped", "pending":
			res.Skipped++
		default:
			res.Failed++
		}
		res.Cases = append(res.Cases, c)
	}
	sort.Slice(res.Cases, func(i, j int) bool { return res.Cases[i].Name < res.Cases[j].Name })
	return res
}

// Area is the group a test belongs to in the summary: the capitalised
// words after [sig-network] (e.g. "DNS", "Services", "HostPort",
// "Networking Granular Checks: Pods").
func Area(name string) string {
	var words []string
	for _, w := range strings.Fields(strings.TrimPrefix(name, "[sig-network]")) {
		if w == "" || !unicode.IsUpper([]rune(w)[0]) {
			break
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

// WriteMarkdown writes the summary table of results (one column per mode):
// tests grouped by area, each failure with its reason.
func WriteMarkdown(w io.Writer, results []Result) error {
	type row struct {
		area, name string
		by         map[string]Case
	}
	rows := map[string]*row{}
	for _, r := range results {
		for _, c := range r.Cases {
			if rows[c.Name] == nil {
				rows[c.Name] = &row{area: Area(c.Name), name: c.Name, by: map[string]Case{}}
			}
			rows[c.Name].by[r.Mode] = c
		}
	}
	var sorted []*row
	for _, r := range rows {
		sorted = append(sorted, r)
	}
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].area != sorted[j].area {
			return sorted[i].area < sorted[j].area
		}
		return sorted[i].name < sorted[j].name
	})
	var b strings.Builder
	b.WriteString("| area | test |")
	for _, r := range results {
		b.WriteString(" " + r.Mode + " |")
	}
	b.WriteString("\n|---|---|")
	for range results {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range sorted {
		test := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(r.name, "[sig-network]"), " "+r.area))
		fmt.Fprintf(&b, "| %s | %s |", r.area, mdEscape(test))
		for _, res := range results {
			c, ok := r.by[res.Mode]
			switch {
			case !ok:
				b.WriteString(" – |")
			case c.State == "passed":
				b.WriteString(" passed |")
			case c.Reason != "":
				fmt.Fprintf(&b, " %s: %s |", c.State, mdEscape(c.Reason))
			default:
				fmt.Fprintf(&b, " %s |", c.State)
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// WriteJUnit writes r's selected tests as a JUnit report (the suite's own
// report also lists every test outside the focus).
func WriteJUnit(w io.Writer, r Result) error {
	s := junitSuite{Name: "weft " + r.Mode + ": Kubernetes e2e suite", Tests: len(r.Cases), Failures: r.Failed,
		Skipped: r.Skipped, Time: fmt.Sprintf("%.1f", r.Took.Seconds())}
	for _, c := range r.Cases {
		tc := junitCase{Name: "[It] " + c.Name, Status: c.State, Time: c.Took.Seconds()}
		switch c.State {
		case "passed":
		case "skipped", "pending":
			tc.Skipped = &junitMessage{Message: c.Reason}
		default:
			tc.Failure = &junitMessage{Message: c.Reason}
		}
		s.Cases = append(s.Cases, tc)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junit{Suites: []junitSuite{s}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
