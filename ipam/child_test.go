package ipam

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runOp runs one operation named in text: "alloc <id>", "release <id>",
// "gc <id>,<id>…" (the owners to keep), "check" or "usage".
func runOp(ctx context.Context, s *Store, op string) error {
	verb, arg, _ := strings.Cut(op, " ")
	switch verb {
	case "alloc":
		_, err := s.Allocate(ctx, eth0(arg))
		return err
	case "release":
		return s.Release(ctx, eth0(arg))
	case "gc":
		var keep []Owner
		for _, id := range strings.Split(arg, ",") {
			if id != "" {
				keep = append(keep, eth0(id))
			}
		}
		_, err := s.GC(ctx, keep)
		return err
	case "check":
		return s.Check(ctx)
	case "usage":
		_, err := s.Usage(ctx)
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

// child is a copy of the test binary running a childSpec (see TestMain).
type child struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ready  chan struct{}
	done   chan struct{} // closed when stdout is fully read
	mu     sync.Mutex
	lines  []string
}

func startChild(t testing.TB, spec childSpec) *child {
	t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := &child{ready: make(chan struct{}), done: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	c.cmd.Stderr = &c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cmd.Process.Kill(); c.wait() })
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(c.ready)
				continue
			}
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
		}
	}()
	return c
}

// wait reaps the child after its output is read; it returns its exit
// status error (nil for exit 0).
func (c *child) wait() error {
	<-c.done
	if c.cmd.ProcessState != nil {
		return nil
	}
	return c.cmd.Wait()
}

func (c *child) waitReady(t testing.TB) {
	t.Helper()
	select {
	case <-c.ready:
	case <-c.done:
		t.Fatalf("child exited before it was ready: %s", c.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("child not ready after 30s")
	}
}

// killed reports whether err is the exit of a process killed by SIGKILL.
func killed(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}
