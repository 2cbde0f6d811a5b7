package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"weft.dev/weft/agent/config"
)

// config validate judges files with the agent's parser: the ConfigMap
// manifest, the bare document, a List and the rendered install manifest;
// every bad file is an error naming what is wrong, and nothing is "ok".
func TestConfigValidate(t *testing.T) {
	cases := []struct {
		file    string
		args    []string
		wantErr string // empty: valid
	}{
		{file: "testdata/configmap-good.yaml"},
		{file: "testdata/bare-good.yaml"},
		{file: "../../deploy/kubernetes/configmap.yaml"},
		{file: "../../deploy/weft.yaml"}, // every object of the install; the ConfigMap among them
		{file: "testdata/configmap-bad-vni.yaml", wantErr: `config field vxlan.vni="16777216": out of range 1..16777215`},
		{file: "testdata/configmap-no-key.yaml", wantErr: "config field data.config.yaml"},
		{file: "testdata/bare-typo.yaml", wantErr: `unknown field "vxlan.directRoutnig"`},
		{file: "testdata/bare-keepalive.yaml", wantErr: `config field bgp.peers[0].keepaliveTime="10s": longer than holdTime 9s`},
		{file: "testdata/list-other-name.yaml", wantErr: "no ConfigMap weft-config among the file's Kubernetes objects (ConfigMap weft-config-staging)"},
		{file: "testdata/list-other-name.yaml", args: []string{"-configmap", "weft-config-staging"}, wantErr: `config field resync="0s"`},
		{file: "../../deploy/kubernetes/rbac.yaml", wantErr: "no ConfigMap weft-config among"},
		{file: "testdata/no-such-file.yaml", wantErr: "no such file"},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.file)+strings.Join(c.args, ""), func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(append(append([]string{"config", "validate"}, c.args...), c.file), &out, &errOut)
			if c.wantErr == "" {
				if err != nil || out.String() != "ok\n" {
					t.Errorf("= %v, output %q; want ok", err, out.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error %v, want one containing %q", err, c.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), c.file+": ") {
				t.Errorf("error %q does not name the file", err)
			}
			if out.Len() > 0 {
				t.Errorf("printed %q for a bad file", out.String())
			}
		})
	}
}

// The validator's verdict is the agent's: every file gives the error (or
// the configuration) config.Parse gives for the document in it.
func TestConfigValidateIsTheAgentsParser(t *testing.T) {
	doc, err := os.ReadFile("testdata/bare-keepalive.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, perr := config.Parse(doc)
	if perr == nil {
		t.Fatal("the agent's parser accepts testdata/bare-keepalive.yaml; the test needs a bad file")
	}
	var out, errOut bytes.Buffer
	err = run([]string{"config", "validate", "-o", "json", "testdata/bare-keepalive.yaml"}, &out, &errOut)
	if err == nil || !strings.HasSuffix(err.Error(), perr.Error()) {
		t.Errorf("error %v, want the agent's %v", err, perr)
	}
	var v validation
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatalf("-o json printed %q: %v", out.String(), err)
	}
	if v.Valid || v.Error != perr.Error() || v.Source != "document" {
		t.Errorf("-o json = %+v, want invalid with the agent's error %q", v, perr)
	}

	// A good file: -o json carries what the agent would apply.
	out.Reset()
	if err := run([]string{"config", "validate", "testdata/configmap-good.yaml", "-o", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Valid || v.Source != "ConfigMap kube-system/weft-config key config.yaml" {
		t.Errorf("-o json = %+v", v)
	}
	c, err := config.Parse(v.Config) // JSON is YAML
	if err != nil {
		t.Fatalf("the printed config does not parse: %v\n%s", err, v.Config)
	}
	if c.Mode != config.BGP || c.BlockSizeV4 != 26 || c.Masquerade || c.BGP.ASN != 64513 || c.VXLAN.Port != config.DefaultVXLANPort {
		t.Errorf("printed config %+v is not the file's with defaults filled", c)
	}

	// wide: ok, then the configuration with its defaults.
	out.Reset()
	if err := run([]string{"config", "validate", "-o", "wide", "testdata/bare-good.yaml"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "ok\n# document, as the agent applies it:\n") || !strings.Contains(out.String(), "  vni: 1\n") {
		t.Errorf("-o wide:\n%s", out.String())
	}
}

func TestConfigValidateStdin(t *testing.T) {
	f, err := os.Open("testdata/configmap-bad-vni.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stdin
	os.Stdin = f
	t.Cleanup(func() { os.Stdin = old })
	var out, errOut bytes.Buffer
	err = run([]string{"config", "validate", "-"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "-: config field vxlan.vni") {
		t.Errorf("stdin: %v, want the vni error", err)
	}
	for _, args := range [][]string{{"config", "validate"}, {"config", "validate", "a", "b"}, {"config", "check", "a"}} {
		if err := run(args, &out, &errOut); err == nil {
			t.Errorf("weftctl %s: no error", strings.Join(args, " "))
		}
	}
}
