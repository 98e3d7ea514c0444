package env

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/provision"
)

// Pods reports whether toolgate runs in the cluster (--pods): its proxies
// are pods, and the suite runs no toolgate process.
func (e *Env) Pods() bool { return e.pods }

// findProxyPods waits until the cluster's controller has programmed the
// suite's Gateway and every one of its proxy pods is ready and serves the
// listener, and sets Proxies to them, each at its pod IP.
func (e *Env) findProxyPods(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	for {
		pods, err := e.readyProxyPods(ctx)
		if err == nil {
			e.Proxies = pods
			ok := true
			for _, p := range pods {
				ok = ok && p.serving(ctx)
			}
			if ok {
				return nil
			}
			err = fmt.Errorf("the proxy pods %s do not all serve yet", e.proxyURLs())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Gateway %s is not served by ready proxy pods after %s: %w", e.Gateway, startTimeout, err)
		}
		time.Sleep(time.Second)
	}
}

// readyProxyPods lists the ready pods of the Gateway's proxies, once the
// Gateway is Programmed and all its replicas are ready.
func (e *Env) readyProxyPods(ctx context.Context) ([]*Proxy, error) {
	var gw gwv1.Gateway
	if err := e.Client.Get(ctx, e.Gateway, &gw); err != nil {
		return nil, err
	}
	if !meta.IsStatusConditionTrue(gw.Status.Conditions, string(gwv1.GatewayConditionProgrammed)) {
		return nil, fmt.Errorf("Gateway %s is not Programmed: %v", e.Gateway, gw.Status.Conditions)
	}
	var list corev1.PodList
	if err := e.Client.List(ctx, &list, client.InNamespace(e.Namespace), client.MatchingLabels(provision.Names(&gw).Labels)); err != nil {
		return nil, err
	}
	var out []*Proxy
	for i := range list.Items {
		pod := &list.Items[i]
		if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" || !podReady(pod) {
			continue
		}
		out = append(out, &Proxy{
			Process:  &Process{Name: "pod " + pod.Name},
			URL:      "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(e.ListenerPort)),
			AdminURL: "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(provision.AdminPort))),
		})
	}
	if len(out) < len(proxyIPs) {
		return nil, fmt.Errorf("%d of %d proxy pods of Gateway %s are ready", len(out), len(proxyIPs), e.Gateway)
	}
	return out, nil
}

// RefreshProxyPods waits for the Gateway's proxy pods again, after one was
// replaced.
func (e *Env) RefreshProxyPods(ctx context.Context) error { return e.findProxyPods(ctx) }

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (e *Env) proxyURLs() string {
	var urls []string
	for _, p := range e.Proxies {
		urls = append(urls, p.URL)
	}
	return strings.Join(urls, ", ")
}
