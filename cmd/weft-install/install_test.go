package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// dump is "name mode content" per file of dir, temporary files included, so
// a leftover shows up in the diff.
func dump(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Name()+" "+fi.Mode().Perm().String()+" "+string(b))
	}
	return out
}

func TestInstallSequence(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	dst := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	writeFiles(t, src, map[string]string{"weft": "weft v1", "loopback": "our loopback"})

	steps := []struct {
		name    string
		prepare func()
		want    []result
		files   []string
	}{
		{
			name:  "fresh node: everything installed, dst created",
			want:  []result{{"loopback", "installed"}, {"weft", "installed"}},
			files: []string{"loopback -rwxr-xr-x our loopback", "weft -rwxr-xr-x weft v1"},
		},
		{
			name:  "again: nothing rewritten",
			want:  []result{{"loopback", "kept"}, {"weft", "unchanged"}},
			files: []string{"loopback -rwxr-xr-x our loopback", "weft -rwxr-xr-x weft v1"},
		},
		{
			name: "upgrade: new weft replaces the old, the node's loopback stays",
			prepare: func() {
				writeFiles(t, src, map[string]string{"weft": "weft v2"})
				writeFiles(t, dst, map[string]string{"loopback": "node loopback"})
			},
			want:  []result{{"loopback", "kept"}, {"weft", "installed"}},
			files: []string{"loopback -rwxr-xr-x node loopback", "weft -rwxr-xr-x weft v2"},
		},
		{
			name: "same content but not executable: mode repaired",
			prepare: func() {
				if err := os.Chmod(filepath.Join(dst, "weft"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want:  []result{{"loopback", "kept"}, {"weft", "unchanged"}},
			files: []string{"loopback -rwxr-xr-x node loopback", "weft -rwxr-xr-x weft v2"},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if s.prepare != nil {
				s.prepare()
			}
			got, err := install(src, dst, []string{"loopback"})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(s.want, got); d != "" {
				t.Errorf("results (-want +got):\n%s", d)
			}
			if d := cmp.Diff(s.files, dump(t, dst)); d != "" {
				t.Errorf("dst (-want +got):\n%s", d)
			}
		})
	}
}

func TestInstallErrors(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct {
		name, src, want string
	}{
		{"missing source", filepath.Join(empty, "nope"), "read source"},
		{"empty source", empty, "no files to install"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := install(tc.src, filepath.Join(t.TempDir(), "dst"), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.src) {
				t.Errorf("err %v, want it to contain %q and the path %s", err, tc.want, tc.src)
			}
		})
	}
}

func TestRunFlags(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"weft": "w"})
	dst := filepath.Join(t.TempDir(), "bin")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"version", []string{"--version"}, 0},
		{"unknown flag", []string{"--nope"}, 2},
		{"stray argument", []string{"extra"}, 2},
		{"install", []string{"--src=" + src, "--dst=" + dst}, 0},
		{"bad source", []string{"--src=" + filepath.Join(src, "missing"), "--dst=" + dst}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(tc.args); got != tc.want {
				t.Errorf("run(%q) = %d, want %d", tc.args, got, tc.want)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(dst, "weft")); err != nil || string(b) != "w" {
		t.Errorf("installed weft: %q, %v", b, err)
	}
}
