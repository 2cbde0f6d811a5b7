// Command weftctl inspects the weft agent on this node and checks weft's
// configuration.
//
//	weftctl status [-socket /run/weft/status.sock] [-o table|wide|json|yaml]
//	weftctl bgp peers [-socket ...] [-o ...]     BGP sessions (bgp mode)
//	weftctl bgp routes [-socket ...] [-o ...]    routes bgp mode installs, rejected paths
//	weftctl config validate [-o ...] FILE        a weft-config ConfigMap or its config.yaml
//	weftctl --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"weft.dev/weft/agent/status"
	"weft.dev/weft/cmd/internal/version"
)

const usage = `weftctl inspects the weft agent on this node and checks weft's configuration.

Usage:
  weftctl status [-socket PATH] [-o FORMAT]       mode, pod CIDRs, IPAM use and peers of the local agent
  weftctl bgp peers [-socket PATH] [-o FORMAT]    bgp mode: sessions, prefixes received/advertised/installed/rejected
  weftctl bgp routes [-socket PATH] [-o FORMAT]   bgp mode: the routes installed and the paths rejected
  weftctl config validate [-o FORMAT] FILE        check a weft-config ConfigMap manifest (or the bare config.yaml
                                                  document) with the agent's own parser; FILE "-" is stdin
  weftctl --version                               print the version

FORMAT is table (the default), wide (more columns), json or yaml; -json is the older spelling of -o json.

Flags:
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "weftctl:", err)
		os.Exit(1)
	}
}

// common are the flags of every command.
type common struct {
	output string
	asJSON bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.output, "o", string(formatTable), "output format: table, wide, json or yaml")
	fs.BoolVar(&c.asJSON, "json", false, "the same as -o json (kept for scripts written before -o)")
}

func run(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := flag.NewFlagSet("weftctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	socket := fs.String("socket", "/run/weft/"+status.SocketName, "the agent's status socket (status, bgp)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the agent (status, bgp)")
	configMap := fs.String("configmap", "weft-config", "config validate: the ConfigMap to check when FILE holds Kubernetes objects")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help" {
		fs.Usage()
		if len(args) == 0 {
			return errors.New("missing command")
		}
		return nil
	}
	if args[0] == "--version" || args[0] == "-version" {
		fmt.Fprintln(stdout, "weftctl", version.String())
		return nil
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "status":
	case "bgp":
		if len(rest) == 0 || (rest[0] != "peers" && rest[0] != "routes") {
			fs.Usage()
			return errors.New("bgp: want a subcommand: peers or routes")
		}
		cmd, rest = "bgp "+rest[0], rest[1:]
	case "config":
		if len(rest) == 0 || rest[0] != "validate" {
			fs.Usage()
			return errors.New("config: want a subcommand: validate")
		}
		cmd, rest = "config validate", rest[1:]
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", args[0])
	}
	pos, err := parseInterspersed(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	f, err := parseFormat(c.output, c.asJSON)
	if err != nil {
		return err
	}
	if cmd == "config validate" {
		if len(pos) != 1 {
			return fmt.Errorf("config validate: want exactly one FILE (or - for stdin), got %d arguments", len(pos))
		}
		return validate(stdout, f, pos[0], *configMap)
	}
	if len(pos) > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", cmd, pos)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	switch cmd {
	case "status":
		st, err := status.Get(ctx, *socket)
		if err != nil {
			return err
		}
		return emit(stdout, f, st, func(wide bool) error { return printStatus(stdout, st, wide) })
	default:
		st, err := getBGP(ctx, *socket)
		if err != nil {
			return err
		}
		if cmd == "bgp routes" {
			return emit(stdout, f, st, func(wide bool) error { return printBGPRoutes(stdout, st, wide) })
		}
		return emit(stdout, f, st, func(wide bool) error { return printBGPPeers(stdout, st, wide) })
	}
}

// parseInterspersed parses flags before and after the arguments
// ("config validate FILE -o yaml" as "config validate -o yaml FILE") and
// returns the arguments; everything after "--" is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if n := len(args) - len(left); n > 0 && args[n-1] == "--" {
			return append(pos, left...), nil // Parse stopped after "--"
		}
		if len(left) == 0 {
			return pos, nil
		}
		pos, args = append(pos, left[0]), left[1:]
	}
}

// printStatus prints the status as a person reads it; wide adds the free
// addresses per pod CIDR and the pending reason of a peer as a column.
func printStatus(w io.Writer, st status.Status, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ready := "yes"
	if !st.Ready {
		ready = "no: " + strings.Join(st.NotReady, "; ")
	}
	cidrs := fmt.Sprint(st.PodCIDRs)
	if st.Leased {
		cidrs += " (leased)"
	}
	fmt.Fprintf(tw, "Node:\t%s\n", st.Node)
	fmt.Fprintf(tw, "Mode:\t%s\n", st.Mode)
	fmt.Fprintf(tw, "Ready:\t%s\n", ready)
	if st.ConfigError != "" {
		fmt.Fprintf(tw, "Config error:\t%s\n", st.ConfigError)
	}
	fmt.Fprintf(tw, "Node IP:\t%s\n", st.NodeIP)
	fmt.Fprintf(tw, "VTEP MAC:\t%s\n", st.VTEPMAC)
	fmt.Fprintf(tw, "Pod CIDRs:\t%s\n", cidrs)
	fmt.Fprintf(tw, "Pod MTU:\t%d\n", st.PodMTU)
	for _, u := range st.IPAM {
		if wide && u.Total > 0 {
			fmt.Fprintf(tw, "IPAM %s:\t%d/%d used, %d free (%.0f%% used)\n", u.Prefix, u.Used, u.Total, u.Total-min(u.Used, u.Total),
				100*float64(u.Used)/float64(u.Total))
			continue
		}
		fmt.Fprintf(tw, "IPAM %s:\t%d/%d used\n", u.Prefix, u.Used, u.Total)
	}
	if st.LastError != "" {
		fmt.Fprintf(tw, "Last error:\t%s\n", st.LastError)
	}
	if !st.LastReconcile.IsZero() {
		fmt.Fprintf(tw, "Last reconcile:\t%s\n", st.LastReconcile.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nPeers (%d):\n", len(st.Peers))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "NODE\tADDRESS\tPOD CIDRS\tVIA\tPROGRAMMED\tPENDING")
	} else {
		fmt.Fprintln(tw, "NODE\tADDRESS\tPOD CIDRS\tVIA\tPROGRAMMED")
	}
	for _, p := range st.Peers {
		prog := "yes"
		switch {
		case wide && !p.Programmed:
			prog = "no\t" + orDash(p.Pending)
		case wide:
			prog += "\t-"
		case !p.Programmed:
			prog = "no (" + p.Pending + ")"
		}
		addr := "-"
		if p.IP.IsValid() {
			addr = p.IP.String()
		}
		via := p.Via
		if via == "" {
			via = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, addr, joinCIDRs(p), via, prog)
	}
	return tw.Flush()
}

func joinCIDRs(p status.Peer) string {
	if len(p.PodCIDRs) == 0 {
		return "-"
	}
	ss := make([]string, len(p.PodCIDRs))
	for i, c := range p.PodCIDRs {
		ss[i] = c.String()
	}
	return strings.Join(ss, ",")
}
