//go:build e2e

package e2e

import "syscall"

type syscallStat = syscall.Stat_t

func stat(path string, st *syscallStat) error { return syscall.Stat(path, st) }
