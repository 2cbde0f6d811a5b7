package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v1.2.3"
	if got := String(); got != "v1.2.3" {
		t.Errorf("String() with Version set = %q, want v1.2.3", got)
	}
	Version = ""
	if got := String(); got == "" || got == "v1.2.3" {
		t.Errorf("String() without Version = %q, want the build's", got)
	}
	for _, c := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{}, "(devel)"},
		{debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, "v0.4.0"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d"}, {Key: "vcs.modified", Value: "true"}}}, "(devel) 1a2b3c4d5e6f+dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b9c0d"}, {Key: "vcs.modified", Value: "false"}}}, "(devel) 1a2b3c4d5e6f"},
	} {
		if got := fromBuildInfo(&c.bi); got != c.want {
			t.Errorf("fromBuildInfo(%+v) = %q, want %q", c.bi, got, c.want)
		}
	}
}

// Every program in cmd/ answers --version with its name and the version the
// linker set, the way the Makefile builds them: a new program without
// --version, or one printing its own version string, fails here.
func TestEveryCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short: builds every command")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipped: no go tool: %v", err)
	}
	entries, err := os.ReadDir("../..")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "internal" {
			cmds = append(cmds, e.Name())
		}
	}
	if len(cmds) < 4 {
		t.Fatalf("found commands %v in cmd/, want at least weft, weft-agent, weftctl, weft-install", cmds)
	}
	const v = "v9.8.7-test"
	bin := t.TempDir()
	build := exec.Command(goTool, "build", "-o", bin+"/", "-ldflags", "-X weft.dev/weft/cmd/internal/version.Version="+v)
	for _, c := range cmds {
		build.Args = append(build.Args, "weft.dev/weft/cmd/"+c)
	}
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(build.Args, " "), err, out)
	}
	for _, c := range cmds {
		for _, flag := range []string{"--version", "-version"} {
			cmd := exec.Command(filepath.Join(bin, c), flag)
			cmd.Env = []string{"PATH=/usr/bin:/bin"} // no CNI_COMMAND, no NODE_NAME
			out, err := cmd.Output()
			if got, want := string(out), c+" "+v+"\n"; err != nil || got != want {
				t.Errorf("%s %s = %q, %v; want %q", c, flag, got, err, want)
			}
		}
	}
}
