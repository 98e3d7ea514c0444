package translate

import (
	"github.com/toolgate/toolgate/gateway"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// defaultRetryAttempts is how many times a request is sent again when a
// rule's retry names codes but no attempts.
const defaultRetryAttempts = 1

// translateRetry converts a rule's retry policy (GEP-1731). Without codes
// only failed connections are retried.
func translateRetry(rs *routeState, r *gwv1.HTTPRouteRetry, where string) *gateway.Retry {
	out := &gateway.Retry{Attempts: defaultRetryAttempts}
	if r.Attempts != nil {
		out.Attempts = *r.Attempts
	}
	for _, c := range r.Codes {
		out.Codes = append(out.Codes, int(c))
	}
	if r.Backoff != nil {
		if d := parseDuration(rs, r.Backoff, where+".backoff"); d > 0 {
			out.Backoff = d.String()
		}
	}
	return out
}
