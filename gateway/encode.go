package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// EncodeConfig is the one wire form of a Config: the config stream sends
// it, /config serves it (of the redacted Config) and the translator's
// golden files show it. It is deterministic: the same Config always
// encodes to the same bytes (struct fields in declaration order, map keys
// sorted), so two encodings can be compared to tell whether anything
// changed.
func EncodeConfig(cfg *Config) ([]byte, error) {
	if cfg == nil {
		return nil, errors.New("encode gateway config: config is nil")
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("encode gateway config: %w", err)
	}
	return data, nil
}

// DecodeConfig parses what EncodeConfig produced. It rejects anything that
// is not one JSON object of a Config's shape; whether the Config can be
// served is for [Server.Apply] to say.
//
// Unknown fields are ignored, as protobuf and Kubernetes clients do, so that
// a proxy keeps working while a newer controller rolls out.
func DecodeConfig(data []byte) (*Config, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("decode gateway config: want a JSON object")
	}
	cfg := &Config{}
	if err := json.Unmarshal(trimmed, cfg); err != nil {
		return nil, fmt.Errorf("decode gateway config: %w", err)
	}
	return cfg, nil
}

// redacted replaces every secret in a redacted Config: private keys, an
// MCPServer's backend credentials, and header and query parameter values,
// since a RequestHeaderModifier may inject a credential for the backend
// and a header or query parameter match may test for one.
const redacted = "[redacted]"

// Redacted returns a deep copy of c that is safe to show: every private key
// and every header-modifier, header-match and query-parameter-match value is
// "[redacted]"; names, certificates (public) and everything else are kept.
// c itself is not changed.
func (c *Config) Redacted() *Config {
	if c == nil {
		return nil
	}
	out := &Config{Version: c.Version, Listeners: cloneSlice(c.Listeners, redactListener)}
	if c.BackendClientCertificate != nil {
		cert := redactCertificate(*c.BackendClientCertificate)
		out.BackendClientCertificate = &cert
	}
	return out
}

func redactCertificate(c Certificate) Certificate {
	if c.PrivateKeyPEM != "" {
		c.PrivateKeyPEM = redacted
	}
	return c
}

func redactListener(l Listener) Listener {
	l.Certificates = cloneSlice(l.Certificates, redactCertificate)
	l.VirtualHosts = cloneSlice(l.VirtualHosts, func(vh VirtualHost) VirtualHost {
		vh.Hostnames = slices.Clone(vh.Hostnames)
		vh.Routes = cloneSlice(vh.Routes, func(r Route) Route {
			r.Rules = cloneSlice(r.Rules, redactRule)
			return r
		})
		return vh
	})
	return l
}

func redactRule(r Rule) Rule {
	r.Matches = cloneSlice(r.Matches, func(m Match) Match {
		m.Headers = cloneSlice(m.Headers, func(h HeaderMatch) HeaderMatch {
			h.Value = redacted
			return h
		})
		m.QueryParams = cloneSlice(m.QueryParams, func(q QueryParamMatch) QueryParamMatch {
			q.Value = redacted
			return q
		})
		return m
	})
	r.Filters = cloneSlice(r.Filters, redactFilter)
	r.Backends = cloneSlice(r.Backends, redactBackend)
	return r
}

func redactBackend(b Backend) Backend {
	b.Endpoints = slices.Clone(b.Endpoints)
	b.Filters = cloneSlice(b.Filters, redactFilter)
	if b.TLS != nil {
		// CA certificates are public: copied, not redacted.
		t := *b.TLS
		t.SubjectAltNames = slices.Clone(t.SubjectAltNames)
		b.TLS = &t
	}
	return b
}

func redactFilter(f Filter) Filter {
	f.RequestHeaderModifier = redactHeaderModifier(f.RequestHeaderModifier)
	f.ResponseHeaderModifier = redactHeaderModifier(f.ResponseHeaderModifier)
	if f.RequestRedirect != nil {
		r := *f.RequestRedirect
		r.Path = clonePtr(r.Path)
		f.RequestRedirect = &r
	}
	if f.URLRewrite != nil {
		u := *f.URLRewrite
		u.Path = clonePtr(u.Path)
		f.URLRewrite = &u
	}
	if f.CORS != nil {
		c := *f.CORS
		c.AllowOrigins = slices.Clone(c.AllowOrigins)
		c.AllowMethods = slices.Clone(c.AllowMethods)
		c.AllowHeaders = slices.Clone(c.AllowHeaders)
		c.ExposeHeaders = slices.Clone(c.ExposeHeaders)
		f.CORS = &c
	}
	if f.RequestMirror != nil {
		m := *f.RequestMirror
		m.Backend = redactBackend(m.Backend)
		m.Fraction = clonePtr(m.Fraction)
		f.RequestMirror = &m
	}
	if f.ExtensionRef != nil {
		ref := *f.ExtensionRef
		ref.MCPServer = ref.MCPServer.Clone()
		if ref.MCPServer != nil && ref.MCPServer.BackendAuth != nil {
			// The backend's credential: a Secret's value.
			ref.MCPServer.BackendAuth = ref.MCPServer.BackendAuth.Redacted()
		}
		f.ExtensionRef = &ref
	}
	return f
}

// redactHeaderModifier copies a header modifier with its values redacted.
func redactHeaderModifier(m *HeaderModifier) *HeaderModifier {
	if m == nil {
		return nil
	}
	value := func(h Header) Header { return Header{Name: h.Name, Value: redacted} }
	return &HeaderModifier{
		Set:    cloneSlice(m.Set, value),
		Add:    cloneSlice(m.Add, value),
		Remove: slices.Clone(m.Remove),
	}
}

// cloneSlice returns a new slice of each element of s passed through f,
// nil for nil so that a copy encodes as the original does.
func cloneSlice[T any](s []T, f func(T) T) []T {
	if s == nil {
		return nil
	}
	out := make([]T, len(s))
	for i, v := range s {
		out[i] = f(v)
	}
	return out
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}
