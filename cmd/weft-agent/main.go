// Command weft-agent is weft's per-node agent: it programs the node's pod
// network (VXLAN overlay or BGP routes, firewall rules, pod bridge) from the
// cluster's Node objects and the kube-system/weft-config ConfigMap, writes
// the CNI conflist and publishes the node's tunnel endpoint.
//
//	weft-agent [flags]           run the agent (until SIGTERM/SIGINT; the datapath stays)
//	weft-agent cleanup [flags]   remove everything weft made on this node
//
// In bgp mode it runs the node's BGP speaker (its gRPC admin API is never
// started). Multipath TCP stays off for its listeners (go:debug below):
// TCP MD5 signatures (BGP passwords) need plain TCP sockets.
//
//go:debug multipathtcp=0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"weft.dev/weft/agent"
	"weft.dev/weft/agent/cniconf"
	"weft.dev/weft/agent/kube"
	"weft.dev/weft/agent/status"
	"weft.dev/weft/cmd/internal/version"
	"weft.dev/weft/ipam"
	"weft.dev/weft/overlay"
)

type flags struct {
	nodeName, nodeIP, kubeconfig          string
	stateDir, runDir, cniConfDir, bridge  string
	namespace, configMap, httpAddr, level string
	cniBinDirs                            string
}

func (f *flags) register(fs *flag.FlagSet, all bool) {
	fs.StringVar(&f.runDir, "run-dir", "/run/weft", "runtime directory (ready file, status socket)")
	fs.StringVar(&f.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "CNI configuration directory")
	fs.StringVar(&f.level, "log-level", "info", "log level: debug, info, warn, error")
	if !all {
		return
	}
	fs.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&f.nodeIP, "node-ip", "", "this node's underlay address (default: weft.dev/node-ip annotation, else first InternalIP)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster service account)")
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/weft", "state directory (VTEP MAC, IPAM store under ipam/)")
	fs.StringVar(&f.bridge, "bridge", "weft0", "pod bridge name")
	fs.StringVar(&f.namespace, "namespace", "kube-system", "namespace of the ConfigMap and the pod CIDR leases")
	fs.StringVar(&f.configMap, "configmap", "weft-config", "name of the ConfigMap holding config.yaml")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:9099", "address for /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&f.cniBinDirs, "cni-bin-dir", "/opt/cni/bin", "the runtime's CNI plugin directories, comma-separated: the conflist chains portmap when one holds it")
}

// newFlagSet is the command line of weft-agent (all) or of its cleanup
// subcommand, with -version.
func newFlagSet(name string, f *flags, all bool) (*flag.FlagSet, *bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f.register(fs, all)
	return fs, fs.Bool("version", false, "print the version and exit")
}

// gcPercent is the agent's garbage collection target unless GOGC is set:
// the heap may grow by half of what is live before a collection, not by all
// of it. The agent runs on every node and what it holds is mostly its cache
// of Node objects, which changes slowly, so collections stay rare while the
// resident memory stays close to that cache (39-40 MiB instead of 43 MiB
// at 1000 peer Nodes, docs/benchmarks.md).
const gcPercent = 50

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "weft-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var f flags
	cleanup := len(args) > 0 && args[0] == "cleanup"
	name := "weft-agent"
	if cleanup {
		args, name = args[1:], "weft-agent cleanup"
	}
	fs, showVersion := newFlagSet(name, &f, !cleanup)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println("weft-agent", version.String())
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return fmt.Errorf("flag -log-level %q: %w", f.level, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	klog.SetSlogLogger(log.With("component", "client-go"))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	nl, err := overlay.NewNetlink(netns.None())
	if err != nil {
		return err
	}
	defer nl.Close()
	dp := overlay.New(nl, 0, log.With("component", "datapath"))
	fw, err := overlay.NewFirewall("", log.With("component", "firewall"))
	if err != nil {
		return err
	}
	defer fw.Close()
	if cleanup {
		if err := agent.Cleanup(ctx, dp, fw, f.cniConfDir, f.runDir); err != nil {
			return err
		}
		log.Info("removed weft's datapath, firewall rules, CNI configuration and ready file")
		return nil
	}

	if f.nodeName == "" {
		return errors.New("flag -node-name: empty (and $NODE_NAME unset)")
	}
	var nodeIP netip.Addr
	if f.nodeIP != "" {
		if nodeIP, err = netip.ParseAddr(f.nodeIP); err != nil {
			return fmt.Errorf("flag -node-ip %q: %w", f.nodeIP, err)
		}
	}
	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "weft-agent/" + f.nodeName
	client, err := kube.New(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	host, err := agent.NewLinuxHost()
	if err != nil {
		return err
	}
	defer host.Close()
	ipamDir := filepath.Join(f.stateDir, "ipam")
	chain, err := cniconf.Negotiate(ctx, strings.Split(f.cniBinDirs, ","))
	if err != nil {
		log.Warn("portmap not chained", "err", err)
	}
	a, err := agent.New(agent.Options{
		CNIChain: chain,
		NodeName: f.nodeName, NodeIP: nodeIP, Namespace: f.namespace, ConfigMap: f.configMap,
		StateDir: f.stateDir, RunDir: f.runDir, CNIConfDir: f.cniConfDir, Bridge: f.bridge, HTTPAddr: f.httpAddr,
		Client: client, Datapath: dp, Firewall: fw, Host: host, Log: log,
		KernelRoutes: func(ctx context.Context) ([]overlay.Route, error) {
			st, err := nl.Observe(ctx, nil, overlay.DefaultRouteProtocol)
			return st.Routes, err
		},
		IPAM: func(ctx context.Context, ranges []netip.Prefix, reserved []netip.Addr) ([]status.IPAM, error) {
			s, err := ipam.Open(ipam.Options{Dir: ipamDir, Ranges: ranges, Reserved: reserved, Log: log})
			if err != nil {
				return nil, err
			}
			use, err := s.Usage(ctx)
			if err != nil {
				return nil, err
			}
			out := make([]status.IPAM, len(use))
			for i, u := range use {
				out[i] = status.IPAM{Prefix: u.Prefix, Used: u.Used, Total: u.Total}
			}
			return out, nil
		},
	})
	if err != nil {
		return err
	}
	log.Info("weft-agent starting", "node", f.nodeName, "stateDir", f.stateDir, "runDir", f.runDir,
		"cniConfDir", f.cniConfDir, "http", f.httpAddr)
	return a.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (or pass -kubeconfig): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return c, nil
}
