package provision

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RBAC of the Provisioner, for controller-gen. It applies (server-side
// apply creates objects, so create is needed beside patch) and deletes the
// data-plane objects, and it binds and keeps in shape the ClusterRole
// ClusterRoleName: bind and escalate on that one role let it do so without
// holding every permission of the role itself.
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterrolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,resourceNames=toolgate-proxy,verbs=bind;escalate

// ClusterRoleName is the ClusterRole every Gateway's proxies are bound to.
const ClusterRoleName = "toolgate-proxy"

// read is all the proxies may do: they only watch.
func read() []string { return []string{"get", "list", "watch"} }

// ClusterRole is the read-only access the proxies need to translate their
// Gateway: the Gateway API objects, MCPServers, and the core objects routes
// and listeners refer to.
func ClusterRole() *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   ClusterRoleName,
			Labels: map[string]string{LabelName: ProxyName, LabelManagedBy: ManagedBy},
		},
		Rules: []rbacv1.PolicyRule{
			{
				APIGroups: []string{"gateway.networking.k8s.io"},
				Resources: []string{"gatewayclasses", "gateways", "httproutes", "referencegrants"},
				Verbs:     read(),
			},
			{APIGroups: []string{"toolgate.dev"}, Resources: []string{"mcpservers"}, Verbs: read()},
			{
				APIGroups: []string{""},
				Resources: []string{"services", "secrets", "namespaces", "configmaps"},
				Verbs:     read(),
			},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read()},
		},
	}
}
