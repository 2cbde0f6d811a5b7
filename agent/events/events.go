// Package events records core/v1 Events about the objects weft-agent reports
// on (its Node, the weft-config ConfigMap) through a small Sink.
//
// Recording never blocks the caller: Event builds the involved object's
// reference and puts the Event on a bounded queue, dropping it (and counting
// the drop) when the queue is full. Run writes the queue to the Sink, one
// Event at a time:
//
//   - The Event goes to the involved object's namespace, or to "default" for
//     cluster-scoped objects such as Nodes. Its source is the Recorder's
//     component and host, which are also its reporting controller and
//     instance.
//   - The same object, type, reason and message again within the aggregation
//     window (10 minutes from the last occurrence) raises count and
//     lastTimestamp of the Event already written, with a JSON merge patch;
//     when that Event is gone (NotFound), a fresh one is created.
//   - Each involved object has a budget of writes (a burst of 25, then one per
//     5 minutes), so a flood of Events about one object cannot take the
//     client's shared rate limit from the agent's other calls. Events over
//     the budget are dropped and counted.
//   - A write that fails without an answer from the apiserver is retried
//     twice; one the apiserver refused is not.
//
// When Run's context ends, the Events still queued are abandoned.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// Sink writes Events (kube.Client is one).
type Sink interface {
	CreateEvent(ctx context.Context, namespace string, e *corev1.Event) (*corev1.Event, error)
	PatchEvent(ctx context.Context, namespace, name string, pt types.PatchType, data []byte) (*corev1.Event, error)
}

// Defaults of Options.
const (
	DefaultQueue        = 256
	DefaultWindow       = 10 * time.Minute
	DefaultBurst        = 25
	DefaultRefill       = 5 * time.Minute
	DefaultWriteTimeout = 10 * time.Second
	DefaultRetryDelay   = time.Second
)

// maxSeen bounds the Events remembered for aggregation and the objects'
// budgets; the oldest go first.
const maxSeen = 512

// tries is how often a write is attempted when the apiserver does not answer.
const tries = 3

// Options configure a Recorder. Zero values take the defaults above.
type Options struct {
	Sink Sink
	// Scheme resolves the kind and API version of typed objects whose
	// TypeMeta is empty (kube.Scheme()).
	Scheme    *runtime.Scheme
	Component string // source component, e.g. weft-agent
	Host      string // source host: the node name
	Log       *slog.Logger

	Queue        int           // Events waiting to be written
	Window       time.Duration // repeats within it patch the existing Event
	Burst        int           // writes per involved object before the budget applies
	Refill       time.Duration // one more write per involved object after this long
	WriteTimeout time.Duration // bound on one create or patch
	RetryDelay   time.Duration // before the first retry; doubled for the next
	Now          func() time.Time
}

// Recorder records Events; its methods are safe for concurrent use.
type Recorder struct {
	o       Options
	queue   chan item
	dropped atomic.Uint64

	// Run's state.
	seen    map[key]*written
	budgets map[objectKey]*budget
}

// item is one recorded Event waiting to be written.
type item struct {
	ref                  corev1.ObjectReference
	typ, reason, message string
	at                   time.Time
}

// objectKey identifies an involved object.
type objectKey struct {
	kind, apiVersion, namespace, name string
	uid                               types.UID
}

// key identifies repeats of one Event.
type key struct {
	object               objectKey
	typ, reason, message string
}

// written is an Event in the apiserver: its name, namespace and count, and
// when it last occurred.
type written struct {
	namespace, name string
	count           int32
	last            time.Time
}

// budget is one involved object's token bucket.
type budget struct {
	tokens float64
	at     time.Time
}

// orDefault sets *v to d unless it is positive.
func orDefault[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// New returns a Recorder writing to o.Sink once Run runs.
func New(o Options) *Recorder {
	orDefault(&o.Queue, DefaultQueue)
	orDefault(&o.Window, DefaultWindow)
	orDefault(&o.Burst, DefaultBurst)
	orDefault(&o.Refill, DefaultRefill)
	orDefault(&o.WriteTimeout, DefaultWriteTimeout)
	orDefault(&o.RetryDelay, DefaultRetryDelay)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{
		o: o, queue: make(chan item, o.Queue),
		seen: map[key]*written{}, budgets: map[objectKey]*budget{},
	}
}

// Event records an Event of eventtype (corev1.EventTypeNormal or
// EventTypeWarning) about obj: a *corev1.ObjectReference, or an object with
// ObjectMeta whose kind is in its TypeMeta or the Recorder's scheme. It never
// blocks; an Event it cannot queue is logged and dropped.
func (r *Recorder) Event(obj runtime.Object, eventtype, reason, message string) {
	if eventtype != corev1.EventTypeNormal && eventtype != corev1.EventTypeWarning {
		r.drop("event type must be Normal or Warning", "type", eventtype, "reason", reason)
		return
	}
	ref, err := Reference(r.o.Scheme, obj)
	if err != nil {
		r.drop(err.Error(), "reason", reason)
		return
	}
	select {
	case r.queue <- item{ref: ref, typ: eventtype, reason: reason, message: message, at: r.o.Now()}:
	default:
		r.drop("queue full", "object", ref.Name, "reason", reason)
	}
}

// Eventf is Event with a message formatted as by fmt.Sprintf.
func (r *Recorder) Eventf(obj runtime.Object, eventtype, reason, format string, args ...any) {
	r.Event(obj, eventtype, reason, fmt.Sprintf(format, args...))
}

// Dropped is the number of Events recorded but not written: queue full, over
// their object's budget, invalid, or failed.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

func (r *Recorder) drop(why string, args ...any) {
	n := r.dropped.Add(1)
	// The first drop and every 100th after it: a flood must not flood the log.
	if n%100 == 1 {
		r.o.Log.Warn("event not recorded", append([]any{"why", why, "dropped", n}, args...)...)
	}
}

// Run writes queued Events until ctx ends, then returns nil, abandoning those
// still queued.
func (r *Recorder) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-r.queue:
			r.write(ctx, it)
		}
	}
}

// write creates it as a new Event, or raises the count of its earlier
// occurrence.
func (r *Recorder) write(ctx context.Context, it item) {
	obj := objectKey{kind: it.ref.Kind, apiVersion: it.ref.APIVersion, namespace: it.ref.Namespace, name: it.ref.Name, uid: it.ref.UID}
	if !r.spend(obj, it.at) {
		r.drop("over the object's event budget", "object", it.ref.Name, "kind", it.ref.Kind, "reason", it.reason)
		return
	}
	k := key{object: obj, typ: it.typ, reason: it.reason, message: it.message}
	if w := r.seen[k]; w != nil && it.at.Sub(w.last) < r.o.Window {
		patch, err := json.Marshal(struct {
			Count         int32       `json:"count"`
			LastTimestamp metav1.Time `json:"lastTimestamp"`
		}{w.count + 1, metav1.NewTime(it.at)})
		if err != nil {
			r.drop(fmt.Sprintf("encode patch: %v", err), "event", w.name)
			return
		}
		err = r.try(ctx, func(ctx context.Context) error {
			_, err := r.o.Sink.PatchEvent(ctx, w.namespace, w.name, types.MergePatchType, patch)
			return err
		})
		switch {
		case err == nil:
			w.count++
			w.last = it.at
			return
		case !apierrors.IsNotFound(err):
			r.drop(fmt.Sprintf("patch event %s/%s: %v", w.namespace, w.name, err), "reason", it.reason)
			return
		}
		// The Event expired or was deleted: start a new one.
		delete(r.seen, k)
	}
	e := r.event(it)
	if err := r.try(ctx, func(ctx context.Context) error {
		_, err := r.o.Sink.CreateEvent(ctx, e.Namespace, e)
		return err
	}); err != nil {
		r.drop(fmt.Sprintf("create event %s/%s: %v", e.Namespace, e.Name, err), "reason", it.reason)
		return
	}
	r.remember(k, &written{namespace: e.Namespace, name: e.Name, count: 1, last: it.at})
}

// event is it as a new core/v1 Event.
func (r *Recorder) event(it item) *corev1.Event {
	ns := it.ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	t := metav1.NewTime(it.at)
	return &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", it.ref.Name, it.at.UnixNano()), Namespace: ns},
		InvolvedObject:      it.ref,
		Reason:              it.reason,
		Message:             it.message,
		Source:              corev1.EventSource{Component: r.o.Component, Host: r.o.Host},
		FirstTimestamp:      t,
		LastTimestamp:       t,
		Count:               1,
		Type:                it.typ,
		ReportingController: r.o.Component,
		ReportingInstance:   r.o.Host,
	}
}

// try runs write under the write timeout, retrying when the apiserver did
// not answer (no API status) while ctx lives.
func (r *Recorder) try(ctx context.Context, write func(context.Context) error) error {
	delay := r.o.RetryDelay
	for i := 1; ; i++ {
		wctx, cancel := context.WithTimeout(ctx, r.o.WriteTimeout)
		err := write(wctx)
		cancel()
		var status apierrors.APIStatus
		if err == nil || errors.As(err, &status) || i == tries || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay *= 2
	}
}

// spend takes one write from obj's budget at now, refilled by one per Refill
// up to Burst; false when none is left.
func (r *Recorder) spend(obj objectKey, now time.Time) bool {
	b := r.budgets[obj]
	if b == nil {
		if len(r.budgets) >= maxSeen {
			r.pruneBudgets(now)
		}
		b = &budget{tokens: float64(r.o.Burst), at: now}
		r.budgets[obj] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(r.o.Burst), b.tokens+float64(d)/float64(r.o.Refill))
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict makes room in m, which has reached maxSeen entries: it deletes the
// entries stale reports, then, if m is still full, the one whose time (at)
// is oldest.
func evict[K comparable, V any](m map[K]V, at func(V) time.Time, stale func(V) bool) {
	var oldest K
	var oldestAt time.Time
	for k, v := range m {
		if stale(v) {
			delete(m, k)
			continue
		}
		if t := at(v); oldestAt.IsZero() || t.Before(oldestAt) {
			oldest, oldestAt = k, t
		}
	}
	if len(m) >= maxSeen {
		delete(m, oldest)
	}
}

// pruneBudgets forgets the objects whose budget is full again, and when
// none is, the one used longest ago.
func (r *Recorder) pruneBudgets(now time.Time) {
	full := time.Duration(r.o.Burst) * r.o.Refill
	evict(r.budgets, func(b *budget) time.Time { return b.at }, func(b *budget) bool { return now.Sub(b.at) >= full })
}

// remember keeps w for aggregating repeats of k, forgetting Events past the
// window, and the oldest when too many are left.
func (r *Recorder) remember(k key, w *written) {
	if len(r.seen) >= maxSeen {
		evict(r.seen, func(sw *written) time.Time { return sw.last }, func(sw *written) bool { return w.last.Sub(sw.last) >= r.o.Window })
	}
	r.seen[k] = w
}

// Reference is the reference to obj in an Event: obj itself when it is a
// *corev1.ObjectReference; else its kind and API version (from its TypeMeta,
// else from scheme), name, namespace, UID and resource version.
func Reference(scheme *runtime.Scheme, obj runtime.Object) (corev1.ObjectReference, error) {
	if ref, ok := obj.(*corev1.ObjectReference); ok {
		if ref == nil {
			return corev1.ObjectReference{}, errors.New("event about a nil object reference")
		}
		return *ref, nil
	}
	if v := reflect.ValueOf(obj); !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return corev1.ObjectReference{}, fmt.Errorf("event about a nil object (%T)", obj)
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return corev1.ObjectReference{}, fmt.Errorf("event about a %T: %w", obj, err)
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Empty() {
		if scheme == nil {
			return corev1.ObjectReference{}, fmt.Errorf("event about a %T without kind, and no scheme to look it up", obj)
		}
		gvks, _, err := scheme.ObjectKinds(obj)
		if err != nil {
			return corev1.ObjectReference{}, fmt.Errorf("event about a %T: %w", obj, err)
		}
		gvk = gvks[0]
	}
	apiVersion, kind := gvk.ToAPIVersionAndKind()
	return corev1.ObjectReference{
		Kind: kind, APIVersion: apiVersion, Name: m.GetName(), Namespace: m.GetNamespace(),
		UID: m.GetUID(), ResourceVersion: m.GetResourceVersion(),
	}, nil
}
