package provision

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The proxy's process.
const (
	// AdminPort serves /healthz, /readyz and /metrics in every proxy; it is
	// not exposed by the Service.
	AdminPort int32 = 9901
	// SessionKeyEnv carries the key that authenticates MCP session ids,
	// shared by every replica of a Gateway, into the proxy (base64).
	SessionKeyEnv = "TOOLGATE_SESSION_KEY"
	// SessionKeySecretKey is the key of the session-key Secret's data.
	SessionKeySecretKey = "sessionKey"
	// RedisPasswordEnv carries the Redis password into the proxy.
	RedisPasswordEnv = "TOOLGATE_REDIS_PASSWORD"
	// ContainerName is the name of the proxy container.
	ContainerName = "proxy"
	// proxyUser is the unprivileged user the proxy runs as (distroless's
	// nonroot).
	proxyUser int64 = 65532
)

// gatewayKind identifies the owner of the namespaced objects.
var gatewayKind = schema.GroupVersion(gwv1.GroupVersion).WithKind("Gateway")

// objectMeta is the metadata shared by the namespaced objects of gw's data
// plane: names, labels, the Gateway annotation, and the Gateway as the
// controlling owner, so that deleting it deletes them.
func objectMeta(gw *gwv1.Gateway, n ResourceNames) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            n.Name,
		Namespace:       gw.Namespace,
		Labels:          maps.Clone(n.Labels),
		Annotations:     map[string]string{AnnotationGateway: n.Gateway.String()},
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(gw, gatewayKind)},
	}
}

// ServiceAccount is the identity of gw's proxies.
func ServiceAccount(gw *gwv1.Gateway) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: objectMeta(gw, Names(gw)),
	}
}

// listenerPort is one distinct port of a Gateway's listeners.
type listenerPort struct {
	name string
	port int32
}

// listenerPorts returns the distinct ports of gw's listeners in increasing
// order, each named after the protocol of the first listener on it:
// <protocol>-<port>, or port-<port> when the protocol makes no valid port
// name.
func listenerPorts(gw *gwv1.Gateway) []listenerPort {
	seen := map[int32]bool{}
	var out []listenerPort
	for _, l := range gw.Spec.Listeners {
		if seen[l.Port] {
			continue
		}
		seen[l.Port] = true
		port := strconv.Itoa(int(l.Port))
		name := strings.ToLower(string(l.Protocol)) + "-" + port
		if len(validation.IsValidPortName(name)) > 0 {
			name = "port-" + port
		}
		out = append(out, listenerPort{name: name, port: l.Port})
	}
	slices.SortFunc(out, func(a, b listenerPort) int { return cmp.Compare(a.port, b.port) })
	return out
}

// Deployment runs gw's proxies: `toolgate proxy --gateway NAMESPACE/NAME`,
// with the Redis of p (--redis-url, or --redis-addrs and --redis-master-name)
// and its password, unprivileged and with a read-only root file system. The
// proxy binds the listener ports itself; the pod lets an unprivileged
// process bind ports below 1024 through the namespaced sysctl
// net.ipv4.ip_unprivileged_port_start, which Kubernetes counts as safe,
// rather than granting NET_BIND_SERVICE.
func Deployment(gw *gwv1.Gateway, p Params) *appsv1.Deployment {
	p = p.WithDefaults()
	n := Names(gw)

	args := []string{"proxy", "--gateway", n.Gateway.String()}
	if p.RedisURL != "" {
		args = append(args, "--redis-url", p.RedisURL)
	}
	if len(p.RedisAddrs) > 0 {
		args = append(args, "--redis-addrs", strings.Join(p.RedisAddrs, ","))
	}
	if p.RedisMasterName != "" {
		args = append(args, "--redis-master-name", p.RedisMasterName)
	}
	args = append(args, p.ExtraArgs...)

	env := []corev1.EnvVar{{
		Name: SessionKeyEnv,
		ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: SessionKeySecretName(gw)},
			Key:                  SessionKeySecretKey,
		}},
	}}
	if p.RedisPasswordSecret != nil {
		env = append(env, corev1.EnvVar{
			Name:      RedisPasswordEnv,
			ValueFrom: &corev1.EnvVarSource{SecretKeyRef: p.RedisPasswordSecret.DeepCopy()},
		})
	}

	ports := []corev1.ContainerPort{{Name: "admin", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP}}
	for _, lp := range listenerPorts(gw) {
		if lp.port == AdminPort {
			continue // the listener cannot be served: the admin port holds it
		}
		ports = append(ports, corev1.ContainerPort{Name: lp.name, ContainerPort: lp.port, Protocol: corev1.ProtocolTCP})
	}

	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(AdminPort), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: 3,
		}
	}

	meta := objectMeta(gw, n)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(p.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(n.Labels)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: maps.Clone(n.Labels),
					Annotations: map[string]string{
						AnnotationGateway:      n.Gateway.String(),
						"prometheus.io/scrape": "true",
						"prometheus.io/port":   strconv.Itoa(int(AdminPort)),
						"prometheus.io/path":   "/metrics",
					},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:           n.Name,
					AutomountServiceAccountToken: ptr.To(true),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(proxyUser),
						RunAsGroup:     ptr.To(proxyUser),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						Sysctls:        []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}},
					},
					Containers: []corev1.Container{{
						Name:            ContainerName,
						Image:           p.Image,
						ImagePullPolicy: p.ImagePullPolicy,
						Args:            args,
						Env:             env,
						Ports:           ports,
						ReadinessProbe:  probe("/readyz", 5),
						LivenessProbe:   probe("/healthz", 10),
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("100m"),
							corev1.ResourceMemory: resource.MustParse("128Mi"),
						}},
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot:             ptr.To(true),
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
							SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
					}},
					Volumes: []corev1.Volume{{
						Name:         "tmp",
						VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
					}},
				},
			},
		},
	}
}

// Service exposes every distinct listener port of gw, over TCP, to the
// proxies, with the Service type of p.
func Service(gw *gwv1.Gateway, p Params) *corev1.Service {
	p = p.WithDefaults()
	n := Names(gw)
	var ports []corev1.ServicePort
	for _, lp := range listenerPorts(gw) {
		ports = append(ports, corev1.ServicePort{
			Name:       lp.name,
			Protocol:   corev1.ProtocolTCP,
			Port:       lp.port,
			TargetPort: intstr.FromInt32(lp.port),
		})
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(gw, n),
		Spec: corev1.ServiceSpec{
			Type:     p.ServiceType,
			Selector: maps.Clone(n.Labels),
			Ports:    ports,
		},
	}
}

// ClusterRoleBinding grants gw's ServiceAccount the ClusterRole
// ClusterRoleName. A cluster-scoped object cannot be owned by a namespaced
// Gateway, so it carries the Gateway's labels and annotation instead, and
// Provisioner.Cleanup deletes it once the Gateway is gone.
func ClusterRoleBinding(gw *gwv1.Gateway) *rbacv1.ClusterRoleBinding {
	n := Names(gw)
	return &rbacv1.ClusterRoleBinding{
		TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.ClusterRoleBinding,
			Labels:      maps.Clone(n.Labels),
			Annotations: map[string]string{AnnotationGateway: n.Gateway.String()},
		},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ClusterRoleName},
		Subjects: []rbacv1.Subject{{
			Kind: rbacv1.ServiceAccountKind, Name: n.Name, Namespace: gw.Namespace,
		}},
	}
}
