package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"weft.dev/weft/agent/bgpmode"
	"weft.dev/weft/bgp"
)

// bgpPath is where the agent serves bgp mode's status (agent.BGPPath).
const bgpPath = "/bgp"

// getBGP reads bgp mode's status from the agent's status socket.
func getBGP(ctx context.Context, socket string) (bgpmode.Status, error) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://weft-agent"+bgpPath, nil)
	if err != nil {
		return bgpmode.Status{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return bgpmode.Status{}, fmt.Errorf("read bgp status from %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return bgpmode.Status{}, fmt.Errorf("read bgp status from %s: HTTP %s: %s", socket, resp.Status, strings.TrimSpace(string(msg)))
	}
	var st bgpmode.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return bgpmode.Status{}, fmt.Errorf("decode bgp status from %s: %w", socket, err)
	}
	return st, nil
}

func printBGPHeader(w io.Writer, st bgpmode.Status) {
	running := "yes"
	if !st.Running {
		running = "no"
	}
	fmt.Fprintf(w, "Router ID: %s  AS: %d  speaker running: %s\n", st.RouterID, st.ASN, running)
	if st.LastError != "" {
		fmt.Fprintf(w, "Last error: %s\n", st.LastError)
	}
}

// printBGPPeers prints the sessions; wide adds SINCE, when the session last
// came up or went down.
func printBGPPeers(w io.Writer, st bgpmode.Status, wide bool) error {
	printBGPHeader(w, st)
	fmt.Fprintf(w, "\nPeers (%d):\n", len(st.Peers))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "PEER\tNAME\tASN\tSTATE\tUPTIME\tRECEIVED\tADVERTISED\tINSTALLED\tREJECTED\tEOR"
	if wide {
		head += "\tSINCE"
	}
	fmt.Fprintln(tw, head)
	now := time.Now()
	for _, p := range st.Peers {
		up := "-"
		if d := p.Uptime(now); d > 0 {
			up = d.Round(time.Second).String()
		}
		state := p.State
		if p.Restarting {
			state += " (restarting)"
		}
		eor := "no"
		if p.EndOfRIB {
			eor = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\t%s", p.Address, orDash(p.Name), p.ASN, state, up,
			p.Received, p.Advertised, p.Installed, reasons(p.Rejected), eor)
		if wide {
			since := "-"
			if !p.Since.IsZero() {
				since = p.Since.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "\t%s", since)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nRejected paths by reason: %s\n", reasons(st.RejectedByReason))
	return nil
}

// printBGPRoutes prints the installed routes and the rejected paths; wide
// adds each next hop's device and onlink flag.
func printBGPRoutes(w io.Writer, st bgpmode.Status, wide bool) error {
	printBGPHeader(w, st)
	fmt.Fprintf(w, "\nInstalled routes (%d, %d retained from before a restart):\n", len(st.Routes), st.Retained)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tNEXT HOPS")
	for _, r := range st.Routes {
		hops := make([]string, len(r.NextHops))
		for i, h := range r.NextHops {
			hops[i] = h.Gateway.String()
			if wide && h.Dev != "" {
				hops[i] += " dev " + h.Dev
			}
			if wide && h.Onlink {
				hops[i] += " onlink"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", r.Dst, strings.Join(hops, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nRejected paths (%d):\n", len(st.Rejected))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tNEXT HOP\tFROM PEER\tREASON")
	for _, r := range st.Rejected {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Prefix, r.NextHop, r.Peer, r.Reason)
	}
	return tw.Flush()
}

// reasons prints non-zero counts as reason=n, sorted; "-" when none.
func reasons(m map[bgp.Reason]int) string {
	var out []string
	for r, n := range m {
		if n > 0 {
			out = append(out, fmt.Sprintf("%s=%d", r, n))
		}
	}
	if len(out) == 0 {
		return "-"
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
