package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// format is how a command prints its result (-o).
type format string

const (
	formatTable format = "table" // the default: what a person reads
	formatWide  format = "wide"  // the table with more columns
	formatJSON  format = "json"  // the agent's data as JSON
	formatYAML  format = "yaml"  // the same as YAML (same field names)
)

var formats = []format{formatTable, formatWide, formatJSON, formatYAML}

// parseFormat reads -o; -json is the older spelling of -o json.
func parseFormat(o string, asJSON bool) (format, error) {
	f := format(strings.ToLower(strings.TrimSpace(o)))
	ok := false
	for _, g := range formats {
		ok = ok || f == g
	}
	if !ok {
		names := make([]string, len(formats))
		for i, g := range formats {
			names[i] = string(g)
		}
		return "", fmt.Errorf("flag -o %q: unknown output format; want one of %s", o, strings.Join(names, ", "))
	}
	if asJSON {
		if f != formatTable && f != formatJSON {
			return "", fmt.Errorf("flags -json and -o %s: -json means -o json; give one of them", f)
		}
		f = formatJSON
	}
	return f, nil
}

// emit prints v as JSON or YAML, or calls table (wide: with more columns).
func emit(w io.Writer, f format, v any, table func(wide bool) error) error {
	switch f {
	case formatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case formatYAML:
		// Through JSON, so the field names are the JSON ones.
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("render yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	default:
		return table(f == formatWide)
	}
}
