// Package version tells which build of weft a binary is, for --version.
package version

import "runtime/debug"

// String returns the module version and, when the build recorded it, the
// commit it was built from, e.g. "(devel) 1a2b3c4d5e6f".
func String() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "+dirty"
		}
	}
	return v
}
