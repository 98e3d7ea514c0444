package controller

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// fakeScopeCache is a scope's cache that hands on the context it is
// started with.
type fakeScopeCache struct {
	*informertest.FakeInformers
	started chan context.Context
}

func (f *fakeScopeCache) Start(ctx context.Context) error {
	f.started <- ctx
	return nil
}

// fakeScopedCaches returns started scoped caches whose caches are fakes,
// and every cache made, by scope, in order.
func fakeScopedCaches(t *testing.T) (*scopedCaches, map[scope][]*fakeScopeCache) {
	made := map[scope][]*fakeScopeCache{}
	s := &scopedCaches{
		log: slog.New(slog.DiscardHandler), started: make(chan struct{}),
		active: map[scope]*scopedCache{}, wanted: map[string]map[scope]bool{},
	}
	s.newCache = func(sc scope) (cache.Cache, error) {
		c := &fakeScopeCache{FakeInformers: &informertest.FakeInformers{}, started: make(chan context.Context, 1)}
		made[sc] = append(made[sc], c)
		return c, nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Start(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-s.started
	return s, made
}

// The scoped caches are those some source's last translation read: a
// scope is started when one first reads it and stopped when none does.
func TestScopedCachesFollowWhatTranslationsRead(t *testing.T) {
	secrets := scope{namespace: "a", kind: scopedSecrets}
	endpoints := scope{namespace: "b", kind: scopedEndpointSlices}
	type wanted struct {
		source string
		scopes []scope
	}
	for _, tc := range []struct {
		name  string
		wants []wanted
		// active are the scopes cached at the end; starts, how many
		// caches each scope had.
		active []string
		starts map[scope]int
	}{
		{
			name:   "a scope a translation reads is cached",
			wants:  []wanted{{"status", []scope{secrets}}},
			active: []string{"a/Secret"}, starts: map[scope]int{secrets: 1},
		},
		{
			name:   "nothing read, nothing cached",
			wants:  []wanted{{"status", nil}, {"config-stream", nil}},
			active: nil, starts: map[scope]int{},
		},
		{
			name:   "a scope stays cached while another source reads it",
			wants:  []wanted{{"status", []scope{secrets}}, {"config-stream", []scope{secrets}}, {"status", nil}},
			active: []string{"a/Secret"}, starts: map[scope]int{secrets: 1},
		},
		{
			name:   "a scope no source reads any more is stopped",
			wants:  []wanted{{"status", []scope{secrets}}, {"status", []scope{endpoints}}},
			active: []string{"b/EndpointSlice"}, starts: map[scope]int{secrets: 1, endpoints: 1},
		},
		{
			name:   "a scope read again after it stopped gets a new cache",
			wants:  []wanted{{"status", []scope{secrets}}, {"status", nil}, {"status", []scope{secrets}}},
			active: []string{"a/Secret"}, starts: map[scope]int{secrets: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, made := fakeScopedCaches(t)
			for _, w := range tc.wants {
				set := map[scope]bool{}
				for _, sc := range w.scopes {
					set[sc] = true
				}
				if err := s.want(t.Context(), w.source, set); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.scopes(); !slices.Equal(got, tc.active) {
				t.Errorf("cached %v, want %v", got, tc.active)
			}
			for sc, caches := range made {
				if len(caches) != tc.starts[sc] {
					t.Errorf("%s had %d caches, want %d", sc, len(caches), tc.starts[sc])
				}
				for i, c := range caches {
					last := i == len(caches)-1
					wantRunning := last && slices.Contains(tc.active, sc.String())
					ctx := <-c.started
					if running := ctx.Err() == nil; running != wantRunning {
						t.Errorf("cache %d of %s running = %v, want %v", i, sc, running, wantRunning)
					}
				}
			}
		})
	}
}

// The events of a scoped cache reach every controller's handler, that of
// a controller registered after the cache started too.
func TestScopedCachesDeliverEventsToEveryController(t *testing.T) {
	s, made := fakeScopedCaches(t)
	type queue = workqueue.TypedRateLimitingInterface[reconcile.Request]
	var created []string
	register := func(name string) {
		src := s.source(handler.Funcs{CreateFunc: func(_ context.Context, e event.CreateEvent, _ queue) {
			created = append(created, name+" "+e.Object.GetName())
		}})
		if err := src.Start(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
	}
	register("status")
	sc := scope{namespace: "a", kind: scopedSecrets}
	if err := s.want(t.Context(), "status", map[scope]bool{sc: true}); err != nil {
		t.Fatal(err)
	}
	register("config-stream")
	informer, err := made[sc][0].FakeInformerFor(t.Context(), &corev1.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	informer.Add(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "cert"}})
	if want := []string{"status cert", "config-stream cert"}; !slices.Equal(created, want) {
		t.Errorf("events handled: %v, want %v", created, want)
	}
}
