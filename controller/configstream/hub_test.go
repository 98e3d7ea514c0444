package configstream

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestVersionIsTheContentHash(t *testing.T) {
	// sha256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e...
	if got, want := Version([]byte("hello")), "2cf24dba5fb0a30e"; got != want {
		t.Errorf("Version = %q, want %q", got, want)
	}
}

func TestPublishingTheSamePayloadWakesNoOne(t *testing.T) {
	h := NewHub()
	v1 := h.Publish(gwA, []byte(`{"a":1}`))
	first, _ := h.current(gwA)

	if v := h.Publish(gwA, []byte(`{"a":1}`)); v != v1 {
		t.Errorf("the same payload got version %q, then %q", v1, v)
	}
	if again, _ := h.current(gwA); again != first || closed(first.changed) {
		t.Error("publishing the same payload replaced the snapshot or woke its waiters")
	}

	v2 := h.Publish(gwA, []byte(`{"a":2}`))
	if v2 == v1 {
		t.Errorf("two payloads share version %q", v1)
	}
	if !closed(first.changed) {
		t.Error("a new payload did not wake the waiters of the old one")
	}
	if now, _ := h.current(gwA); now.version != v2 || string(now.payload) != `{"a":2}` {
		t.Errorf("current = %s %q, want %s", now.version, now.payload, v2)
	}
}

func TestPublishKeepsItsOwnCopy(t *testing.T) {
	h := NewHub()
	payload := []byte(`{"a":1}`)
	h.Publish(gwA, payload)
	payload[2] = 'b'
	if s, _ := h.current(gwA); string(s.payload) != `{"a":1}` {
		t.Errorf("the caller changed the published payload to %q", s.payload)
	}
}

func TestGatewaysAreIndependent(t *testing.T) {
	h := NewHub()
	h.Publish(gwA, []byte("a"))
	h.Publish(gwB, []byte("b"))
	a, _ := h.current(gwA)
	h.Publish(gwB, []byte("b2"))
	if closed(a.changed) {
		t.Error("a change of Gateway B woke the waiters of Gateway A")
	}
}

func TestDeletedGatewaysAreForgottenAndTheirWaitersWoken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forget func(h *Hub)
	}{
		{"Retain keeps only A", func(h *Hub) { h.Retain(map[types.NamespacedName]bool{gwA: true}) }},
		{"Forget B", func(h *Hub) { h.Forget(gwB); h.Forget(gwB) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHub()
			h.Publish(gwA, []byte("a"))
			h.Publish(gwB, []byte("b"))
			a, _ := h.current(gwA)
			b, _ := h.current(gwB)

			tc.forget(h)
			if s, _ := h.current(gwB); s != nil {
				t.Error("Gateway B is still known")
			}
			if !closed(b.changed) {
				t.Error("the waiters of Gateway B were not woken")
			}
			if s, _ := h.current(gwA); s != a || closed(a.changed) {
				t.Error("Gateway A, kept, was changed")
			}
		})
	}
}

func TestMarkSynced(t *testing.T) {
	h := NewHub()
	if _, synced := h.current(gwA); synced {
		t.Error("a new Hub is synced")
	}
	h.MarkSynced()
	if _, synced := h.current(gwA); !synced {
		t.Error("MarkSynced did not mark the Hub synced")
	}
}
