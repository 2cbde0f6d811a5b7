package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a daemon gets between SIGTERM and SIGKILL.
const stopGrace = 5 * time.Second

// daemon is one process of the control plane, run with `ip netns exec` in
// its own process group. Its pid (with the kernel's start time, so a reused
// pid is never mistaken for it) is kept in <Dir>/<name>.pid and its output
// in <Dir>/<name>.log.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // exit status, valid after done
}

func pidFile(dir, name string) string { return filepath.Join(dir, name+".pid") }
func logFile(dir, name string) string { return filepath.Join(dir, name+".log") }

// startDaemon starts bin with args inside netns, in its own process group.
func startDaemon(dir, netnsName, name, bin string, args ...string) (*daemon, error) {
	lf, err := os.OpenFile(logFile(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log for %s: %w", name, err)
	}
	// ip netns exec execs the binary in place, so the pid is the daemon's.
	cmd := exec.Command("ip", append([]string{"netns", "exec", netnsName, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		lf.Close()
		close(d.done)
	}()
	pid := cmd.Process.Pid
	st, err := startTime(pid)
	if err == nil {
		err = os.WriteFile(pidFile(dir, name), fmt.Appendf(nil, "%d %d\n", pid, st), 0o644)
	}
	if err != nil {
		d.stop(dir)
		return nil, fmt.Errorf("record pid of %s: %w", name, err)
	}
	return d, nil
}

// exited reports whether the process is gone.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop ends the process group (SIGTERM, then SIGKILL after stopGrace), waits
// for the process to be reaped and removes its pid file. Idempotent.
func (d *daemon) stop(dir string) {
	pgid := d.cmd.Process.Pid
	if !d.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(stopGrace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-d.done
		}
	}
	// Children left in the group (there should be none) go too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	_ = os.Remove(pidFile(dir, d.name))
}

// kill ends the process group at once with SIGKILL, as a crash would.
func (d *daemon) kill(dir string) {
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	_ = os.Remove(pidFile(dir, d.name))
}

// exitError describes how the daemon ended, with the tail of its log.
func (d *daemon) exitError(dir string) error {
	return fmt.Errorf("%s exited: %v\n%s", d.name, d.err, logTail(dir, d.name))
}

// logTail returns the last lines of a daemon's log, for error messages.
func logTail(dir, name string) string {
	const maxLines, maxBytes = 25, 8 << 10
	data, err := os.ReadFile(logFile(dir, name))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return "--- last lines of " + logFile(dir, name) + " ---\n" + strings.Join(lines, "\n")
}

// startTime is field 22 of /proc/<pid>/stat, the process start time in clock
// ticks since boot; with the pid it names one process for good.
func startTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it follow ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	const idx = 22 - 3 // fields[0] is field 3
	if len(fields) <= idx {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	return strconv.ParseUint(fields[idx], 10, 64)
}

// alive reports whether pid is still the process that started at st.
func alive(pid int, st uint64) bool {
	got, err := startTime(pid)
	return err == nil && got == st
}

// Cleanup kills every daemon recorded in a control-plane state dir (for
// example one left behind by a test binary that crashed) and removes dir. A
// pid whose start time no longer matches (the pid was reused) is left alone.
// A missing dir is not an error.
func Cleanup(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.pid"))
	if err != nil {
		return fmt.Errorf("list pid files in %s: %w", dir, err)
	}
	var errs []error
	for _, f := range files {
		if err := killRecorded(f); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

func killRecorded(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(string(data), "%d %d", &pid, &st); err != nil || pid <= 1 {
		return fmt.Errorf("parse %s: %q", file, data)
	}
	if !alive(pid, st) {
		return nil
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	// Not our child: poll until the kernel has reaped it (its parent may be
	// gone, then init reaps it) or it is a zombie waiting for a parent.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(stopGrace)
	for alive(pid, st) && !zombie(pid) {
		select {
		case <-tick.C:
		case <-deadline:
			return fmt.Errorf("pid %d from %s did not exit after SIGKILL", pid, file)
		}
	}
	return nil
}

// zombie reports whether pid has exited but not been reaped.
func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i >= 0 && len(data) > i+2 && data[i+2] == 'Z'
}
