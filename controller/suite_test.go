package controller_test

import (
	"context"
	"github.com/go-logr/logr"
	"io"
	"log/slog"
	"net"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/toolgate/toolgate/controller"
	"github.com/toolgate/toolgate/controller/pki"
	"github.com/toolgate/toolgate/controller/provision"
	"github.com/toolgate/toolgate/internal/testkube"
	"github.com/toolgate/toolgate/internal/testport"
)

func TestController(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controller against the real API server")
}

var (
	kube      *testkube.Env
	k8sClient client.Client
	scheme    *runtime.Scheme
	ctx       context.Context
	stop      context.CancelFunc
	// relevance and managerCache are the controller's, for specs that
	// look at what it caches.
	relevance    *controller.Relevance
	managerCache cache.Cache
	// streamCA and streamURL are the config stream's, which every spec's
	// Gateways are published on.
	streamCA   *pki.CA
	streamURL  string
	streamPort *testport.Port
	// streamMetrics holds the config stream's and the publisher's metrics.
	streamMetrics *prometheus.Registry
)

var _ = BeforeSuite(func() {
	gatewayCRDs, err := testkube.GatewayAPICRDDir()
	Expect(err).NotTo(HaveOccurred())
	kube, err = testkube.Start(testkube.CRDDir(), gatewayCRDs)
	Expect(err).NotTo(HaveOccurred())
	scheme, err = controller.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(kube.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	log.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(GinkgoWriter, nil)))
	ctx, stop = context.WithCancel(context.Background())
	relevance = controller.NewRelevance()
	mgr, err := ctrl.NewManager(kube.Config, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controller.CacheOptions(relevance),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	Expect(err).NotTo(HaveOccurred())
	managerCache = mgr.GetCache()
	streamCA, err = pki.NewCA(time.Now())
	Expect(err).NotTo(HaveOccurred())
	ports, err := testport.Reserve("127.0.0.1", 1)
	Expect(err).NotTo(HaveOccurred())
	streamPort = ports[0]
	streamAddress := net.JoinHostPort("127.0.0.1", strconv.Itoa(streamPort.Number))
	streamURL = "https://" + streamAddress
	streamMetrics = prometheus.NewRegistry()
	Expect(controller.Setup(mgr, controller.Options{
		Params:    provision.Params{ControllerURL: "https://toolgate-controller.toolgate-system.svc:9443"},
		CA:        streamCA,
		Logger:    slog.New(slog.NewTextHandler(GinkgoWriter, nil)),
		Relevance: relevance,
		Stream: &controller.StreamOptions{
			Address: streamAddress, CA: streamCA, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
			Registerer: streamMetrics,
		},
	})).To(Succeed())
	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
})

var _ = AfterSuite(func() {
	if stop != nil {
		stop()
	}
	if kube != nil {
		Expect(kube.Stop()).To(Succeed())
	}
	if streamPort != nil {
		streamPort.Release()
	}
})

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))
