package translate

import (
	"cmp"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/toolgate/toolgate/apis/v1alpha1"
	"github.com/toolgate/toolgate/filter"
)

// Reasons of the BackendAuthValid condition.
const (
	ReasonSecretNotFound = "SecretNotFound"
)

// backendAuth converts m's spec.backendAuth, reading its Secrets from m's
// namespace; nil when it has none. A Secret or key that is missing is an
// error that says which.
func (t *translator) backendAuth(m *v1alpha1.MCPServer) (*filter.BackendAuth, error) {
	b := m.Spec.BackendAuth
	if b == nil {
		return nil, nil
	}
	secret := func(field string, ref v1alpha1.SecretKeyReference) (string, error) {
		s, ok := t.idx.secrets.get(types.NamespacedName{Namespace: m.Namespace, Name: ref.Name})
		if !ok {
			return "", fmt.Errorf("spec.backendAuth.%s: Secret %s/%s not found", field, m.Namespace, ref.Name)
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			v, ok = []byte(s.StringData[ref.Key]), s.StringData[ref.Key] != ""
		}
		if !ok || len(v) == 0 {
			return "", fmt.Errorf("spec.backendAuth.%s: Secret %s/%s has no key %q", field, m.Namespace, ref.Name, ref.Key)
		}
		return string(v), nil
	}
	client := func(field string, c *v1alpha1.OAuth2Client) (*filter.OAuth2Client, error) {
		v, err := secret(field+".clientSecretRef", c.ClientSecretRef)
		if err != nil {
			return nil, err
		}
		return &filter.OAuth2Client{TokenURL: c.TokenURL, ClientID: c.ClientID, ClientSecret: v,
			Scopes: append([]string(nil), c.Scopes...), Audience: c.Audience, AllowInsecureHTTP: c.AllowInsecureHTTP}, nil
	}
	out := &filter.BackendAuth{}
	var err error
	switch {
	case b.Header != nil:
		var v string
		if v, err = secret("header.secretRef", b.Header.SecretRef); err == nil {
			out.Header = &filter.StaticHeader{Name: cmp.Or(b.Header.Name, "Authorization"), Value: b.Header.Prefix + v}
		}
	case b.ClientCredentials != nil:
		out.ClientCredentials, err = client("clientCredentials", b.ClientCredentials)
	case b.TokenExchange != nil:
		out.TokenExchange, err = client("tokenExchange", b.TokenExchange)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// backendAuthCondition describes a valid spec.backendAuth; false when m
// has none.
func backendAuthCondition(m *v1alpha1.MCPServer) (metav1.Condition, bool) {
	b := m.Spec.BackendAuth
	if b == nil {
		return metav1.Condition{}, false
	}
	var how string
	switch {
	case b.Header != nil:
		how = fmt.Sprintf("the server gets header %s from Secret %s", cmp.Or(b.Header.Name, "Authorization"), b.Header.SecretRef.Name)
	case b.ClientCredentials != nil:
		how = fmt.Sprintf("the server gets the gateway's token from %s (client %s)", b.ClientCredentials.TokenURL, b.ClientCredentials.ClientID)
	case b.TokenExchange != nil:
		how = fmt.Sprintf("the server gets each caller's token exchanged at %s for audience %s", b.TokenExchange.TokenURL, b.TokenExchange.Audience)
	}
	return condition(v1alpha1.ConditionBackendAuthValid, true, ReasonValid, how+"; the caller's token is not forwarded", m.Generation), true
}
