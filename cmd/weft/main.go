// Command weft is the weft CNI plugin (see package weft.dev/weft/cni).
package main

import "weft.dev/weft/cni"

func main() {
	cni.Main()
}
