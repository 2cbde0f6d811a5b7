package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// closure lists pkgs and every package they depend on (Depends and
// Pre-Depends, no Recommends), as apt resolves them on this Debian system.
func closure(ctx context.Context, pkgs []string) ([]string, error) {
	args := append([]string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}, pkgs...)
	out, err := exec.CommandContext(ctx, "apt-cache", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache depends %s: %w%s", strings.Join(pkgs, " "), err, stderr(err))
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		// Package names start a line; dependencies are indented; virtual
		// packages are <name>.
		if line == "" || line[0] == ' ' || line[0] == '<' {
			continue
		}
		seen[strings.TrimSpace(line)] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// download fetches the .deb of each package (the candidate version for
// this machine's architecture) into dir, reusing files already there, and
// returns their paths in the order of pkgs.
func download(ctx context.Context, dir string, pkgs []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create deb cache %s: %w", dir, err)
	}
	var paths, missing []string
	for _, p := range pkgs {
		f, err := debFile(ctx, p)
		if err != nil {
			return nil, err
		}
		paths = append(paths, filepath.Join(dir, f))
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		cmd := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, missing...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("apt-get download %s (run `apt-get update` first?): %w\n%s",
				strings.Join(missing, " "), err, out)
		}
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("after apt-get download: %w", err)
		}
	}
	return paths, nil
}

// debFile is the file name apt-get download gives pkg's candidate:
// name_version_arch.deb with the epoch's colon escaped as %3a.
func debFile(ctx context.Context, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache show %s: %w%s", pkg, err, stderr(err))
	}
	var version, arch string
	for line := range strings.SplitSeq(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok && version == "" {
			version = v
		}
		if v, ok := strings.CutPrefix(line, "Architecture: "); ok && arch == "" {
			arch = v
		}
	}
	if version == "" || arch == "" {
		return "", fmt.Errorf("apt-cache show %s: no Version or Architecture", pkg)
	}
	return fmt.Sprintf("%s_%s_%s.deb", pkg, strings.ReplaceAll(version, ":", "%3a"), arch), nil
}

// extract unpacks the data of a .deb into dir (no maintainer scripts run).
func extract(ctx context.Context, deb, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("extract %s: %w", deb, err)
	}
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w\n%s", deb, err, out)
	}
	return nil
}

// prune removes documentation and locales, which a container never reads.
func prune(root string) error {
	for _, d := range []string{"usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
		"usr/share/lintian", "usr/share/bug"} {
		if err := os.RemoveAll(filepath.Join(root, d)); err != nil {
			return fmt.Errorf("prune %s: %w", d, err)
		}
	}
	return nil
}

// caBundle concatenates every certificate under usr/share/ca-certificates
// into etc/ssl/certs/ca-certificates.crt, what the package's maintainer
// script would have generated.
func caBundle(root string) error {
	var bundle bytes.Buffer
	err := filepath.WalkDir(filepath.Join(root, "usr/share/ca-certificates"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".crt") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		bundle.Write(bytes.TrimSpace(b))
		bundle.WriteByte('\n')
		return nil
	})
	if err != nil {
		return fmt.Errorf("ca bundle: %w", err)
	}
	if bundle.Len() == 0 {
		return fmt.Errorf("ca bundle: no certificates under %s", filepath.Join(root, "usr/share/ca-certificates"))
	}
	dir := filepath.Join(root, "etc/ssl/certs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ca bundle: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "ca-certificates.crt"), bundle.Bytes(), 0o644)
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return ": " + strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}
