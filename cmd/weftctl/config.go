package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"

	"weft.dev/weft/agent/config"
)

// maxConfigFile bounds what config validate reads: a weft-config document
// is a few KiB; a rendered install manifest some tens.
const maxConfigFile = 8 << 20

// validation is config validate's result, as -o json and -o yaml print it.
type validation struct {
	File string `json:"file"`
	// Source is where the document came from: "ConfigMap <ns>/<name> key
	// config.yaml", or "document" for a bare config.
	Source string `json:"source,omitempty"`
	Valid  bool   `json:"valid"`
	Error  string `json:"error,omitempty"`
	// Config is the configuration the agent would apply, every default
	// filled in (the document as config.Config.Marshal renders it).
	Config json.RawMessage `json:"config,omitempty"`
}

// validate checks file (- for stdin) with the agent's parser, config.Parse,
// and prints ok or the agent's error. The error is also returned, so
// weftctl exits non-zero.
func validate(stdout io.Writer, f format, file, configMap string) error {
	v := validation{File: file}
	data, err := readConfigFile(file)
	var c config.Config
	if err == nil {
		var doc []byte
		if doc, v.Source, err = configDocument(data, configMap); err == nil {
			c, err = config.Parse(doc)
		}
	}
	if err == nil {
		var y []byte
		if y, err = c.Marshal(); err == nil {
			var js []byte
			if js, err = yaml.YAMLToJSON(y); err == nil {
				v.Valid, v.Config = true, js
			}
		}
	}
	if err != nil {
		v.Error = err.Error()
	}
	perr := emit(stdout, f, v, func(wide bool) error {
		if !v.Valid {
			return nil // the error goes to stderr
		}
		if _, err := fmt.Fprintln(stdout, "ok"); err != nil || !wide {
			return err
		}
		// wide: what the agent would apply, every default filled in.
		y, err := yaml.JSONToYAML(v.Config)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "# %s, as the agent applies it:\n%s", v.Source, y)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return perr
}

func readConfigFile(file string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if file != "-" {
		fh, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		r = fh
	}
	data, err := io.ReadAll(io.LimitReader(r, maxConfigFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigFile {
		return nil, fmt.Errorf("larger than %d bytes: not a weft configuration", maxConfigFile)
	}
	return data, nil
}

// object is what configDocument reads of a Kubernetes object.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data  map[string]string `yaml:"data"`
	Items []yamlv3.Node     `yaml:"items"` // kind: List (kubectl get -o yaml)
}

// configDocument returns the weft configuration document in data, which is
// either the bare document (what the ConfigMap's config.yaml holds) or
// Kubernetes objects (a ConfigMap manifest, a List, or a multi-document
// install manifest such as deploy/weft.yaml) among which the ConfigMap
// named configMap holds it under config.Key. A bare document is returned
// whole, so config.Parse judges all of it (a second document is an error).
func configDocument(data []byte, configMap string) (doc []byte, source string, err error) {
	var objs []object
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	for {
		var n yamlv3.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			// Not YAML at all: the agent's parser says what is wrong.
			return data, "document", nil
		}
		var o object
		if !isObject(&n) || n.Decode(&o) != nil {
			return data, "document", nil
		}
		objs = append(objs, o)
		for i := range o.Items {
			var item object
			if isObject(&o.Items[i]) && o.Items[i].Decode(&item) == nil {
				objs = append(objs, item)
			}
		}
	}
	if len(objs) == 0 {
		return data, "document", nil
	}
	var kinds []string
	for _, o := range objs {
		if o.Kind == "List" {
			continue // its items follow it in objs
		}
		if o.Kind != "ConfigMap" || o.Metadata.Name != configMap {
			kinds = append(kinds, o.Kind+" "+o.Metadata.Name)
			continue
		}
		source = fmt.Sprintf("ConfigMap %s/%s key %s", orDefault(o.Metadata.Namespace, "(no namespace)"), o.Metadata.Name, config.Key)
		s, ok := o.Data[config.Key]
		if !ok {
			// The agent's own error for this ConfigMap.
			return nil, source, &config.FieldError{Field: "data." + config.Key, Reason: "missing key in configmap " + o.Metadata.Name}
		}
		return []byte(s), source, nil
	}
	if len(kinds) > 8 {
		kinds = append(kinds[:8], fmt.Sprintf("and %d more", len(kinds)-8))
	}
	return nil, "", fmt.Errorf("no ConfigMap %s among the file's Kubernetes objects (%s)", configMap, strings.Join(kinds, ", "))
}

// isObject reports whether a YAML document is a Kubernetes object: a
// mapping with apiVersion and kind, keys the weft configuration never has.
func isObject(n *yamlv3.Node) bool {
	if n.Kind == yamlv3.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yamlv3.MappingNode {
		return false
	}
	has := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		has[n.Content[i].Value] = true
	}
	return has["apiVersion"] && has["kind"]
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
