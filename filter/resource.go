package filter

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// The MCP authorization specification makes the gateway an OAuth protected
// resource: it describes itself in RFC 9728 metadata, which a client finds
// from the 401's WWW-Authenticate and reads to learn which authorization
// server issues tokens for it.

// WellKnownResourceMetadata is the path prefix of RFC 9728 metadata: the
// metadata of the resource https://host/path is served at
// https://host/.well-known/oauth-protected-resource/path.
const WellKnownResourceMetadata = "/.well-known/oauth-protected-resource"

// resourceMetadata is the RFC 9728 document.
type resourceMetadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
}

// resource is the resource identifier of a request to the server: the
// policy's when it names one, else the URL the request reached the gateway
// at, without query or fragment.
func (f *Filter) resource(r *http.Request) string {
	if f.resourceURL != "" {
		return f.resourceURL
	}
	return requestURL(r, r.URL.Path)
}

// requestURL is the URL of r with path, as the gateway received it.
func requestURL(r *http.Request, path string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: r.Host, Path: path}).String()
}

// metadataURL is where the metadata of resource is served: the well-known
// path in front of the resource's path, on its origin (RFC 9728 section 3.1).
func metadataURL(resource string) string {
	u, err := url.Parse(resource)
	if err != nil {
		return ""
	}
	u.Path = WellKnownResourceMetadata + strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u.String()
}

// ServeResourceMetadata answers a request for the RFC 9728 metadata of the
// resource at requested (the URL the gateway derived from the well-known
// path), or 404 when the server has no auth. The policy's own resource URL,
// when set, replaces requested.
func (f *Filter) ServeResourceMetadata(w http.ResponseWriter, r *http.Request, requested string) {
	if f.auth == nil {
		http.NotFound(w, r)
		return
	}
	doc := resourceMetadata{
		Resource:               requested,
		AuthorizationServers:   []string{f.auth.config.Issuer},
		BearerMethodsSupported: []string{"header"},
		ScopesSupported:        f.scopes,
	}
	if f.resourceURL != "" {
		doc.Resource = f.resourceURL
	}
	body, err := json.Marshal(doc)
	if err != nil {
		http.Error(w, "metadata could not be encoded", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	// Public information, fetched by browser-based clients too.
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cache-Control", "max-age=300")
	writeJSON(w, http.StatusOK, body)
}
