package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// usrMerged are the top-level directories that are symlinks into /usr on
// Debian 12 (merged /usr). Packages still ship some files under them; the
// layer writer moves those under usr/.
var usrMerged = []string{"bin", "sbin", "lib", "lib64"}

// entry is one file of a layer: a regular file copied from src, a
// directory, or a symlink.
type entry struct {
	name string // path inside the image, no leading slash
	mode fs.FileMode
	src  string // regular files: file on disk
	link string // symlinks: target
}

// tree collects layer entries, parent directories first, each path once.
type tree struct {
	entries []entry
	seen    map[string]bool
}

func newTree() *tree { return &tree{seen: map[string]bool{}} }

func (t *tree) dir(name string, mode fs.FileMode) {
	name = strings.Trim(path.Clean(name), "/")
	if name == "." || name == "" || t.seen[name] {
		return
	}
	t.dir(path.Dir(name), 0o755)
	t.seen[name] = true
	t.entries = append(t.entries, entry{name: name, mode: fs.ModeDir | mode.Perm() | mode&fs.ModeSticky})
}

func (t *tree) add(e entry) error {
	e.name = strings.Trim(path.Clean(e.name), "/")
	if t.seen[e.name] {
		return fmt.Errorf("layer: %s added twice", e.name)
	}
	t.dir(path.Dir(e.name), 0o755)
	t.seen[e.name] = true
	t.entries = append(t.entries, e)
	return nil
}

// addRoot adds everything under root, moving usrMerged top-level
// directories under usr/, and the merged-/usr symlinks themselves.
func (t *tree) addRoot(root string) error {
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		top, _, _ := strings.Cut(rel, "/")
		for _, m := range usrMerged {
			if top == m {
				rel = "usr/" + rel
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if !t.seen[rel] {
				t.dir(rel, fi.Mode())
			}
			return nil
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return t.add(entry{name: rel, mode: fs.ModeSymlink | 0o777, link: target})
		case fi.Mode().IsRegular():
			return t.add(entry{name: rel, mode: fi.Mode().Perm(), src: p})
		default:
			return fmt.Errorf("layer: %s: unsupported file type %s", p, fi.Mode().Type())
		}
	})
	if err != nil {
		return fmt.Errorf("add %s: %w", root, err)
	}
	for _, m := range usrMerged {
		if err := t.add(entry{name: m, mode: fs.ModeSymlink | 0o777, link: "usr/" + m}); err != nil {
			return err
		}
	}
	return nil
}

// write writes the entries as an uncompressed layer tar: owner root, every
// time set to mtime, so the same input gives the same layer digest.
func (t *tree) write(w io.Writer, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, e := range t.entries {
		h := &tar.Header{Name: e.name, Mode: int64(e.mode.Perm()), ModTime: mtime, Format: tar.FormatPAX}
		if e.mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case e.mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			fi, err := os.Stat(e.src)
			if err != nil {
				return fmt.Errorf("layer %s: %w", e.name, err)
			}
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("layer %s: %w", e.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(e.src)
			if err != nil {
				return fmt.Errorf("layer %s: %w", e.name, err)
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("layer %s: copy %s: %w", e.name, e.src, err)
			}
		}
	}
	return tw.Close()
}
