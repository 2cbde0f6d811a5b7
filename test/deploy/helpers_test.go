package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"

	"weft.dev/weft/test/lab/controlplane/cptest"
)

// repoRoot is the repository root (two levels above this package).
func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(wd, "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// kubectl returns the lab's kubectl or skips.
func kubectl(t *testing.T) string {
	t.Helper()
	p := filepath.Join(cptest.BinDir(t), "kubectl")
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Skipf("skipped: %s missing; build it with `make k8s`", p)
	}
	return p
}

// weftBin returns bin/<name> (or $WEFT_BIN/<name>) or skips.
func weftBin(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("WEFT_BIN")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "bin")
	}
	p := filepath.Join(dir, name)
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Skipf("skipped: %s missing; build it with `make build`", p)
	}
	return p
}

// decodeAll decodes every non-empty YAML document of data.
func decodeAll(t *testing.T, what string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("%s: document %d: %v", what, i, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

func readObjects(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, file, b)
}

// find returns the one object of kind and name in objs.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var got []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			got = append(got, o)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d objects %s %s, want 1", len(got), kind, name)
	}
	return got[0]
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	v := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return v
}

// weftYAML reads deploy/weft.yaml.
func weftYAML(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	return readObjects(t, filepath.Join(repoRoot(t), "deploy", "weft.yaml"))
}

func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	return convert[appsv1.DaemonSet](t, find(t, weftYAML(t), "DaemonSet", "weft-agent"))
}

func configMap(t *testing.T, objs []*unstructured.Unstructured) *corev1.ConfigMap {
	t.Helper()
	return convert[corev1.ConfigMap](t, find(t, objs, "ConfigMap", "weft-config"))
}

// kustomize renders dir with the lab's kubectl.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := exec.Command(kubectl(t), "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	return out
}

// stripComments drops the leading comment lines of a rendered file.
func stripComments(b []byte) []byte {
	var out []string
	lines := strings.SplitAfter(string(b), "\n")
	i := 0
	for i < len(lines) && strings.HasPrefix(lines[i], "#") {
		i++
	}
	out = append(out, lines[i:]...)
	return []byte(strings.Join(out, ""))
}
