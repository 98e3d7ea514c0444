package filter

import (
	"bytes"
	"encoding/json"
	"iter"
	"strings"
)

// Walking JSON that json.Valid accepted, by byte offsets: the list filter
// finds the values it rewrites without decoding what it keeps, and splices
// the response together from the spans of the original.

// span is b[start:end] of a JSON text.
type span struct{ start, end int }

// skipSpace returns the offset of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the offset just past the value that starts at i.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // a number, true, false or null
		for i < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[i])) {
			i++
		}
		return i
	}
}

// stringEnd returns the offset just past the string that starts at i.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		i += q
		// The quote ends the string unless an odd run of backslashes
		// escapes it.
		backslashes := 0
		for j := i - 1; j > 0 && b[j] == '\\'; j-- {
			backslashes++
		}
		if backslashes%2 == 0 {
			return i + 1
		}
	}
	return len(b)
}

// jsonMember is one member of an object: its key (quotes included) and value.
type jsonMember struct{ key, value span }

// members yields each member of the object at v, in order; nothing when v
// is not an object.
func members(b []byte, v span) iter.Seq[jsonMember] {
	return func(yield func(jsonMember) bool) {
		if b[v.start] != '{' {
			return
		}
		i := skipSpace(b, v.start+1)
		for i < v.end && b[i] == '"' {
			key := span{i, stringEnd(b, i)}
			i = skipSpace(b, key.end)
			i = skipSpace(b, i+1) // the colon
			end := valueEnd(b, i)
			if !yield(jsonMember{key, span{i, end}}) {
				return
			}
			i = skipSpace(b, end)
			if i < v.end && b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
	}
}

// elements yields each element of the array at v; nothing when v is not
// an array.
func elements(b []byte, v span) iter.Seq[span] {
	return func(yield func(span) bool) {
		if b[v.start] != '[' {
			return
		}
		i := skipSpace(b, v.start+1)
		for i < v.end && b[i] != ']' {
			end := valueEnd(b, i)
			if !yield(span{i, end}) {
				return
			}
			i = skipSpace(b, end)
			if i < v.end && b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
	}
}

// keyIs reports whether the key k decodes to name; fold compares without
// case, as Go's encoding/json matches struct fields.
func keyIs(b []byte, k span, name string, fold bool) bool {
	raw := b[k.start+1 : k.end-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		var s string
		_ = json.Unmarshal(b[k.start:k.end], &s) // valid JSON: a string decodes
		raw = []byte(s)
	}
	if fold {
		return bytes.EqualFold(raw, []byte(name))
	}
	return string(raw) == name
}

// stringValue decodes the string at v; false when v is not a string.
func stringValue(b []byte, v span) (string, bool) {
	if b[v.start] != '"' {
		return "", false
	}
	raw := b[v.start+1 : v.end-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	var s string
	err := json.Unmarshal(b[v.start:v.end], &s)
	return s, err == nil
}
