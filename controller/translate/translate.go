// Package translate turns Kubernetes objects -- Gateway API resources
// (BackendTLSPolicies too), MCPServers, Services, EndpointSlices, Secrets
// and ConfigMaps -- into one gateway
// snapshot per Gateway, the MCP filter policies, and the status of every
// object. It is a pure function: it never talks to the API server, so the
// controller, the proxy and standalone mode all run the same code and the
// tests compare fixtures with golden files. Its snapshots are plain data
// (certificates as PEM, MCP policies inline): it builds no filter, the data
// plane does.
package translate

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/gateway"
)

// ControllerName is the GatewayClass controllerName toolgate serves.
const ControllerName gwv1.GatewayController = "toolgate.dev/gateway-controller"

// Resources are the translator's inputs.
type Resources struct {
	GatewayClasses  []*gwv1.GatewayClass
	Gateways        []*gwv1.Gateway
	HTTPRoutes      []*gwv1.HTTPRoute
	ReferenceGrants []*gwv1.ReferenceGrant
	MCPServers      []*v1alpha1.MCPServer
	Services        []*corev1.Service
	EndpointSlices  []*discoveryv1.EndpointSlice
	Secrets         []*corev1.Secret
	// ConfigMaps hold BackendTLSPolicies' CA certificates.
	ConfigMaps         []*corev1.ConfigMap
	BackendTLSPolicies []*gwv1.BackendTLSPolicy
	// ListenerSets add listeners to the Gateways that admit them.
	ListenerSets []*gwv1.ListenerSet
	// Namespaces are needed for allowedRoutes namespace selectors.
	Namespaces []*corev1.Namespace
	// DataPlanes is the observed state of each Gateway's data plane. A
	// Gateway without an entry is not Programmed.
	DataPlanes map[types.NamespacedName]DataPlane
	// StaticAddressPools are, per GatewayClass name, the networks whose
	// addresses its Gateways may claim in spec.addresses. A class without
	// an entry has none: no static address is usable (see addresses.go).
	StaticAddressPools map[string][]netip.Prefix
}

// DataPlane is what the controller observed of a Gateway's proxies.
type DataPlane struct {
	// Ready is true when at least one proxy replica is available.
	Ready bool
	// Message says why the data plane is not ready.
	Message string
	// Addresses are where the Gateway can be reached.
	Addresses []gwv1.GatewayStatusAddress
	// Replicas is the number of proxy replicas; SharedStore is true when
	// they share their buckets (Redis). Rate limits of an MCPServer used by
	// a Gateway with several replicas and no shared store cannot hold as
	// written: each replica would allow maxTokens on its own.
	Replicas    int32
	SharedStore bool
}

// Options tune a translation.
type Options struct {
	// ControllerName selects the GatewayClasses to serve; ControllerName
	// when empty.
	ControllerName gwv1.GatewayController
	// ListenAddress is the IP address listeners bind; empty binds all.
	ListenAddress string
	// Admission re-checks MCPServers against the CRD's rules. Optional.
	Admission *admission.Validator
	// LoopbackEndpoints lets backends live on the proxy's own loopback:
	// FQDN EndpointSlice addresses under "localhost" become 127.0.0.1 (RFC
	// 6761) and loopback IP addresses are kept. Standalone mode sets it,
	// its files being the operator's own. Off (proxy mode), such addresses
	// are left out, together with the other IP addresses the API server
	// refuses in IP EndpointSlices (unspecified, link-local), wherever they
	// are written: whoever can write an EndpointSlice must not reach the
	// proxy's admin port or other loopback services through a route.
	LoopbackEndpoints bool
	// Memory keeps each MCPServer's last valid policy serving while an
	// edit of it cannot be applied. Optional: without it an invalid
	// MCPServer serves nothing.
	Memory *PolicyMemory
	// RefuseExternalNames refuses Services of type ExternalName as
	// backends (ResolvedRefs=False, RefNotPermitted). By default they are
	// served: the proxy resolves the name when it connects (see
	// externalNameHost for the names that are always refused).
	RefuseExternalNames bool
}

// Result is the translator's output.
type Result struct {
	// Gateways holds one snapshot per accepted Gateway.
	Gateways map[types.NamespacedName]*gateway.Config
	// Policies holds the MCP filter policy of every MCPServer that has one
	// to serve: its own when it is valid, else its last valid one
	// (Options.Memory).
	Policies map[types.NamespacedName]*filter.Policy
	// Status holds the status of every input object the translator owns.
	Status Status
	// Dependencies are the Services, Secrets and ConfigMaps the
	// translation looked up.
	Dependencies Dependencies
	// ListenerSetListeners holds, per accepted Gateway, the listeners of
	// its ListenerSets that it serves: its data plane exposes their ports
	// besides its own listeners'.
	ListenerSetListeners map[types.NamespacedName][]gwv1.Listener
	// StaticAddresses holds, per accepted Gateway that was assigned
	// addresses of its spec.addresses, those addresses in canonical form:
	// its data-plane Service carries them as external IPs.
	StaticAddresses map[types.NamespacedName][]string
}

// Status is the status the translation computed. Conditions carry no
// LastTransitionTime: the status writer keeps the stored one when a
// condition did not change.
type Status struct {
	GatewayClasses map[string]*gwv1.GatewayClassStatus
	Gateways       map[types.NamespacedName]*gwv1.GatewayStatus
	// HTTPRoutes holds, per route, the parent statuses this controller
	// owns; other controllers' entries are left alone by the writer.
	HTTPRoutes map[types.NamespacedName][]gwv1.RouteParentStatus
	MCPServers map[types.NamespacedName]*v1alpha1.MCPServerStatus
	// BackendTLSPolicies holds, per policy, the ancestor statuses (one per
	// Gateway it applies under) this controller owns; a policy that
	// applies under none has no entry.
	BackendTLSPolicies map[types.NamespacedName][]gwv1.PolicyAncestorStatus
	// ListenerSets holds the status of every ListenerSet whose parentRef
	// is a Gateway of this controller.
	ListenerSets map[types.NamespacedName]*gwv1.ListenerSetStatus
}

// Translate computes snapshots, policies and status from res.
func Translate(res *Resources, opts Options) *Result {
	if opts.ControllerName == "" {
		opts.ControllerName = ControllerName
	}
	t := &translator{
		res:          res,
		opts:         opts,
		idx:          newIndex(res),
		usedBy:       map[types.NamespacedName][]types.NamespacedName{},
		listenerSets: map[types.NamespacedName]*listenerSetState{},
		claimed:      map[netip.Addr]types.NamespacedName{},
		out: &Result{
			Gateways:             map[types.NamespacedName]*gateway.Config{},
			Policies:             map[types.NamespacedName]*filter.Policy{},
			ListenerSetListeners: map[types.NamespacedName][]gwv1.Listener{},
			StaticAddresses:      map[types.NamespacedName][]string{},
			Status: Status{
				GatewayClasses: map[string]*gwv1.GatewayClassStatus{},
				Gateways:       map[types.NamespacedName]*gwv1.GatewayStatus{},
				HTTPRoutes:     map[types.NamespacedName][]gwv1.RouteParentStatus{},
				MCPServers:     map[types.NamespacedName]*v1alpha1.MCPServerStatus{},

				BackendTLSPolicies: map[types.NamespacedName][]gwv1.PolicyAncestorStatus{},
				ListenerSets:       map[types.NamespacedName]*gwv1.ListenerSetStatus{},
			},
		},
	}
	t.indexBackendTLSPolicies()
	t.translateMCPServers()
	t.translateGatewayClasses()
	gateways := t.translateGateways()
	t.translateHTTPRoutes(gateways)
	t.finishGateways(gateways)
	t.finishMCPServers()
	t.finishBackendTLSPolicies()
	t.out.Dependencies = Dependencies{
		Services: t.idx.services.wanted, Secrets: t.idx.secrets.wanted, ConfigMaps: t.idx.configMaps.wanted,
		AllServices: t.allServices,
	}
	return t.out
}

type translator struct {
	res  *Resources
	opts Options
	idx  *index
	out  *Result
	// valid are the MCPServers with a policy, oldest first.
	valid []*v1alpha1.MCPServer
	// usedBy lists, per MCPServer, the Gateways whose routes apply it.
	usedBy map[types.NamespacedName][]types.NamespacedName
	// tlsPolicies are the BackendTLSPolicies, resolved; tlsTargets lists
	// those of each target in order of precedence.
	tlsPolicies map[types.NamespacedName]*tlsPolicy
	tlsTargets  map[tlsTarget][]*tlsPolicy
	// listenerSets are the ListenerSets whose parentRef is one of this
	// controller's Gateways.
	listenerSets map[types.NamespacedName]*listenerSetState
	// claimed holds the static addresses assigned so far, by Gateway;
	// serviceIPs the addresses Services use (see otherServiceUsing).
	claimed    map[netip.Addr]types.NamespacedName
	serviceIPs map[netip.Addr][]serviceUse
	// allServices is set once serviceIPs has been built from every
	// Service (Dependencies.AllServices).
	allServices bool
}

// index finds input objects by name. Services (with their
// EndpointSlices), Secrets and ConfigMaps are found through lookups, which
// remember what was looked up: the translation's Dependencies.
type index struct {
	classes    map[string]*gwv1.GatewayClass
	mcpServers map[types.NamespacedName]*v1alpha1.MCPServer
	// mcpServersByService are the MCPServers by their Service, oldest
	// first.
	mcpServersByService map[types.NamespacedName][]*v1alpha1.MCPServer
	services            lookups[*corev1.Service]
	endpointSlices      map[types.NamespacedName][]*discoveryv1.EndpointSlice // by Service
	secrets             lookups[*corev1.Secret]
	configMaps          lookups[*corev1.ConfigMap]
	namespaces          map[string]*corev1.Namespace
}

// lookups is objects by name, and every name looked up, found or not.
type lookups[T any] struct {
	byName map[types.NamespacedName]T
	wanted map[types.NamespacedName]bool
}

func newLookups[T any]() lookups[T] {
	return lookups[T]{byName: map[types.NamespacedName]T{}, wanted: map[types.NamespacedName]bool{}}
}

// get finds the object named nn, and remembers that it was wanted.
func (l lookups[T]) get(nn types.NamespacedName) (T, bool) {
	l.wanted[nn] = true
	v, ok := l.byName[nn]
	return v, ok
}

// Dependencies name the Services, Secrets and ConfigMaps a translation
// looked up, whether they exist or not: a change to any other object of
// those kinds cannot change its outcome. A Service stands for its
// EndpointSlices too.
type Dependencies struct {
	Services, Secrets, ConfigMaps map[types.NamespacedName]bool
	// AllServices is set when any Service could change the outcome: a
	// Gateway asks for static addresses, which no other Service may use.
	AllServices bool
}

func newIndex(res *Resources) *index {
	idx := &index{
		classes:        map[string]*gwv1.GatewayClass{},
		mcpServers:     map[types.NamespacedName]*v1alpha1.MCPServer{},
		services:       newLookups[*corev1.Service](),
		endpointSlices: map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		secrets:        newLookups[*corev1.Secret](),
		configMaps:     newLookups[*corev1.ConfigMap](),
		namespaces:     map[string]*corev1.Namespace{},
	}
	for _, c := range res.GatewayClasses {
		idx.classes[c.Name] = c
	}
	idx.mcpServersByService = map[types.NamespacedName][]*v1alpha1.MCPServer{}
	for _, m := range sortedByAge(res.MCPServers) {
		idx.mcpServers[key(m)] = m
		svc := types.NamespacedName{Namespace: m.Namespace, Name: m.Spec.ServiceRef.Name}
		idx.mcpServersByService[svc] = append(idx.mcpServersByService[svc], m)
	}
	for _, s := range res.Services {
		idx.services.byName[key(s)] = s
	}
	for _, es := range res.EndpointSlices {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := types.NamespacedName{Namespace: es.Namespace, Name: svc}
		idx.endpointSlices[k] = append(idx.endpointSlices[k], es)
	}
	for _, s := range res.Secrets {
		idx.secrets.byName[key(s)] = s
	}
	for _, c := range res.ConfigMaps {
		idx.configMaps.byName[key(c)] = c
	}
	for _, n := range res.Namespaces {
		idx.namespaces[n.Name] = n
	}
	return idx
}

func key(o metav1.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
}

// sortedByAge orders objects oldest first, then by namespace/name, as the
// Gateway API orders conflicting routes and listeners.
func sortedByAge[T metav1.Object](objs []T) []T {
	out := slices.Clone(objs)
	slices.SortStableFunc(out, func(a, b T) int {
		if c := a.GetCreationTimestamp().Compare(b.GetCreationTimestamp().Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	return out
}

// condition builds a condition without LastTransitionTime.
func condition[S ~string, R ~string](typ S, ok bool, reason R, message string, generation int64) metav1.Condition {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(typ), Status: status, Reason: string(reason), Message: message, ObservedGeneration: generation}
}
