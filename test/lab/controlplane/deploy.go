package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
)

// deployKinds are the kinds ApplyDeploy applies: identity, rights, the
// admission policies that narrow those rights, and configuration. The lab
// runs the agent as a process, not as a DaemonSet, so workload objects in the
// same directory are skipped.
var deployKinds = []string{
	"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "Secret",
}

// AgentServiceAccount is the ServiceAccount the weft agent runs as.
var AgentServiceAccount = types.NamespacedName{Namespace: "kube-system", Name: "weft-agent"}

// fieldManager names the lab in server-side apply.
const fieldManager = "weft-lab"

// ApplyDeploy server-side applies the objects of the kinds in deployKinds
// (RBAC, admission policies, ConfigMap, Secret) of every *.yaml file in dir
// (not its subdirectories), in file order. kustomization.yaml and objects of
// other kinds (the DaemonSet) are skipped. It returns an error naming the
// file and object that failed.
func (cp *ControlPlane) ApplyDeploy(ctx context.Context, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return fmt.Errorf("list manifests in %s: %w", dir, err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
	if len(files) == 0 {
		return fmt.Errorf("apply deploy: no *.yaml files in %s", dir)
	}
	var objs []*unstructured.Unstructured
	var where []string
	for _, f := range files {
		got, err := readManifests(f)
		if err != nil {
			return err
		}
		for _, o := range got {
			if !slices.Contains(deployKinds, o.GetKind()) {
				cp.log.Debug("apply deploy: skip", "file", f, "kind", o.GetKind(), "name", o.GetName())
				continue
			}
			objs = append(objs, o)
			where = append(where, f)
		}
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cp.client.Discovery()))
	for i, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("apply %s %s from %s: %w", gvk.Kind, o.GetName(), where[i], err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ns := o.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("apply %s %s/%s from %s: %w", gvk.Kind, o.GetNamespace(), o.GetName(), where[i], err)
		}
		cp.log.Debug("applied", "kind", gvk.Kind, "namespace", o.GetNamespace(), "name", o.GetName())
	}
	return nil
}

// readManifests decodes every non-empty YAML document of file.
func readManifests(file string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	defer f.Close()
	dec := yaml.NewYAMLOrJSONDecoder(f, 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decode document %d of %s: %w", i, file, err)
		}
		if len(m) == 0 {
			continue
		}
		o := &unstructured.Unstructured{Object: m}
		if o.GetKind() == "" || o.GetAPIVersion() == "" || o.GetName() == "" {
			return nil, fmt.Errorf("decode document %d of %s: want apiVersion, kind and metadata.name", i, file)
		}
		objs = append(objs, o)
	}
}

// AgentKubeconfig mints a token for the ServiceAccount kube-system/weft-agent
// bound to the Node nodeName (see AgentToken) and writes a kubeconfig to
// path: server https://<Addr>:6443, the lab CA and the token. An agent using
// it has exactly the rights the applied manifests grant to an agent on that
// node. ApplyDeploy must have created the ServiceAccount and RegisterNode the
// Node.
func (cp *ControlPlane) AgentKubeconfig(ctx context.Context, nodeName, path string) error {
	token, err := cp.AgentToken(ctx, nodeName)
	if err != nil {
		return fmt.Errorf("agent kubeconfig: %w", err)
	}
	return writeKubeconfig(path, cp.server, cp.pki.ca.certPEM, "weft-agent@"+nodeName, credential{token: token})
}

// AgentToken mints a token for kube-system/weft-agent through the
// TokenRequest API, valid for MaxTokenExpiration and bound to the Node
// nodeName, as the kubelet binds a DaemonSet pod's projected token: the
// apiserver adds the node's name to the user's extra info
// (authentication.kubernetes.io/node-name), which the admission policies
// use to let an agent change only its own Node. Deleting the Node revokes
// the token; a node registered again needs a new one.
func (cp *ControlPlane) AgentToken(ctx context.Context, nodeName string) (string, error) {
	node, err := cp.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("token for node %q: get node (register it first): %w", nodeName, err)
	}
	sa := AgentServiceAccount
	tr, err := cp.client.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To(int64(MaxTokenExpiration.Seconds())),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			},
		}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for serviceaccount %s on node %s: %w", sa, nodeName, err)
	}
	return tr.Status.Token, nil
}
