// Package deploy holds the tests of weft's install path: the manifests in
// deploy/ (rendered file in sync with the kustomize base, structure, the
// agent's rights and the admission policies against a real apiserver in a
// lab namespace, DaemonSet flags accepted by the binaries), the kind
// configuration, and the container image archive `make image` writes.
//
// Tests that need root, the lab's Kubernetes binaries (`make k8s`), the weft
// binaries (`make build`) or the image archive (`make image`) skip with a
// message naming what is missing.
package deploy
