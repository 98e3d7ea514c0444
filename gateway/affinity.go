package gateway

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/toolgate/toolgate/filter"
)

// MCP session affinity without shared state, and sessions bound to their
// user.
//
// A session-based MCP server (protocol 2025-06-18 and earlier) keeps its
// sessions in memory, so every request of a session must reach the endpoint
// that created it, whichever gateway replica receives it and across gateway
// restarts. The gateway seals the endpoint into the session id the client
// sees:
//
//	tg2.<base64url(nonce | XChaCha20-Poly1305(len(endpoint) | endpoint | backend session id))>
//
// under a key derived (HKDF-SHA256) from Options.SessionKey, which all
// replicas share, with the caller the MCP filter verified (filter.Caller;
// none on a route without authentication) as associated data. The nonce is
// synthetic, HMAC-SHA256 of the associated data and the plaintext under a
// second derived key (as in SIV modes), so that one session keeps one id
// across responses; it reveals only that two ids are the same. On the way in
// the gateway opens the id with the caller of that request, sends the
// request to that endpoint if it still belongs to the rule's backends, and
// restores the backend's own id. A client learns nothing from the id (the
// endpoint is encrypted), cannot steer its requests to another endpoint,
// and cannot use another user's session. On a route whose MCP filter
// authenticates callers, an id that does not open for the caller, whether
// forged, tampered with, sealed for another user or under another key, or
// the backend's own id, never reaches a backend: it is answered 404 as an
// unknown session, after which the MCP specification has the client start
// a new one. Where nobody is authenticated there is no identity to borrow,
// and such ids are forwarded unchanged and balanced normally (the backend
// answers 404 for what it does not know). A verified id whose endpoint has
// left the backend is restored and balanced normally, which serves backends
// that share session state.
//
// The legacy HTTP+SSE transport (2024-11-05) carries the session in the
// "endpoint" event of its GET stream, as a query parameter of the URL the
// client then POSTs to (sessionId, sessionid or session_id depending on the
// SDK). The gateway seals that parameter in the first event of GET event
// streams and opens it on the POSTs, the same way.
//
// Stateless requests (protocol 2026-07-28) carry no session id and are
// balanced freely.

const (
	sessionHeader      = "Mcp-Session-Id"
	sessionTokenPrefix = "tg2."
	// sessionKeyInfo and sessionNonceKeyInfo derive the sealing key and
	// the nonce key from Options.SessionKey.
	sessionKeyInfo      = "toolgate mcp session v2"
	sessionNonceKeyInfo = "toolgate mcp session v2 nonce"
	// sessionAADDomain starts the associated data, the caller follows.
	sessionAADDomain = "toolgate mcp session v2\x00"
)

var b64 = base64.RawURLEncoding

// sessionSealer seals and opens session ids. It is safe for concurrent use.
type sessionSealer struct {
	aead   cipher.AEAD
	nonces sync.Pool // of hash.Hash: HMAC-SHA256 under the nonce key
}

func newSessionSealer(key []byte) *sessionSealer {
	derive := func(info string) []byte {
		k, err := hkdf.Key(sha256.New, key, nil, info, chacha20poly1305.KeySize)
		if err != nil {
			panic(fmt.Sprintf("gateway: derive a session key: %v", err)) // only for lengths HKDF cannot give
		}
		return k
	}
	aead, err := chacha20poly1305.NewX(derive(sessionKeyInfo))
	if err != nil {
		panic(fmt.Sprintf("gateway: session cipher: %v", err)) // only for a key of the wrong size
	}
	nonceKey := derive(sessionNonceKeyInfo)
	return &sessionSealer{aead: aead, nonces: sync.Pool{New: func() any { return hmac.New(sha256.New, nonceKey) }}}
}

// nonce is the synthetic nonce of plaintext under aad.
func (s *sessionSealer) nonce(dst, aad, plain []byte) []byte {
	h := s.nonces.Get().(hash.Hash)
	h.Reset()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(aad)))
	h.Write(n[:])
	h.Write(aad)
	h.Write(plain)
	dst = h.Sum(dst)
	s.nonces.Put(h)
	return dst
}

func sessionAAD(user string) []byte {
	return append([]byte(sessionAADDomain), user...)
}

// seal returns the id the client sees for a backend session id created on
// endpoint for user ("" when the route authenticates nobody). An endpoint
// too long to seal is left out: the session is then balanced normally.
func (s *sessionSealer) seal(endpoint, id, user string) string {
	if len(endpoint) > 255 {
		endpoint = ""
	}
	ns := s.aead.NonceSize()
	plain := make([]byte, 0, 1+len(endpoint)+len(id))
	plain = append(plain, byte(len(endpoint))) //nolint:gosec // at most 255, checked above
	plain = append(plain, endpoint...)
	plain = append(plain, id...)
	aad := sessionAAD(user)
	out := s.nonce(make([]byte, 0, sha256.Size+len(plain)+s.aead.Overhead()), aad, plain)[:ns]
	out = s.aead.Seal(out, out, plain, aad)
	return sessionTokenPrefix + b64.EncodeToString(out)
}

// open returns the endpoint ("" when none was sealed) and the backend's
// session id of a token sealed for user. ok is false for anything the
// gateway did not seal with its key for this user.
func (s *sessionSealer) open(token, user string) (endpoint, id string, ok bool) {
	body, found := strings.CutPrefix(token, sessionTokenPrefix)
	if !found {
		return "", "", false
	}
	sealed, err := b64.DecodeString(body)
	ns := s.aead.NonceSize()
	if err != nil || len(sealed) < ns+s.aead.Overhead()+1 {
		return "", "", false
	}
	plain, err := s.aead.Open(nil, sealed[:ns], sealed[ns:], sessionAAD(user))
	if err != nil {
		return "", "", false
	}
	n := int(plain[0])
	if len(plain) < 1+n {
		return "", "", false
	}
	return string(plain[1 : 1+n]), string(plain[1+n:]), true
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
		if !filter.IsLegacySessionParam(k) {
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
	if len(p) == 0 {
		return 0, nil
	}
	for !e.scanned {
		e.scan(p)
	}
	if len(e.pending) > 0 {
		n := copy(p, e.pending)
		e.pending = e.pending[n:]
		if len(e.pending) == 0 {
			e.pending = nil // an open stream keeps nothing of its first event
		}
		return n, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	return e.src.Read(p)
}

func (e *endpointEventRewriter) Close() error { return e.src.Close() }

// quiet reports whether the next Read would wait for the connection (see
// quietReader): nothing is buffered below, and nothing is ready to pass
// on (bytes held back while the first event is incomplete are not).
func (e *endpointEventRewriter) quiet() bool {
	q, ok := e.src.(quietReader)
	return ok && e.err == nil && (!e.scanned || len(e.pending) == 0) && q.quiet()
}

// scan reads once more, into buf (the caller's, so that a stream waiting
// for its first event holds no buffer of its own), and finishes scanning
// when the first event is complete, the held bytes reach the bound or the
// stream ended.
func (e *endpointEventRewriter) scan(buf []byte) {
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
