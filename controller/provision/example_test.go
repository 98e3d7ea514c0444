package provision_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toolgate/toolgate/controller/provision"
)

// A GatewayClass's parametersRef names a ConfigMap like this one; its keys
// override the controller's flags.
func ExampleParamsFromConfigMap() {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "toolgate-system", Name: "toolgate-params"},
		Data: map[string]string{
			"replicas":            "3",
			"serviceType":         "ClusterIP",
			"redisURL":            "redis://redis.toolgate-system:6379",
			"redisPasswordSecret": "redis-auth/password",
		},
	}
	p, err := provision.ParamsFromConfigMap(cm, provision.Params{Image: "ghcr.io/toolgate/toolgate:v0.1.0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Image, p.Replicas, p.ServiceType, p.RedisURL, p.RedisPasswordSecret.Name, p.RedisPasswordSecret.Key)

	_, err = provision.ParamsFromConfigMap(&corev1.ConfigMap{Data: map[string]string{"replicas": "many"}}, provision.Params{})
	fmt.Println(err)
	// Output:
	// ghcr.io/toolgate/toolgate:v0.1.0 3 ClusterIP redis://redis.toolgate-system:6379 redis-auth password
	// invalid data-plane parameters: key "replicas": "many" is not a number of replicas: use a whole number, 1 or more
}
