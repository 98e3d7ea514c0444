package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// Retry is a route rule's retry policy (HTTPRoute rules[].retry): a backend
// request whose response has one of Codes, or that failed to connect, is
// sent again, at most Attempts more times, waiting Backoff before each.
type Retry struct {
	// Codes are the response statuses that are retried.
	Codes []int `json:"codes,omitempty"`
	// Attempts is how many times a request may be sent again.
	Attempts int `json:"attempts"`
	// Backoff is the least wait before each retry, a Go duration; empty
	// for DefaultRetryBackoff.
	Backoff string `json:"backoff,omitempty"`
}

// DefaultRetryBackoff is the wait before a retry when the rule names none.
const DefaultRetryBackoff = 25 * time.Millisecond

// maxRetryBody bounds the request bodies kept to be sent again: a request
// with a longer body is sent once.
const maxRetryBody = 1 << 20

// retrier sends a request again on the responses and errors of its policy.
type retrier struct {
	codes    []int
	attempts int
	backoff  time.Duration
}

// compileRetry checks r and turns it into a retrier; nil for nil.
func compileRetry(r *Retry) (*retrier, error) {
	if r == nil {
		return nil, nil
	}
	if r.Attempts < 0 {
		return nil, fmt.Errorf("retry: attempts must not be negative, got %d", r.Attempts)
	}
	for _, c := range r.Codes {
		if c < 400 || c > 599 {
			return nil, fmt.Errorf("retry: code %d is not an error status (400-599)", c)
		}
	}
	backoff := DefaultRetryBackoff
	if r.Backoff != "" {
		d, err := time.ParseDuration(r.Backoff)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("retry: backoff %q is not a duration", r.Backoff)
		}
		backoff = d
	}
	return &retrier{codes: slices.Clone(r.Codes), attempts: r.Attempts, backoff: backoff}, nil
}

// roundTrip sends req through next, and again while its answer is to be
// retried and attempts remain. The answer of the last attempt is returned
// as it came, so that a request that never succeeds surfaces its own error.
// A request whose body cannot be kept (longer than maxRetryBody, or of
// unknown length past it) is sent once.
func (rt *retrier) roundTrip(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	if rt.attempts == 0 {
		return next.RoundTrip(req)
	}
	body, ok, err := replayable(req, maxRetryBody)
	if err != nil {
		return nil, err
	}
	if !ok {
		return next.RoundTrip(req)
	}
	for attempt := 0; ; attempt++ {
		if body != nil {
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		res, err := next.RoundTrip(req)
		last := attempt == rt.attempts
		if last || !rt.retries(req.Context(), res, err) {
			return res, err
		}
		if res != nil {
			// Read a little of the body so that the connection can be
			// used again, then let it go.
			_, _ = io.CopyN(io.Discard, res.Body, 4<<10)
			_ = res.Body.Close()
		}
		timer := time.NewTimer(rt.backoff)
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		}
	}
}

// retries reports whether an attempt's outcome is to be retried: a
// response with one of the codes, or an error that is not the request's
// own end.
func (rt *retrier) retries(ctx context.Context, res *http.Response, err error) bool {
	if err != nil {
		return ctx.Err() == nil && !errors.Is(err, context.Canceled)
	}
	return slices.Contains(rt.codes, res.StatusCode)
}

// replayable reads req's body, up to limit bytes, so that it can be sent
// again, and reports false, with req's body left to be read once, when it
// is longer.
func replayable(req *http.Request, limit int64) (body []byte, ok bool, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, true, nil
	}
	if req.ContentLength > limit {
		return nil, false, nil
	}
	data, err := io.ReadAll(io.LimitReader(req.Body, limit+1))
	if err != nil {
		return nil, false, fmt.Errorf("read the request body: %w", err)
	}
	if int64(len(data)) > limit {
		// Too long to keep: what was read goes first, the rest after.
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(data), req.Body), req.Body}
		return nil, false, nil
	}
	_ = req.Body.Close()
	return data, true, nil
}
