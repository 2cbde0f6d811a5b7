// Command weftctl inspects the weft agent on this node.
//
//	weftctl status [-socket /run/weft/status.sock] [-json]
//	weftctl bgp peers [-socket ...] [-json]    BGP sessions (bgp mode)
//	weftctl bgp routes [-socket ...] [-json]   routes bgp mode installs, rejected paths
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"weft.dev/weft/agent/status"
)

const usage = `weftctl inspects the weft agent on this node.

Usage:
  weftctl status [-socket PATH] [-json]       mode, pod CIDRs, IPAM use and peers of the local agent
  weftctl bgp peers [-socket PATH] [-json]    bgp mode: sessions, prefixes received/advertised/installed/rejected
  weftctl bgp routes [-socket PATH] [-json]   bgp mode: the routes installed and the paths rejected

Flags:
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "weftctl:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weftctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/run/weft/"+status.SocketName, "the agent's status socket")
	asJSON := fs.Bool("json", false, "print the raw status as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the agent")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fs.Usage()
		if len(args) == 0 {
			return errors.New("missing command")
		}
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
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", args[0])
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var v any
	var print func() error
	switch cmd {
	case "status":
		st, err := status.Get(ctx, *socket)
		if err != nil {
			return err
		}
		v, print = st, func() error { return printStatus(stdout, st) }
	default:
		st, err := getBGP(ctx, *socket)
		if err != nil {
			return err
		}
		v, print = st, func() error { return printBGPPeers(stdout, st) }
		if cmd == "bgp routes" {
			print = func() error { return printBGPRoutes(stdout, st) }
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return print()
}

func printStatus(w io.Writer, st status.Status) error {
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
	fmt.Fprintln(tw, "NODE\tADDRESS\tPOD CIDRS\tVIA\tPROGRAMMED")
	for _, p := range st.Peers {
		prog := "yes"
		if !p.Programmed {
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
