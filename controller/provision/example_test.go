package provision_test

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/toolgate/toolgate/controller/provision"
)

// A GatewayClass's parametersRef names a ConfigMap like this one; its keys
// override the controller's flags. The URL at which the proxies reach the
// controller is the controller's own: no key changes it.
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
	flags := provision.Params{
		Image:         "ghcr.io/toolgate/toolgate:v0.1.0",
		ControllerURL: "https://toolgate-controller.toolgate-system.svc:9443",
	}
	p, err := provision.ParamsFromConfigMap(cm, flags)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Image, p.Replicas, p.ServiceType, p.RedisURL, p.RedisPasswordSecret.Name, p.RedisPasswordSecret.Key)
	fmt.Println(p.ControllerURL)

	_, err = provision.ParamsFromConfigMap(&corev1.ConfigMap{Data: map[string]string{"replicas": "many"}}, provision.Params{})
	fmt.Println(err)
	// Output:
	// ghcr.io/toolgate/toolgate:v0.1.0 3 ClusterIP redis://redis.toolgate-system:6379 redis-auth password
	// https://toolgate-controller.toolgate-system.svc:9443
	// invalid data-plane parameters: key "replicas": "many" is not a number of replicas: use a whole number, 1 or more
}
