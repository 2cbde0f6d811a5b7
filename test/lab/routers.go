package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FRR and BIRD nodes run Debian's daemons inside their namespace with the
// node's startup-config. FRR gets a pathspace of its own per lab node
// (wl_<lab>_<node>), so its sockets never collide with another lab's or the
// machine's own FRR.

const frrBinDir = "/usr/lib/frr"

// frrDaemons start in this order; each reads the same config file.
var frrDaemons = []string{"zebra", "bgpd", "staticd"}

func (l *Lab) upRouters(ctx context.Context) error {
	for _, n := range l.Topo.Nodes {
		var err error
		switch n.Kind {
		case KindFRR:
			err = l.ensureFRR(ctx, n)
		case KindBIRD:
			err = l.ensureBIRD(ctx, n)
		default:
			continue
		}
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// frrRun is the pathspace's run dir (sockets and pid files, owned by frr).
func (l *Lab) frrRun(node string) string {
	return filepath.Join(frrRunDir, frrPathspace(l.Name, node))
}

func (l *Lab) ensureFRR(ctx context.Context, n Node) error {
	run := l.frrRun(n.Name)
	if err := os.MkdirAll(run, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", run, err)
	}
	if err := chownTo(run, "frr"); err != nil {
		return err
	}
	// The config goes beside the sockets: FRR drops to user frr, which may
	// not be able to read the lab dir.
	conf := filepath.Join(run, "frr.conf")
	if err := copyFile(n.StartupConfig, conf); err != nil {
		return err
	}
	ps := frrPathspace(l.Name, n.Name)
	for _, d := range frrDaemons {
		pidf := filepath.Join(run, d+".pid")
		if pidFromFile(pidf) > 0 {
			continue
		}
		_ = os.Remove(pidf)
		args := []string{"-d", "-N", ps, "-f", conf, "-i", pidf}
		if err := l.runIn(ctx, l.NS(n.Name), filepath.Join(frrBinDir, d), args...); err != nil {
			return fmt.Errorf("start %s: %w", d, err)
		}
	}
	return nil
}

func (l *Lab) ensureBIRD(ctx context.Context, n Node) error {
	dir := l.NodeDir(n.Name)
	conf := filepath.Join(dir, "bird.conf")
	if err := copyFile(n.StartupConfig, conf); err != nil {
		return err
	}
	pidf := filepath.Join(dir, "bird.pid")
	if pidFromFile(pidf) > 0 {
		return nil
	}
	_ = os.Remove(pidf)
	return l.runIn(ctx, l.NS(n.Name), "bird", "-c", conf, "-s", filepath.Join(dir, "bird.ctl"), "-P", pidf)
}

// FRR runs vtysh with args (each a -c command) in an FRR node and returns
// its standard output.
func (l *Lab) FRR(ctx context.Context, node string, cmds ...string) ([]byte, error) {
	n, ok := l.Topo.Node(node)
	if !ok || n.Kind != KindFRR {
		return nil, fmt.Errorf("no frr node %q in lab %s", node, l.Name)
	}
	args := []string{"-N", frrPathspace(l.Name, node)}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return l.output(ctx, l.NS(node), "vtysh", args...)
}

// BIRD runs birdc with args in a BIRD node and returns its output.
func (l *Lab) BIRD(ctx context.Context, node string, args ...string) ([]byte, error) {
	n, ok := l.Topo.Node(node)
	if !ok || n.Kind != KindBIRD {
		return nil, fmt.Errorf("no bird node %q in lab %s", node, l.Name)
	}
	ctl := filepath.Join(l.NodeDir(node), "bird.ctl")
	return l.output(ctx, l.NS(node), "birdc", append([]string{"-s", ctl}, args...)...)
}

// runIn runs a command that daemonizes itself inside ns and waits for it.
func (l *Lab) runIn(ctx context.Context, ns, bin string, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s in %s: %w: %s", bin, strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs a command inside ns and returns its standard output; standard
// error goes into the error.
func (l *Lab) output(ctx context.Context, ns, bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %w: %s", bin, strings.Join(args, " "), ns, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// pidFromFile returns the pid in a pid file when that process runs, else 0.
func pidFromFile(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || !alive(pid) {
		return 0
	}
	return pid
}

func chownTo(path, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("user %s (is the package installed? run test/deps.sh): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}
