// Package cnitest drives CNI plugins through libcni the way a container
// runtime does, except that each plugin process starts inside a given
// network namespace (a lab "node") instead of the caller's. Tests and the
// benchmark use it; it needs root.
package cnitest

import (
	"context"
	"fmt"
	"runtime"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netns"
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

// Do runs fn on an OS thread switched into the network namespace at path,
// and switches the thread back afterwards. Processes started and sockets
// made in fn belong to that namespace. The thread goes back into the pool
// only when switching back worked; it may be the process's main thread, and
// a main thread left in a namespace would make the process one of the
// namespace's "pids" (and be killed when the namespace is torn down).
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- fnErr
	}()
	return <-errc
}

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
