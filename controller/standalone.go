package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/controller/admission"
	"github.com/toolgate/toolgate/controller/configstream"
	"github.com/toolgate/toolgate/controller/load"
	"github.com/toolgate/toolgate/controller/translate"
	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/gateway"
)

// StandaloneOptions configure standalone mode: Gateways served from the
// manifests in a folder, without a cluster.
type StandaloneOptions struct {
	// Dir holds the manifests (*.yaml, multi-document).
	Dir string
	// ListenAddress is the IP address the listeners bind.
	ListenAddress string
	// Server serves the snapshots. Its Options.Extensions must build the
	// MCP filters, with MCPFilterBuilder on Filters.
	Server *gateway.Server
	// Filters is what the MCP filters share across reloads; each reload
	// keeps the metric series of the servers it serves only.
	Filters *filter.Shared
	// Out receives each object's status on start and on every reload.
	Out io.Writer
	// Logger receives the logs.
	Logger *slog.Logger
}

// reloadDelay gathers the events of one editor save into one reload.
const reloadDelay = 250 * time.Millisecond

// RunStandalone serves opts.Dir until ctx ends, reloading when a file
// changes and keeping the last good configuration when a new one is
// invalid. It fails at once when the first configuration is invalid.
func RunStandalone(ctx context.Context, opts StandaloneOptions) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	loader, err := load.New()
	if err != nil {
		return err
	}
	validator, err := admission.New()
	if err != nil {
		return err
	}
	s := &standalone{opts: opts, loader: loader, admission: validator, memory: translate.NewPolicyMemory()}
	if err := s.reload(); err != nil {
		return err
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", opts.Dir, err)
	}
	defer func() { _ = watcher.Close() }()
	if err := watcher.Add(opts.Dir); err != nil {
		return fmt.Errorf("watch %s: %w", opts.Dir, err)
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-watcher.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
				continue
			}
			timer = time.After(reloadDelay)
		case err, ok := <-watcher.Errors:
			if !ok {
				return nil
			}
			opts.Logger.Warn("watching the configuration folder", "error", err)
		case <-timer:
			timer = nil
			if err := s.reload(); err != nil {
				fmt.Fprintf(opts.Out, "\nconfiguration in %s is invalid; still serving the last good one:\n  %s\n", opts.Dir, indent(err.Error()))
			}
		}
	}
}

type standalone struct {
	opts      StandaloneOptions
	loader    *load.Loader
	admission *admission.Validator
	memory    *translate.PolicyMemory // keeps invalid MCPServers' last valid policies
}

func (s *standalone) reload() error {
	res, err := s.loader.Dir(s.opts.Dir)
	if err != nil {
		return err
	}
	implicitGatewayClasses(res)
	for _, m := range res.MCPServers {
		if m.UID == "" {
			// Files carry no UID: the name is the object's identity across
			// reloads, for the memory of last valid policies.
			m.UID = types.UID("standalone/" + m.Namespace + "/" + m.Name)
		}
	}
	addresses := []gwv1.GatewayStatusAddress{{Type: ptr.To(gwv1.IPAddressType), Value: s.opts.ListenAddress}}
	res.DataPlanes = map[types.NamespacedName]translate.DataPlane{}
	for _, gw := range res.Gateways {
		res.DataPlanes[nn(gw)] = translate.DataPlane{Ready: true, Addresses: addresses, Replicas: 1}
	}
	// The files are the operator's own and backends usually run beside
	// the gateway: loopback endpoints are allowed.
	out := translate.Translate(res, translate.Options{
		ListenAddress: s.opts.ListenAddress, Admission: s.admission,
		LoopbackEndpoints: true, Memory: s.memory,
	})
	cfg := &gateway.Config{}
	keys := make([]types.NamespacedName, 0, len(out.Gateways))
	for k := range out.Gateways {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	for _, k := range keys {
		cfg.Listeners = append(cfg.Listeners, out.Gateways[k].Listeners...)
	}
	// The snapshot takes the path it takes over the network to a proxy,
	// through its wire form: nothing that cannot be sent can hide in it,
	// and standalone mode serves exactly what a proxy would.
	wire, err := gateway.EncodeConfig(cfg)
	if err != nil {
		return fmt.Errorf("serve the configuration: %w", err)
	}
	applied, err := gateway.DecodeConfig(wire)
	if err != nil {
		return fmt.Errorf("serve the configuration: %w", err)
	}
	applied.Version = configstream.Version(wire)
	if err := s.opts.Server.Apply(applied); err != nil {
		return fmt.Errorf("serve the configuration: %w", err)
	}
	if s.opts.Filters != nil {
		s.opts.Filters.Retain(applied.MCPServers())
	}
	fmt.Fprintf(s.opts.Out, "\nconfiguration loaded from %s at %s:\n", s.opts.Dir, time.Now().Format(time.TimeOnly))
	printStatus(s.opts.Out, res, out, s.opts.Server)
	return nil
}

// implicitGatewayClasses adds a toolgate GatewayClass for every class the
// Gateways name when the files define none, so that a GatewayClass is
// optional in standalone mode.
func implicitGatewayClasses(res *translate.Resources) {
	defined := map[string]bool{}
	for _, c := range res.GatewayClasses {
		defined[c.Name] = true
	}
	for _, gw := range res.Gateways {
		name := string(gw.Spec.GatewayClassName)
		if defined[name] {
			continue
		}
		defined[name] = true
		res.GatewayClasses = append(res.GatewayClasses, &gwv1.GatewayClass{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       gwv1.GatewayClassSpec{ControllerName: translate.ControllerName},
		})
	}
}

// printStatus writes one line per object with its conditions, and the
// messages of those that need attention.
func printStatus(w io.Writer, res *translate.Resources, out *translate.Result, server *gateway.Server) {
	for _, c := range res.GatewayClasses {
		if st, ok := out.Status.GatewayClasses[c.Name]; ok {
			printConditions(w, "GatewayClass "+c.Name, st.Conditions)
		}
	}
	for _, g := range res.Gateways {
		st, ok := out.Status.Gateways[nn(g)]
		if !ok {
			fmt.Fprintf(w, "  Gateway %s: not served (its GatewayClass %s belongs to another controller)\n", nn(g), g.Spec.GatewayClassName)
			continue
		}
		printConditions(w, "Gateway "+nn(g).String(), st.Conditions)
		for _, l := range st.Listeners {
			where := ""
			if addr := server.Addr(nn(g).String() + "/" + string(l.Name)); addr != nil {
				where = " on http://" + addr.String()
			}
			printConditions(w, fmt.Sprintf("  listener %s%s, %d route(s)", l.Name, where, l.AttachedRoutes), l.Conditions)
		}
	}
	for _, set := range res.ListenerSets {
		st, ok := out.Status.ListenerSets[nn(set)]
		if !ok {
			fmt.Fprintf(w, "  ListenerSet %s: not served (its parentRef is no Gateway served here)\n", nn(set))
			continue
		}
		printConditions(w, "ListenerSet "+nn(set).String(), st.Conditions)
		for _, l := range st.Listeners {
			printConditions(w, fmt.Sprintf("  listener %s, %d route(s)", l.Name, l.AttachedRoutes), l.Conditions)
		}
	}
	for _, r := range res.HTTPRoutes {
		for _, p := range out.Status.HTTPRoutes[nn(r)] {
			printConditions(w, fmt.Sprintf("HTTPRoute %s (parent %s)", nn(r), p.ParentRef.Name), p.Conditions)
		}
	}
	for _, m := range res.MCPServers {
		if st, ok := out.Status.MCPServers[nn(m)]; ok {
			printConditions(w, "MCPServer "+nn(m).String(), st.Conditions)
		}
	}
	for _, p := range res.BackendTLSPolicies {
		for _, a := range out.Status.BackendTLSPolicies[nn(p)] {
			printConditions(w, fmt.Sprintf("BackendTLSPolicy %s (Gateway %s)", nn(p), a.AncestorRef.Name), a.Conditions)
		}
	}
}

func printConditions(w io.Writer, what string, conds []metav1.Condition) {
	var parts, notes []string
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s", c.Type, c.Status))
		if problem(c) || c.Type == "RateLimitingConfigValid" {
			notes = append(notes, fmt.Sprintf("%s %s: %s", c.Type, c.Reason, c.Message))
		}
	}
	fmt.Fprintf(w, "  %s: %s\n", what, strings.Join(parts, " "))
	for _, n := range notes {
		fmt.Fprintf(w, "      %s\n", n)
	}
}

func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n  ") }

// MCPFilterBuilder is the gateway's ExtensionBuilder (Options.Extensions)
// for the MCPServer references of toolgate's snapshots: it builds the MCP
// policy filter of each reference's policy on shared, the state (bucket
// store, key sets, metrics) that every filter of every snapshot shares.
func MCPFilterBuilder(shared *filter.Shared) gateway.ExtensionBuilder {
	return func(ref *gateway.ExtensionRef) (gateway.ExtensionFilter, error) {
		if ref.MCPServer == nil {
			return nil, fmt.Errorf("%s %q carries no MCPServer policy", ref.Kind, ref.Name)
		}
		f, err := filter.New(*ref.MCPServer, shared)
		if err != nil {
			return nil, err // not f: a nil *Filter is a non-nil ExtensionFilter
		}
		return f, nil
	}
}
