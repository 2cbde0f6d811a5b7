// Package version tells which build of weft a binary is, for --version.
// Every program in cmd/ prints String, so they all agree on one build.
package version

import "runtime/debug"

// Version is the release this build is, set at link time:
//
//	go build -ldflags "-X weft.dev/weft/cmd/internal/version.Version=v0.3.0" ./cmd/...
//
// The Makefile sets it from `git describe`. Empty, String falls back to the
// module's build information.
var Version string

// String returns Version when the build set it; otherwise the module
// version recorded by the go tool ("(devel)" for a build from a work tree)
// and, when recorded, the commit, e.g. "(devel) 1a2b3c4d5e6f+dirty".
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) string {
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
