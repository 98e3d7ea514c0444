package gateway

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
)

// wrapFilters builds the handler chain of a filter list around next, once
// per snapshot. Filters run in list order, as the spec recommends, but for
// CORS, which runs first.
func (c *compiler) wrapFilters(filters []Filter, next http.Handler) (http.Handler, error) {
	rewrites, redirects, cors := 0, 0, -1
	for i, f := range filters {
		switch f.Type {
		case FilterURLRewrite:
			rewrites++
		case FilterRequestRedirect:
			redirects++
		case FilterCORS:
			if cors >= 0 {
				return nil, fmt.Errorf("at most one CORS filter is allowed")
			}
			cors = i
		}
	}
	if rewrites > 1 {
		return nil, fmt.Errorf("at most one URLRewrite filter is allowed")
	}
	if rewrites > 0 && redirects > 0 {
		return nil, fmt.Errorf("URLRewrite and RequestRedirect filters cannot be combined")
	}
	h := next
	for i := len(filters) - 1; i >= 0; i-- {
		if i == cors {
			continue
		}
		var err error
		if h, err = c.wrapFilter(filters[i], h); err != nil {
			return nil, fmt.Errorf("filter %d (%s): %w", i, filters[i].Type, err)
		}
	}
	if cors >= 0 {
		// Outermost, wherever the list has it: the spec asks for list
		// order only "wherever possible", and CORS headers belong on
		// every answer of the rule, the other filters' included (a 401
		// of the MCP filter, a redirect), while a preflight must be
		// answered before any of them refuses it for lack of a token.
		var err error
		if h, err = c.wrapFilter(filters[cors], h); err != nil {
			return nil, fmt.Errorf("filter %d (%s): %w", cors, filters[cors].Type, err)
		}
	}
	return h, nil
}

func (c *compiler) wrapFilter(f Filter, next http.Handler) (http.Handler, error) {
	switch f.Type {
	case FilterRequestHeaderModifier:
		if f.RequestHeaderModifier == nil {
			return nil, fmt.Errorf("requestHeaderModifier is not set")
		}
		return &requestHeaderFilter{mod: compileHeaderModifier(f.RequestHeaderModifier), next: next}, nil
	case FilterResponseHeaderModifier:
		if f.ResponseHeaderModifier == nil {
			return nil, fmt.Errorf("responseHeaderModifier is not set")
		}
		return &responseHeaderFilter{mod: compileHeaderModifier(f.ResponseHeaderModifier), next: next}, nil
	case FilterRequestRedirect:
		if f.RequestRedirect == nil {
			return nil, fmt.Errorf("requestRedirect is not set")
		}
		return newRedirectFilter(*f.RequestRedirect)
	case FilterURLRewrite:
		if f.URLRewrite == nil {
			return nil, fmt.Errorf("urlRewrite is not set")
		}
		if err := checkPathModifier(f.URLRewrite.Path); err != nil {
			return nil, err
		}
		return &urlRewriteFilter{cfg: *f.URLRewrite, next: next}, nil
	case FilterCORS:
		if f.CORS == nil {
			return nil, fmt.Errorf("cors is not set")
		}
		policy, err := newCORSPolicy(f.CORS)
		if err != nil {
			return nil, err
		}
		return &corsFilter{policy: policy, next: next}, nil
	case FilterRequestMirror:
		if f.RequestMirror == nil {
			return nil, fmt.Errorf("requestMirror is not set")
		}
		return c.compileMirror(f.RequestMirror, next)
	case FilterExtensionRef:
		ref := f.ExtensionRef
		if ref == nil {
			return nil, fmt.Errorf("extensionRef is not set")
		}
		ext, err := c.extension(ref)
		if err != nil {
			return nil, err
		}
		if ext == nil {
			msg := fmt.Sprintf("filter %s/%s %q could not be resolved", ref.Group, ref.Kind, ref.Name)
			return unresolvedFilter(msg), nil
		}
		h := ext.Wrap(next)
		if h == nil {
			return nil, fmt.Errorf("filter %s/%s %q returned a nil handler", ref.Group, ref.Kind, ref.Name)
		}
		return h, nil
	default:
		return nil, fmt.Errorf("unsupported filter type %q", f.Type)
	}
}

// extension returns the filter of ref, built with the server's
// ExtensionBuilder on first use in this snapshot and shared by every later
// reference with the same group, kind, name and policy. It returns nil for
// an unresolved reference (no policy).
func (c *compiler) extension(ref *ExtensionRef) (ExtensionFilter, error) {
	if ref.MCPServer == nil {
		return nil, nil
	}
	key := extensionKey{ref.Group, ref.Kind, ref.Name}
	for _, b := range c.built[key] {
		if reflect.DeepEqual(b.policy, ref.MCPServer) {
			return b.filter, nil
		}
	}
	if c.extensions == nil {
		return nil, fmt.Errorf("filter %s/%s %q: the gateway has no extension builder (Options.Extensions) to build it with", ref.Group, ref.Kind, ref.Name)
	}
	ext, err := c.extensions(ref)
	if err != nil {
		return nil, fmt.Errorf("filter %s/%s %q: %w", ref.Group, ref.Kind, ref.Name, err)
	}
	if ext == nil {
		return nil, fmt.Errorf("filter %s/%s %q: the extension builder returned no filter", ref.Group, ref.Kind, ref.Name)
	}
	c.built[key] = append(c.built[key], builtExtension{policy: ref.MCPServer, filter: ext})
	return ext, nil
}

// unresolvedFilter stands for an ExtensionRef whose target is missing: the
// request fails with 500 instead of skipping the filter (GEP-1364).
type unresolvedFilter string

func (u unresolvedFilter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusInternalServerError, string(u))
}

// headerModifier is a HeaderModifier with canonical names.
type headerModifier struct {
	set    []Header
	add    []Header
	remove []string
}

func compileHeaderModifier(m *HeaderModifier) *headerModifier {
	c := &headerModifier{}
	for _, h := range m.Set {
		c.set = append(c.set, Header{http.CanonicalHeaderKey(h.Name), h.Value})
	}
	for _, h := range m.Add {
		c.add = append(c.add, Header{http.CanonicalHeaderKey(h.Name), h.Value})
	}
	for _, name := range m.Remove {
		c.remove = append(c.remove, http.CanonicalHeaderKey(name))
	}
	return c
}

// apply modifies h, and *host when a request's Host is set (host is nil for
// responses).
func (m *headerModifier) apply(h http.Header, host *string) {
	for _, s := range m.set {
		if s.Name == "Host" && host != nil {
			*host = s.Value
			continue
		}
		h[s.Name] = []string{s.Value}
	}
	for _, a := range m.add {
		old := h[a.Name]
		switch {
		case len(old) == 0:
			h[a.Name] = []string{a.Value}
		case a.Name == "Set-Cookie":
			h[a.Name] = append(old, a.Value)
		default:
			// One line, as in the spec's example ("foo,bar,baz"):
			// backends reading only the first value still see all.
			h[a.Name] = []string{strings.Join(old, ",") + "," + a.Value}
		}
	}
	for _, name := range m.remove {
		if host == nil {
			// A nil value also keeps net/http from adding its own
			// Date or sniffed Content-Type to the response.
			h[name] = nil
			continue
		}
		delete(h, name)
	}
}

type requestHeaderFilter struct {
	mod  *headerModifier
	next http.Handler
}

func (f *requestHeaderFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r2 := r.WithContext(r.Context()) // handlers must not modify the request they are given
	r2.Header = r.Header.Clone()
	if r2.Header == nil {
		r2.Header = http.Header{}
	}
	f.mod.apply(r2.Header, &r2.Host)
	f.next.ServeHTTP(w, r2)
}

type responseHeaderFilter struct {
	mod  *headerModifier
	next http.Handler
}

func (f *responseHeaderFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.next.ServeHTTP(&responseHeaderWriter{ResponseWriter: w, mod: f.mod}, r)
}

// responseModifier changes a response's header fields just before they are
// written.
type responseModifier interface {
	modifyResponse(h http.Header)
}

func (m *headerModifier) modifyResponse(h http.Header) { m.apply(h, nil) }

// responseHeaderWriter applies a response modifier just before the
// response header is written.
type responseHeaderWriter struct {
	http.ResponseWriter
	mod  responseModifier
	done bool
}

func (w *responseHeaderWriter) modify() {
	if !w.done {
		w.done = true
		w.mod.modifyResponse(w.Header())
	}
}

func (w *responseHeaderWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.modify()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseHeaderWriter) Write(b []byte) (int, error) {
	w.modify()
	return w.ResponseWriter.Write(b)
}

func (w *responseHeaderWriter) FlushError() error {
	w.modify()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseHeaderWriter) Flush() { _ = w.FlushError() }

func (w *responseHeaderWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
