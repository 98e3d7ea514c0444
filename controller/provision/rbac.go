package provision

// RBAC of the Provisioner, for controller-gen. It applies (server-side
// apply creates objects, so create is needed beside patch) the namespaced
// data-plane objects, and creates and re-issues the Secrets the proxies
// read through the kubelet. The proxies themselves get no role at all: the
// controller pushes them their configuration, so they never call the
// Kubernetes API.
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;create;update;patch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts,verbs=get;list;watch;create;update;patch;delete
