// Package image writes container images as docker archives (what `docker
// save` writes and `ctr images import` reads) from a file tree, without a
// container engine or a registry. The lab builds the images its real nodes
// run with it: one uncompressed layer, a config, a manifest naming the tag.
//
// Archives are reproducible: entries sorted, owner root, a fixed time.
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Spec describes one image.
type Spec struct {
	Ref        string   // e.g. registry.k8s.io/pause:3.10.2
	Entrypoint []string // config.Entrypoint
	Cmd        []string // config.Cmd
	Env        []string // default: a standard PATH
	Files      []File   // the layer's contents
}

// File is one entry of the layer. Exactly one of Src, Data, Link, Dir is set.
type File struct {
	Path string      // inside the image, without a leading slash
	Src  string      // copy this host file (symlinks followed)
	Data []byte      // literal contents
	Link string      // a symlink to this target
	Dir  bool        // a directory
	Mode fs.FileMode // permission bits; default 0o755 for Src, dirs, 0o644 for Data
}

// Tree adds every file below root (symlinks kept as links) under prefix.
func Tree(root, prefix string) ([]File, error) {
	var out []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		name := path.Join(prefix, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, File{Path: name, Link: t})
		case d.IsDir():
			out = append(out, File{Path: name, Dir: true, Mode: info.Mode().Perm()})
		case d.Type().IsRegular():
			out = append(out, File{Path: name, Src: p, Mode: info.Mode().Perm()})
		}
		return nil
	})
	return out, err
}

// epoch is the time of every entry and of the config.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Write writes the image as a docker archive to file (via a temp file and a
// rename, so a reader never sees half of it).
func Write(file string, s Spec) error {
	layer, err := layerTar(s.Files)
	if err != nil {
		return fmt.Errorf("image %s: %w", s.Ref, err)
	}
	diff := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(diff[:])
	env := s.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch,
		"config": map[string]any{
			"Entrypoint": s.Entrypoint, "Cmd": s.Cmd, "Env": env, "WorkingDir": "/",
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": epoch, "created_by": "weft-lab image"}},
	})
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	layerName := hex.EncodeToString(diff[:]) + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": cfgName, "RepoTags": []string{s.Ref}, "Layers": []string{layerName},
	}})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {cfgName, cfg}, {layerName, layer}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)),
			ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, file)
}

// layerTar is the layer: parent directories made explicit, entries sorted.
func layerTar(files []File) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := strings.Trim(path.Clean("/"+f.Path), "/")
		if p == "" {
			continue
		}
		f.Path = p
		if old, ok := byPath[p]; ok && !(old.Dir && f.Dir) {
			return nil, fmt.Errorf("%s added twice", p)
		}
		byPath[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Dir: true}
			}
		}
	}
	names := make([]string, 0, len(byPath))
	for p := range byPath {
		names = append(names, p)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		f := byPath[p]
		h := &tar.Header{Name: p, ModTime: epoch, Format: tar.FormatPAX}
		var data []byte
		switch {
		case f.Dir:
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, p+"/", int64(orMode(f.Mode, 0o755))
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		case f.Src != "":
			d, err := os.ReadFile(f.Src)
			if err != nil {
				return nil, err
			}
			data = d
			h.Typeflag, h.Mode = tar.TypeReg, int64(orMode(f.Mode, 0o755))
		case f.Data != nil:
			data = f.Data
			h.Typeflag, h.Mode = tar.TypeReg, int64(orMode(f.Mode, 0o644))
		default:
			return nil, fmt.Errorf("%s: no contents", p)
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func orMode(m, def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return m
}

// Ref reads the image reference recorded in a docker archive.
func Ref(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: no manifest.json", file)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return "", fmt.Errorf("%s: manifest.json: %w", file, err)
		}
		if len(m) == 0 || len(m[0].RepoTags) == 0 {
			return "", fmt.Errorf("%s: manifest.json names no tag", file)
		}
		return m[0].RepoTags[0], nil
	}
}
