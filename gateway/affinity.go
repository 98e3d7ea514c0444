package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"io"
	"net/url"
	"strings"
	"sync"
)

// MCP session affinity without shared state.
//
// A session-based MCP server (protocol 2025-06-18 and earlier) keeps its
// sessions in memory, so every request of a session must reach the endpoint
// that created it, whichever gateway replica receives it and across gateway
// restarts. The gateway seals the endpoint into the session id the client
// sees:
//
//	tg1.<base64url(len(endpoint) | endpoint | backend session id)>.<base64url(tag)>
//
// where tag is the first 16 bytes of HMAC-SHA256 under Options.SessionKey,
// which all replicas share. On the way in the gateway verifies the tag,
// sends the request to that endpoint if it still belongs to the rule's
// backends, and restores the backend's own id. A client cannot steer its
// requests to another endpoint without the key. The endpoint address is
// authenticated, not encrypted: a client can read it.
//
// Ids that are not ours or fail verification are forwarded unchanged and
// balanced normally; the backend then answers 404 and the client starts a
// new session, as the MCP specification says. A verified id whose endpoint
// has left the backend is restored and balanced normally too, which serves
// backends that share session state.
//
// The legacy HTTP+SSE transport (2024-11-05) carries the session in the
// "endpoint" event of its GET stream, as a query parameter of the URL the
// client then POSTs to (sessionId, sessionid or session_id depending on the
// SDK). The gateway seals that parameter in the first event of GET event
// streams and restores it on the POSTs, with the same token format.
//
// Stateless requests (protocol 2026-07-28) carry no session id and are
// balanced freely.

const (
	sessionHeader      = "Mcp-Session-Id"
	sessionTokenPrefix = "tg1."
	sessionTagSize     = 16
	sessionMACDomain   = "toolgate mcp session v1\x00"
)

var b64 = base64.RawURLEncoding

// sessionSealer seals and opens session ids.
type sessionSealer struct {
	macs sync.Pool // of hash.Hash, keyed HMAC-SHA256
}

func newSessionSealer(key []byte) *sessionSealer {
	key = bytes.Clone(key)
	return &sessionSealer{macs: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

func (s *sessionSealer) tag(payload []byte) []byte {
	h := s.macs.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(sessionMACDomain))
	h.Write(payload)
	sum := h.Sum(make([]byte, 0, sha256.Size))
	s.macs.Put(h)
	return sum[:sessionTagSize]
}

// seal returns the id the client sees for a backend session id created on
// endpoint.
func (s *sessionSealer) seal(endpoint, id string) string {
	if len(endpoint) > 255 || endpoint == "" {
		return id
	}
	payload := make([]byte, 0, 1+len(endpoint)+len(id))
	payload = append(payload, byte(len(endpoint))) //nolint:gosec // at most 255, checked above
	payload = append(payload, endpoint...)
	payload = append(payload, id...)
	return sessionTokenPrefix + b64.EncodeToString(payload) + "." + b64.EncodeToString(s.tag(payload))
}

// open verifies a token and returns the endpoint and the backend's session
// id. ok is false for anything the gateway did not seal with its key.
func (s *sessionSealer) open(token string) (endpoint, id string, ok bool) {
	rest, found := strings.CutPrefix(token, sessionTokenPrefix)
	if !found {
		return "", "", false
	}
	body, tag, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	payload, err := b64.DecodeString(body)
	if err != nil || len(payload) < 2 {
		return "", "", false
	}
	got, err := b64.DecodeString(tag)
	if err != nil || !hmac.Equal(got, s.tag(payload)) {
		return "", "", false
	}
	n := int(payload[0])
	if len(payload) < 1+n {
		return "", "", false
	}
	return string(payload[1 : 1+n]), string(payload[1+n:]), true
}

// isSessionParam reports whether a query parameter name is the legacy SSE
// transport's session parameter.
func isSessionParam(name string) bool {
	switch name {
	case "sessionId", "sessionid", "session_id":
		return true
	}
	return false
}

// legacySessionParam returns the first session parameter of a raw query.
func legacySessionParam(rawQuery string) (name, value string, ok bool) {
	if !strings.Contains(rawQuery, "ession") {
		return "", "", false
	}
	for q := rawQuery; q != ""; {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(pair, "=")
		if !isSessionParam(k) {
			continue
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		return k, v, true
	}
	return "", "", false
}

// replaceQueryParam replaces the value of the first parameter named name in
// a raw query, leaving every other byte alone.
func replaceQueryParam(rawQuery, name, value string) string {
	var b strings.Builder
	replaced := false
	for q, first := rawQuery, true; ; first = false {
		pair, rest, more := strings.Cut(q, "&")
		if !first {
			b.WriteByte('&')
		}
		if k, _, _ := strings.Cut(pair, "="); !replaced && k == name {
			b.WriteString(k + "=" + url.QueryEscape(value))
			replaced = true
		} else {
			b.WriteString(pair)
		}
		if !more {
			break
		}
		q = rest
	}
	return b.String()
}

// maxEndpointEventScan bounds how much of a GET event stream is buffered
// while looking for the legacy transport's endpoint event.
const maxEndpointEventScan = 16 << 10

// endpointEventRewriter passes an event stream through unchanged except for
// its first event: when that is the legacy transport's "endpoint" event, the
// session parameter of its URL is sealed. Bytes are held back only until the
// first event is complete, which is when a client could act on it anyway.
type endpointEventRewriter struct {
	src     io.ReadCloser
	seal    func(id string) string
	scanned bool
	pending []byte
	err     error
}

func (e *endpointEventRewriter) Read(p []byte) (int, error) {
	for !e.scanned {
		e.scan()
	}
	if len(e.pending) > 0 {
		n := copy(p, e.pending)
		e.pending = e.pending[n:]
		return n, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	return e.src.Read(p)
}

func (e *endpointEventRewriter) Close() error { return e.src.Close() }

// scan reads once more and finishes scanning when the first event is
// complete, the buffer is full or the stream ended.
func (e *endpointEventRewriter) scan() {
	buf := make([]byte, 4096)
	n, err := e.src.Read(buf)
	e.pending = append(e.pending, buf[:n]...)
	if end := eventEnd(e.pending); end >= 0 {
		event := rewriteEndpointEvent(e.pending[:end], e.seal)
		e.pending = append(event, e.pending[end:]...)
		e.scanned = true
	}
	if err != nil || len(e.pending) >= maxEndpointEventScan {
		e.err = err
		e.scanned = true
	}
}

// eventEnd returns the index just past the blank line ending the first
// event, or -1.
func eventEnd(b []byte) int {
	lf := bytes.Index(b, []byte("\n\n"))
	crlf := bytes.Index(b, []byte("\r\n\r\n"))
	switch {
	case lf < 0 && crlf < 0:
		return -1
	case crlf < 0 || (lf >= 0 && lf < crlf):
		return lf + 2
	default:
		return crlf + 4
	}
}

// rewriteEndpointEvent seals the session parameter in the data of an
// "endpoint" event and returns any other event unchanged.
func rewriteEndpointEvent(event []byte, seal func(string) string) []byte {
	isEndpoint := false
	dataStart, dataEnd := -1, -1
	for off := 0; off < len(event); {
		end := bytes.IndexByte(event[off:], '\n')
		if end < 0 {
			end = len(event) - off
		}
		line := bytes.TrimSuffix(event[off:off+end], []byte("\r"))
		field, value, _ := bytes.Cut(line, []byte(":"))
		valueOff := off + len(field) + 1
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
			valueOff++
		}
		switch string(field) {
		case "event":
			isEndpoint = string(value) == "endpoint"
		case "data":
			if dataStart < 0 {
				dataStart, dataEnd = valueOff, valueOff+len(value)
			}
		}
		off += end + 1
	}
	if !isEndpoint || dataStart < 0 {
		return event
	}
	target := string(event[dataStart:dataEnd])
	path, rawQuery, found := strings.Cut(target, "?")
	if !found {
		return event
	}
	rawQuery, fragment, hasFragment := strings.Cut(rawQuery, "#")
	name, id, ok := legacySessionParam(rawQuery)
	if !ok {
		return event
	}
	rewritten := path + "?" + replaceQueryParam(rawQuery, name, seal(id))
	if hasFragment {
		rewritten += "#" + fragment
	}
	out := make([]byte, 0, len(event)+len(rewritten))
	out = append(out, event[:dataStart]...)
	out = append(out, rewritten...)
	return append(out, event[dataEnd:]...)
}
