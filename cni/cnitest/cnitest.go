// Package cnitest drives CNI plugins through libcni the way a container
// runtime does, except that each plugin process starts inside a given
// network namespace (a lab "node") instead of the caller's. Tests and the
// benchmark use it; it needs root.
package cnitest

import (
	"context"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"weft.dev/weft/overlay/nsrun"
)

// NodeExec is an invoke.Exec that runs each plugin in the network namespace
// at NetnsPath: it forks the plugin from an OS thread switched into that
// namespace, so the plugin starts there exactly as it would start on a node.
type NodeExec struct {
	NetnsPath string
	raw       invoke.RawExec
}

var _ invoke.Exec = (*NodeExec)(nil)

// ExecPlugin runs the plugin with stdin and environment as libcni built them.
func (e *NodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) (out []byte, err error) {
	err = Do(e.NetnsPath, func() error {
		out, err = e.raw.ExecPlugin(ctx, pluginPath, stdin, environ)
		return err
	})
	return out, err
}

// Do runs fn inside the network namespace at path (see nsrun): processes
// started and sockets made in fn belong to that namespace.
func Do(path string, fn func() error) error { return nsrun.In(path, fn) }

// FindInPath finds the plugin binary as libcni does.
func (e *NodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// Decode decodes a VERSION answer.
func (e *NodeExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// NewConfig is libcni's client with plugins searched in pluginDirs, results
// cached in cacheDir and every plugin run inside the node namespace.
func NewConfig(nodeNetns, cacheDir string, pluginDirs ...string) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(pluginDirs, cacheDir, &NodeExec{NetnsPath: nodeNetns})
}
