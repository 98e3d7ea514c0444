// Package testkube starts the real Kubernetes API server and etcd for tests,
// through controller-runtime's envtest, with toolgate's CRDs installed.
//
// The binaries come from KUBEBUILDER_ASSETS, which `make test` points at the
// cache hack/testbin.sh builds from source. A test never skips because they
// are missing: it fails and says how to build them.
package testkube

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Binaries the test environment runs.
var binaries = []string{"kube-apiserver", "etcd", "kubectl"}

// Env is a running API server with etcd.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file for Config, for kubectl.
	KubeconfigPath string
	// KubectlPath is the kubectl binary built with the API server.
	KubectlPath string
	// AuditLogPath is the API server's audit log: one JSON event per line
	// (audit.k8s.io/v1) for every request of a ServiceAccount, at the
	// Metadata level, when its response starts and when it ends.
	AuditLogPath string

	env *envtest.Environment
	dir string
}

// RepoRoot is the root of the toolgate repository, found from this file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// CRDDir is the folder of toolgate's generated CRDs.
func CRDDir() string { return filepath.Join(RepoRoot(), "config", "crd", "bases") }

// GatewayAPICRDDir is the standard channel CRDs of the Gateway API module
// the project builds with.
func GatewayAPICRDDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return "", fmt.Errorf("find the sigs.k8s.io/gateway-api module: %w", err)
	}
	dir := filepath.Join(string(trimNewline(out)), "config", "crd", "standard")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("gateway API CRDs: %w", err)
	}
	return dir, nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// AssetsDir returns the folder holding kube-apiserver, etcd and kubectl, or
// an error that says how to build them.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		return "", errors.New("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', or export KUBEBUILDER_ASSETS=$(./hack/testbin.sh)")
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s is missing from KUBEBUILDER_ASSETS=%s: run ./hack/testbin.sh to build it", b, dir)
		}
	}
	return dir, nil
}

// Start starts etcd and the API server and installs the CRDs found in
// crdDirs (toolgate's own when none are given).
func Start(crdDirs ...string) (*Env, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	if len(crdDirs) == 0 {
		crdDirs = []string{CRDDir()}
	}
	dir, err := os.MkdirTemp("", "toolgate-testkube-")
	if err != nil {
		return nil, err
	}
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
	}
	auditLog := filepath.Join(dir, "audit.log")
	env.ControlPlane.GetAPIServer().Configure().
		Set("audit-policy-file", policy).
		Set("audit-log-path", auditLog).
		Set("audit-log-mode", "blocking")
	cfg, err := env.Start()
	if err != nil {
		// Start leaves the processes running when, say, a CRD is refused.
		_ = env.Stop()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start the API server and etcd from %s: %w", assets, err)
	}
	e := &Env{Config: cfg, KubectlPath: filepath.Join(assets, "kubectl"), AuditLogPath: auditLog, env: env, dir: dir}
	if err := e.writeKubeconfig(); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// auditPolicy logs the requests of ServiceAccounts (the controller's),
// without their bodies, and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
`

func (e *Env) writeKubeconfig() error {
	user, err := e.env.AddUser(envtest.User{Name: "toolgate-test-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add a test user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig for the test user: %w", err)
	}
	e.KubeconfigPath = filepath.Join(e.dir, "kubeconfig")
	return os.WriteFile(e.KubeconfigPath, kubeconfig, 0o600)
}

// Kubectl runs the real kubectl against the test API server and returns its
// combined output.
func (e *Env) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(e.KubectlPath, append([]string{"--kubeconfig", e.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Stop stops the API server and etcd and removes temporary files.
func (e *Env) Stop() error {
	err := e.env.Stop()
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
	return err
}
