// Command weft-lab runs weft labs: topologies of network namespaces with a
// real Kubernetes control plane, weft nodes and pods (see test/lab).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"weft.dev/weft/test/lab"
)

const usage = `usage: weft-lab [-v] COMMAND ...

  up -f FILE [--name N] [--kubelets]
                               bring a topology up (prints the lab name); with
                               --kubelets every weft node runs containerd +
                               kubelet and weft runs as its DaemonSet
  down N                       remove everything of lab N
  status N                     nodes, pod CIDRs, agents, pods
  list                         labs on this machine
  pod add N NODE POD           make a pod on a weft node (prints its IPs)
  pod del N NODE POD           remove a pod
  exec N NAME -- CMD...        run CMD in a node or pod (NAME: node, pod or node/pod)
  kubectl N -- ARGS...         kubectl with the admin kubeconfig
  agent start|kill|restart N NODE
  apiserver stop|start N
  link down|up N NODE IFACE    cut or restore a link (inside NODE)
  demo -f FILE [--processes]   up (real nodes), weft installed, a Deployment,
                               connectivity matrix, DNS, mode switch, down;
                               --processes: agents as processes, libcni pods
` + conformanceUsage + servicesUsage

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	level := slog.LevelWarn
	if len(args) > 0 && args[0] == "-v" {
		level, args = slog.LevelInfo, args[1:]
	}
	opts := lab.Options{Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	err := dispatch(ctx, opts, args[0], args[1:], stdout, stderr)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return int(ee)
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "weft-lab: %v\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "weft-lab: %v\n", err)
		return 1
	}
}

var errUsage = errors.New("bad usage")

// exitError carries a command's exit status through exec.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

func dispatch(ctx context.Context, opts lab.Options, cmd string, args []string, stdout, stderr io.Writer) error {
	switch cmd {
	case "up":
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		fs.SetOutput(stderr)
		file := fs.String("f", "", "topology file")
		name := fs.String("name", "", "lab name (default: the topology's name)")
		kubelets := fs.Bool("kubelets", opts.Kubelets, "real nodes: containerd + kubelet, weft as a DaemonSet")
		if err := fs.Parse(args); err != nil {
			return usageErr("up: %v", err)
		}
		opts.Kubelets = *kubelets
		if *file == "" || fs.NArg() > 0 {
			return usageErr("up -f FILE [--name N]")
		}
		l, err := opts.Up(ctx, *file, *name)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, l.Name)
		return nil
	case "down":
		if len(args) != 1 {
			return usageErr("down N")
		}
		return opts.Down(args[0])
	case "list":
		names, err := opts.List()
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintln(stdout, n)
		}
		return nil
	case "status":
		if len(args) != 1 {
			return usageErr("status N")
		}
		l, err := opts.Open(args[0])
		if err != nil {
			return err
		}
		s, err := l.Status(ctx)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, s)
		return nil
	case "pod":
		if len(args) != 4 || (args[0] != "add" && args[0] != "del") {
			return usageErr("pod add|del N NODE POD")
		}
		l, err := opts.Open(args[1])
		if err != nil {
			return err
		}
		if args[0] == "del" {
			return l.PodDel(ctx, args[2], args[3])
		}
		p, err := l.PodAdd(ctx, args[2], args[3])
		if err != nil {
			return err
		}
		for _, ip := range p.IPs {
			fmt.Fprintln(stdout, ip)
		}
		return nil
	case "exec":
		if len(args) < 4 || args[2] != "--" {
			return usageErr("exec N NAME -- CMD...")
		}
		l, err := opts.Open(args[0])
		if err != nil {
			return err
		}
		c, err := l.Command(ctx, args[1], args[3:]...)
		if err != nil {
			return err
		}
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, stdout, stderr
		return exitStatus(c.Run())
	case "kubectl":
		if len(args) < 2 || args[1] != "--" {
			return usageErr("kubectl N -- ARGS...")
		}
		l, err := opts.Open(args[0])
		if err != nil {
			return err
		}
		c, err := l.KubectlCommand(ctx, args[2:]...)
		if err != nil {
			return err
		}
		c.Stdin, c.Stdout, c.Stderr = os.Stdin, stdout, stderr
		return exitStatus(c.Run())
	case "agent":
		if len(args) != 3 {
			return usageErr("agent start|kill|restart N NODE")
		}
		l, err := opts.Open(args[1])
		if err != nil {
			return err
		}
		switch args[0] {
		case "start":
			return l.AgentStart(ctx, args[2])
		case "kill":
			return l.AgentKill(args[2])
		case "restart":
			return l.AgentRestart(ctx, args[2])
		}
		return usageErr("agent start|kill|restart N NODE")
	case "apiserver":
		if len(args) != 2 {
			return usageErr("apiserver stop|start N")
		}
		l, err := opts.Open(args[1])
		if err != nil {
			return err
		}
		switch args[0] {
		case "stop":
			return l.APIServerStop()
		case "start":
			return l.APIServerStart(ctx)
		}
		return usageErr("apiserver stop|start N")
	case "link":
		if len(args) != 4 || (args[0] != "down" && args[0] != "up") {
			return usageErr("link down|up N NODE IFACE")
		}
		l, err := opts.Open(args[1])
		if err != nil {
			return err
		}
		if args[0] == "down" {
			return l.LinkDown(args[2], args[3])
		}
		return l.LinkUp(args[2], args[3])
	case "demo":
		fs := flag.NewFlagSet("demo", flag.ContinueOnError)
		fs.SetOutput(stderr)
		file := fs.String("f", "", "topology file")
		name := fs.String("name", "", "lab name (default: demo-<pid>)")
		processes := fs.Bool("processes", false, "agents as processes and pods through libcni, no kubelets")
		if err := fs.Parse(args); err != nil {
			return usageErr("demo: %v", err)
		}
		opts.Kubelets = !*processes
		if *file == "" || fs.NArg() > 0 {
			return usageErr("demo -f FILE")
		}
		if *name == "" {
			*name = fmt.Sprintf("demo-%d", os.Getpid()%100000)
		}
		t0 := time.Now()
		err := lab.Demo(ctx, opts, *file, *name, stdout)
		fmt.Fprintf(stdout, "demo: took %s\n", time.Since(t0).Round(time.Second))
		return err
	case "conformance":
		return conformanceCmd(ctx, opts, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	if handled, err := dispatchServices(ctx, opts, cmd, args, stdout, stderr); handled {
		return err
	}
	return usageErr("unknown command %q", strings.TrimSpace(cmd))
}

func exitStatus(err error) error {
	var ee interface{ ExitCode() int }
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return exitError(ee.ExitCode())
	}
	return err
}
