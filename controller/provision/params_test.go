package provision

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Params
		want Params
	}{
		{
			name: "zero params take every default",
			in:   Params{},
			want: Params{Image: DefaultImage, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer},
		},
		{
			name: "the controller URL is kept as is",
			in:   Params{ControllerURL: "https://toolgate-controller.toolgate-system.svc:9443"},
			want: Params{ControllerURL: "https://toolgate-controller.toolgate-system.svc:9443", Image: DefaultImage, Replicas: 1,
				ServiceType: corev1.ServiceTypeLoadBalancer},
		},
		{
			name: "set fields are kept",
			in:   Params{Image: "example.com/tg:v1", Replicas: 3, ServiceType: corev1.ServiceTypeClusterIP, RedisURL: "redis://r:6379"},
			want: Params{Image: "example.com/tg:v1", Replicas: 3, ServiceType: corev1.ServiceTypeClusterIP, RedisURL: "redis://r:6379"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.in.WithDefaults()); diff != "" {
				t.Errorf("WithDefaults() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSharedStore(t *testing.T) {
	tests := []struct {
		name   string
		params Params
		want   bool
	}{
		{name: "no Redis keeps buckets in each replica", params: Params{}, want: false},
		{name: "a password alone shares nothing", params: Params{RedisPasswordSecret: &corev1.SecretKeySelector{Key: "password"}}, want: false},
		{name: "a Redis URL shares the buckets", params: Params{RedisURL: "redis://r:6379"}, want: true},
		{name: "Cluster addresses share the buckets", params: Params{RedisAddrs: []string{"r-0:6379", "r-1:6379"}}, want: true},
		{name: "Sentinel addresses share the buckets", params: Params{RedisAddrs: []string{"s-0:26379"}, RedisMasterName: "mymaster"}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.params.SharedStore(); got != tt.want {
				t.Errorf("SharedStore() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseRedisAddrs(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    []string
		wantErr string // a substring of the error; empty means success
	}{
		{name: "one address", value: "redis:6379", want: []string{"redis:6379"}},
		{name: "spaces around addresses are dropped", value: " r-0.redis:6379 , r-1.redis:6379 ", want: []string{"r-0.redis:6379", "r-1.redis:6379"}},
		{name: "an IPv6 address in brackets", value: "[fd00::1]:26379,10.0.0.2:26379", want: []string{"[fd00::1]:26379", "10.0.0.2:26379"}},
		{name: "an empty value", value: "  ", wantErr: "no address: list HOST:PORT addresses"},
		{name: "an empty address between commas", value: "r-0:6379,,r-1:6379", wantErr: "has an empty address"},
		{name: "a trailing comma", value: "r-0:6379,", wantErr: "has an empty address"},
		{name: "an address without a port", value: "redis", wantErr: `"redis" is not HOST:PORT`},
		{name: "an address without a host", value: ":6379", wantErr: `":6379" is not HOST:PORT`},
		{name: "a bare IPv6 address", value: "fd00::1:6379", wantErr: "is not HOST:PORT"},
		{name: "a port that is not a number", value: "redis:redis", wantErr: `"redis:redis" has no valid port: use a port from 1 to 65535, such as redis:6379`},
		{name: "port zero", value: "redis:0", wantErr: "has no valid port"},
		{name: "a port past 65535", value: "redis:65536", wantErr: "has no valid port"},
		{name: "a URL", value: "redis://r-0:6379", wantErr: "is a URL: list HOST:PORT without a scheme"},
		{name: "an address listed twice", value: "r-0:6379,r-0:6379", wantErr: `"r-0:6379" is listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRedisAddrs(tt.value)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRedisAddrs(%q) = %q, %v; want an error containing %q", tt.value, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRedisAddrs(%q) error: %v", tt.value, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRedisAddrs(%q) (-want +got):\n%s", tt.value, diff)
			}
		})
	}
}

func TestParseAddressPool(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    []string
		wantErr string // a substring of the error; empty means success
	}{
		{name: "one CIDR", value: "10.200.1.0/24", want: []string{"10.200.1.0/24"}},
		{name: "spaces around entries are dropped", value: " 10.200.1.0/24 , fd00:1::/120 ", want: []string{"10.200.1.0/24", "fd00:1::/120"}},
		{name: "a single address is a network of one", value: "10.200.2.7,fd00::7", want: []string{"10.200.2.7/32", "fd00::7/128"}},
		{name: "an empty value", value: " ", wantErr: "no network: list CIDRs or IP addresses"},
		{name: "an empty entry between commas", value: "10.200.1.0/24,,10.200.2.0/24", wantErr: "has an empty entry"},
		{name: "a prefix length past the address", value: "10.200.1.0/33", wantErr: `"10.200.1.0/33" is not a CIDR`},
		{name: "host bits set", value: "10.200.1.5/24", wantErr: `"10.200.1.5/24" has host bits set: write the network's first address, 10.200.1.0/24, or one address as 10.200.1.5`},
		{name: "a host name", value: "gateway.example.com", wantErr: `"gateway.example.com" is not an IP address or a CIDR`},
		{name: "an address with a zone", value: "fe80::1%eth0", wantErr: "is not an IP address or a CIDR"},
		{name: "a network listed twice", value: "10.200.1.0/24,10.200.1.0/24", wantErr: `"10.200.1.0/24" is listed twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAddressPool(tt.value)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAddressPool(%q) = %v, %v; want an error containing %q", tt.value, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddressPool(%q) error: %v", tt.value, err)
			}
			var gotStrings []string
			for _, p := range got {
				gotStrings = append(gotStrings, p.String())
			}
			if diff := cmp.Diff(tt.want, gotStrings); diff != "" {
				t.Errorf("ParseAddressPool(%q) (-want +got):\n%s", tt.value, diff)
			}
		})
	}
}

func TestParamsFromConfigMap(t *testing.T) {
	flags := Params{RedisURL: "redis://flags:6379", ImagePullPolicy: corev1.PullIfNotPresent}
	sentinelFlags := Params{RedisAddrs: []string{"sentinel-0:26379", "sentinel-1:26379"}, RedisMasterName: "flags-master"}
	passwordSecret := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis-auth"}, Key: "password"}
	cm := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "params", Namespace: "toolgate-system"}, Data: data}
	}
	tests := []struct {
		name     string
		defaults *Params // the controller's flags; nil means flags
		cm       *corev1.ConfigMap
		want     Params
		wantErrs []string // substrings of the error; none means success
		notErrs  []string // substrings the error must not hold
	}{
		{
			name: "a nil ConfigMap gives the defaults",
			cm:   nil,
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1,
				ServiceType: corev1.ServiceTypeLoadBalancer, RedisURL: "redis://flags:6379"},
		},
		{
			name: "an empty ConfigMap keeps the controller's defaults",
			cm:   cm(nil),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1,
				ServiceType: corev1.ServiceTypeLoadBalancer, RedisURL: "redis://flags:6379"},
		},
		{
			name: "every key overrides its default",
			cm: cm(map[string]string{
				"image":               "example.com/toolgate:v1.2.3",
				"imagePullPolicy":     "Always",
				"replicas":            " 3 ",
				"serviceType":         "NodePort",
				"redisURL":            "rediss://default@redis.example.com:6380/0",
				"redisPasswordSecret": "redis-auth/password",
				"extraArgs":           "--log-level debug  --log-format=json",
			}),
			want: Params{
				Image:           "example.com/toolgate:v1.2.3",
				ImagePullPolicy: corev1.PullAlways,
				Replicas:        3,
				ServiceType:     corev1.ServiceTypeNodePort,
				RedisURL:        "rediss://default@redis.example.com:6380/0",
				RedisPasswordSecret: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "redis-auth"}, Key: "password",
				},
				ExtraArgs: []string{"--log-level", "debug", "--log-format=json"},
			},
		},
		{
			name: "a unix socket Redis URL is accepted",
			cm:   cm(map[string]string{"redisURL": "unix:///var/run/redis.sock"}),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1,
				ServiceType: corev1.ServiceTypeLoadBalancer, RedisURL: "unix:///var/run/redis.sock"},
		},
		{
			name:     "an unknown key is an error that lists the known keys",
			cm:       cm(map[string]string{"replica": "2"}),
			wantErrs: []string{`key "replica": unknown key`, "image, imagePullPolicy, replicas, serviceType, redisURL, redisAddrs, redisMasterName, redisPasswordSecret, extraArgs, staticAddressPool, drainDelay, drainTimeout"},
		},
		{
			name: "drain times are durations; 0s means none",
			cm:   cm(map[string]string{"drainDelay": "15s", "drainTimeout": "0s"}),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer,
				RedisURL: "redis://flags:6379", DrainDelay: 15 * time.Second, DrainTimeout: -1},
		},
		{
			name:     "a drain time that is not a duration is an error",
			cm:       cm(map[string]string{"drainDelay": "5", "drainTimeout": "-3s"}),
			wantErrs: []string{`key "drainDelay": "5" is not a duration: use one such as 5s`, `key "drainTimeout": "-3s" is not a duration`},
		},
		{
			name:     "extraArgs may not set the drain flags, which have keys",
			cm:       cm(map[string]string{"extraArgs": "--drain-delay=20s"}),
			wantErrs: []string{`--drain-delay=20s is set by the controller: remove it and use the drainDelay key`},
		},
		{
			name: "a static address pool is read from its CIDRs",
			cm:   cm(map[string]string{"staticAddressPool": "10.200.1.0/24, fd00:1::/120"}),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer,
				RedisURL: "redis://flags:6379", StaticAddressPool: []netip.Prefix{netip.MustParsePrefix("10.200.1.0/24"), netip.MustParsePrefix("fd00:1::/120")}},
		},
		{
			name:     "a static address pool that is not CIDRs is an error",
			cm:       cm(map[string]string{"staticAddressPool": "10.200.1.0/33"}),
			wantErrs: []string{`key "staticAddressPool": "10.200.1.0/33" is not a CIDR`},
		},
		{
			name: "Cluster addresses replace the controller's Redis URL",
			cm:   cm(map[string]string{"redisAddrs": "redis-0.redis:6379, redis-1.redis:6379,redis-2.redis:6379"}),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer,
				RedisAddrs: []string{"redis-0.redis:6379", "redis-1.redis:6379", "redis-2.redis:6379"}},
		},
		{
			name: "Sentinel addresses and a master name with a password Secret are accepted",
			cm: cm(map[string]string{
				"redisAddrs":          "sentinel-0:26379,sentinel-1:26379",
				"redisMasterName":     " mymaster ",
				"redisPasswordSecret": "redis-auth/password",
			}),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer,
				RedisAddrs: []string{"sentinel-0:26379", "sentinel-1:26379"}, RedisMasterName: "mymaster", RedisPasswordSecret: passwordSecret},
		},
		{
			name:     "a Redis URL replaces the controller's Sentinel addresses and master name",
			defaults: &sentinelFlags,
			cm:       cm(map[string]string{"redisURL": "redis://redis:6379"}),
			want:     Params{Image: DefaultImage, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer, RedisURL: "redis://redis:6379"},
		},
		{
			name:     "Cluster addresses drop the controller's Sentinel master name",
			defaults: &sentinelFlags,
			cm:       cm(map[string]string{"redisAddrs": "redis-0:6379"}),
			want:     Params{Image: DefaultImage, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer, RedisAddrs: []string{"redis-0:6379"}},
		},
		{
			name:     "a password Secret alone keeps the controller's Sentinel setup",
			defaults: &sentinelFlags,
			cm:       cm(map[string]string{"redisPasswordSecret": "redis-auth/password"}),
			want: Params{Image: DefaultImage, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer,
				RedisAddrs: sentinelFlags.RedisAddrs, RedisMasterName: "flags-master", RedisPasswordSecret: passwordSecret},
		},
		{
			name:     "a Redis URL and addresses together are an error",
			cm:       cm(map[string]string{"redisURL": "redis://redis:6379", "redisAddrs": "redis-0:6379"}),
			wantErrs: []string{`keys "redisURL" and "redisAddrs": set one Redis, by URL or by Cluster or Sentinel addresses; remove the other key`},
		},
		{
			name:     "a master name without addresses is an error",
			cm:       cm(map[string]string{"redisMasterName": "mymaster"}),
			wantErrs: []string{`key "redisMasterName": a Sentinel master name needs the Sentinels' HOST:PORT in "redisAddrs"`},
		},
		{
			name:     "a master name with a Redis URL is an error",
			cm:       cm(map[string]string{"redisURL": "redis://redis:6379", "redisMasterName": "mymaster"}),
			wantErrs: []string{`key "redisMasterName"`, `in "redisAddrs"`},
		},
		{
			name:     "an empty master name is an error",
			cm:       cm(map[string]string{"redisAddrs": "s-0:26379", "redisMasterName": " "}),
			wantErrs: []string{`key "redisMasterName"`, "not a Sentinel master name", "remove the key"},
		},
		{
			name:     "an address without a port is an error",
			cm:       cm(map[string]string{"redisAddrs": "redis-0:6379,redis-1"}),
			wantErrs: []string{`key "redisAddrs": "redis-1" is not HOST:PORT`},
		},
		{
			name:     "a bad address is the only problem reported with a master name",
			cm:       cm(map[string]string{"redisAddrs": "sentinel-0", "redisMasterName": "mymaster"}),
			wantErrs: []string{`key "redisAddrs": "sentinel-0" is not HOST:PORT: write each address as a host and a port, such as redis-0.redis:6379 or [fd00::1]:6379`},
			notErrs:  []string{"redisMasterName"},
		},
		{
			name:     "a Redis URL in the addresses is an error",
			cm:       cm(map[string]string{"redisAddrs": "redis://redis-0:6379"}),
			wantErrs: []string{`key "redisAddrs"`, "is a URL", "key redisURL"},
		},
		{
			name:     "binary data is an error",
			cm:       &corev1.ConfigMap{BinaryData: map[string][]byte{"image": []byte("x")}},
			wantErrs: []string{`binaryData key "image"`, "move it to data"},
		},
		{
			name:     "replicas that are not a number are an error",
			cm:       cm(map[string]string{"replicas": "two"}),
			wantErrs: []string{`key "replicas": "two" is not a number of replicas: use a whole number, 1 or more`},
		},
		{
			name:     "zero replicas are an error",
			cm:       cm(map[string]string{"replicas": "0"}),
			wantErrs: []string{`key "replicas"`, "1 or more"},
		},
		{
			name:     "an unsupported Service type is an error",
			cm:       cm(map[string]string{"serviceType": "ExternalName"}),
			wantErrs: []string{`key "serviceType"`, "use ClusterIP, NodePort or LoadBalancer"},
		},
		{
			name:     "a Service type is case sensitive",
			cm:       cm(map[string]string{"serviceType": "loadbalancer"}),
			wantErrs: []string{`key "serviceType"`},
		},
		{
			name:     "an unknown pull policy is an error",
			cm:       cm(map[string]string{"imagePullPolicy": "Sometimes"}),
			wantErrs: []string{`key "imagePullPolicy"`, "Always, IfNotPresent or Never"},
		},
		{
			name:     "an empty image is an error",
			cm:       cm(map[string]string{"image": "  "}),
			wantErrs: []string{`key "image"`, "remove the key"},
		},
		{
			name:     "an image with spaces is an error",
			cm:       cm(map[string]string{"image": "toolgate latest"}),
			wantErrs: []string{`key "image"`},
		},
		{
			name:     "a Redis URL of another scheme is an error",
			cm:       cm(map[string]string{"redisURL": "http://redis:6379"}),
			wantErrs: []string{`key "redisURL"`, `scheme "http"`, "redis://"},
		},
		{
			name:     "a Redis URL without a host is an error",
			cm:       cm(map[string]string{"redisURL": "redis:///0"}),
			wantErrs: []string{`key "redisURL"`, "has no host"},
		},
		{
			name:     "a Redis URL with a password is an error pointing at the Secret key",
			cm:       cm(map[string]string{"redisURL": "redis://user:hunter2@redis:6379"}),
			wantErrs: []string{`key "redisURL"`, "redisPasswordSecret"},
		},
		{
			name:     "a password Secret without a key is an error",
			cm:       cm(map[string]string{"redisPasswordSecret": "redis-auth"}),
			wantErrs: []string{`key "redisPasswordSecret"`, "NAME/KEY"},
		},
		{
			name:     "a password Secret with an invalid name is an error",
			cm:       cm(map[string]string{"redisPasswordSecret": "Redis_Auth/password"}),
			wantErrs: []string{`key "redisPasswordSecret"`, `Secret name "Redis_Auth" is not valid`},
		},
		{
			name:     "a password Secret with an invalid key is an error",
			cm:       cm(map[string]string{"redisPasswordSecret": "redis-auth/pass word"}),
			wantErrs: []string{`key "redisPasswordSecret"`, `Secret key "pass word" is not valid`},
		},
		{
			name:     "extra arguments may not set the controller URL",
			cm:       cm(map[string]string{"extraArgs": "--controller https://elsewhere:9443"}),
			wantErrs: []string{`key "extraArgs"`, "--controller is set by the controller: remove it"},
		},
		{
			name:     "extra arguments may not set the client certificate directory",
			cm:       cm(map[string]string{"extraArgs": "--controller-tls-dir=/tmp"}),
			wantErrs: []string{`key "extraArgs"`, "--controller-tls-dir=/tmp is set by the controller: remove it"},
		},
		{
			name:     "the controller URL is the controller's and no key sets it",
			cm:       cm(map[string]string{"controllerURL": "https://elsewhere:9443"}),
			wantErrs: []string{`key "controllerURL": unknown key`},
		},
		{
			name:     "the controller URL of the controller's configuration is kept",
			defaults: &Params{ControllerURL: "https://toolgate-controller.toolgate-system.svc:9443"},
			cm:       cm(map[string]string{"replicas": "2"}),
			want: Params{ControllerURL: "https://toolgate-controller.toolgate-system.svc:9443", Image: DefaultImage, Replicas: 2,
				ServiceType: corev1.ServiceTypeLoadBalancer},
		},
		{
			name:     "extra arguments may not set the Gateway",
			cm:       cm(map[string]string{"extraArgs": "--gateway=other/gw"}),
			wantErrs: []string{`key "extraArgs"`, "--gateway=other/gw is set by the controller"},
		},
		{
			name:     "extra arguments may not set the Redis URL",
			cm:       cm(map[string]string{"extraArgs": "-redis-url redis://x:1"}),
			wantErrs: []string{`key "extraArgs"`, "use the redisURL key"},
		},
		{
			name:     "extra arguments may not set the Redis addresses",
			cm:       cm(map[string]string{"extraArgs": "--redis-addrs r-0:6379,r-1:6379"}),
			wantErrs: []string{`key "extraArgs"`, "--redis-addrs is set by the controller: remove it and use the redisAddrs key"},
		},
		{
			name:     "extra arguments may not set the Sentinel master name",
			cm:       cm(map[string]string{"extraArgs": "--log-level debug --redis-master-name=mymaster"}),
			wantErrs: []string{`key "extraArgs"`, "--redis-master-name=mymaster is set by the controller: remove it and use the redisMasterName key"},
		},
		{
			name: "extra arguments may set other Redis flags",
			cm:   cm(map[string]string{"extraArgs": "--store-timeout=50ms"}),
			want: Params{Image: DefaultImage, ImagePullPolicy: corev1.PullIfNotPresent, Replicas: 1, ServiceType: corev1.ServiceTypeLoadBalancer,
				RedisURL: "redis://flags:6379", ExtraArgs: []string{"--store-timeout=50ms"}},
		},
		{
			name:     "every problem is reported at once",
			cm:       cm(map[string]string{"replicas": "-1", "serviceType": "Ingress", "colour": "blue"}),
			wantErrs: []string{`key "colour"`, `key "replicas"`, `key "serviceType"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defaults := flags
			if tt.defaults != nil {
				defaults = *tt.defaults
			}
			got, err := ParamsFromConfigMap(tt.cm, defaults)
			if len(tt.wantErrs) > 0 {
				if err == nil {
					t.Fatalf("ParamsFromConfigMap() = %+v, want an error", got)
				}
				for _, want := range tt.wantErrs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				for _, unwanted := range tt.notErrs {
					if strings.Contains(err.Error(), unwanted) {
						t.Errorf("error %q contains %q", err, unwanted)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParamsFromConfigMap() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("ParamsFromConfigMap() (-want +got):\n%s", diff)
			}
		})
	}
}
