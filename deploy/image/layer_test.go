package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// listing is "type name [-> link] mode" per layer entry.
func listing(t *testing.T, layer []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%c %s %o", h.Typeflag, h.Name, h.Mode)
		if h.Linkname != "" {
			s += " -> " + h.Linkname
		}
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			s += " BAD-OWNER-OR-TIME"
		}
		out = append(out, s)
	}
}

func TestLayerMergesUsrAndIsReproducible(t *testing.T) {
	root := t.TempDir()
	for name, body := range map[string]string{
		"lib/x86_64-linux-gnu/libc.so.6":     "libc",
		"usr/lib/x86_64-linux-gnu/libmnl.so": "mnl",
		"usr/sbin/xtables-nft-multi":         "xt",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/lib/x86_64-linux-gnu/libc.so.6", filepath.Join(root, "lib64/ld.so")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}

	write := func() []byte {
		tr := newTree()
		if err := tr.addRoot(root); err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := tr.write(&b, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	first := write()
	want := []string{
		"5 usr/ 755",
		"5 usr/lib/ 755",
		"5 usr/lib/x86_64-linux-gnu/ 755",
		"0 usr/lib/x86_64-linux-gnu/libc.so.6 755",
		"5 usr/lib64/ 755",
		"2 usr/lib64/ld.so 777 -> /lib/x86_64-linux-gnu/libc.so.6",
		"5 tmp/ 1777",
		"0 usr/lib/x86_64-linux-gnu/libmnl.so 755",
		"5 usr/sbin/ 755",
		"0 usr/sbin/xtables-nft-multi 755",
		"2 bin 777 -> usr/bin",
		"2 sbin 777 -> usr/sbin",
		"2 lib 777 -> usr/lib",
		"2 lib64 777 -> usr/lib64",
	}
	if d := cmp.Diff(want, listing(t, first)); d != "" {
		t.Errorf("layer (-want +got):\n%s", d)
	}
	if !bytes.Equal(first, write()) {
		t.Error("two writes of the same tree differ")
	}
}

func TestLayerRejectsDuplicates(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"lib/libc.so", "usr/lib/libc.so"} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := newTree().addRoot(root)
	if err == nil || !strings.Contains(err.Error(), "usr/lib/libc.so added twice") {
		t.Errorf("err %v, want the duplicate named", err)
	}
}
