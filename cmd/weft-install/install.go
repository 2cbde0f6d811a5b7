package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// result says what install did with one file.
type result struct {
	Name   string
	Action string // "installed", "unchanged", "kept" (if-absent and present)
}

// install copies every regular file of src (symlinks followed) into dst (created if missing).
// A file whose content already matches is left alone; names in ifAbsent are
// copied only when dst has no file of that name (the node's own loopback
// plugin wins). Each copy is written to a temporary name in dst, synced,
// made executable and renamed over the target, so a container runtime
// executing the plugin sees the old or the new binary, never part of one.
// It keeps going past a failed file and returns every error.
func install(src, dst string, ifAbsent []string) ([]result, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("read source %s: %w", src, err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return nil, fmt.Errorf("create destination %s: %w", dst, err)
	}
	var res []result
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if fi, err := os.Stat(filepath.Join(src, name)); err != nil || !fi.Mode().IsRegular() {
			continue // directories, dangling links
		}
		r, err := installFile(filepath.Join(src, name), filepath.Join(dst, name), slices.Contains(ifAbsent, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res = append(res, result{Name: name, Action: r})
	}
	if len(res) == 0 && len(errs) == 0 {
		return nil, fmt.Errorf("source %s: no files to install", src)
	}
	return res, errors.Join(errs...)
}

func installFile(from, to string, onlyIfAbsent bool) (string, error) {
	want, err := os.ReadFile(from)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", from, err)
	}
	have, err := os.ReadFile(to)
	switch {
	case err == nil && onlyIfAbsent:
		return "kept", nil
	case err == nil && bytes.Equal(have, want):
		if err := os.Chmod(to, 0o755); err != nil {
			return "", fmt.Errorf("chmod %s: %w", to, err)
		}
		return "unchanged", nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read %s: %w", to, err)
	}
	if err := writeAtomic(to, want); err != nil {
		return "", err
	}
	return "installed", nil
}

// writeAtomic writes data to a temporary file next to path and renames it
// over path.
func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".weft-tmp-")
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Chmod(0o755); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
