package filter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// JSON-RPC error codes the filter answers with.
const (
	// CodeParseError answers a body that is not JSON (JSON-RPC 2.0).
	CodeParseError = -32700
	// CodeInvalidRequest answers JSON that is not a JSON-RPC message, or one
	// the filter refuses to guess at (duplicate or case-variant keys), and a
	// body too large or of the wrong media type (JSON-RPC 2.0).
	CodeInvalidRequest = -32600
	// CodeInternalError answers a request the filter could not check for a
	// reason of its own, such as an OIDC issuer it cannot reach (JSON-RPC 2.0).
	CodeInternalError = -32603
	// CodeInvalidParams answers a tools/call of a tool the caller may not
	// use, as an MCP server answers one of a tool it does not have
	// (JSON-RPC 2.0 invalid params), so that a hidden tool is not revealed.
	CodeInvalidParams = -32602
	// CodeInsufficientScope answers a request whose token lacks scopes the
	// server requires (HTTP 403); like CodeUnauthenticated it is outside
	// the range MCP 2026-07-28 reserves, and the HTTP status is what
	// clients act on.
	CodeInsufficientScope = -32003
	// CodeResourceNotFound answers a resources/read or resources/subscribe
	// of a resource the caller may not use on the session-based protocol,
	// with the code it gives a resource that does not exist (MCP
	// 2025-11-25). The stateless protocol gives CodeInvalidParams
	// (SEP-2164); both carry data.uri.
	CodeResourceNotFound = -32002
	// CodeHeaderMismatch answers Mcp-Method or Mcp-Name headers that disagree
	// with the body (MCP 2026-07-28, SEP-2243).
	CodeHeaderMismatch = -32020
	// CodeUnauthenticated answers a missing or invalid bearer token. JSON-RPC
	// leaves -32000..-32099 to implementations and MCP 2026-07-28 reserves
	// -32020..-32099 for its own codes, so the filter takes -32001 from the
	// part that stays free; the HTTP status (401) is what clients act on.
	CodeUnauthenticated = -32001
	// CodeRateLimited answers a tools/call refused by a token bucket in the
	// session-based protocol (2025-11-25 and earlier), where JSON-RPC leaves
	// -32000..-32099 to implementations. It is the code the product promises
	// its users (README.md, "What a limited client sees").
	CodeRateLimited = -32029
	// CodeRateLimitedStateless answers the same refusal in the stateless
	// protocol (2026-07-28 and later), which reserves -32020..-32099 for
	// codes the specification defines and none for rate limits: the code
	// is the HTTP status, outside the JSON-RPC reserved range, as ToolHive
	// answers too.
	CodeRateLimitedStateless = 429
)

// statelessProtocol is the first protocol version of the stateless
// generation; versions are dates, so they compare as strings.
const statelessProtocol = "2026-07-28"

// isStatelessVersion reports whether a protocol version names the stateless
// generation (2026-07-28 or later).
func isStatelessVersion(v []byte) bool {
	return len(v) == len(statelessProtocol) && string(v) >= statelessProtocol
}

// metaProtocolVersionKey is the params._meta key by which a 2026-07-28
// request names its protocol version (SEP-2575).
var metaProtocolVersionKey = []byte("io.modelcontextprotocol/protocolVersion")

// methodToolsCall is the one method the filter limits. It, and the other
// methods here, are those authorization rules govern (authz.Governs).
const (
	methodToolsCall          = "tools/call"
	methodPromptsGet         = "prompts/get"
	methodResourcesRead      = "resources/read"
	methodResourcesSubscribe = "resources/subscribe"
)

// maxNestingDepth bounds how deeply arrays and objects may nest, the same
// bound encoding/json applies, so that both agree on which bodies are JSON.
const maxNestingDepth = 10000

// message is what the filter needs from one JSON-RPC message. Its slices
// point into the request body, or into a fresh copy when the body spelled
// them with escapes.
type message struct {
	// id is the raw JSON of the id (a string with its quotes, a number or
	// null); nil when the message has none (a notification).
	id []byte
	// method is the decoded method; nil for a response.
	method []byte
	// name is the decoded params.name of a tools/call or prompts/get, or
	// params.uri of resources/read and resources/subscribe; nil otherwise.
	name []byte
	// arguments is the raw JSON of a tools/call's params.arguments; nil
	// when it has none.
	arguments []byte
	// version is the protocol version in params._meta, when it names one.
	version   []byte
	hasMethod bool
}

// isToolCall reports whether the message is a tools/call request or
// notification.
func (m *message) isToolCall() bool {
	return m.hasMethod && string(m.method) == methodToolsCall
}

// inspection is a body read as JSON-RPC.
type inspection struct {
	batch    bool
	messages []message
}

// rpcError is a JSON-RPC error the filter answers with. The zero value means
// no error.
type rpcError struct {
	code    int
	message string
}

func (e rpcError) failed() bool { return e.code != 0 }

// inspect reads body as one JSON-RPC message or a batch of at most maxBatch
// of them (any number when maxBatch <= 0), appending the messages to msgs. It checks the JSON syntax strictly (RFC 8259,
// including UTF-8) and sees every key exactly: a message whose jsonrpc, id,
// method or params key, or whose params.name key, appears twice or in
// another case is refused rather than guessed at, because decoders differ on
// which of the two they keep and whether case matters. It stops at the
// first reason to refuse the body, a syntax error or not, so that a hostile
// body costs no more work than it takes to find that reason.
func inspect(body []byte, msgs []message, maxBatch int) (inspection, rpcError) {
	s := scanner{data: body}
	s.skipSpace()
	var in inspection
	switch s.peek() {
	case '{':
		msgs = append(msgs, message{})
		s.scanMessage(&msgs[len(msgs)-1], 0)
	case '[':
		in.batch = true
		s.pos++
		s.skipSpace()
		if s.peek() == ']' {
			s.pos++
			s.refuse("an empty batch is not a request")
			break
		}
		for s.going() {
			if maxBatch > 0 && len(msgs) == maxBatch {
				s.refuse(fmt.Sprintf("a batch may hold at most %d messages", maxBatch))
				break
			}
			if s.peek() == '{' {
				msgs = append(msgs, message{})
				s.scanMessage(&msgs[len(msgs)-1], 1)
			} else {
				s.refuse("every element of a batch must be an object")
				break
			}
			s.skipSpace()
			switch s.peek() {
			case ',':
				s.pos++
				s.skipSpace()
				continue
			case ']':
				s.pos++
			default:
				s.fail("expected ',' or ']' in a batch")
			}
			break
		}
	default:
		s.skipValue(0)
		s.refuse("the body must be a JSON-RPC object or a batch (array)")
	}
	if s.going() {
		s.skipSpace()
		if s.pos < len(s.data) {
			s.fail("unexpected data after the JSON value")
		}
	}
	if s.syntax != "" {
		return inspection{}, rpcError{code: CodeParseError, message: "Parse error: " + s.syntax}
	}
	if s.refusal != "" {
		return inspection{}, rpcError{code: CodeInvalidRequest, message: "Invalid Request: " + s.refusal}
	}
	in.messages = msgs
	return in, rpcError{}
}

// scanner walks a JSON text once. The first syntax error or reason to refuse
// stops it: which of the two a client hears (parse error or invalid
// request) depends on which comes first in the body.
type scanner struct {
	data    []byte
	pos     int
	syntax  string // first syntax error, "" when none
	refusal string // first reason the JSON is not an acceptable request
}

func (s *scanner) fail(reason string) {
	if s.syntax == "" && s.refusal == "" {
		s.syntax = reason
	}
}

func (s *scanner) refuse(reason string) {
	if s.refusal == "" && s.syntax == "" {
		s.refusal = reason
	}
}

// going reports whether nothing has stopped the scan yet.
func (s *scanner) going() bool { return s.syntax == "" && s.refusal == "" }

// peek returns the current byte, or 0 at the end.
func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// expect consumes c, after any white space, or fails.
func (s *scanner) expect(c byte, reason string) bool {
	s.skipSpace()
	if s.peek() != c {
		s.fail(reason)
		return false
	}
	s.pos++
	s.skipSpace()
	return true
}

// member names the keys of a message the filter reads.
type member uint8

const (
	memberOther member = iota
	memberJSONRPC
	memberID
	memberMethod
	memberParams
	memberCaseVariant // a key equal to one of the above but for case
)

// topLevelKeys are the message keys the filter reads, in member order.
var topLevelKeys = [...]string{memberJSONRPC: "jsonrpc", memberID: "id", memberMethod: "method", memberParams: "params"}

// topLevelKeyBytes holds topLevelKeys as bytes, for case-folding comparisons.
var topLevelKeyBytes = [...][]byte{memberJSONRPC: []byte("jsonrpc"), memberID: []byte("id"), memberMethod: []byte("method"), memberParams: []byte("params")}

// classify names a decoded message key. A key that matches one the filter
// reads only under encoding/json's case folding (bytes.EqualFold, which
// folds 'ſ' to 's' and 'K' to 'k' too) is a case variant.
func classify(key []byte) member {
	for m := memberJSONRPC; m <= memberParams; m++ {
		if string(key) == topLevelKeys[m] {
			return m
		}
	}
	for m := memberJSONRPC; m <= memberParams; m++ {
		if bytes.EqualFold(key, topLevelKeyBytes[m]) {
			return memberCaseVariant
		}
	}
	return memberOther
}

// scanMessage reads the object at s.pos as a JSON-RPC message into m.
// depth is the number of arrays and objects around it.
func (s *scanner) scanMessage(m *message, depth int) {
	s.pos++ // '{'
	var (
		seen        [memberParams + 1]bool
		versionOK   bool
		paramsIsObj bool
		p           paramsScan
	)
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
	} else {
		for s.going() {
			key, ok := s.scanKey()
			if !ok || !s.expect(':', "expected ':' after an object key") {
				return
			}
			k := classify(key)
			if k != memberOther && k != memberCaseVariant {
				if seen[k] {
					s.refuse("duplicate \"" + topLevelKeys[k] + "\" key")
				}
				seen[k] = true
			}
			switch k {
			case memberCaseVariant:
				s.refuse("a key differs only in case from \"jsonrpc\", \"id\", \"method\" or \"params\"")
				s.skipValue(depth + 1)
			case memberJSONRPC:
				v, isString := s.scanStringValue(depth + 1)
				versionOK = isString && string(v) == "2.0"
			case memberID:
				start := s.pos
				switch c := s.peek(); {
				case c == '"' || c == '-' || (c >= '0' && c <= '9') || c == 'n':
					s.skipValue(depth + 1)
					m.id = s.data[start:s.pos]
				default:
					s.skipValue(depth + 1)
					s.refuse("id must be a string, a number or null")
				}
			case memberMethod:
				v, isString := s.scanStringValue(depth + 1)
				if !isString {
					s.refuse("method must be a string")
				}
				m.method, m.hasMethod = v, isString
			case memberParams:
				if s.peek() == '{' {
					paramsIsObj = true
					p = paramsScan{}
					s.scanParams(&p, depth+1)
				} else {
					s.skipValue(depth + 1)
				}
			default:
				s.skipValue(depth + 1)
			}
			if s.nextMember() {
				continue
			}
			break
		}
	}
	if !s.going() {
		return
	}
	if !versionOK {
		s.refuse("jsonrpc must be \"2.0\"")
	}
	if p.conflict != "" {
		s.refuse(p.conflict)
	}
	if !seen[memberMethod] && m.id == nil {
		s.refuse("a message needs a method (request or notification) or an id (response)")
	}
	if m.isToolCall() {
		switch {
		case !paramsIsObj:
			s.refuse("tools/call params must be an object")
		case p.seen&(1<<keyName) == 0:
			s.refuse("tools/call params.name is missing")
		case !p.isString:
			s.refuse("tools/call params.name must be a string")
		case hasControl(p.name):
			// A backend may trim or ignore them and run the tool, while
			// the name would escape the tool's own bucket.
			s.refuse("tools/call params.name must not contain control characters")
		default:
			m.name, m.arguments = p.name, p.arguments
		}
	}
	if m.hasMethod && paramsIsObj {
		// What authorization rules decide on; a request without it is
		// left to the backend, or refused where rules govern it.
		switch string(m.method) {
		case methodPromptsGet:
			if p.isString && hasControl(p.name) {
				s.refuse("prompts/get params.name must not contain control characters")
			} else if p.isString {
				m.name, m.arguments = p.name, p.arguments
			}
		case methodResourcesRead, methodResourcesSubscribe:
			if p.uriIsString && hasControl(p.uri) {
				s.refuse(string(m.method) + " params.uri must not contain control characters")
			} else if p.uriIsString {
				m.name = p.uri
			}
		}
	}
	m.version = p.version
}

// paramsScan is what a message's params object says of the keys the filter
// decides on.
type paramsScan struct {
	isString    bool // name is a string
	name        []byte
	conflict    string // why the params are ambiguous, "" when they are not
	version     []byte // _meta's protocol version, when a string
	arguments   []byte // the raw JSON of the arguments key
	uri         []byte // the decoded uri key, when a string (uriIsString)
	uriIsString bool
	seen        uint8 // a bit per paramsKey met
}

// scanParams reads the params object at s.pos, noting the keys the filter
// decides on.
func (s *scanner) scanParams(p *paramsScan, depth int) {
	if depth+1 > maxNestingDepth {
		s.fail("nesting too deep")
		return
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		return
	}
	for s.going() {
		key, ok := s.scanKey()
		if !ok || !s.expect(':', "expected ':' after an object key") {
			return
		}
		switch k, exact := decidedKey(key); {
		case k != keyOther && !exact:
			// Decoders that match keys without regard to case (Go's
			// encoding/json) would read it as the key the filter reads.
			p.conflictOnce(`a key in params differs only in case from "` + paramsKeyNames[k] + `"`)
			s.skipValue(depth + 1)
		case k != keyOther:
			if p.seen&(1<<k) != 0 {
				p.conflictOnce(`duplicate "` + paramsKeyNames[k] + `" key in params`)
			}
			p.seen |= 1 << k
			s.scanDecided(p, k, depth+1)
		case string(key) == "_meta" && s.peek() == '{':
			s.scanMeta(p, depth+1)
		default:
			s.skipValue(depth + 1)
		}
		if s.nextMember() {
			continue
		}
		return
	}
}

// The params keys the filter decides on; any other is skipped.
const (
	keyOther paramsKey = iota
	keyName
	keyURI
	keyArguments
	numParamsKeys
)

// paramsKey names a params key the filter reads.
type paramsKey uint8

var (
	paramsKeyNames = [numParamsKeys]string{keyName: "name", keyURI: "uri", keyArguments: "arguments"}
	paramsKeyBytes = [numParamsKeys][]byte{keyName: []byte("name"), keyURI: []byte("uri"), keyArguments: []byte("arguments")}
)

// decidedKey says which decided key key is, and whether it is spelled
// exactly so or only in another case; keyOther for any other key.
func decidedKey(key []byte) (paramsKey, bool) {
	for k := keyName; k < numParamsKeys; k++ {
		if string(key) == paramsKeyNames[k] {
			return k, true
		}
		if bytes.EqualFold(key, paramsKeyBytes[k]) {
			return k, false
		}
	}
	return keyOther, false
}

// scanDecided reads the value of decided key k at s.pos.
func (s *scanner) scanDecided(p *paramsScan, k paramsKey, depth int) {
	switch k {
	case keyName:
		p.name, p.isString = s.scanStringValue(depth)
	case keyURI:
		p.uri, p.uriIsString = s.scanStringValue(depth)
	case keyArguments:
		s.skipSpace()
		start := s.pos
		s.skipValue(depth)
		p.arguments = s.data[start:s.pos]
	}
}

// conflictOnce keeps the first reason the params are ambiguous.
func (p *paramsScan) conflictOnce(reason string) {
	if p.conflict == "" {
		p.conflict = reason
	}
}

// scanMeta reads the params._meta object at s.pos, noting the protocol
// version it names. The version only chooses how a refusal is worded, so its
// key is read as it comes, without the strictness of the keys that decide.
func (s *scanner) scanMeta(p *paramsScan, depth int) {
	if depth+1 > maxNestingDepth {
		s.fail("nesting too deep")
		return
	}
	s.pos++ // '{'
	s.skipSpace()
	if s.peek() == '}' {
		s.pos++
		return
	}
	for s.going() {
		key, ok := s.scanKey()
		if !ok || !s.expect(':', "expected ':' after an object key") {
			return
		}
		if bytes.Equal(key, metaProtocolVersionKey) {
			p.version, _ = s.scanStringValue(depth + 1)
		} else {
			s.skipValue(depth + 1)
		}
		if !s.nextMember() {
			return
		}
	}
}

// nextMember reads what follows an object member: true after ',' (the next
// member starts at s.pos), false after '}' or a syntax error.
func (s *scanner) nextMember() bool {
	s.skipSpace()
	switch s.peek() {
	case ',':
		s.pos++
		s.skipSpace()
		return true
	case '}':
		s.pos++
	default:
		s.fail("expected ',' or '}' in an object")
	}
	return false
}

// scanKey reads an object key at s.pos and returns it decoded.
func (s *scanner) scanKey() ([]byte, bool) {
	if s.peek() != '"' {
		s.fail("expected a string as an object key")
		return nil, false
	}
	return s.scanString()
}

// scanStringValue reads the value at s.pos; when it is a string it returns
// it decoded and true, otherwise it skips it and returns false.
func (s *scanner) scanStringValue(depth int) ([]byte, bool) {
	if s.peek() != '"' {
		s.skipValue(depth)
		return nil, false
	}
	v, ok := s.scanString()
	return v, ok
}

// scanString reads the string at s.pos and returns its content decoded: a
// slice of the body when it has no escapes, else a copy decoded as
// encoding/json decodes it (a lone surrogate becomes U+FFFD).
func (s *scanner) scanString() ([]byte, bool) {
	s.pos++ // opening quote
	start := s.pos
	escaped := false
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			if !escaped {
				return s.data[start : s.pos-1], true
			}
			var v string
			if err := json.Unmarshal(s.data[start-1:s.pos], &v); err != nil {
				s.fail("invalid string")
				return nil, false
			}
			return []byte(v), true
		case c == '\\':
			escaped = true
			s.pos++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				if s.pos+5 > len(s.data) || !isHex(s.data[s.pos+1]) || !isHex(s.data[s.pos+2]) ||
					!isHex(s.data[s.pos+3]) || !isHex(s.data[s.pos+4]) {
					s.fail("invalid \\u escape in a string")
					return nil, false
				}
				s.pos += 5
			default:
				s.fail("invalid escape in a string")
				return nil, false
			}
		case c < 0x20:
			s.fail("control character in a string")
			return nil, false
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				s.fail("invalid UTF-8 in a string")
				return nil, false
			}
			s.pos += size
		}
	}
	s.fail("unterminated string")
	return nil, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skipValue checks and passes over the value at s.pos. depth is the number
// of arrays and objects around it.
func (s *scanner) skipValue(depth int) {
	switch c := s.peek(); {
	case c == '{':
		if depth+1 > maxNestingDepth {
			s.fail("nesting too deep")
			return
		}
		s.pos++
		s.skipSpace()
		if s.peek() == '}' {
			s.pos++
			return
		}
		for s.going() {
			if _, ok := s.scanKey(); !ok || !s.expect(':', "expected ':' after an object key") {
				return
			}
			s.skipValue(depth + 1)
			if s.nextMember() {
				continue
			}
			return
		}
	case c == '[':
		if depth+1 > maxNestingDepth {
			s.fail("nesting too deep")
			return
		}
		s.pos++
		s.skipSpace()
		if s.peek() == ']' {
			s.pos++
			return
		}
		for s.going() {
			s.skipValue(depth + 1)
			s.skipSpace()
			switch s.peek() {
			case ',':
				s.pos++
				s.skipSpace()
				continue
			case ']':
				s.pos++
			default:
				s.fail("expected ',' or ']' in an array")
			}
			return
		}
	case c == '"':
		s.scanString()
	case c == '-' || (c >= '0' && c <= '9'):
		s.scanNumber()
	case c == 't':
		s.scanLiteral("true")
	case c == 'f':
		s.scanLiteral("false")
	case c == 'n':
		s.scanLiteral("null")
	case s.pos >= len(s.data):
		s.fail("unexpected end of JSON")
	default:
		s.fail("invalid character where a value was expected")
	}
}

func (s *scanner) scanLiteral(lit string) {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		s.fail("invalid literal")
		return
	}
	s.pos += len(lit)
}

// scanNumber passes over a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) scanNumber() {
	if s.peek() == '-' {
		s.pos++
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		s.fail("invalid number")
		return
	}
	if s.peek() == '.' {
		s.pos++
		if !s.digits() {
			s.fail("invalid number: no digit after '.'")
			return
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if !s.digits() {
			s.fail("invalid number: no digit in the exponent")
		}
	}
}

// digits passes over one or more digits and reports whether there was one.
func (s *scanner) digits() bool {
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos > start
}

// hasControl reports whether b, UTF-8, holds a control character (Unicode
// category Cc: U+0000 to U+001F and U+007F to U+009F).
func hasControl(b []byte) bool {
	for _, r := range string(b) {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}
