// Package cniconf writes the CNI network configuration list the weft CNI
// binary reads, and the ready file it checks.
//
// Writes are atomic (a temporary file in the same directory, then rename) and
// skipped when the content is unchanged, so the container runtime never reads
// a half-written file and a resync does not touch the file's mtime.
package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// FileName is the conflist name in the CNI configuration directory; the
// runtime uses the first file by name, hence the "10-" prefix.
const FileName = "10-weft.conflist"

// Network is what the agent knows about this node's pod network.
type Network struct {
	Bridge    string
	MTU       int
	PodCIDRs  []netip.Prefix
	Gateways  []netip.Addr
	DataDir   string // the CNI binary's IPAM store
	ReadyFile string
	Chain     Chain // from Negotiate; the zero value is weft alone at Preferred
}

type weftPlugin struct {
	Type        string         `json:"type"`
	Bridge      string         `json:"bridge"`
	MTU         int            `json:"mtu"`
	PodCIDRs    []netip.Prefix `json:"podCIDRs"`
	Gateways    []netip.Addr   `json:"gateways"`
	DataDir     string         `json:"dataDir"`
	HairpinMode bool           `json:"hairpinMode"`
	ReadyFile   string         `json:"readyFile"`
}

type portmapPlugin struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
}

type conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

// Render returns the conflist for n.
func Render(n Network) ([]byte, error) {
	if n.Bridge == "" || n.MTU <= 0 || len(n.PodCIDRs) == 0 || len(n.Gateways) != len(n.PodCIDRs) || n.DataDir == "" {
		return nil, fmt.Errorf("render conflist: incomplete network %+v", n)
	}
	version := n.Chain.CNIVersion
	if version == "" {
		version = Preferred
	}
	c := conflist{
		CNIVersion: version,
		Name:       "weft",
		Plugins: []any{
			weftPlugin{Type: "weft", Bridge: n.Bridge, MTU: n.MTU, PodCIDRs: n.PodCIDRs, Gateways: n.Gateways,
				DataDir: n.DataDir, HairpinMode: true, ReadyFile: n.ReadyFile},
		},
	}
	if n.Chain.Portmap {
		c.Plugins = append(c.Plugins, portmapPlugin{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}})
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render conflist: %w", err)
	}
	return append(b, '\n'), nil
}

// Write writes the conflist for n into dir, atomically, unless the file
// already holds exactly that content. It reports whether it wrote.
func Write(dir string, n Network) (bool, error) {
	b, err := Render(n)
	if err != nil {
		return false, err
	}
	return WriteFile(filepath.Join(dir, FileName), b, 0o644)
}

// WriteFile atomically replaces path with data unless it already holds data.
func WriteFile(path string, data []byte, perm fs.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return false, fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", tmp.Name(), path, err)
	}
	return true, nil
}

// Remove deletes the conflist from dir; a missing file is not an error.
func Remove(dir string) error { return removeFile(filepath.Join(dir, FileName)) }

// RemoveReady deletes the ready file; a missing file is not an error.
func RemoveReady(path string) error { return removeFile(path) }

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
