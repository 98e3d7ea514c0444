package provision

import (
	"strings"
	"testing"

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

func TestParamsFromConfigMap(t *testing.T) {
	flags := Params{RedisURL: "redis://flags:6379", ImagePullPolicy: corev1.PullIfNotPresent}
	cm := func(data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "params", Namespace: "toolgate-system"}, Data: data}
	}
	tests := []struct {
		name     string
		cm       *corev1.ConfigMap
		want     Params
		wantErrs []string // substrings of the error; none means success
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
			wantErrs: []string{`key "replica": unknown key`, "image, imagePullPolicy, replicas, serviceType, redisURL, redisPasswordSecret, extraArgs"},
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
			name:     "every problem is reported at once",
			cm:       cm(map[string]string{"replicas": "-1", "serviceType": "Ingress", "colour": "blue"}),
			wantErrs: []string{`key "colour"`, `key "replicas"`, `key "serviceType"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParamsFromConfigMap(tt.cm, flags)
			if len(tt.wantErrs) > 0 {
				if err == nil {
					t.Fatalf("ParamsFromConfigMap() = %+v, want an error", got)
				}
				for _, want := range tt.wantErrs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParamsFromConfigMap() error: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParamsFromConfigMap() (-want +got):\n%s", diff)
			}
		})
	}
}
