package bgpmode

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"weft.dev/weft/agent/config"
)

func TestResolvePasswords(t *testing.T) {
	mesh := config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "mesh"}
	tor := config.SecretKeyRef{Name: "weft-bgp-passwords", Key: "tor1"}
	cfg := config.BGPConfig{NodeMeshPasswordSecretRef: &mesh,
		Peers: []config.BGPPeer{{PasswordSecretRef: &tor}, {}}}
	secrets := map[string]map[string][]byte{"weft-bgp-passwords": {"mesh": []byte("m3sh"), "tor1": []byte("t0r")}}
	get := func(name string) (map[string][]byte, error) {
		if d, ok := secrets[name]; ok {
			return d, nil
		}
		return nil, errors.New("not found")
	}
	got, err := ResolvePasswords(cfg, get)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[config.SecretKeyRef]string{mesh: "m3sh", tor: "t0r"}, got); diff != "" {
		t.Errorf("passwords (-want +got):\n%s", diff)
	}
	delete(secrets["weft-bgp-passwords"], "mesh")
	_, err = ResolvePasswords(cfg, get)
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Field != "bgp.nodeMeshPasswordSecretRef" {
		t.Errorf("without the mesh key: err %v, want a FieldError on bgp.nodeMeshPasswordSecretRef", err)
	}
}
