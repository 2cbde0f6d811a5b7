package cni

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// Main runs the plugin: it reads at most MaxStdin bytes of stdin (skel
// itself would read any amount), then hands the command to skel, which
// prints the result or a typed error on stdout.
func Main() {
	if cmd := os.Getenv("CNI_COMMAND"); cmd != "" && cmd != "VERSION" {
		data, err := readStdin(os.Stdin, MaxStdin)
		if err != nil {
			exitWith(err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			exitWith(internal("stdin pipe: %v", err))
		}
		// The pipe holds the checked bytes for skel; a writer goroutine,
		// as data may be larger than the pipe's buffer.
		go func() {
			_, _ = w.Write(data)
			w.Close()
		}()
		os.Stdin = r
	}
	skel.PluginMainFuncs(Funcs(), Versions, About)
}

func exitWith(err error) {
	te, ok := err.(*types.Error)
	if !ok {
		te = types.NewError(types.ErrInternal, err.Error(), "")
	}
	_ = te.Print()
	os.Exit(1)
}
