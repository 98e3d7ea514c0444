package filter

// Inspector lets the external tests and benchmarks run the inspection alone,
// reusing its working memory as the middleware does.
type Inspector struct{ messages []message }

// Inspect inspects body and returns the JSON-RPC error code, 0 when the body
// is an acceptable request.
func (i *Inspector) Inspect(body []byte) int {
	in, err := inspect(body, i.messages[:0], 0)
	if in.messages != nil {
		i.messages = in.messages[:0]
	}
	return err.code
}

// IssuerState counts the key sets and discovery results s holds.
func (s *Shared) IssuerState() (keySets, discoveries int) { return s.issuerState() }

// QuotaWindow is the calendar window of a quota, for tests.
var QuotaWindow = window
