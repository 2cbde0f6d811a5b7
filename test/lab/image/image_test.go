package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestWriteArchive writes an image and reads it back as a runtime would:
// manifest → config → layer, the layer's entries with parents made
// explicit, modes and link targets kept; a second write is byte-identical.
func TestWriteArchive(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bin")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Spec{Ref: "weft.test/x:1", Entrypoint: []string{"/usr/bin/x"}, Files: []File{
		{Path: "usr/bin/x", Src: src},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0::/:/bin/sh\n")},
		{Path: "bin/sh", Link: "/usr/bin/x"},
		{Path: "tmp", Dir: true, Mode: 0o1777},
	}}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, f := range []string{a, b} {
		if err := Write(f, spec); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Error("two writes of one spec differ")
	}
	ref, err := Ref(a)
	if err != nil || ref != spec.Ref {
		t.Fatalf("Ref = %q, %v; want %q", ref, err, spec.Ref)
	}
	files := untar(t, da)
	var m []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil || len(m) != 1 || len(m[0].Layers) != 1 {
		t.Fatalf("manifest %s: %v", files["manifest.json"], err)
	}
	var cfg struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[m[0].Config], &cfg); err != nil || !slices.Equal(cfg.Config.Entrypoint, spec.Entrypoint) || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("config %s: %v", files[m[0].Config], err)
	}
	tr := tar.NewReader(bytes.NewReader(files[m[0].Layers[0]]))
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %c %s %o", h.Name, h.Typeflag, h.Linkname, h.Mode))
	}
	want := []string{
		"bin/ 5  755", "bin/sh 2 /usr/bin/x 777", "etc/ 5  755", "etc/passwd 0  644",
		"tmp/ 5  1777", "usr/ 5  755", "usr/bin/ 5  755", "usr/bin/x 0  755",
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer entries:\n got %q\nwant %q", got, want)
	}
	if err := Write(filepath.Join(dir, "c.tar"), Spec{Ref: "x", Files: []File{{Path: "a", Data: []byte{}}, {Path: "a", Data: []byte{}}}}); err == nil {
		t.Error("a path added twice was accepted")
	}
}

func untar(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}
