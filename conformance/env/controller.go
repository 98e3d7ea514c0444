package env

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/internal/testkube"
)

// The controller's identity when the suite runs its own API server: the
// ServiceAccount of config/rbac, with exactly the RBAC that
// `kubectl apply -k config/default` installs.
const (
	controllerNamespace      = "toolgate-system"
	controllerServiceAccount = "toolgate-controller"
)

// startController starts `toolgate controller`. With the suite's own API
// server it runs as the ServiceAccount of config/rbac, so that a permission
// missing from the generated RBAC fails the suite; against an existing
// cluster it uses the given kubeconfig, and keeps its CA in the suite's
// namespace so that it never touches an installed toolgate's.
func (e *Env) startController(ctx context.Context, binary string) error {
	kubeconfig, caNamespace := e.KubeconfigPath, e.Namespace
	if e.kube != nil {
		e.logf("installing config/rbac and running the controller as its ServiceAccount")
		var err error
		kubeconfig, err = e.kube.ServiceAccountKubeconfig(ctx, controllerNamespace, controllerServiceAccount)
		if err != nil {
			return err
		}
		if out, err := e.Kubectl("apply", "-k", filepath.Join(testkube.RepoRoot(), "config", "rbac")); err != nil {
			return fmt.Errorf("kubectl apply -k config/rbac: %w\n%s", err, out)
		}
		caNamespace = controllerNamespace
	}
	port, err := freePortOn([]string{"127.0.0.1"})
	if err != nil {
		return err
	}
	streamAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	e.StreamURL = "https://" + streamAddr
	args := []string{
		"controller",
		"--kubeconfig", kubeconfig,
		"--namespace", caNamespace,
		"--leader-elect=false",
		"--metrics-address", "0",
		"--health-address", "0",
		"--config-stream-address", streamAddr,
		"--config-stream-url", e.StreamURL,
		"--redis-url", e.Redis.URL,
		"--proxy-replicas", strconv.Itoa(len(proxyIPs)),
		"--proxy-service-type", string(corev1.ServiceTypeClusterIP),
	}
	if backend := net.ParseIP(e.Backend.IP); backend != nil && backend.IsLoopback() {
		// The backend is named mcp-backend.localhost (EndpointSliceFor),
		// which the translator refuses unless told the proxies run beside
		// their backends.
		args = append(args, "--dev-localhost-endpoints")
	}
	e.binary = binary
	e.logf("starting toolgate controller (config stream on %s)", streamAddr)
	e.Controller, err = startProcess("controller", e.LogDir, binary, args, nil)
	return err
}

// StartControllerReplica starts another controller process beside
// Controller, with leader election on and its own config stream, and
// returns it with its stream's URL. The caller stops it.
func (e *Env) StartControllerReplica(ctx context.Context, name string) (*Process, string, error) {
	port, err := freePortOn([]string{"127.0.0.1"})
	if err != nil {
		return nil, "", err
	}
	streamAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var args []string
	for i := 0; i < len(e.Controller.args); i++ {
		switch a := e.Controller.args[i]; a {
		case "--leader-elect=false":
			args = append(args, "--leader-elect=true")
		case "--config-stream-address", "--config-stream-url":
			args = append(args, a, map[string]string{"--config-stream-address": streamAddr, "--config-stream-url": "https://" + streamAddr}[a])
			i++
		default:
			args = append(args, a)
		}
	}
	p, err := startProcess(name, e.LogDir, e.binary, args, nil)
	return p, "https://" + streamAddr, err
}

// RestartController stops the controller and starts it again with the same
// arguments, as a rollout would.
func (e *Env) RestartController(ctx context.Context) error {
	if err := e.Controller.Stop(stopGrace); err != nil {
		return err
	}
	p, err := e.Controller.restart()
	if err != nil {
		return err
	}
	e.Controller = p
	return nil
}

// ConfigClientFiles does what the kubelet does for the Gateway gw's proxy
// pods: it waits for the client-certificate Secret the controller
// provisions and writes its keys into a folder, whose path it returns.
func (e *Env) ConfigClientFiles(ctx context.Context, gw types.NamespacedName) (string, error) {
	var gateway gwv1.Gateway
	if err := e.Client.Get(ctx, gw, &gateway); err != nil {
		return "", err
	}
	key := types.NamespacedName{Namespace: gw.Namespace, Name: provision.ConfigClientSecretName(&gateway)}
	deadline := time.Now().Add(time.Minute)
	var secret corev1.Secret
	for {
		err := e.Client.Get(ctx, key, &secret)
		if err == nil {
			break
		}
		if !apierrors.IsNotFound(err) {
			return "", err
		}
		if err := e.Controller.errExited(); err != nil {
			return "", err
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the controller provisioned no Secret %s within a minute; its output:\n%s", key, e.Controller.LogSince(0, 8<<10))
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir := filepath.Join(e.scratch, "config-"+gw.Namespace+"-"+gw.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, "ca.crt"} {
		if len(secret.Data[k]) == 0 {
			return "", fmt.Errorf("Secret %s has no %s", key, k)
		}
		if err := os.WriteFile(filepath.Join(dir, k), secret.Data[k], 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
}
