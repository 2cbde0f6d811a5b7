// Command weft is the weft CNI plugin (see package weft.dev/weft/cni).
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"weft.dev/weft/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, cni.About)
}
