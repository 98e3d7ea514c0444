package translate

import (
	"cmp"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/gateway"
)

// translateFilters converts HTTPRoute filters. prefixOnly says whether every
// match of the rule is a PathPrefix, which ReplacePrefixMatch needs;
// ruleFilters are the rule's filters when filters are a backendRef's (nil
// when they are the rule's own), which apply to its requests too.
func (t *translator) translateFilters(rs *routeState, route *gwv1.HTTPRoute, filters, ruleFilters []gwv1.HTTPRouteFilter, where string, prefixOnly bool) []gateway.Filter {
	var out []gateway.Filter
	for i, f := range filters {
		at := fmt.Sprintf("%s[%d]", where, i)
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier:
			out = append(out, gateway.Filter{Type: gateway.FilterRequestHeaderModifier, RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)})
		case gwv1.HTTPRouteFilterResponseHeaderModifier:
			out = append(out, gateway.Filter{Type: gateway.FilterResponseHeaderModifier, ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)})
		case gwv1.HTTPRouteFilterRequestRedirect:
			rr := f.RequestRedirect
			if rr == nil {
				rs.unsupported(at + ": requestRedirect is required for a RequestRedirect filter")
				continue
			}
			redirect := &gateway.Redirect{}
			if rr.Scheme != nil {
				redirect.Scheme = *rr.Scheme
			}
			if rr.Hostname != nil {
				redirect.Hostname = string(*rr.Hostname)
			}
			if rr.Port != nil {
				redirect.Port = int(*rr.Port)
			}
			if rr.StatusCode != nil {
				redirect.StatusCode = *rr.StatusCode
			}
			redirect.Path = t.pathModifier(rs, rr.Path, at, prefixOnly)
			out = append(out, gateway.Filter{Type: gateway.FilterRequestRedirect, RequestRedirect: redirect})
		case gwv1.HTTPRouteFilterURLRewrite:
			ur := f.URLRewrite
			if ur == nil {
				rs.unsupported(at + ": urlRewrite is required for a URLRewrite filter")
				continue
			}
			rewrite := &gateway.URLRewrite{Path: t.pathModifier(rs, ur.Path, at, prefixOnly)}
			if ur.Hostname != nil {
				rewrite.Hostname = string(*ur.Hostname)
			}
			out = append(out, gateway.Filter{Type: gateway.FilterURLRewrite, URLRewrite: rewrite})
		case gwv1.HTTPRouteFilterCORS:
			if slices.ContainsFunc(filters[:i], func(f gwv1.HTTPRouteFilter) bool { return f.Type == gwv1.HTTPRouteFilterCORS }) {
				rs.unsupported(at + ": a rule (or backendRef) may have one CORS filter: merge it into the first one")
				continue
			}
			if c := corsFilter(rs, f.CORS, at); c != nil {
				out = append(out, gateway.Filter{Type: gateway.FilterCORS, CORS: c})
			}
		case gwv1.HTTPRouteFilterRequestMirror:
			if m := t.requestMirror(rs, route, f.RequestMirror, append(slices.Clip(ruleFilters), filters...), at); m != nil {
				out = append(out, gateway.Filter{Type: gateway.FilterRequestMirror, RequestMirror: m})
			}
		case gwv1.HTTPRouteFilterExtensionRef:
			out = append(out, t.extensionRef(rs, route, f.ExtensionRef, at))
		default:
			rs.unsupported(fmt.Sprintf("%s: filter type %s is not supported by toolgate", at, f.Type))
		}
	}
	return out
}

func headerModifier(m *gwv1.HTTPHeaderFilter) *gateway.HeaderModifier {
	out := &gateway.HeaderModifier{}
	if m == nil {
		return out
	}
	for _, h := range m.Set {
		out.Set = append(out.Set, gateway.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range m.Add {
		out.Add = append(out.Add, gateway.Header{Name: string(h.Name), Value: h.Value})
	}
	out.Remove = append(out.Remove, m.Remove...)
	return out
}

// requestMirror converts a RequestMirror filter. Its backendRef is resolved
// as any other (ReferenceGrant, ResolvedRefs=False with the reason when it
// cannot be, BackendTLSPolicy); an unresolved one stays in the snapshot,
// marked invalid, and the gateway drops it. filters are those of the
// requests mirrored, for ConditionMCPPolicyEnforced: copies sent to an MCP
// server reach it as requests do.
func (t *translator) requestMirror(rs *routeState, route *gwv1.HTTPRoute, m *gwv1.HTTPRequestMirrorFilter, filters []gwv1.HTTPRouteFilter, at string) *gateway.RequestMirror {
	if m == nil {
		rs.unsupported(at + ": requestMirror is required for a RequestMirror filter")
		return nil
	}
	ref := gwv1.BackendRef{BackendObjectReference: m.BackendRef}
	where := at + ".requestMirror.backendRef"
	t.checkMCPPolicy(rs, route, filters, gwv1.HTTPBackendRef{BackendRef: ref}, where)
	out := &gateway.RequestMirror{Backend: t.translateBackend(rs, route, ref, where)}
	switch {
	case m.Percent != nil && m.Fraction != nil:
		rs.unsupported(at + ": requestMirror sets percent and fraction: keep one")
		return nil
	case m.Percent != nil:
		if *m.Percent < 0 || *m.Percent > 100 {
			rs.unsupported(fmt.Sprintf("%s: requestMirror.percent %d is not between 0 and 100", at, *m.Percent))
			return nil
		}
		out.Fraction = &gateway.Fraction{Numerator: *m.Percent, Denominator: 100}
	case m.Fraction != nil:
		f := gateway.Fraction{Numerator: m.Fraction.Numerator, Denominator: 100}
		if m.Fraction.Denominator != nil {
			f.Denominator = *m.Fraction.Denominator
		}
		if f.Denominator <= 0 || f.Numerator < 0 || f.Numerator > f.Denominator {
			rs.unsupported(fmt.Sprintf("%s: requestMirror.fraction %d/%d: the numerator must be between 0 and the denominator, which must be positive", at, f.Numerator, f.Denominator))
			return nil
		}
		out.Fraction = &f
	}
	return out
}

// defaultCORSMaxAge is the spec's default of cors.maxAge, in seconds, for
// routes that did not go through the API server's defaulting (standalone
// mode).
const defaultCORSMaxAge = 5

// corsFilter converts a CORS filter, or returns nil and makes the route
// refused (UnsupportedValue) with what to fix when the gateway could not
// serve it.
func corsFilter(rs *routeState, c *gwv1.HTTPCORSFilter, at string) *gateway.CORS {
	if c == nil {
		rs.unsupported(at + ": cors is required for a CORS filter")
		return nil
	}
	out := &gateway.CORS{AllowCredentials: c.AllowCredentials != nil && *c.AllowCredentials, MaxAge: cmp.Or(c.MaxAge, defaultCORSMaxAge)}
	for _, o := range c.AllowOrigins {
		out.AllowOrigins = append(out.AllowOrigins, string(o))
	}
	for _, m := range c.AllowMethods {
		out.AllowMethods = append(out.AllowMethods, string(m))
	}
	for _, h := range c.AllowHeaders {
		out.AllowHeaders = append(out.AllowHeaders, string(h))
	}
	for _, h := range c.ExposeHeaders {
		out.ExposeHeaders = append(out.ExposeHeaders, string(h))
	}
	if err := out.Check(); err != nil {
		rs.unsupported(fmt.Sprintf("%s: cors.%v", at, err))
		return nil
	}
	return out
}

func (t *translator) pathModifier(rs *routeState, p *gwv1.HTTPPathModifier, at string, prefixOnly bool) *gateway.PathModifier {
	if p == nil {
		return nil
	}
	switch p.Type {
	case gwv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			rs.unsupported(at + ": path.replaceFullPath is required for type ReplaceFullPath")
			return nil
		}
		return &gateway.PathModifier{Type: gateway.ReplaceFullPath, ReplaceFullPath: *p.ReplaceFullPath}
	case gwv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			rs.unsupported(at + ": path.replacePrefixMatch is required for type ReplacePrefixMatch")
			return nil
		}
		if !prefixOnly {
			rs.unsupported(at + ": ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
			return nil
		}
		return &gateway.PathModifier{Type: gateway.ReplacePrefixMatch, ReplacePrefixMatch: *p.ReplacePrefixMatch}
	default:
		rs.unsupported(fmt.Sprintf("%s: path modifier type %s is not supported", at, p.Type))
		return nil
	}
}

// extensionRef resolves an ExtensionRef filter to a copy of the MCPServer's
// policy, from which the data plane builds the filter. An unresolved
// reference keeps the route Accepted, sets ResolvedRefs=False and leaves the
// policy nil, so matching requests get 500 (GEP-1364).
func (t *translator) extensionRef(rs *routeState, route *gwv1.HTTPRoute, ref *gwv1.LocalObjectReference, at string) gateway.Filter {
	f := gateway.Filter{Type: gateway.FilterExtensionRef, ExtensionRef: &gateway.ExtensionRef{}}
	if ref == nil {
		rs.unsupported(at + ": extensionRef is required for an ExtensionRef filter")
		return f
	}
	f.ExtensionRef.Group, f.ExtensionRef.Kind, f.ExtensionRef.Name = string(ref.Group), string(ref.Kind), string(ref.Name)
	if string(ref.Group) != v1alpha1.GroupVersion.Group || ref.Kind != "MCPServer" {
		rs.unresolved(gwv1.RouteReasonInvalidKind,
			fmt.Sprintf("%s: ExtensionRef to %s/%s %q: toolgate only knows kind MCPServer of group %s", at, ref.Group, ref.Kind, ref.Name, v1alpha1.GroupVersion.Group))
		return f
	}
	nn := types.NamespacedName{Namespace: route.Namespace, Name: string(ref.Name)}
	if _, ok := t.idx.mcpServers[nn]; !ok {
		rs.unresolved(gwv1.RouteReasonBackendNotFound,
			fmt.Sprintf("%s: ExtensionRef to MCPServer %q: no MCPServer %s exists; create it, or fix the name (matching requests get HTTP 500 until then)", at, ref.Name, nn))
		return f
	}
	if !slices.Contains(rs.mcpServers, nn) {
		rs.mcpServers = append(rs.mcpServers, nn)
	}
	// A copy: the snapshot must share nothing with Result.Policies.
	f.ExtensionRef.MCPServer = t.out.Policies[nn].Clone()
	if f.ExtensionRef.MCPServer == nil {
		rs.unresolved(gwv1.RouteReasonBackendNotFound,
			fmt.Sprintf("%s: ExtensionRef to MCPServer %q: the MCPServer is not valid, see its Accepted condition (matching requests get HTTP 500 until then)", at, ref.Name))
	}
	return f
}
