package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// call is one write the fake sink saw.
type call struct {
	Verb, Namespace, Name string
	Reason, Message       string // create
	Count                 int32  // create
	Patch                 string // patch
}

// fakeSink keeps the Events created, answers a patch of a missing one with
// NotFound, and fails the next calls with errs (nil: no failure).
type fakeSink struct {
	mu     sync.Mutex
	calls  []call
	events map[string]*corev1.Event // namespace/name
	errs   []error
}

func newFakeSink() *fakeSink { return &fakeSink{events: map[string]*corev1.Event{}} }

func (s *fakeSink) fail() error {
	if len(s.errs) == 0 {
		return nil
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return err
}

func (s *fakeSink) CreateEvent(_ context.Context, ns string, e *corev1.Event) (*corev1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call{Verb: "create", Namespace: ns, Name: e.Name, Reason: e.Reason, Message: e.Message, Count: e.Count})
	if err := s.fail(); err != nil {
		return nil, err
	}
	if ns != e.Namespace {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("event namespace %q in %q", e.Namespace, ns))
	}
	s.events[ns+"/"+e.Name] = e.DeepCopy()
	return e, nil
}

func (s *fakeSink) PatchEvent(_ context.Context, ns, name string, pt types.PatchType, data []byte) (*corev1.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call{Verb: "patch " + string(pt), Namespace: ns, Name: name, Patch: string(data)})
	if err := s.fail(); err != nil {
		return nil, err
	}
	e, ok := s.events[ns+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "events"}, name)
	}
	return e, nil
}

func (s *fakeSink) deleteAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.events)
}

func (s *fakeSink) seen() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]call(nil), s.calls...)
}

// drain writes what is queued now, as Run would.
func (r *Recorder) drain(ctx context.Context) {
	for {
		select {
		case it := <-r.queue:
			r.write(ctx, it)
		default:
			return
		}
	}
}

var (
	t0   = time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	node = &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: "n1", UID: "uid-n1"}
	cm   = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "weft-config", Namespace: "kube-system", UID: "uid-cm", ResourceVersion: "7"}}
)

func newScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func name(obj string, at time.Duration) string {
	return fmt.Sprintf("%s.%x", obj, t0.Add(at).UnixNano())
}

func patch(count int, at time.Duration) string {
	return fmt.Sprintf(`{"count":%d,"lastTimestamp":%q}`, count, t0.Add(at).Format(time.RFC3339))
}

// step records one Event at t0+at, or (deleteAll) makes the apiserver lose
// every Event written so far, or (errs) fails the next writes.
type step struct {
	at                   time.Duration
	obj                  runtime.Object
	typ, reason, message string
	deleteAll            bool
	errs                 []error
}

func warn(at time.Duration, obj runtime.Object, reason, msg string) step {
	return step{at: at, obj: obj, typ: corev1.EventTypeWarning, reason: reason, message: msg}
}

func TestRecorder(t *testing.T) {
	down := "BGP session with 192.168.1.2 (peer) down (state active)"
	refused := apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "", errors.New("rbac"))
	for _, tc := range []struct {
		name        string
		o           Options
		steps       []step
		want        []call
		wantDropped uint64
	}{
		{
			name:  "a Node's Event goes to default",
			steps: []step{warn(0, node, "BGPSessionDown", down)},
			want:  []call{{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1}},
		},
		{
			name:  "a ConfigMap's Event goes to its namespace",
			steps: []step{warn(0, cm, "ConfigInvalid", "vxlan.vni: 0 out of range")},
			want: []call{{Verb: "create", Namespace: "kube-system", Name: name("weft-config", 0), Reason: "ConfigInvalid",
				Message: "vxlan.vni: 0 out of range", Count: 1}},
		},
		{
			name: "repeats within the window patch count and lastTimestamp",
			steps: []step{
				warn(0, node, "BGPSessionDown", down),
				warn(time.Minute, node, "BGPSessionDown", down),
				warn(10*time.Minute, node, "BGPSessionDown", down), // 9 minutes after the last
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", 0), Patch: patch(2, time.Minute)},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", 0), Patch: patch(3, 10*time.Minute)},
			},
		},
		{
			name: "a repeat after the window is a new Event",
			steps: []step{
				warn(0, node, "BGPSessionDown", down),
				warn(10*time.Minute, node, "BGPSessionDown", down),
				warn(11*time.Minute, node, "BGPSessionDown", down),
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 10*time.Minute), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", 10*time.Minute), Patch: patch(2, 11*time.Minute)},
			},
		},
		{
			name: "another message, type, reason or object is another Event",
			steps: []step{
				warn(0, node, "PeerPending", "peer a not programmed: no vtep"),
				warn(0, node, "PeerPending", "peer b not programmed: no vtep"),
				{at: 0, obj: node, typ: corev1.EventTypeNormal, reason: "PeerPending", message: "peer b not programmed: no vtep"},
				warn(0, node, "ConfigInvalid", "peer b not programmed: no vtep"),
				warn(0, &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: "n1", UID: "uid-new"}, "ConfigInvalid", "peer b not programmed: no vtep"),
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "PeerPending", Message: "peer a not programmed: no vtep", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "PeerPending", Message: "peer b not programmed: no vtep", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "PeerPending", Message: "peer b not programmed: no vtep", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "ConfigInvalid", Message: "peer b not programmed: no vtep", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "ConfigInvalid", Message: "peer b not programmed: no vtep", Count: 1},
			},
		},
		{
			name: "an aggregated Event gone from the apiserver is created afresh",
			steps: []step{
				warn(0, node, "BGPSessionDown", down),
				{deleteAll: true},
				warn(time.Minute, node, "BGPSessionDown", down),
				warn(2*time.Minute, node, "BGPSessionDown", down),
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", 0), Patch: patch(2, time.Minute)},
				{Verb: "create", Namespace: "default", Name: name("n1", time.Minute), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", time.Minute), Patch: patch(2, 2*time.Minute)},
			},
		},
		{
			name: "a failed patch is dropped and the next repeat counts from the last written",
			steps: []step{
				warn(0, node, "BGPSessionDown", down),
				{errs: []error{refused}},
				warn(time.Minute, node, "BGPSessionDown", down),
				warn(2*time.Minute, node, "BGPSessionDown", down),
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", 0), Patch: patch(2, time.Minute)},
				{Verb: "patch application/merge-patch+json", Namespace: "default", Name: name("n1", 0), Patch: patch(2, 2*time.Minute)},
			},
			wantDropped: 1,
		},
		{
			name: "each object's budget: a burst, then one per refill",
			o:    Options{Burst: 2, Refill: time.Minute},
			steps: []step{
				warn(0, node, "PeerPending", "a"),
				warn(0, node, "PeerPending", "b"),
				warn(0, node, "PeerPending", "c"),              // over
				warn(0, cm, "ConfigInvalid", "x"),              // another object's budget
				warn(30*time.Second, node, "PeerPending", "d"), // half a refill: over
				warn(90*time.Second, node, "PeerPending", "e"), // one more
				warn(90*time.Second, node, "PeerPending", "a"), // over, also as a repeat
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "PeerPending", Message: "a", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "PeerPending", Message: "b", Count: 1},
				{Verb: "create", Namespace: "kube-system", Name: name("weft-config", 0), Reason: "ConfigInvalid", Message: "x", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 90*time.Second), Reason: "PeerPending", Message: "e", Count: 1},
			},
			wantDropped: 3,
		},
		{
			name: "a refusal is not retried",
			steps: []step{
				{errs: []error{refused}},
				warn(0, node, "BGPSessionDown", down),
			},
			want:        []call{{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1}},
			wantDropped: 1,
		},
		{
			name: "no answer is retried twice",
			steps: []step{
				{errs: []error{errors.New("connection refused"), errors.New("connection refused")}},
				warn(0, node, "BGPSessionDown", down),
				{errs: []error{errors.New("timeout"), errors.New("timeout"), errors.New("timeout")}},
				warn(0, node, "BGPSessionUp", "up"),
			},
			want: []call{
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionDown", Message: down, Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionUp", Message: "up", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionUp", Message: "up", Count: 1},
				{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "BGPSessionUp", Message: "up", Count: 1},
			},
			wantDropped: 1,
		},
		{
			name: "invalid Events are dropped",
			steps: []step{
				{obj: node, typ: "Error", reason: "X", message: "bad type"},
				warn(0, nil, "X", "no object"),
				warn(0, (*corev1.ConfigMap)(nil), "X", "nil object"),
				warn(0, (*corev1.ObjectReference)(nil), "X", "nil reference"),
				warn(0, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "l"}}, "X", "kind not in the scheme"),
				warn(0, &metav1.Status{}, "X", "no object meta"),
				warn(0, node, "X", "valid"),
			},
			want:        []call{{Verb: "create", Namespace: "default", Name: name("n1", 0), Reason: "X", Message: "valid", Count: 1}},
			wantDropped: 6,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newFakeSink()
			now := t0
			o := tc.o
			o.Sink, o.Scheme, o.Component, o.Host = sink, newScheme(t), "weft-agent", "n1"
			o.Now = func() time.Time { return now }
			o.RetryDelay = time.Millisecond
			r := New(o)
			ctx := context.Background()
			for _, s := range tc.steps {
				switch {
				case s.deleteAll:
					r.drain(ctx)
					sink.deleteAll()
				case s.errs != nil:
					r.drain(ctx)
					sink.mu.Lock()
					sink.errs = s.errs
					sink.mu.Unlock()
				default:
					now = t0.Add(s.at)
					r.Event(s.obj, s.typ, s.reason, s.message)
				}
			}
			r.drain(ctx)
			if diff := cmp.Diff(tc.want, sink.seen()); diff != "" {
				t.Errorf("writes (-want +got):\n%s", diff)
			}
			if got := r.Dropped(); got != tc.wantDropped {
				t.Errorf("Dropped() = %d, want %d", got, tc.wantDropped)
			}
		})
	}
}

// TestEventObject checks the whole Event written, for a reference and for a
// typed object without TypeMeta.
func TestEventObject(t *testing.T) {
	ts := metav1.NewTime(t0)
	for _, tc := range []struct {
		name string
		obj  runtime.Object
		want corev1.Event
	}{
		{"node reference", node, corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: name("n1", 0), Namespace: "default"},
			InvolvedObject: *node,
			Reason:         "BGPSessionUp", Message: "up", Type: corev1.EventTypeNormal, Count: 1,
			Source:         corev1.EventSource{Component: "weft-agent", Host: "n1"},
			FirstTimestamp: ts, LastTimestamp: ts, ReportingController: "weft-agent", ReportingInstance: "n1",
		}},
		{"configmap", cm, corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: name("weft-config", 0), Namespace: "kube-system"},
			InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Name: "weft-config", Namespace: "kube-system",
				UID: "uid-cm", ResourceVersion: "7"},
			Reason: "BGPSessionUp", Message: "up", Type: corev1.EventTypeNormal, Count: 1,
			Source:         corev1.EventSource{Component: "weft-agent", Host: "n1"},
			FirstTimestamp: ts, LastTimestamp: ts, ReportingController: "weft-agent", ReportingInstance: "n1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newFakeSink()
			r := New(Options{Sink: sink, Scheme: newScheme(t), Component: "weft-agent", Host: "n1", Now: func() time.Time { return t0 }})
			r.Eventf(tc.obj, corev1.EventTypeNormal, "BGPSessionUp", "%s", "up")
			r.drain(context.Background())
			e := sink.events[tc.want.Namespace+"/"+tc.want.Name]
			if e == nil {
				t.Fatalf("no Event %s/%s written: %+v", tc.want.Namespace, tc.want.Name, sink.seen())
			}
			if diff := cmp.Diff(tc.want, *e); diff != "" {
				t.Errorf("Event (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReferenceWithoutScheme(t *testing.T) {
	typed := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: cm.ObjectMeta}
	ref, err := Reference(nil, typed)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Kind != "ConfigMap" || ref.APIVersion != "v1" || ref.Name != "weft-config" {
		t.Errorf("Reference(nil, ConfigMap with TypeMeta) = %+v", ref)
	}
	if _, err := Reference(nil, cm); err == nil {
		t.Errorf("Reference(nil, ConfigMap without TypeMeta) = nil error, want one: no scheme to find its kind")
	}
}

// blockingSink holds every write until release is closed.
type blockingSink struct {
	fakeSink
	release chan struct{}
}

func (s *blockingSink) CreateEvent(ctx context.Context, ns string, e *corev1.Event) (*corev1.Event, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.fakeSink.CreateEvent(ctx, ns, e)
}

// TestQueue checks that recording never waits for the apiserver: with the
// sink stuck, Events beyond the queue are dropped at once; Run writes the
// rest when the sink answers, and returns nil when its context ends.
func TestQueue(t *testing.T) {
	sink := &blockingSink{fakeSink: fakeSink{events: map[string]*corev1.Event{}}, release: make(chan struct{})}
	r := New(Options{Sink: sink, Queue: 3, Burst: 100, Scheme: newScheme(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	for i := range 10 {
		r.Eventf(node, corev1.EventTypeWarning, "PeerPending", "peer %d", i)
	}
	// Run holds one Event in its stuck write, the queue three: at least
	// six of the ten were dropped without waiting.
	if got := r.Dropped(); got < 6 {
		t.Errorf("Dropped() = %d with the sink stuck, want at least 6 of 10", got)
	}
	close(sink.release)
	wantWritten := 10 - int(r.Dropped())
	deadline := time.Now().Add(10 * time.Second)
	for len(sink.seen()) < wantWritten && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := len(sink.seen()); got != wantWritten {
		t.Errorf("%d Events written, want %d (10 recorded, %d dropped)", got, wantWritten, r.Dropped())
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil when its context ends", err)
	}
}

// TestEvict checks the bound on what the Recorder remembers: a full map
// loses its stale entries, and the oldest one when none is stale.
func TestEvict(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	full := func(staleEvery int) map[int]time.Time {
		m := map[int]time.Time{}
		for i := range maxSeen {
			at := t0.Add(time.Duration(i+1) * time.Second)
			if staleEvery > 0 && i%staleEvery == 0 {
				at = t0.Add(-time.Hour)
			}
			m[i] = at
		}
		m[maxSeen/2] = t0 // the oldest of the fresh ones
		return m
	}
	for _, tc := range []struct {
		name       string
		staleEvery int
		wantLen    int
		wantGone   []int
		wantKept   []int
	}{
		{name: "none stale: the oldest goes", wantLen: maxSeen - 1, wantGone: []int{maxSeen / 2}, wantKept: []int{1, maxSeen - 1}},
		{name: "stale ones go, the oldest fresh one stays", staleEvery: 2, wantLen: maxSeen/2 + 1, wantGone: []int{0, 2, maxSeen - 2},
			wantKept: []int{1, maxSeen / 2, maxSeen - 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := full(tc.staleEvery)
			evict(m, func(at time.Time) time.Time { return at }, func(at time.Time) bool { return at.Before(t0) })
			if len(m) != tc.wantLen {
				t.Errorf("%d entries left, want %d", len(m), tc.wantLen)
			}
			for _, k := range tc.wantGone {
				if _, ok := m[k]; ok {
					t.Errorf("entry %d kept, want it evicted", k)
				}
			}
			for _, k := range tc.wantKept {
				if _, ok := m[k]; !ok {
					t.Errorf("entry %d evicted, want it kept", k)
				}
			}
		})
	}
}
