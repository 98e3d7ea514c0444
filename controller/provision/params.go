package provision

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults of the data-plane parameters.
const (
	// DefaultImage runs the proxies unless Params.Image says otherwise.
	DefaultImage = "ghcr.io/toolgate/toolgate:latest"
	// DefaultReplicas is the number of proxy replicas per Gateway.
	DefaultReplicas int32 = 1
	// DefaultServiceType exposes the listeners outside the cluster.
	DefaultServiceType = corev1.ServiceTypeLoadBalancer
	// DefaultDrainDelay is how long a terminating proxy keeps accepting
	// connections (failing readiness, closing each connection after its
	// response) before it stops listening: the time kube-proxy, and most
	// load balancers' health checks, take to stop sending new connections
	// to an endpoint that is going away. Istio waits as long by default.
	DefaultDrainDelay = 5 * time.Second
	// DefaultDrainTimeout is how long a proxy that stopped listening waits
	// for requests in flight (tool calls) before closing their connections.
	DefaultDrainTimeout = 30 * time.Second
)

// Params shape the data plane of a Gateway. They come from the controller's
// flags, overridden per GatewayClass by the ConfigMap its parametersRef names
// (see ParamsFromConfigMap). A zero field takes its default.
type Params struct {
	// ControllerURL is where the proxies reach the controller's
	// configuration stream (https://...), passed to them as --controller.
	// It is a setting of the controller, not of a GatewayClass: the
	// ConfigMap cannot change it. Required: it has no default.
	ControllerURL string
	// Image is the toolgate image the proxies run; its entrypoint must be
	// the toolgate binary. DefaultImage when empty.
	Image string
	// ImagePullPolicy of the proxy container; when empty Kubernetes decides
	// (Always for a :latest tag, IfNotPresent otherwise).
	ImagePullPolicy corev1.PullPolicy
	// Replicas is the number of proxy replicas; DefaultReplicas when zero.
	// More than one replica needs Redis for rate limits to hold.
	Replicas int32
	// ServiceType of the Service exposing the listeners: ClusterIP,
	// NodePort or LoadBalancer. DefaultServiceType when empty.
	ServiceType corev1.ServiceType
	// RedisURL, when set, is passed to the proxies as --redis-url: one
	// Redis server. Not together with RedisAddrs.
	RedisURL string
	// RedisAddrs, when set, are passed to the proxies as --redis-addrs: the
	// HOST:PORT of Redis Cluster nodes, or of Sentinels when
	// RedisMasterName is set. Not together with RedisURL.
	RedisAddrs []string
	// RedisMasterName, when set, is passed to the proxies as
	// --redis-master-name: the Sentinel master the RedisAddrs watch.
	RedisMasterName string
	// RedisPasswordSecret, when set, names a key of a Secret in the
	// Gateway's namespace holding the Redis password (of the server, the
	// Cluster nodes or the Sentinel master); the proxies read it from the
	// environment variable RedisPasswordEnv.
	RedisPasswordSecret *corev1.SecretKeySelector
	// DrainDelay and DrainTimeout shape a proxy's graceful stop, passed to
	// the proxies as --drain-delay and --drain-timeout: DefaultDrainDelay
	// and DefaultDrainTimeout when zero, none when negative (a ConfigMap's
	// 0s). The pods' grace period is their sum and a margin (Deployment).
	DrainDelay   time.Duration
	DrainTimeout time.Duration
	// ExtraArgs are appended to the proxy's arguments.
	ExtraArgs []string
	// StaticAddressPool lists the networks whose addresses the class's
	// Gateways may claim in spec.addresses (type IPAddress). An address
	// outside of it is not usable (Programmed=False, AddressNotUsable);
	// without a pool no static address is.
	StaticAddressPool []netip.Prefix
	// ExternalIPs are the static addresses assigned to one Gateway
	// (translate.Result.StaticAddresses): its Service carries them in
	// spec.externalIPs, which kube-proxy routes to the proxies. The
	// controller sets them per Gateway; they are not a GatewayClass
	// parameter.
	ExternalIPs []string
}

// drain returns the proxies' drain delay and timeout, defaults applied.
func (p Params) drain() (delay, timeout time.Duration) {
	resolve := func(d, def time.Duration) time.Duration {
		switch {
		case d == 0:
			return def
		case d < 0:
			return 0
		}
		return d
	}
	return resolve(p.DrainDelay, DefaultDrainDelay), resolve(p.DrainTimeout, DefaultDrainTimeout)
}

// SharedStore reports whether the proxies share their token buckets through
// Redis, by URL or by Cluster or Sentinel addresses. Without it each replica
// keeps its own buckets.
func (p Params) SharedStore() bool {
	return p.RedisURL != "" || len(p.RedisAddrs) > 0
}

// WithDefaults returns p with its zero fields set to their defaults.
func (p Params) WithDefaults() Params {
	if p.Image == "" {
		p.Image = DefaultImage
	}
	if p.Replicas == 0 {
		p.Replicas = DefaultReplicas
	}
	if p.ServiceType == "" {
		p.ServiceType = DefaultServiceType
	}
	return p
}

// The keys of a parameters ConfigMap.
const (
	KeyImage               = "image"
	KeyImagePullPolicy     = "imagePullPolicy"
	KeyReplicas            = "replicas"
	KeyServiceType         = "serviceType"
	KeyRedisURL            = "redisURL"
	KeyRedisAddrs          = "redisAddrs"
	KeyRedisMasterName     = "redisMasterName"
	KeyRedisPasswordSecret = "redisPasswordSecret"
	KeyExtraArgs           = "extraArgs"
	KeyStaticAddressPool   = "staticAddressPool"
	KeyDrainDelay          = "drainDelay"
	KeyDrainTimeout        = "drainTimeout"
)

var configMapKeys = []string{
	KeyImage, KeyImagePullPolicy, KeyReplicas, KeyServiceType,
	KeyRedisURL, KeyRedisAddrs, KeyRedisMasterName, KeyRedisPasswordSecret, KeyExtraArgs,
	KeyStaticAddressPool, KeyDrainDelay, KeyDrainTimeout,
}

// redisStoreKeys say where the shared store is. A ConfigMap that sets any of
// them replaces the controller's store as a whole, so that a class can pick
// Sentinel while the controller's flags name a URL.
var redisStoreKeys = []string{KeyRedisURL, KeyRedisAddrs, KeyRedisMasterName}

// controllerFlagKeys map the proxy flags the controller sets to the key that
// sets each of them; extraArgs may not hold them.
var controllerFlagKeys = map[string]string{
	"gateway":            "",
	"controller":         "",
	"controller-tls-dir": "",
	"redis-url":          KeyRedisURL,
	"redis-addrs":        KeyRedisAddrs,
	"redis-master-name":  KeyRedisMasterName,
	"drain-delay":        KeyDrainDelay,
	"drain-timeout":      KeyDrainTimeout,
}

// ParamsFromConfigMap overrides defaults with the keys of cm, the ConfigMap a
// GatewayClass's parametersRef names, and returns the result with defaults
// applied. Every key is optional:
//
//	image                the proxy image
//	imagePullPolicy      Always, IfNotPresent or Never
//	replicas             proxy replicas, 1 or more
//	serviceType          ClusterIP, NodePort or LoadBalancer
//	redisURL             redis://, rediss:// or unix:// URL, without a password
//	redisAddrs           HOST:PORT of Redis Cluster nodes or Sentinels, comma-separated
//	redisMasterName      the Sentinel master's name (with redisAddrs of Sentinels)
//	redisPasswordSecret  "name/key" of a Secret in each Gateway's namespace
//	extraArgs            more proxy arguments, separated by spaces (no quoting)
//	staticAddressPool    CIDRs (or single IPs) Gateways may claim in spec.addresses, comma-separated
//	drainDelay           how long a terminating proxy keeps accepting connections, such as 5s (DefaultDrainDelay)
//	drainTimeout         how long it then waits for requests in flight, such as 30s (DefaultDrainTimeout)
//
// Setting any of redisURL, redisAddrs and redisMasterName replaces all three
// of defaults; redisURL and redisAddrs may not both be set, and
// redisMasterName needs redisAddrs. An unknown key or a bad value is an
// error that names every problem and says what to change. A nil cm returns
// the defaults.
func ParamsFromConfigMap(cm *corev1.ConfigMap, defaults Params) (Params, error) {
	p := defaults
	if cm == nil {
		return p.WithDefaults(), nil
	}
	var problems []string
	keys := make([]string, 0, len(cm.Data))
	for k := range cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if slices.ContainsFunc(redisStoreKeys, func(k string) bool { _, set := cm.Data[k]; return set }) {
		p.RedisURL, p.RedisAddrs, p.RedisMasterName = "", nil, ""
	}
	badRedisKey := false
	for _, k := range keys {
		if problem := p.set(k, cm.Data[k]); problem != "" {
			problems = append(problems, fmt.Sprintf("key %q: %s", k, problem))
			badRedisKey = badRedisKey || slices.Contains(redisStoreKeys, k)
		}
	}
	switch {
	case badRedisKey:
		// The keys' combination is judged once each of them is right.
	case p.RedisURL != "" && len(p.RedisAddrs) > 0:
		problems = append(problems, fmt.Sprintf("keys %q and %q: set one Redis, by URL or by Cluster or Sentinel addresses; remove the other key", KeyRedisURL, KeyRedisAddrs))
	case p.RedisMasterName != "" && len(p.RedisAddrs) == 0:
		problems = append(problems, fmt.Sprintf("key %q: a Sentinel master name needs the Sentinels' HOST:PORT in %q", KeyRedisMasterName, KeyRedisAddrs))
	}
	binary := make([]string, 0, len(cm.BinaryData))
	for k := range cm.BinaryData {
		binary = append(binary, k)
	}
	slices.Sort(binary)
	for _, k := range binary {
		problems = append(problems, fmt.Sprintf("binaryData key %q: parameters are text; move it to data", k))
	}
	if len(problems) > 0 {
		return Params{}, fmt.Errorf("invalid data-plane parameters: %s", strings.Join(problems, "; "))
	}
	return p.WithDefaults(), nil
}

// set applies one ConfigMap key to p and returns what is wrong with it, if
// anything.
func (p *Params) set(key, raw string) string {
	value := strings.TrimSpace(raw)
	switch key {
	case KeyImage:
		if value == "" || strings.ContainsAny(value, " \t\r\n") {
			return fmt.Sprintf("%q is not an image reference: set it to one such as %s, or remove the key", raw, DefaultImage)
		}
		p.Image = value
	case KeyImagePullPolicy:
		switch policy := corev1.PullPolicy(value); policy {
		case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
			p.ImagePullPolicy = policy
		default:
			return fmt.Sprintf("%q is not a pull policy: use Always, IfNotPresent or Never", raw)
		}
	case KeyReplicas:
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || n < 1 {
			return fmt.Sprintf("%q is not a number of replicas: use a whole number, 1 or more", raw)
		}
		p.Replicas = int32(n)
	case KeyServiceType:
		switch t := corev1.ServiceType(value); t {
		case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
			p.ServiceType = t
		default:
			return fmt.Sprintf("%q is not a supported Service type: use ClusterIP, NodePort or LoadBalancer", raw)
		}
	case KeyRedisURL:
		if problem := checkRedisURL(value); problem != "" {
			return problem
		}
		p.RedisURL = value
	case KeyRedisAddrs:
		addrs, err := ParseRedisAddrs(value)
		if err != nil {
			return err.Error()
		}
		p.RedisAddrs = addrs
	case KeyRedisMasterName:
		if value == "" || strings.ContainsAny(value, " \t\r\n") {
			return fmt.Sprintf("%q is not a Sentinel master name: set it to the name the Sentinels monitor (sentinel monitor NAME ...), such as mymaster, or remove the key", raw)
		}
		p.RedisMasterName = value
	case KeyRedisPasswordSecret:
		sel, problem := parseSecretKey(value)
		if problem != "" {
			return problem
		}
		p.RedisPasswordSecret = sel
	case KeyExtraArgs:
		args := strings.Fields(value)
		for _, a := range args {
			if !strings.HasPrefix(a, "-") {
				continue
			}
			flag, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			key, set := controllerFlagKeys[flag]
			switch {
			case !set:
			case key == "":
				return fmt.Sprintf("%s is set by the controller: remove it", a)
			default:
				return fmt.Sprintf("%s is set by the controller: remove it and use the %s key", a, key)
			}
		}
		p.ExtraArgs = args
	case KeyDrainDelay, KeyDrainTimeout:
		d, err := time.ParseDuration(value)
		if err != nil || d < 0 {
			return fmt.Sprintf("%q is not a duration: use one such as 5s, 30s or 2m (0s for none)", raw)
		}
		if d == 0 {
			d = -1 // set to none, not left to the default
		}
		if key == KeyDrainDelay {
			p.DrainDelay = d
		} else {
			p.DrainTimeout = d
		}
	case KeyStaticAddressPool:
		pool, err := ParseAddressPool(value)
		if err != nil {
			return err.Error()
		}
		p.StaticAddressPool = pool
	default:
		return "unknown key: the keys toolgate reads are " + strings.Join(configMapKeys, ", ")
	}
	return ""
}

// ParseRedisAddrs reads the comma-separated HOST:PORT addresses of Redis
// Cluster nodes or Sentinels, as --redis-addrs and the redisAddrs key take
// them. Spaces around an address are dropped; an empty address, one without
// a host or a port in 1-65535, and a repeated address are errors that say
// what to change.
func ParseRedisAddrs(value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, errors.New("no address: list HOST:PORT addresses separated by commas, such as redis-0.redis:6379,redis-1.redis:6379")
	}
	var addrs []string
	for a := range strings.SplitSeq(value, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%q has an empty address: list HOST:PORT addresses separated by commas, such as redis-0.redis:6379,redis-1.redis:6379", value)
		}
		if strings.Contains(a, "://") {
			return nil, fmt.Errorf("%q is a URL: list HOST:PORT without a scheme, or give one server by URL instead (key redisURL, flag --redis-url)", a)
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || strings.ContainsAny(host, " \t") {
			return nil, fmt.Errorf("%q is not HOST:PORT: write each address as a host and a port, such as redis-0.redis:6379 or [fd00::1]:6379", a)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return nil, fmt.Errorf("%q has no valid port: use a port from 1 to 65535, such as %s:6379", a, host)
		}
		if slices.Contains(addrs, a) {
			return nil, fmt.Errorf("%q is listed twice: list each address once", a)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// ParseAddressPool reads the comma-separated networks of a static address
// pool, as the staticAddressPool key takes them: CIDRs such as
// 10.200.1.0/24 or fd00:1::/120, or single addresses (a /32 or /128).
// Spaces around an entry are dropped; an empty entry, a CIDR with host bits
// set, an address with a zone and a repeated entry are errors that say what
// to change.
func ParseAddressPool(value string) ([]netip.Prefix, error) {
	const example = "such as 10.200.1.0/24,10.200.2.7"
	if strings.TrimSpace(value) == "" {
		return nil, errors.New("no network: list CIDRs or IP addresses separated by commas, " + example + ", or remove the key")
	}
	var pool []netip.Prefix
	for entry := range strings.SplitSeq(value, ",") {
		entry = strings.TrimSpace(entry)
		var prefix netip.Prefix
		switch {
		case entry == "":
			return nil, fmt.Errorf("%q has an empty entry: list CIDRs or IP addresses separated by commas, %s", value, example)
		case strings.Contains(entry, "/"):
			p, err := netip.ParsePrefix(entry)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR: write a network as ADDRESS/BITS, %s", entry, example)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("%q has host bits set: write the network's first address, %s, or one address as %s", entry, p.Masked(), p.Addr())
			}
			prefix = p
		default:
			a, err := netip.ParseAddr(entry)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not an IP address or a CIDR: %s", entry, example)
			}
			prefix = netip.PrefixFrom(a, a.BitLen())
		}
		if slices.Contains(pool, prefix) {
			return nil, fmt.Errorf("%q is listed twice: list each network once", entry)
		}
		pool = append(pool, prefix)
	}
	return pool, nil
}

func checkRedisURL(value string) string {
	u, err := url.Parse(value)
	if err != nil || value == "" {
		return fmt.Sprintf("%q is not a URL: use redis://HOST:PORT, rediss://HOST:PORT or unix:///PATH", value)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return fmt.Sprintf("scheme %q is not supported: use redis://, rediss:// (TLS) or unix://", u.Scheme)
	}
	if u.Scheme != "unix" && u.Host == "" {
		return fmt.Sprintf("%q has no host: use %s://HOST:PORT", value, u.Scheme)
	}
	if _, has := u.User.Password(); has {
		return "the URL holds a password, which would be visible in the proxy Deployment: remove it and name a Secret in " + KeyRedisPasswordSecret
	}
	return ""
}

func parseSecretKey(value string) (*corev1.SecretKeySelector, string) {
	name, key, ok := strings.Cut(value, "/")
	if !ok || name == "" || key == "" {
		return nil, fmt.Sprintf("%q is not NAME/KEY: name the Secret (in each Gateway's namespace) and its key, such as redis-auth/password", value)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Sprintf("Secret name %q is not valid (%s)", name, strings.Join(errs, ", "))
	}
	if errs := validation.IsConfigMapKey(key); len(errs) > 0 {
		return nil, fmt.Sprintf("Secret key %q is not valid (%s)", key, strings.Join(errs, ", "))
	}
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}, ""
}
