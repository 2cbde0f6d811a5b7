package kube

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// request is what the test server saw of one request.
type request struct {
	Method, Path, Query, UserAgent, Accept, ContentType string
}

// recorder is an apiserver stand-in on loopback that answers every request
// with an empty JSON object and records it.
type recorder struct {
	mu   sync.Mutex
	seen []request
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.seen = append(r.seen, request{
		Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery, UserAgent: req.UserAgent(),
		Accept: req.Header.Get("Accept"), ContentType: req.Header.Get("Content-Type"),
	})
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

const (
	protoFirst = "application/vnd.kubernetes.protobuf,application/json"
	proto      = "application/vnd.kubernetes.protobuf"
)

// TestRequests checks the paths, queries, verbs and headers of every call:
// what a clientset's typed clients would send (protobuf preferred, the
// config's user agent).
func TestRequests(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c, err := New(&rest.Config{Host: srv.URL, UserAgent: "weft-agent/test", QPS: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: "weft.dev/pod-cidr-block=true"}
	name := metav1.ListOptions{FieldSelector: "metadata.name=weft-config"}
	le := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "weft-block-10-0-0-0-24", Namespace: "kube-system"}}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "n1.1", Namespace: "default"}}
	calls := []struct {
		name string
		call func() error
		want request
	}{
		{"list nodes", func() error { _, err := c.ListNodes(ctx, metav1.ListOptions{}); return err },
			request{Method: "GET", Path: "/api/v1/nodes", Accept: protoFirst}},
		{"get node", func() error { _, err := c.GetNode(ctx, "n1"); return err },
			request{Method: "GET", Path: "/api/v1/nodes/n1", Accept: protoFirst}},
		{"patch node status", func() error {
			_, err := c.PatchNodeStatus(ctx, "n1", types.StrategicMergePatchType, []byte("{}"), metav1.PatchOptions{})
			return err
		}, request{Method: "PATCH", Path: "/api/v1/nodes/n1/status", Accept: protoFirst, ContentType: "application/strategic-merge-patch+json"}},
		{"list configmaps by name", func() error { _, err := c.ListConfigMaps(ctx, "kube-system", name); return err },
			request{Method: "GET", Path: "/api/v1/namespaces/kube-system/configmaps", Query: "fieldSelector=metadata.name%3Dweft-config", Accept: protoFirst}},
		{"list services, all namespaces", func() error { _, err := c.ListServices(ctx, "", metav1.ListOptions{}); return err },
			request{Method: "GET", Path: "/api/v1/services", Accept: protoFirst}},
		{"list secrets", func() error { _, err := c.ListSecrets(ctx, "kube-system", name); return err },
			request{Method: "GET", Path: "/api/v1/namespaces/kube-system/secrets", Query: "fieldSelector=metadata.name%3Dweft-config", Accept: protoFirst}},
		{"list leases", func() error { _, err := c.ListLeases(ctx, "kube-system", sel); return err },
			request{Method: "GET", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Query: "labelSelector=weft.dev%2Fpod-cidr-block%3Dtrue", Accept: protoFirst}},
		{"get lease", func() error { _, err := c.GetLease(ctx, "kube-system", le.Name); return err },
			request{Method: "GET", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/" + le.Name, Accept: protoFirst}},
		{"create lease", func() error { _, err := c.CreateLease(ctx, "kube-system", le); return err },
			request{Method: "POST", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases", Accept: protoFirst, ContentType: proto}},
		{"update lease", func() error { _, err := c.UpdateLease(ctx, "kube-system", le); return err },
			request{Method: "PUT", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/" + le.Name, Accept: protoFirst, ContentType: proto}},
		{"delete lease", func() error { return c.DeleteLease(ctx, "kube-system", le.Name, metav1.DeleteOptions{}) },
			request{Method: "DELETE", Path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/" + le.Name, Accept: protoFirst, ContentType: proto}},
		{"create event", func() error { _, err := c.CreateEvent(ctx, "default", ev); return err },
			request{Method: "POST", Path: "/api/v1/namespaces/default/events", Accept: protoFirst, ContentType: proto}},
		{"patch event", func() error {
			_, err := c.PatchEvent(ctx, "default", ev.Name, types.MergePatchType, []byte("{}"))
			return err
		}, request{Method: "PATCH", Path: "/api/v1/namespaces/default/events/n1.1", Accept: protoFirst, ContentType: "application/merge-patch+json"}},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			rec.mu.Lock()
			rec.seen = nil
			rec.mu.Unlock()
			if err := tc.call(); err != nil {
				t.Fatal(err)
			}
			tc.want.UserAgent = "weft-agent/test"
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if diff := cmp.Diff([]request{tc.want}, rec.seen); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewDefaultsAndErrors(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c, err := New(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetNode(context.Background(), "n1"); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.seen[0].UserAgent, rest.DefaultKubernetesUserAgent(); got != want {
		t.Errorf("user agent without one configured = %q, want client-go's default %q", got, want)
	}

	for _, tc := range []struct {
		name    string
		cfg     rest.Config
		wantErr string
	}{
		{"qps without burst", rest.Config{Host: srv.URL, QPS: 5}, "burst 0 must be positive"},
		{"bad host", rest.Config{Host: "http://[::1"}, "kubernetes client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(&tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.wantErr)
			}
		})
	}
}
