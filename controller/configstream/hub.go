package configstream

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Hub holds the latest payload of every Gateway, in memory, and wakes the
// requests waiting for a Gateway when its payload changes.
type Hub struct {
	mu       sync.Mutex
	synced   bool
	gateways map[types.NamespacedName]*snapshot
}

// snapshot is one published payload. It is never modified: a new payload
// replaces the snapshot and closes the old one's changed channel, which
// wakes every request waiting on it without a goroutine or a list of
// waiters.
type snapshot struct {
	version string
	payload []byte
	changed chan struct{}
}

// NewHub returns an empty Hub.
func NewHub() *Hub {
	return &Hub{gateways: map[types.NamespacedName]*snapshot{}}
}

// Version returns the version of payload: the first 16 hex digits of its
// SHA-256. It depends on the bytes only, so every controller replica gives
// the same payload the same version, and a proxy moving between replicas
// is not sent what it holds already.
func Version(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:8])
}

// Publish stores gw's latest payload and returns its version. Publishing a
// payload equal to the current one changes nothing and wakes no one. The
// Hub keeps its own copy of payload.
func (h *Hub) Publish(gw types.NamespacedName, payload []byte) string {
	version := Version(payload)
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.gateways[gw]
	// Compare the bytes too: equal versions of different payloads are
	// unlikely enough not to matter, but cheap to rule out here.
	if old != nil && old.version == version && bytes.Equal(old.payload, payload) {
		return version
	}
	h.gateways[gw] = &snapshot{version: version, payload: bytes.Clone(payload), changed: make(chan struct{})}
	if old != nil {
		close(old.changed)
	}
	return version
}

// Retain forgets every Gateway not in keep (a deleted Gateway); the
// requests waiting for one are woken and answered Not Found.
func (h *Hub) Retain(keep map[types.NamespacedName]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for gw, s := range h.gateways {
		if !keep[gw] {
			delete(h.gateways, gw)
			close(s.changed)
		}
	}
}

// Forget forgets gw (a deleted Gateway, or one no longer of this
// controller), as Retain does those it does not keep.
func (h *Hub) Forget(gw types.NamespacedName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.gateways[gw]; ok {
		delete(h.gateways, gw)
		close(s.changed)
	}
}

// MarkSynced says the first full translation was published. Before it, a
// Gateway the Hub does not know may simply not be translated yet, and is
// answered 503 (try again); after it, 404.
func (h *Hub) MarkSynced() {
	h.mu.Lock()
	h.synced = true
	h.mu.Unlock()
}

// current returns gw's snapshot, nil when the Hub does not know gw, and
// whether the Hub is synced.
func (h *Hub) current(gw types.NamespacedName) (*snapshot, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gateways[gw], h.synced
}
