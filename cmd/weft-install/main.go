// Command weft-install installs weft's CNI plugin binaries on a node. The
// weft-agent DaemonSet runs it as an init container with the node's
// /opt/cni/bin mounted:
//
//	weft-install --src=/usr/lib/weft/cni --dst=/host/opt/cni/bin --if-absent=loopback
//
// Every file of --src is copied into --dst atomically (temporary name, then
// rename); unchanged files are not rewritten; files named in --if-absent are
// installed only when --dst has none of that name. It prints one line per
// file and exits non-zero when any file failed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"weft.dev/weft/cmd/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("weft-install", flag.ContinueOnError)
	src := fs.String("src", "/usr/lib/weft/cni", "directory holding the plugin binaries to install")
	dst := fs.String("dst", "/host/opt/cni/bin", "the node's CNI binary directory, as mounted in this container")
	ifAbsent := fs.String("if-absent", "loopback", "comma-separated names installed only when --dst has no file of that name")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "weft-install: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *showVersion {
		fmt.Println("weft-install", version.String())
		return 0
	}
	var names []string
	for n := range strings.SplitSeq(*ifAbsent, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	res, err := install(*src, *dst, names)
	for _, r := range res {
		fmt.Printf("%s %s/%s\n", r.Action, *dst, r.Name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "weft-install: %v\n", err)
		return 1
	}
	return 0
}
