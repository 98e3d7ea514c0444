package provision_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/internal/testkube"
)

// The provisioning suite runs against the real API server and etcd. envtest
// runs no controller-manager: no Deployment controller fills in a
// Deployment's status, no cloud provider gives a load balancer an address,
// and no garbage collector deletes what a deleted Gateway owned. The specs
// write those statuses themselves through the status subresource, and for
// deletion they check the owner references the garbage collector would
// follow.
func TestProvisionAgainstTheAPIServer(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Data-plane provisioning against the real API server")
}

var (
	kube        *testkube.Env
	scheme      *runtime.Scheme
	k8sClient   client.Client
	provisioner *provision.Provisioner
	// ca issues the client certificates of provisioner.
	ca  *pki.CA
	ctx = context.Background()
)

// controllerURL is where the specs' proxies would reach the controller.
const controllerURL = "https://toolgate-controller.toolgate-system.svc:9443"

// defaultParams are the least parameters of a data plane: every field but
// the controller's URL takes its default.
var defaultParams = provision.Params{ControllerURL: controllerURL}

var _ = BeforeSuite(func() {
	gatewayAPI, err := testkube.GatewayAPICRDDir()
	Expect(err).NotTo(HaveOccurred())
	kube, err = testkube.Start(testkube.CRDDir(), gatewayAPI)
	Expect(err).NotTo(HaveOccurred())

	scheme = runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(gwv1.Install(scheme)).To(Succeed())
	k8sClient, err = client.New(kube.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	ca, err = pki.NewCA(time.Now())
	Expect(err).NotTo(HaveOccurred())
	provisioner = provision.New(k8sClient, scheme, provision.Options{CA: ca})
})

var _ = AfterSuite(func() {
	if kube != nil {
		Expect(kube.Stop()).To(Succeed())
	}
})
