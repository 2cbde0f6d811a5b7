package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Each weft node runs $WEFT_BIN/weft-agent inside its namespace, detached
// from the process that started it (its own session), with every path
// pointing into the node's directory:
//
//	weft-agent --node-name=<node> --kubeconfig=<nodeDir>/kubeconfig
//	  --state-dir=<nodeDir>/var/lib/weft --run-dir=<nodeDir>/run/weft
//	  --cni-conf-dir=<nodeDir>/etc/cni/net.d
//
// Its pid is in <nodeDir>/agent.pid, its output in <nodeDir>/agent.log. Up
// starts agents only when the binary exists; without it the lab still runs
// (no cross-node pod traffic then).

// ErrNoAgent is returned by the agent tools when weft-agent is not built.
var ErrNoAgent = errors.New("weft-agent not built")

func (l *Lab) agentBin() string { return filepath.Join(l.opts.BinDir, "weft-agent") }

// AgentBuilt reports whether the weft-agent binary exists.
func (l *Lab) AgentBuilt() bool {
	fi, err := os.Stat(l.agentBin())
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func (l *Lab) agentPidFile(node string) string { return filepath.Join(l.NodeDir(node), "agent.pid") }

// AgentPid is the pid of a node's running agent, 0 when none runs.
func (l *Lab) AgentPid(node string) int { return pidFromFile(l.agentPidFile(node)) }

// AgentHTTPAddr is where a node's agent serves /healthz, /readyz and
// /metrics: weft-agent's default, on the loopback of the node's namespace.
const AgentHTTPAddr = "127.0.0.1:9099"

// AgentStatusSocket is the path of a node's agent status socket (weftctl
// status -socket ...); a unix socket is reachable from any namespace.
func (l *Lab) AgentStatusSocket(node string) string {
	return filepath.Join(l.NodeDir(node), "run", "weft", "status.sock")
}

// AgentArgs are the flags the lab gives a node's agent.
func (l *Lab) AgentArgs(node string) []string {
	d := l.NodeDir(node)
	return []string{
		"--node-name=" + node,
		"--kubeconfig=" + l.agentKubeconfig(node),
		"--state-dir=" + filepath.Join(d, "var", "lib", "weft"),
		"--run-dir=" + filepath.Join(d, "run", "weft"),
		"--cni-conf-dir=" + l.cniConfDir(node),
		"--http-addr=" + AgentHTTPAddr,
	}
}

// AgentStart starts a node's agent unless it runs already.
func (l *Lab) AgentStart(ctx context.Context, node string) error {
	if err := l.checkWeftNode(node); err != nil {
		return err
	}
	if l.opts.Kubelets {
		return fmt.Errorf("node %s is a real node: weft runs there as its DaemonSet's pod", node)
	}
	if !l.AgentBuilt() {
		return fmt.Errorf("node %s: %w: no %s (run `make build`)", node, ErrNoAgent, l.agentBin())
	}
	if l.AgentPid(node) > 0 {
		return nil
	}
	lf, err := os.OpenFile(filepath.Join(l.NodeDir(node), "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node %s: agent log: %w", node, err)
	}
	defer lf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.NS(node), l.agentBin()}, l.AgentArgs(node)...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %s: start weft-agent: %w", node, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it exits while this process lives; after that init does.
	go func() { _ = cmd.Wait() }()
	if err := os.WriteFile(l.agentPidFile(node), fmt.Appendf(nil, "%d\n", pid), 0o644); err != nil {
		return err
	}
	l.log.Info("weft-agent started", "node", node, "pid", pid)
	return nil
}

// AgentKill kills a node's agent with SIGKILL, as a crash would.
func (l *Lab) AgentKill(node string) error {
	return l.agentStop(node, syscall.SIGKILL)
}

// AgentRestart stops a node's agent gracefully (SIGTERM) and starts it again.
func (l *Lab) AgentRestart(ctx context.Context, node string) error {
	if err := l.agentStop(node, syscall.SIGTERM); err != nil {
		return err
	}
	return l.AgentStart(ctx, node)
}

func (l *Lab) agentStop(node string, sig syscall.Signal) error {
	if err := l.checkWeftNode(node); err != nil {
		return err
	}
	if !l.AgentBuilt() {
		return fmt.Errorf("node %s: %w: no %s (run `make build`)", node, ErrNoAgent, l.agentBin())
	}
	pid := l.AgentPid(node)
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("node %s: signal weft-agent %d: %w", node, pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		killAll([]int{pid}, 0)
	}
	return os.Remove(l.agentPidFile(node))
}
