package main

import (
	"debug/elf"
	"fmt"
	"io"
	"runtime"
)

// isStatic reports whether the ELF file r has no program interpreter.
func isStatic(r io.ReaderAt) (bool, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errNotELF, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// goArch is the image architecture: the one this builder (and the binaries
// it packs, built on the same machine) runs on.
func goArch() string { return runtime.GOARCH }
