package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// childEnv carries a childSpec to a copy of the test binary started by
// startChild; TestMain then runs the child instead of the tests.
const childEnv = "WEFT_IPAM_TEST_CHILD"

// childSpec tells a child process what to do.
type childSpec struct {
	Dir    string
	Ranges []netip.Prefix
	Boot   string
	// Mode "loop": allocate owners Prefix-0, Prefix-1, … (Count of them, or
	// until killed when 0), printing "ok <cid> <addrs>" after each
	// Allocate returns, and release every ReleaseEvery-th one, printing
	// "del <cid>" before and "rel <cid>" after.
	// Mode "op": run Op once (see runOp).
	Mode         string
	Prefix       string
	Count        int
	ReleaseEvery int
	Op           string
	// CrashAt kills the child with SIGKILL at the CrashHit-th (0-based)
	// arrival at this step.
	CrashAt  string
	CrashHit int
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

func runChild(js string) int {
	var c childSpec
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	s, err := Open(Options{Dir: c.Dir, Ranges: c.Ranges, Reserved: gateways(c.Ranges), BootID: c.Boot})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if c.CrashAt != "" {
		hits := 0
		s.hook = func(p string) error {
			if p == c.CrashAt {
				if hits == c.CrashHit {
					unix.Kill(os.Getpid(), unix.SIGKILL)
					select {} // SIGKILL is not delivered synchronously
				}
				hits++
			}
			return nil
		}
	}
	ctx := context.Background()
	fmt.Println("ready")
	switch c.Mode {
	case "loop":
		for i := 0; c.Count == 0 || i < c.Count; i++ {
			o := Owner{ContainerID: fmt.Sprintf("%s-%d", c.Prefix, i), IfName: "eth0"}
			addrs, err := s.Allocate(ctx, o)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Printf("ok %s %s\n", o.ContainerID, strings.ReplaceAll(addrList(addrs), ", ", " "))
			if c.ReleaseEvery > 0 && i%c.ReleaseEvery == 0 {
				fmt.Printf("del %s\n", o.ContainerID)
				if err := s.Release(ctx, o); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				fmt.Printf("rel %s\n", o.ContainerID)
			}
		}
	case "op":
		if err := runOp(ctx, s, c.Op); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", c.Mode)
		return 2
	}
	if c.CrashAt != "" {
		fmt.Fprintf(os.Stderr, "crash point %s #%d never reached\n", c.CrashAt, c.CrashHit)
		return 3
	}
	return 0
}

// gateways reserves the first usable address of each range, as weft does.
func gateways(ranges []netip.Prefix) []netip.Addr {
	var gws []netip.Addr
	for _, p := range ranges {
		gws = append(gws, p.Addr().Next())
	}
	return gws
}
