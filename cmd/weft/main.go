// Command weft is the weft CNI plugin (see package weft.dev/weft/cni).
//
// The container runtime runs it with CNI_COMMAND set. Run by a person
// without it, `weft --version` prints the build; anything else prints what
// the plugin is and the CNI versions it speaks.
package main

import (
	"fmt"
	"os"

	"weft.dev/weft/cmd/internal/version"
	"weft.dev/weft/cni"
)

func main() {
	if os.Getenv("CNI_COMMAND") == "" && len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println("weft", version.String())
		return
	}
	cni.Main()
}
