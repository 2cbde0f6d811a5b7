package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// Resolve returns the namespace of a topology node or a pod. A pod is named
// "node/pod", or just "pod" when no other pod or node has that name.
func (l *Lab) Resolve(name string) (string, error) {
	if node, pod, ok := strings.Cut(name, "/"); ok {
		if err := l.checkWeftNode(node); err != nil {
			return "", err
		}
		ns := podNS(l.Name, node, pod)
		if !nsExists(ns) {
			return "", fmt.Errorf("no pod %s in lab %s", name, l.Name)
		}
		return ns, nil
	}
	if _, ok := l.Topo.Node(name); ok {
		return l.NS(name), nil
	}
	pods, err := l.Pods("")
	if err != nil {
		return "", err
	}
	var found []Pod
	for _, p := range pods {
		if p.Name == name {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 1:
		return found[0].NS, nil
	case 0:
		return "", fmt.Errorf("no node or pod %q in lab %s", name, l.Name)
	default:
		return "", fmt.Errorf("pod name %q is on %d nodes: say node/pod", name, len(found))
	}
}

// Command returns a command that runs argv inside a node or pod (see
// Resolve); the caller wires its standard streams.
func (l *Lab) Command(ctx context.Context, name string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("exec in %s: no command", name)
	}
	ns, err := l.Resolve(name)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...), nil
}

// Exec runs argv inside a node or pod and returns its combined output.
func (l *Lab) Exec(ctx context.Context, name string, argv ...string) ([]byte, error) {
	cmd, err := l.Command(ctx, name, argv...)
	if err != nil {
		return nil, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), name, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Ping sends one ICMP echo (1 s timeout) from a node or pod to dst.
func (l *Lab) Ping(ctx context.Context, from string, dst netip.Addr) error {
	_, err := l.Exec(ctx, from, "ping", "-n", "-q", "-c1", "-W1", dst.String())
	return err
}

// LinkDown sets a node's interface down (inside the node), cutting the link.
func (l *Lab) LinkDown(node, iface string) error { return l.setLink(node, iface, false) }

// LinkUp restores a link cut by LinkDown.
func (l *Lab) LinkUp(node, iface string) error { return l.setLink(node, iface, true) }

func (l *Lab) setLink(node, iface string, up bool) error {
	if _, ok := l.Topo.Node(node); !ok {
		return fmt.Errorf("no node %q in lab %s", node, l.Name)
	}
	ifaces := l.Topo.Ifaces(node)
	if i := sort.SearchStrings(ifaces, iface); i == len(ifaces) || ifaces[i] != iface {
		return fmt.Errorf("node %s has no link on %q (links: %s)", node, iface, strings.Join(ifaces, ", "))
	}
	return setLink(l.NS(node), iface, up)
}

// LinkIsUp reports whether a node's interface is administratively up.
func (l *Lab) LinkIsUp(node, iface string) (bool, error) {
	return linkAdminUp(l.NS(node), iface)
}

// Listen opens a listener (net.Listen's network and address) inside a node
// or pod (see Resolve), for a test that wants to see what arrives there.
// The caller closes it.
func (l *Lab) Listen(name, network, address string) (net.Listener, error) {
	ns, err := l.Resolve(name)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	err = inNS(ns, func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, address, name, err)
	}
	return ln, nil
}

// HTTPGet fetches url from inside a node or pod (see Resolve) and returns
// the body of a 200 answer.
func (l *Lab) HTTPGet(ctx context.Context, from, url string) (string, error) {
	ns, err := l.Resolve(from)
	if err != nil {
		return "", err
	}
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: dialIn(ns), DisableKeepAlives: true,
	}}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}
