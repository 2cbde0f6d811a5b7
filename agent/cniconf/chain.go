package cniconf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Preferred is the CNI spec version weft writes when every chained plugin
// supports it (1.1.0 brings STATUS and GC).
const Preferred = "1.1.0"

// Chain says which version the conflist declares and whether portmap (the
// hostPort plugin) is chained after weft.
type Chain struct {
	CNIVersion string // empty means Preferred
	Portmap    bool
}

// For returns the chain at a version the container runtime accepts, given
// as a Node reports it in status.nodeInfo.containerRuntimeVersion
// ("containerd://1.6.20"). containerd before 2.0 refuses a conflist whose
// cniVersion is newer than 1.0.0 ("unsupported CNI result version"), so its
// nodes get 1.0.0 (no STATUS or GC; ADD, DEL and CHECK unchanged). Every
// other runtime, and an unknown one (empty while the kubelet has not yet
// reported), gets the negotiated version.
func (c Chain) For(runtime string) Chain {
	if c.CNIVersion == "" {
		c.CNIVersion = Preferred
	}
	name, ver, ok := strings.Cut(runtime, "://")
	if !ok || name != "containerd" {
		return c
	}
	major, _, _ := strings.Cut(strings.TrimPrefix(ver, "v"), ".")
	if n, err := strconv.Atoi(major); err == nil && n < 2 && c.CNIVersion == "1.1.0" {
		c.CNIVersion = "1.0.0"
	}
	return c
}

// Negotiate finds the portmap plugin in binDirs (the runtime's CNI plugin
// directories, searched in order) and asks it which spec versions it
// supports. The conflist then declares the highest version weft and portmap
// share — a runtime refuses the whole list if one plugin cannot speak its
// version — preferring Preferred. Without portmap, the chain is weft alone
// at Preferred (pods keep working; only hostPort needs portmap).
func Negotiate(ctx context.Context, binDirs []string) (Chain, error) {
	path := ""
	for _, d := range binDirs {
		p := filepath.Join(d, "portmap")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			path = p
			break
		}
	}
	if path == "" {
		return Chain{CNIVersion: Preferred}, nil
	}
	versions, err := pluginVersions(ctx, path)
	if err != nil {
		return Chain{CNIVersion: Preferred}, err
	}
	for _, v := range []string{Preferred, "1.0.0"} {
		if slices.Contains(versions, v) {
			return Chain{CNIVersion: v, Portmap: true}, nil
		}
	}
	return Chain{CNIVersion: Preferred}, fmt.Errorf("%s supports none of %s, 1.0.0 (only %v): hostPort disabled", path, Preferred, versions)
}

// pluginVersions runs a plugin's VERSION command.
func pluginVersions(ctx context.Context, path string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = []string{"CNI_COMMAND=VERSION"}
	cmd.Stdin = bytes.NewReader([]byte(`{"cniVersion":"` + Preferred + `"}`))
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s VERSION: %w", path, err)
	}
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("%s VERSION: decode %q: %w", path, out, err)
	}
	return v.Supported, nil
}
