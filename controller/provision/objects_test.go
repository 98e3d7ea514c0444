package provision

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// testGateway has two HTTP listeners sharing port 80 and one HTTPS
// listener, listed out of port order.
func testGateway() *gwv1.Gateway {
	return &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web", UID: "gw-uid"},
		Spec: gwv1.GatewaySpec{
			GatewayClassName: "toolgate",
			Listeners: []gwv1.Listener{
				{Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 443},
				{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 80},
				{Name: "http-other", Protocol: gwv1.HTTPProtocolType, Port: 80, Hostname: ptr.To[gwv1.Hostname]("other.example.com")},
			},
		},
	}
}

// testControllerURL is where the proxies of the tests reach the controller.
const testControllerURL = "https://toolgate-controller.toolgate-system.svc:9443"

// testParams are the least parameters a Gateway is provisioned with.
var testParams = Params{ControllerURL: testControllerURL}

// testCAPEM stands for the certificate of the CA that issues the proxies'
// client certificates: the builders only hash it.
var testCAPEM = []byte("-----BEGIN CERTIFICATE-----\ntest CA\n-----END CERTIFICATE-----\n")

func wantOwner() []metav1.OwnerReference {
	return []metav1.OwnerReference{{
		APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway", Name: "web", UID: "gw-uid",
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}}
}

func TestNamespacedObjectsAreOwnedByTheGateway(t *testing.T) {
	gw := testGateway()
	objects := []struct {
		kind     string
		o        metav1.Object
		wantName string
	}{
		{"Deployment", Deployment(gw, testParams, testCAPEM), "toolgate-web"},
		{"Service", Service(gw, testParams), "toolgate-web"},
		{"ServiceAccount", ServiceAccount(gw), "toolgate-web"},
		{"client certificate Secret", ConfigClientSecret(gw, []byte("ca"), []byte("crt"), []byte("key")), "toolgate-web-config"},
	}
	for _, tt := range objects {
		kind, o := tt.kind, tt.o
		t.Run(kind, func(t *testing.T) {
			if o.GetNamespace() != "team-a" || o.GetName() != tt.wantName {
				t.Errorf("%s is %s/%s, want team-a/%s", kind, o.GetNamespace(), o.GetName(), tt.wantName)
			}
			if diff := cmp.Diff(wantOwner(), o.GetOwnerReferences()); diff != "" {
				t.Errorf("owner references (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(metaLabels(gw), o.GetLabels()); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if got := o.GetAnnotations()[AnnotationGateway]; got != "team-a/web" {
				t.Errorf("annotation %s = %q, want team-a/web", AnnotationGateway, got)
			}
		})
	}
}

func proxyContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("the Deployment has %d containers, want 1", n)
	}
	return d.Spec.Template.Spec.Containers[0]
}

// proxyArgs are the arguments of the proxy of testGateway, provisioned with
// testControllerURL, followed by more.
func proxyArgs(more ...string) []string {
	return append([]string{"proxy", "--gateway", "team-a/web", "--controller", testControllerURL, "--controller-tls-dir", "/etc/toolgate/config",
		"--drain-delay", "5s", "--drain-timeout", "30s"}, more...)
}

// A rolling update keeps every replica until its replacement is ready, and
// a terminating proxy gets the time to drain that it is told to take.
func TestDeploymentRollsWithoutDroppingRequests(t *testing.T) {
	tests := []struct {
		name      string
		params    Params
		wantDrain []string // the --drain-delay and --drain-timeout values
		wantGrace int64
	}{
		{name: "by default 5s of drain, 30s for requests in flight, and 5s of margin", wantDrain: []string{"5s", "30s"}, wantGrace: 40},
		{
			name:      "drain times come from the params",
			params:    Params{DrainDelay: 15 * time.Second, DrainTimeout: 2 * time.Minute},
			wantDrain: []string{"15s", "2m0s"}, wantGrace: 140,
		},
		{
			name:      "none at all leaves the margin",
			params:    Params{DrainDelay: -1, DrainTimeout: -1},
			wantDrain: []string{"0s", "0s"}, wantGrace: 5,
		},
		{
			name:      "a fraction of a second rounds the grace period up",
			params:    Params{DrainDelay: 1500 * time.Millisecond},
			wantDrain: []string{"1.5s", "30s"}, wantGrace: 37,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.params.ControllerURL = testControllerURL
			d := Deployment(testGateway(), tt.params, testCAPEM)
			c := proxyContainer(t, d)
			var drain []string
			for i, a := range c.Args {
				if (a == "--drain-delay" || a == "--drain-timeout") && i+1 < len(c.Args) {
					drain = append(drain, c.Args[i+1])
				}
			}
			if diff := cmp.Diff(tt.wantDrain, drain); diff != "" {
				t.Errorf("drain flags (-want +got):\n%s", diff)
			}
			if got := ptr.Deref(d.Spec.Template.Spec.TerminationGracePeriodSeconds, -1); got != tt.wantGrace {
				t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, tt.wantGrace)
			}
			want := appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromString("25%")),
			}}
			if diff := cmp.Diff(want, d.Spec.Strategy); diff != "" {
				t.Errorf("strategy (-want +got):\n%s", diff)
			}
			if c.Lifecycle != nil {
				t.Errorf("lifecycle %+v: the proxy drains on SIGTERM by itself", c.Lifecycle)
			}
		})
	}
}

func TestDeploymentArguments(t *testing.T) {
	secret := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis-auth"}, Key: "password"}
	tests := []struct {
		name     string
		params   Params
		wantArgs []string
		wantEnv  []corev1.EnvVar
	}{
		{
			name:     "the proxy serves its Gateway",
			params:   Params{},
			wantArgs: proxyArgs(),
		},
		{
			name:     "a Redis URL is passed as a flag",
			params:   Params{RedisURL: "redis://redis.toolgate-system:6379"},
			wantArgs: proxyArgs("--redis-url", "redis://redis.toolgate-system:6379"),
		},
		{
			name:     "the Redis password comes from the Secret through the environment",
			params:   Params{RedisURL: "redis://r:6379", RedisPasswordSecret: secret},
			wantArgs: proxyArgs("--redis-url", "redis://r:6379"),
			wantEnv: []corev1.EnvVar{{
				Name:      "TOOLGATE_REDIS_PASSWORD",
				ValueFrom: &corev1.EnvVarSource{SecretKeyRef: secret},
			}},
		},
		{
			name:     "Cluster addresses are passed as one comma-separated flag",
			params:   Params{RedisAddrs: []string{"redis-0.redis:6379", "redis-1.redis:6379"}},
			wantArgs: proxyArgs("--redis-addrs", "redis-0.redis:6379,redis-1.redis:6379"),
		},
		{
			name:     "Sentinel addresses come with the master name and the password from the Secret",
			params:   Params{RedisAddrs: []string{"sentinel-0:26379", "sentinel-1:26379"}, RedisMasterName: "mymaster", RedisPasswordSecret: secret},
			wantArgs: proxyArgs("--redis-addrs", "sentinel-0:26379,sentinel-1:26379", "--redis-master-name", "mymaster"),
			wantEnv: []corev1.EnvVar{{
				Name:      "TOOLGATE_REDIS_PASSWORD",
				ValueFrom: &corev1.EnvVarSource{SecretKeyRef: secret},
			}},
		},
		{
			name:     "extra arguments come last",
			params:   Params{RedisURL: "redis://r:6379", ExtraArgs: []string{"--log-level", "debug"}},
			wantArgs: proxyArgs("--redis-url", "redis://r:6379", "--log-level", "debug"),
		},
	}
	sessionKey := corev1.EnvVar{
		Name: SessionKeyEnv,
		ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "toolgate-web-session"}, Key: SessionKeySecretKey,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.wantEnv = append([]corev1.EnvVar{sessionKey}, tt.wantEnv...)
			tt.params.ControllerURL = testControllerURL
			c := proxyContainer(t, Deployment(testGateway(), tt.params, testCAPEM))
			if diff := cmp.Diff(tt.wantArgs, c.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			if c.Command != nil {
				t.Errorf("command = %q, want the image's entrypoint", c.Command)
			}
			if diff := cmp.Diff(tt.wantEnv, c.Env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDeploymentParams(t *testing.T) {
	tests := []struct {
		name         string
		params       Params
		wantImage    string
		wantPolicy   corev1.PullPolicy
		wantReplicas int32
	}{
		{name: "defaults run one replica of the default image", params: Params{}, wantImage: DefaultImage, wantReplicas: 1},
		{
			name:         "image, pull policy and replicas come from the params",
			params:       Params{Image: "example.com/tg:v1", ImagePullPolicy: corev1.PullNever, Replicas: 3},
			wantImage:    "example.com/tg:v1",
			wantPolicy:   corev1.PullNever,
			wantReplicas: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Deployment(testGateway(), tt.params, testCAPEM)
			c := proxyContainer(t, d)
			if c.Image != tt.wantImage || c.ImagePullPolicy != tt.wantPolicy {
				t.Errorf("image %q pull %q, want %q pull %q", c.Image, c.ImagePullPolicy, tt.wantImage, tt.wantPolicy)
			}
			if got := ptr.Deref(d.Spec.Replicas, -1); got != tt.wantReplicas {
				t.Errorf("replicas = %d, want %d", got, tt.wantReplicas)
			}
		})
	}
}

func TestDeploymentPodShape(t *testing.T) {
	gw := testGateway()
	d := Deployment(gw, testParams, testCAPEM)
	pod := d.Spec.Template.Spec
	c := proxyContainer(t, d)
	labels := Names(gw).Labels

	t.Run("the selector is the Gateway's labels, which the pods carry", func(t *testing.T) {
		if diff := cmp.Diff(&metav1.LabelSelector{MatchLabels: labels}, d.Spec.Selector); diff != "" {
			t.Errorf("selector (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(metaLabels(gw), d.Spec.Template.Labels); diff != "" {
			t.Errorf("pod labels (-want +got):\n%s", diff)
		}
	})
	t.Run("the pod runs as the Gateway's ServiceAccount", func(t *testing.T) {
		if pod.ServiceAccountName != "toolgate-web" {
			t.Errorf("serviceAccountName = %q, want toolgate-web", pod.ServiceAccountName)
		}
	})
	t.Run("the container has the admin port and one port per distinct listener port", func(t *testing.T) {
		want := []corev1.ContainerPort{
			{Name: "admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP},
			{Name: "http-80", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
			{Name: "https-443", ContainerPort: 443, Protocol: corev1.ProtocolTCP},
		}
		if diff := cmp.Diff(want, c.Ports); diff != "" {
			t.Errorf("ports (-want +got):\n%s", diff)
		}
	})
	t.Run("readiness and liveness are probed on the admin port", func(t *testing.T) {
		for _, p := range []struct {
			probe *corev1.Probe
			path  string
		}{{c.ReadinessProbe, "/readyz"}, {c.LivenessProbe, "/healthz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Fatalf("probe for %s missing", p.path)
			}
			if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromInt32(9901) {
				t.Errorf("probe = %s on %s, want %s on 9901", p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
			}
		}
	})
	t.Run("metrics are announced on the admin port", func(t *testing.T) {
		a := d.Spec.Template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9901" || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("pod annotations = %v, want Prometheus scraping of :9901/metrics", a)
		}
	})
	t.Run("the container is unprivileged with a read-only root", func(t *testing.T) {
		sc := c.SecurityContext
		if sc == nil {
			t.Fatal("no container securityContext")
		}
		if !ptr.Deref(sc.RunAsNonRoot, false) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) {
			t.Errorf("securityContext = %+v, want non-root, read-only root, no privilege escalation", sc)
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("capabilities = %+v, want all dropped and none added", sc.Capabilities)
		}
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("seccomp = %+v, want RuntimeDefault", sc.SeccompProfile)
		}
		psc := pod.SecurityContext
		if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || ptr.Deref(psc.RunAsUser, 0) == 0 {
			t.Errorf("pod securityContext = %+v, want a non-root user", psc)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod seccomp = %+v, want RuntimeDefault", psc)
		}
	})
	t.Run("an unprivileged proxy may bind listener ports below 1024", func(t *testing.T) {
		want := []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
		if diff := cmp.Diff(want, pod.SecurityContext.Sysctls); diff != "" {
			t.Errorf("sysctls (-want +got):\n%s", diff)
		}
	})
	t.Run("the container requests resources", func(t *testing.T) {
		r := c.Resources.Requests
		if r.Cpu().IsZero() || r.Memory().IsZero() {
			t.Errorf("requests = %v, want CPU and memory", r)
		}
	})
	t.Run("a writable /tmp and the client certificate, read-only, are mounted", func(t *testing.T) {
		wantMounts := []corev1.VolumeMount{
			{Name: "tmp", MountPath: "/tmp"},
			{Name: "config", MountPath: "/etc/toolgate/config", ReadOnly: true},
		}
		if diff := cmp.Diff(wantMounts, c.VolumeMounts); diff != "" {
			t.Errorf("mounts (-want +got):\n%s", diff)
		}
		wantVolumes := []corev1.Volume{
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "config", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: "toolgate-web-config", DefaultMode: ptr.To[int32](0o440),
			}}},
		}
		if diff := cmp.Diff(wantVolumes, pod.Volumes); diff != "" {
			t.Errorf("volumes (-want +got):\n%s", diff)
		}
	})
	t.Run("the proxy's group may read the client certificate's files", func(t *testing.T) {
		psc := pod.SecurityContext
		if ptr.Deref(psc.FSGroup, 0) != 65532 || ptr.Deref(psc.RunAsGroup, 0) != 65532 {
			t.Errorf("fsGroup %v runAsGroup %v, want both 65532: the Secret's files are readable by their group only", psc.FSGroup, psc.RunAsGroup)
		}
	})
	t.Run("no service account token is mounted", func(t *testing.T) {
		if ptr.Deref(pod.AutomountServiceAccountToken, true) {
			t.Error("automountServiceAccountToken is not false: the proxies have no use for the Kubernetes API")
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.MountPath, "/var/run/secrets/kubernetes.io") {
				t.Errorf("mount %+v carries Kubernetes credentials", m)
			}
		}
		for _, v := range pod.Volumes {
			if v.Projected != nil {
				t.Errorf("volume %+v is projected: no token may reach the proxies", v)
			}
		}
	})
}

func TestServiceAccountMountsNoToken(t *testing.T) {
	sa := ServiceAccount(testGateway())
	if ptr.Deref(sa.AutomountServiceAccountToken, true) {
		t.Error("automountServiceAccountToken is not false")
	}
}

func TestDeploymentRollsWithTheCA(t *testing.T) {
	gw := testGateway()
	hash := func(caPEM []byte) string {
		return Deployment(gw, testParams, caPEM).Spec.Template.Annotations[AnnotationCAHash]
	}
	first, again, other := hash(testCAPEM), hash(testCAPEM), hash([]byte("another CA"))
	if first == "" {
		t.Fatalf("the pod template has no %s annotation", AnnotationCAHash)
	}
	if first != again {
		t.Errorf("one CA gives two hashes, %q and %q: the proxies would roll for nothing", first, again)
	}
	if first == other {
		t.Errorf("two CAs give one hash %q: a new CA would not roll the proxies", first)
	}
}

func TestConfigClientSecret(t *testing.T) {
	s := ConfigClientSecret(testGateway(), []byte("ca"), []byte("crt"), []byte("key"))
	if s.Type != corev1.SecretTypeTLS {
		t.Errorf("type = %s, want kubernetes.io/tls", s.Type)
	}
	want := map[string][]byte{"tls.crt": []byte("crt"), "tls.key": []byte("key"), "ca.crt": []byte("ca")}
	if diff := cmp.Diff(want, s.Data); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}

func TestDeploymentSkipsAListenerOnTheAdminPort(t *testing.T) {
	gw := testGateway()
	gw.Spec.Listeners = []gwv1.Listener{{Name: "odd", Protocol: gwv1.HTTPProtocolType, Port: 9901}}
	c := proxyContainer(t, Deployment(gw, testParams, testCAPEM))
	want := []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP}}
	if diff := cmp.Diff(want, c.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
}

func TestService(t *testing.T) {
	tests := []struct {
		name      string
		listeners []gwv1.Listener
		params    Params
		wantType  corev1.ServiceType
		wantPorts []corev1.ServicePort
	}{
		{
			name:      "every distinct listener port is exposed once, in port order, on a LoadBalancer by default",
			listeners: testGateway().Spec.Listeners,
			wantType:  corev1.ServiceTypeLoadBalancer,
			wantPorts: []corev1.ServicePort{
				{Name: "http-80", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)},
				{Name: "https-443", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(443)},
			},
		},
		{
			name:      "the Service type comes from the params",
			listeners: []gwv1.Listener{{Name: "http", Protocol: gwv1.HTTPProtocolType, Port: 8080}},
			params:    Params{ServiceType: corev1.ServiceTypeClusterIP},
			wantType:  corev1.ServiceTypeClusterIP,
			wantPorts: []corev1.ServicePort{{Name: "http-8080", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(8080)}},
		},
		{
			name:      "a protocol that makes no valid port name gives port-<number>",
			listeners: []gwv1.Listener{{Name: "custom", Protocol: "example.com/custom-protocol", Port: 9000}},
			wantType:  corev1.ServiceTypeLoadBalancer,
			wantPorts: []corev1.ServicePort{{Name: "port-9000", Protocol: corev1.ProtocolTCP, Port: 9000, TargetPort: intstr.FromInt32(9000)}},
		},
		{
			name:      "the first listener on a port names it",
			listeners: []gwv1.Listener{{Name: "tls", Protocol: gwv1.TLSProtocolType, Port: 443}, {Name: "https", Protocol: gwv1.HTTPSProtocolType, Port: 443}},
			wantType:  corev1.ServiceTypeLoadBalancer,
			wantPorts: []corev1.ServicePort{{Name: "tls-443", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromInt32(443)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := testGateway()
			gw.Spec.Listeners = tt.listeners
			svc := Service(gw, tt.params)
			if svc.Spec.Type != tt.wantType {
				t.Errorf("type = %s, want %s", svc.Spec.Type, tt.wantType)
			}
			if diff := cmp.Diff(tt.wantPorts, svc.Spec.Ports); diff != "" {
				t.Errorf("ports (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(Names(gw).Labels, svc.Spec.Selector); diff != "" {
				t.Errorf("selector (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServiceCarriesTheAssignedStaticAddresses(t *testing.T) {
	gw := testGateway()
	if ips := Service(gw, testParams).Spec.ExternalIPs; ips != nil {
		t.Errorf("externalIPs without static addresses = %q, want none", ips)
	}
	p := testParams
	p.StaticAddressPool = []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24")}
	if ips := Service(gw, p).Spec.ExternalIPs; ips != nil {
		t.Errorf("externalIPs with a pool and no assigned address = %q, want none: the pool is what may be claimed, not what is", ips)
	}
	p.ExternalIPs = []string{"10.200.1.7", "10.200.1.9"}
	if diff := cmp.Diff([]string{"10.200.1.7", "10.200.1.9"}, Service(gw, p).Spec.ExternalIPs); diff != "" {
		t.Errorf("externalIPs (-want +got):\n%s", diff)
	}
	if dep := Deployment(gw, p, testCAPEM); !reflect.DeepEqual(dep, Deployment(gw, testParams, testCAPEM)) {
		t.Error("the static addresses changed the Deployment: only the Service carries them, so that claiming one does not roll the proxies")
	}
}

func TestApplyDocumentCarriesOnlyWhatToolgateSets(t *testing.T) {
	p := New(nil, clientgoscheme.Scheme, Options{})
	gw := testGateway()
	objects := []client.Object{Deployment(gw, testParams, testCAPEM), Service(gw, testParams), ServiceAccount(gw)}
	for _, o := range objects {
		o.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{}) // the scheme fills it in
		u, err := p.applyDocument(o)
		if err != nil {
			t.Fatalf("applyDocument(%T): %v", o, err)
		}
		t.Run(u.GetKind(), func(t *testing.T) {
			if u.GetAPIVersion() == "" || u.GetKind() == "" {
				t.Errorf("apiVersion %q kind %q, want both", u.GetAPIVersion(), u.GetKind())
			}
			if _, has := u.Object["status"]; has {
				t.Error("the document sets status")
			}
			if _, has, _ := unstructured.NestedFieldNoCopy(u.Object, "metadata", "creationTimestamp"); has {
				t.Error("the document sets metadata.creationTimestamp")
			}
			if _, has, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "template", "metadata", "creationTimestamp"); has {
				t.Error("the document sets the pod template's creationTimestamp")
			}
		})
	}
}

func TestStateOf(t *testing.T) {
	deployment := func(available int32) *appsv1.Deployment {
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "toolgate-web"},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
			Status:     appsv1.DeploymentStatus{AvailableReplicas: available, ReadyReplicas: available},
		}
	}
	service := func(typ corev1.ServiceType, clusterIPs []string, ingress ...corev1.LoadBalancerIngress) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "toolgate-web"},
			Spec:       corev1.ServiceSpec{Type: typ, ClusterIPs: clusterIPs},
			Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: ingress}},
		}
	}
	ip := func(v string) gwv1.GatewayStatusAddress {
		return gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.IPAddressType), Value: v}
	}
	host := func(v string) gwv1.GatewayStatusAddress {
		return gwv1.GatewayStatusAddress{Type: ptr.To(gwv1.HostnameAddressType), Value: v}
	}
	tests := []struct {
		name        string
		dep         *appsv1.Deployment
		svc         *corev1.Service
		wantReady   bool
		wantAddrs   []gwv1.GatewayStatusAddress
		wantMessage []string // substrings; none means an empty message
	}{
		{
			name:      "one available replica is ready and the load balancer's addresses are the Gateway's",
			dep:       deployment(1),
			svc:       service(corev1.ServiceTypeLoadBalancer, []string{"10.0.0.10"}, corev1.LoadBalancerIngress{IP: "203.0.113.7"}, corev1.LoadBalancerIngress{Hostname: "lb.example.com"}),
			wantReady: true,
			wantAddrs: []gwv1.GatewayStatusAddress{ip("203.0.113.7"), host("lb.example.com")},
		},
		{
			name:        "no available replica is not ready and says so",
			dep:         deployment(0),
			svc:         service(corev1.ServiceTypeClusterIP, []string{"10.0.0.10"}),
			wantAddrs:   []gwv1.GatewayStatusAddress{ip("10.0.0.10")},
			wantMessage: []string{"Deployment team-a/toolgate-web has no available replica yet (0 of 2 ready)"},
		},
		{
			name:        "a pending load balancer gives the cluster IPs and says so",
			dep:         deployment(2),
			svc:         service(corev1.ServiceTypeLoadBalancer, []string{"10.0.0.10", "fd00::10"}),
			wantReady:   true,
			wantAddrs:   []gwv1.GatewayStatusAddress{ip("10.0.0.10"), ip("fd00::10")},
			wantMessage: []string{"the load balancer of Service team-a/toolgate-web has no address yet"},
		},
		{
			name:      "a ClusterIP Service gives its cluster IP without a message",
			dep:       deployment(1),
			svc:       service(corev1.ServiceTypeClusterIP, []string{"10.0.0.10"}),
			wantReady: true,
			wantAddrs: []gwv1.GatewayStatusAddress{ip("10.0.0.10")},
		},
		{
			name:      "a NodePort Service gives its cluster IP",
			dep:       deployment(1),
			svc:       service(corev1.ServiceTypeNodePort, []string{"10.0.0.10"}),
			wantReady: true,
			wantAddrs: []gwv1.GatewayStatusAddress{ip("10.0.0.10")},
		},
		{
			name:        "both problems are reported together",
			dep:         deployment(0),
			svc:         service(corev1.ServiceTypeLoadBalancer, []string{"10.0.0.10"}),
			wantAddrs:   []gwv1.GatewayStatusAddress{ip("10.0.0.10")},
			wantMessage: []string{"no available replica", "no address yet"},
		},
		{
			name:      "repeated load balancer addresses are listed once",
			dep:       deployment(1),
			svc:       service(corev1.ServiceTypeLoadBalancer, nil, corev1.LoadBalancerIngress{IP: "203.0.113.7"}, corev1.LoadBalancerIngress{IP: "203.0.113.7"}),
			wantReady: true,
			wantAddrs: []gwv1.GatewayStatusAddress{ip("203.0.113.7")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := stateOf(tt.dep, tt.svc)
			if st.Ready != tt.wantReady {
				t.Errorf("Ready = %v, want %v", st.Ready, tt.wantReady)
			}
			if diff := cmp.Diff(tt.wantAddrs, st.Addresses); diff != "" {
				t.Errorf("Addresses (-want +got):\n%s", diff)
			}
			if len(tt.wantMessage) == 0 && st.Message != "" {
				t.Errorf("Message = %q, want none", st.Message)
			}
			for _, m := range tt.wantMessage {
				if !strings.Contains(st.Message, m) {
					t.Errorf("Message = %q, want it to contain %q", st.Message, m)
				}
			}
		})
	}
}

// metaLabels are the labels of gw's data-plane objects without
// spec.infrastructure: toolgate's and the Gateway API's gateway-name.
func metaLabels(gw *gwv1.Gateway) map[string]string {
	labels := maps.Clone(Names(gw).Labels)
	labels[gwv1.GatewayNameLabelKey] = gw.Name
	return labels
}

// The labels and annotations of a Gateway's spec.infrastructure reach its
// ServiceAccount, Deployment, pods and Service; toolgate's own labels win
// over the Gateway's for the same key, and the selectors stay toolgate's.
func TestInfrastructureMetadataIsCarriedOntoTheDataPlane(t *testing.T) {
	gw := testGateway()
	gw.Spec.Infrastructure = &gwv1.GatewayInfrastructure{
		Labels:      map[gwv1.LabelKey]gwv1.LabelValue{"team": "payments", LabelName: "not-toolgate"},
		Annotations: map[gwv1.AnnotationKey]gwv1.AnnotationValue{"example.com/owner": "alice", AnnotationGateway: "elsewhere/other"},
	}
	want := metaLabels(gw)
	want["team"] = "payments"
	d := Deployment(gw, testParams, testCAPEM)
	for _, tt := range []struct {
		what                string
		labels, annotations map[string]string
	}{
		{"ServiceAccount", ServiceAccount(gw).Labels, ServiceAccount(gw).Annotations},
		{"Deployment", d.Labels, d.Annotations},
		{"pod template", d.Spec.Template.Labels, d.Spec.Template.Annotations},
		{"Service", Service(gw, testParams).Labels, Service(gw, testParams).Annotations},
	} {
		if diff := cmp.Diff(want, tt.labels); diff != "" {
			t.Errorf("%s labels (-want +got):\n%s", tt.what, diff)
		}
		if tt.annotations["example.com/owner"] != "alice" || tt.annotations[AnnotationGateway] != "team-a/web" {
			t.Errorf("%s annotations %v, want the Gateway's and toolgate's (which wins)", tt.what, tt.annotations)
		}
	}
	if diff := cmp.Diff(Names(gw).Labels, d.Spec.Selector.MatchLabels); diff != "" {
		t.Errorf("Deployment selector (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Names(gw).Labels, Service(gw, testParams).Spec.Selector); diff != "" {
		t.Errorf("Service selector (-want +got):\n%s", diff)
	}
}
