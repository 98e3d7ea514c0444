package translate

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/filter"
)

// PolicyMemory remembers the last valid policy of each MCPServer, by UID, so
// that an edit that cannot be applied (an authorization condition that does
// not compile, say) leaves the policy before it serving while the status
// says what to fix. It lives as long as the process: a controller that
// starts while an MCPServer is invalid has no policy of it to keep, and its
// routes answer 500 until it is fixed. It is safe for concurrent use; the
// translations of one process share one.
//
// It also remembers each MCPServer's admission outcome (see admit) for its
// generation: re-checking the CRD's CEL rules was most of a translation's
// cost, and the outcome changes only with the spec.
type PolicyMemory struct {
	mu         sync.Mutex
	policies   map[types.UID]rememberedPolicy
	admissions map[types.UID]admissionOutcome
}

// admissionOutcome is an MCPServer's admission outcome at one generation.
type admissionOutcome struct {
	generation int64
	err        error
}

type rememberedPolicy struct {
	generation int64
	policy     *filter.Policy
}

// NewPolicyMemory returns an empty memory.
func NewPolicyMemory() *PolicyMemory {
	return &PolicyMemory{policies: map[types.UID]rememberedPolicy{}, admissions: map[types.UID]admissionOutcome{}}
}

// admitted returns the admission outcome remembered for an MCPServer at
// generation.
func (m *PolicyMemory) admitted(uid types.UID, generation int64) (error, bool) {
	if m == nil || uid == "" || generation == 0 {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.admissions[uid]
	if !ok || a.generation != generation {
		return nil, false
	}
	return a.err, true
}

// rememberAdmission remembers an MCPServer's admission outcome at
// generation.
func (m *PolicyMemory) rememberAdmission(uid types.UID, generation int64, err error) {
	if m == nil || uid == "" || generation == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.admissions[uid] = admissionOutcome{generation, err}
}

func (m *PolicyMemory) remember(uid types.UID, generation int64, p *filter.Policy) {
	if m == nil || uid == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev, ok := m.policies[uid]; ok && prev.generation > generation {
		return // a translation of older objects, finishing late
	}
	m.policies[uid] = rememberedPolicy{generation, p.Clone()}
}

// last returns the last valid policy of an MCPServer and its generation.
func (m *PolicyMemory) last(uid types.UID) (*filter.Policy, int64, bool) {
	if m == nil || uid == "" {
		return nil, 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.policies[uid]
	if !ok {
		return nil, 0, false
	}
	return r.policy.Clone(), r.generation, true
}

// retain forgets the MCPServers whose UIDs are not in live.
func (m *PolicyMemory) retain(live map[types.UID]bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid := range m.policies {
		if !live[uid] {
			delete(m.policies, uid)
		}
	}
	for uid := range m.admissions {
		if !live[uid] {
			delete(m.admissions, uid)
		}
	}
}
