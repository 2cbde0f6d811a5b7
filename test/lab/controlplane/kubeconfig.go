package controlplane

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// credential is what a kubeconfig user carries: a client certificate or a
// bearer token.
type credential struct {
	certPEM, keyPEM []byte
	token           string
}

// writeKubeconfig writes a one-context kubeconfig for server, trusting caPEM,
// with mode 0600 (it holds a key or token). The file is written to a temp
// name and renamed, so a reader never sees half of it.
func writeKubeconfig(path, server string, caPEM []byte, user string, c credential) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weft-lab"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{
		ClientCertificateData: c.certPEM,
		ClientKeyData:         c.keyPEM,
		Token:                 c.token,
	}
	cfg.Contexts[user+"@weft-lab"] = &clientcmdapi.Context{Cluster: "weft-lab", AuthInfo: user}
	cfg.CurrentContext = user + "@weft-lab"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory for kubeconfig %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}
