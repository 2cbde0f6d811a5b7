package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// certLifetime is long enough for any lab; the files die with the lab.
const certLifetime = 10 * 365 * 24 * time.Hour

// keyPair is a certificate with its key, both also PEM-encoded.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// certSpec describes one leaf certificate signed by the lab CA.
type certSpec struct {
	file   string // base name under pki/: <file>.crt and <file>.key
	cn     string
	orgs   []string
	usage  []x509.ExtKeyUsage
	ips    []netip.Addr
	dnsSAN []string
}

// pki is every credential the lab control plane uses.
type pki struct {
	ca        *keyPair
	apiserver *keyPair // serving
	admin     *keyPair // client, system:masters
	kcm       *keyPair // client, system:kube-controller-manager
	kcmServe  *keyPair // serving, 127.0.0.1
	sched     *keyPair // client, system:kube-scheduler
	kubelet   *keyPair // client of the kubelets' APIs, system:masters
	saKeyPEM  []byte   // service-account signing key (private)
	saPubPEM  []byte
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func encode(cert []byte, key crypto.Signer) (certPEM, keyPEM []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newCA(now time.Time) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("CA serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "weft-lab-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return finish(der, key)
}

func finish(der []byte, key crypto.Signer) (*keyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	certPEM, keyPEM, err := encode(der, key)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key, certPEM: certPEM, keyPEM: keyPEM}, nil
}

func (ca *keyPair) sign(now time.Time, s certSpec) (*keyPair, error) {
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", s.cn, err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("serial for %s: %w", s.cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  s.usage,
		DNSNames:     s.dnsSAN,
	}
	for _, ip := range s.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", s.cn, err)
	}
	return finish(der, key)
}

// newPKI makes the CA and every certificate and key the control plane needs.
// apiIPs are the apiserver's serving addresses (underlay address, loopback,
// first service IP of each family).
func newPKI(apiIPs []netip.Addr) (*pki, error) {
	now := time.Now()
	ca, err := newCA(now)
	if err != nil {
		return nil, err
	}
	p := &pki{ca: ca}
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, s := range []struct {
		dst  **keyPair
		spec certSpec
	}{
		{&p.apiserver, certSpec{cn: "kube-apiserver", usage: server, ips: apiIPs, dnsSAN: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		}}},
		{&p.admin, certSpec{cn: "weft-lab-admin", orgs: []string{"system:masters"}, usage: client}},
		{&p.kcm, certSpec{cn: "system:kube-controller-manager", usage: client}},
		{&p.sched, certSpec{cn: "system:kube-scheduler", usage: client}},
		{&p.kubelet, certSpec{cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, usage: client}},
		{&p.kcmServe, certSpec{cn: "kube-controller-manager", usage: server,
			ips: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, dnsSAN: []string{"localhost"}}},
	} {
		kp, err := ca.sign(now, s.spec)
		if err != nil {
			return nil, err
		}
		*s.dst = kp
	}
	sa, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(sa)
	if err != nil {
		return nil, fmt.Errorf("marshal service-account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}
	p.saKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER})
	p.saPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	return p, nil
}

// pkiFiles are the paths the daemons read, all under <Dir>/pki.
type pkiFiles struct {
	caCert, caKey             string
	apiCert, apiKey           string
	kcmServeCert, kcmServeKey string
	saKey, saPub              string
	kubeletClientCert         string
	kubeletClientKey          string
}

func (p *pki) write(dir string) (pkiFiles, error) {
	d := filepath.Join(dir, "pki")
	f := pkiFiles{
		caCert: filepath.Join(d, "ca.crt"), caKey: filepath.Join(d, "ca.key"),
		apiCert: filepath.Join(d, "apiserver.crt"), apiKey: filepath.Join(d, "apiserver.key"),
		kcmServeCert: filepath.Join(d, "controller-manager-serving.crt"),
		kcmServeKey:  filepath.Join(d, "controller-manager-serving.key"),
		saKey:        filepath.Join(d, "sa.key"), saPub: filepath.Join(d, "sa.pub"),
		kubeletClientCert: filepath.Join(d, "apiserver-kubelet-client.crt"),
		kubeletClientKey:  filepath.Join(d, "apiserver-kubelet-client.key"),
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return f, fmt.Errorf("create %s: %w", d, err)
	}
	for path, data := range map[string][]byte{
		f.caCert: p.ca.certPEM, f.caKey: p.ca.keyPEM,
		f.apiCert: p.apiserver.certPEM, f.apiKey: p.apiserver.keyPEM,
		f.kcmServeCert: p.kcmServe.certPEM, f.kcmServeKey: p.kcmServe.keyPEM,
		f.saKey: p.saKeyPEM, f.saPub: p.saPubPEM,
		f.kubeletClientCert: p.kubelet.certPEM, f.kubeletClientKey: p.kubelet.keyPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return f, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return f, nil
}
