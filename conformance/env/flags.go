package env

import "flag"

// Flags choose the environment. The zero values start everything locally:
// the API server and etcd through envtest, redis-server, and the toolgate
// binary built from this checkout.
type Flags struct {
	// ToolgateBinary is a toolgate binary to run instead of building one.
	ToolgateBinary string
	// RedisURL is a Redis to use instead of starting redis-server. The
	// suite cannot stop a Redis it did not start, so the Redis outage spec
	// needs the suite's own.
	RedisURL string
	// BackendAddress is the IP the MCP backend listens on; empty means
	// 127.0.0.1 (see EndpointSliceFor).
	BackendAddress string
	// LogDir keeps the processes' logs; empty means a temporary folder,
	// removed when every spec passed.
	LogDir string
	// Pods runs nothing of toolgate here: the cluster of --kubeconfig runs
	// it (hack/cluster deploy), the suite's Gateway is of GatewayClass
	// GatewayClass, and its proxies are that Gateway's pods, reached at
	// their pod IPs.
	Pods bool
	// GatewayClass is an existing class to use with Pods; empty creates
	// one whose proxies share the suite's Redis.
	GatewayClass string
	// PreviousRelease is the folder hack/previous-release.sh prints: the
	// release before this checkout, built from source. With Pods it makes
	// the run the upgrade spec's (label upgrade), which replaces the
	// cluster's toolgate with that release and upgrades it to this
	// checkout's chart: the suite then creates no Gateway of its own.
	PreviousRelease string
	// Helm is the helm binary the upgrade spec runs; empty means the one
	// of hack/helm/go.mod (go tool -n).
	Helm string

	kubeconfig *flag.Flag
}

// RegisterFlags defines the suite's flags on fs. controller-runtime defines
// --kubeconfig on the default flag set when imported; the suite shares that
// flag instead of defining a second one.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	if fs.Lookup("kubeconfig") == nil {
		fs.String("kubeconfig", "", "")
	}
	f.kubeconfig = fs.Lookup("kubeconfig")
	f.kubeconfig.Usage = "kubeconfig of an existing cluster with the Gateway API and toolgate CRDs installed; empty starts kube-apiserver and etcd through envtest ($KUBEBUILDER_ASSETS)"
	fs.StringVar(&f.ToolgateBinary, "toolgate-binary", "", "toolgate binary to run; empty builds ./cmd/toolgate from this checkout")
	fs.StringVar(&f.RedisURL, "redis-url", "", "Redis the proxies share buckets through; empty starts redis-server on a free loopback port (needed by the Redis outage spec)")
	fs.StringVar(&f.BackendAddress, "backend-address", "", "IP address the MCP backend listens on, which its EndpointSlice points at; empty means 127.0.0.1, named in the slice as mcp-backend.localhost (the API server refuses loopback IPs in EndpointSlices). Give a routable address to run against a real cluster")
	fs.BoolVar(&f.Pods, "pods", false, "toolgate runs in the cluster of --kubeconfig (hack/cluster deploy): the suite's Gateway uses --gateway-class and its proxies are pods, reached at their IPs; needs --backend-address reachable from pods")
	fs.StringVar(&f.GatewayClass, "gateway-class", "", "with --pods: an existing GatewayClass for the suite's Gateway; empty creates one whose proxies share the suite's Redis (needed by the Redis outage spec)")
	fs.StringVar(&f.PreviousRelease, "previous-release", "", "with --pods: the previous release built by hack/previous-release.sh (the folder it prints); runs the upgrade spec alone (label upgrade), which replaces toolgate in the cluster with that release and upgrades it to this checkout's chart (make e2e)")
	fs.StringVar(&f.Helm, "helm", "", "helm binary of the upgrade spec; empty means go tool -n -modfile=hack/helm/go.mod helm")
	fs.StringVar(&f.LogDir, "log-dir", "", "folder for the processes' logs; empty uses a temporary folder, kept only when a spec fails")
	return f
}

// Kubeconfig is the --kubeconfig value.
func (f *Flags) Kubeconfig() string {
	if f.kubeconfig == nil {
		return ""
	}
	return f.kubeconfig.Value.String()
}
