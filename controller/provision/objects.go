package provision

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	RedisPasswordEnv = "TOOLGATE_REDIS_PASSWORD" //nolint:gosec // the variable's name, not a password
	// ContainerName is the name of the proxy container.
	ContainerName = "proxy"
	// ConfigTLSDir is where the proxy finds the client certificate Secret
	// (ConfigClientSecretName) it authenticates to the controller's
	// configuration stream with: tls.crt, tls.key and ca.crt.
	ConfigTLSDir = "/etc/toolgate/config"
	// AnnotationCAHash, on the pod template, is a hash of the CA
	// certificate that issued the proxies' client certificates.
	AnnotationCAHash = "toolgate.dev/config-ca-hash"
	// proxyUser is the unprivileged user the proxy runs as (distroless's
	// nonroot).
	proxyUser int64 = 65532
	// graceMargin is the time a proxy's pod is given past its drain delay
	// and timeout before the kubelet kills it: closing the connections
	// still open, the audit log and Redis.
	graceMargin = 5 * time.Second
)

// configVolume is the pod's volume of the client certificate Secret.
const configVolume = "config"

// gatewayKind identifies the owner of the namespaced objects.
var gatewayKind = schema.GroupVersion(gwv1.GroupVersion).WithKind("Gateway")

// objectMeta is the metadata shared by the namespaced objects of gw's data
// plane: names, labels, the Gateway annotation, and the Gateway as the
// controlling owner, so that deleting it deletes them.
func objectMeta(gw *gwv1.Gateway, n ResourceNames) metav1.ObjectMeta {
	labels, annotations := infrastructureMeta(gw, n)
	annotations[AnnotationGateway] = n.Gateway.String()
	return metav1.ObjectMeta{
		Name:            n.Name,
		Namespace:       gw.Namespace,
		Labels:          labels,
		Annotations:     annotations,
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(gw, gatewayKind)},
	}
}

// infrastructureMeta returns new maps of the labels and annotations every
// data-plane object and proxy pod of gw carries: those of the Gateway's
// spec.infrastructure, the Gateway API's gateway-name label, and
// toolgate's own labels, which win over the Gateway's for the same key
// (they select the proxy pods). Only toolgate's own labels are selectors:
// a Deployment's selector cannot change.
func infrastructureMeta(gw *gwv1.Gateway, n ResourceNames) (labels, annotations map[string]string) {
	labels, annotations = map[string]string{}, map[string]string{}
	if infra := gw.Spec.Infrastructure; infra != nil {
		for k, v := range infra.Labels {
			labels[string(k)] = string(v)
		}
		for k, v := range infra.Annotations {
			annotations[string(k)] = string(v)
		}
	}
	labels[gwv1.GatewayNameLabelKey] = boundedLabelValue(gw.Name)
	maps.Copy(labels, n.Labels)
	return labels, annotations
}

// ServiceAccount is the identity of gw's proxies. It is bound to no role:
// the proxies have no use for the Kubernetes API, since the controller
// pushes them their configuration, so no token of it is mounted either.
func ServiceAccount(gw *gwv1.Gateway) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   objectMeta(gw, Names(gw)),
		AutomountServiceAccountToken: ptr.To(false),
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

// Deployment runs gw's proxies: `toolgate proxy --gateway NAMESPACE/NAME
// --controller URL --controller-tls-dir DIR`, with the Redis of p
// (--redis-url, or --redis-addrs and --redis-master-name) and its password,
// unprivileged and with a read-only root file system.
//
// The proxies have no Kubernetes API access: no service account token is
// mounted. They fetch their configuration from p.ControllerURL with the
// client certificate of the Secret ConfigClientSecretName, mounted at
// ConfigTLSDir, and get the session key and the Redis password from Secrets
// through the kubelet (environment variables). caCertPEM is the certificate
// of the CA that issued the client certificate: its hash, in the pod
// template's annotation AnnotationCAHash, rolls the proxies when the CA
// changes, since every client certificate changes with it and new pods
// mount the re-issued one at once instead of waiting for the kubelet to
// refresh the mounted files. A renewed certificate of the same CA needs no
// restart: the proxy reads the files again for each connection.
//
// A rolling update drops no request: maxUnavailable 0 and maxSurge 25%
// (at least one) keep every replica serving until its replacement is ready.
// A terminating proxy drains (--drain-delay, p.DrainDelay): its readiness
// fails and it keeps accepting while the endpoint leaves the Service, every
// response closing its connection so that clients reconnect to another
// replica; then it stops listening, lets requests in flight finish for up to
// --drain-timeout and ends open GET event streams cleanly, for their clients
// to resume them elsewhere. terminationGracePeriodSeconds is the sum of both
// and graceMargin. The proxy drains by itself on SIGTERM, so the pod needs
// no preStop hook (nor a shell in the image for one).
//
// The proxy binds the listener ports itself; the pod lets an unprivileged
// process bind ports below 1024 through the namespaced sysctl
// net.ipv4.ip_unprivileged_port_start, which Kubernetes counts as safe,
// rather than granting NET_BIND_SERVICE.
func Deployment(gw *gwv1.Gateway, p Params, caCertPEM []byte) *appsv1.Deployment {
	p = p.WithDefaults()
	n := Names(gw)

	drainDelay, drainTimeout := p.drain()
	args := []string{"proxy", "--gateway", n.Gateway.String(),
		"--controller", p.ControllerURL, "--controller-tls-dir", ConfigTLSDir,
		"--drain-delay", drainDelay.String(), "--drain-timeout", drainTimeout.String()}
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
	podLabels, podAnnotations := infrastructureMeta(gw, n)
	maps.Copy(podAnnotations, map[string]string{
		AnnotationGateway:      n.Gateway.String(),
		AnnotationCAHash:       caHash(caCertPEM),
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(int(AdminPort)),
		"prometheus.io/path":   "/metrics",
	})
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(p.Replicas),
			Selector: &metav1.LabelSelector{MatchLabels: maps.Clone(n.Labels)},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromString("25%")),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: podAnnotations,
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            n.Name,
					AutomountServiceAccountToken:  ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(int64(math.Ceil((drainDelay + drainTimeout + graceMargin).Seconds()))),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: ptr.To(true),
						RunAsUser:    ptr.To(proxyUser),
						RunAsGroup:   ptr.To(proxyUser),
						// The mounted Secret's files belong to root and
						// this group, readable by the group only.
						FSGroup:        ptr.To(proxyUser),
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
						VolumeMounts: []corev1.VolumeMount{
							{Name: "tmp", MountPath: "/tmp"},
							{Name: configVolume, MountPath: ConfigTLSDir, ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						{
							Name:         "tmp",
							VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
						},
						{
							Name: configVolume,
							VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
								SecretName:  ConfigClientSecretName(gw),
								DefaultMode: ptr.To[int32](0o440),
							}},
						},
					},
				},
			},
		},
	}
}

// Service exposes every distinct listener port of gw, over TCP, to the
// proxies, with the Service type of p, at its cluster IP and at the static
// addresses p.ExternalIPs assigns to gw (spec.externalIPs, which kube-proxy
// routes on every node).
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
			Type:        p.ServiceType,
			Selector:    maps.Clone(n.Labels),
			Ports:       ports,
			ExternalIPs: slices.Clone(p.ExternalIPs),
		},
	}
}

// caHash identifies a CA certificate in a pod template annotation.
func caHash(certPEM []byte) string {
	sum := sha256.Sum256(certPEM)
	return hex.EncodeToString(sum[:])[:16]
}
