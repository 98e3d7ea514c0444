package filter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// inspected is what a test expects of one message.
type inspected struct {
	id     string // raw JSON; "" when absent
	method string
	name   string
	call   bool // a tools/call
}

func summarize(in inspection) []inspected {
	var out []inspected
	for _, m := range in.messages {
		out = append(out, inspected{id: string(m.id), method: string(m.method), name: string(m.name), call: m.isToolCall()})
	}
	return out
}

func TestInspect(t *testing.T) {
	deep := strings.Repeat("[", maxNestingDepth-2) + strings.Repeat("]", maxNestingDepth-2)
	tooDeep := strings.Repeat("[", maxNestingDepth+1) + strings.Repeat("]", maxNestingDepth+1)
	tests := []struct {
		name  string
		body  string
		code  int // 0 when accepted
		batch bool
		want  []inspected
	}{
		{name: "a tools/call yields its id, method and tool name",
			body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool","arguments":{"x":[1,2,{"y":null}]}}}`,
			want: []inspected{{id: "1", method: "tools/call", name: "expensive_tool", call: true}}},
		{name: "keys may come in any order",
			body: ` { "params" : { "arguments" : {} , "name" : "t" } , "method" : "tools/call" , "id" : "a" , "jsonrpc" : "2.0" } `,
			want: []inspected{{id: `"a"`, method: "tools/call", name: "t", call: true}}},
		{name: "escaped keys and values are decoded",
			body: `{"jsonrpc":"2.0","id":"x\"y","\u006dethod":"tools\/call","params":{"na\u006de":"caf\u00e9"}}`,
			want: []inspected{{id: `"x\"y"`, method: "tools/call", name: "café", call: true}}},
		{name: "a notification has no id",
			body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want: []inspected{{method: "notifications/initialized"}}},
		{name: "a null id is kept as null",
			body: `{"jsonrpc":"2.0","id":null,"method":"ping"}`,
			want: []inspected{{id: "null", method: "ping"}}},
		{name: "a response has an id and no method",
			body: `{"jsonrpc":"2.0","id":7,"result":{}}`,
			want: []inspected{{id: "7"}}},
		{name: "other methods need no params.name",
			body: `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"c"}}`,
			want: []inspected{{id: "2", method: "tools/list"}}},
		{name: "a batch mixing calls and notifications yields every message",
			body:  `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/progress"},{"jsonrpc":"2.0","method":"tools/call","params":{"name":"b"}}]`,
			batch: true,
			want: []inspected{
				{id: "1", method: "tools/call", name: "a", call: true},
				{method: "notifications/progress"},
				{method: "tools/call", name: "b", call: true},
			}},
		{name: "nesting up to encoding/json's depth is accepted",
			body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":` + deep + `}}`,
			want: []inspected{{id: "1", method: "ping"}}},

		{name: "an empty body is a parse error", body: ``, code: CodeParseError},
		{name: "truncated JSON is a parse error", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call"`, code: CodeParseError},
		{name: "a trailing comma is a parse error", body: `{"jsonrpc":"2.0","method":"ping",}`, code: CodeParseError},
		{name: "data after the value is a parse error", body: `{"jsonrpc":"2.0","method":"ping"} {}`, code: CodeParseError},
		{name: "invalid UTF-8 is a parse error", body: "{\"jsonrpc\":\"2.0\",\"method\":\"p\xffing\"}", code: CodeParseError},
		{name: "a raw control character in a string is a parse error", body: "{\"jsonrpc\":\"2.0\",\"method\":\"a\tb\"}", code: CodeParseError},
		{name: "a leading zero is a parse error", body: `{"jsonrpc":"2.0","id":01,"method":"ping"}`, code: CodeParseError},
		{name: "nesting deeper than encoding/json allows is a parse error", body: `{"params":` + tooDeep + `}`, code: CodeParseError},
		{name: "a reason to refuse found before a syntax error stops the scan", body: `[1,`, code: CodeInvalidRequest},
		{name: "a syntax error found first is a parse error", body: `[{"jsonrpc":"2.0",}, 1]`, code: CodeParseError},

		{name: "a string is not a request", body: `"tools/call"`, code: CodeInvalidRequest},
		{name: "an empty batch is not a request", body: `[]`, code: CodeInvalidRequest},
		{name: "a batch of numbers is not a request", body: `[1,2]`, code: CodeInvalidRequest},
		{name: "jsonrpc 1.0 is not a request", body: `{"jsonrpc":"1.0","id":1,"method":"ping"}`, code: CodeInvalidRequest},
		{name: "a missing jsonrpc is not a request", body: `{"id":1,"method":"ping"}`, code: CodeInvalidRequest},
		{name: "a method that is not a string is not a request", body: `{"jsonrpc":"2.0","id":1,"method":7}`, code: CodeInvalidRequest},
		{name: "an object id is not a request", body: `{"jsonrpc":"2.0","id":{},"method":"ping"}`, code: CodeInvalidRequest},
		{name: "a boolean id is not a request", body: `{"jsonrpc":"2.0","id":true,"method":"ping"}`, code: CodeInvalidRequest},
		{name: "a message with neither method nor id is not a request", body: `{"jsonrpc":"2.0"}`, code: CodeInvalidRequest},
		{name: "a tools/call without params is not a request", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, code: CodeInvalidRequest},
		{name: "a tools/call with array params is not a request", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}`, code: CodeInvalidRequest},
		{name: "a tools/call without a name is not a request", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`, code: CodeInvalidRequest},
		{name: "a tools/call whose name is not a string is not a request", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["a"]}}`, code: CodeInvalidRequest},
		{name: "one invalid message spoils a batch", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2}, 3]`, code: CodeInvalidRequest},

		{name: "a duplicate method is refused", body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"a"}}`, code: CodeInvalidRequest},
		{name: "a case-variant method is refused", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","METHOD":"ping","params":{"name":"a"}}`, code: CodeInvalidRequest},
		{name: "a case-variant method alone is refused", body: `{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"a"}}`, code: CodeInvalidRequest},
		{name: "a duplicate params is refused", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}`, code: CodeInvalidRequest},
		{name: "params spelled with a long s is refused", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"paramſ":{"name":"b"}}`, code: CodeInvalidRequest},
		{name: "a duplicate name is refused", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`, code: CodeInvalidRequest},
		{name: "a case-variant name is refused", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`, code: CodeInvalidRequest},
		{name: "an escaped duplicate name is refused", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}`, code: CodeInvalidRequest},
		{name: "a duplicate id is refused", body: `{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`, code: CodeInvalidRequest},
		{name: "a case-variant jsonrpc is refused", body: `{"jsonrpc":"2.0","JSONRPC":"2.0","id":1,"method":"ping"}`, code: CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := inspect([]byte(tt.body), nil, 0)
			if err.code != tt.code {
				t.Fatalf("inspect code = %d (%s), want %d", err.code, err.message, tt.code)
			}
			if tt.code != 0 {
				return
			}
			if in.batch != tt.batch {
				t.Errorf("batch = %v, want %v", in.batch, tt.batch)
			}
			if got := summarize(in); !slices.Equal(got, tt.want) {
				t.Errorf("messages = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestInspectStopsAtTheBatchBound(t *testing.T) {
	one := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`
	tests := []struct {
		name     string
		messages int
		code     int
	}{
		{name: "a batch at the bound is read", messages: 3},
		{name: "a batch past the bound is refused", messages: 4, code: CodeInvalidRequest},
		{name: "a huge batch is refused", messages: 100000, code: CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := "[" + strings.Repeat(one+",", tt.messages-1) + one + "]"
			in, err := inspect([]byte(body), nil, 3)
			if err.code != tt.code {
				t.Fatalf("code = %d (%s), want %d", err.code, err.message, tt.code)
			}
			if tt.code == 0 && len(in.messages) != tt.messages {
				t.Errorf("%d messages, want %d", len(in.messages), tt.messages)
			}
			if tt.code != 0 && !strings.Contains(err.message, "at most 3") {
				t.Errorf("message %q does not say the bound", err.message)
			}
		})
	}
}

// FuzzInspect checks that the inspector never panics and never disagrees
// with a reference built on encoding/json that sees every key: on whether
// the body is JSON, whether it is an acceptable request, and on what it
// asks for.
func FuzzInspect(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"expensive_tool","arguments":{"a":1}}}`,
		`[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"t"}},{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
		`{"jsonrpc":"2.0","id":null,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":-1.5e3,"result":{}}`,
		`{"method":"tools/call","METHOD":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","paramſ":{"name":"a"}}`,
		`{"jsonrpc":"2.0","id":"\ud800","\u006dethod":"tools\/call","params":{"na\u006de":"\u00e9\ud83d\ude00"}}`,
		`[]`, `[1]`, `"x"`, `{}`, `{"a":[true,false,null,{"b":"c"}]}`, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := inspect(body, nil, 0)
		want := referenceInspect(body)
		if want.code == CodeParseError && err.code == CodeInvalidRequest {
			// The inspector stops at its first reason to refuse, which
			// may come before the syntax error.
			return
		}
		if err.code != want.code {
			t.Fatalf("inspect(%q) code = %d (%s), reference says %d (%s)", body, err.code, err.message, want.code, want.why)
		}
		if err.code != 0 {
			return
		}
		if in.batch != want.batch {
			t.Fatalf("inspect(%q) batch = %v, reference says %v", body, in.batch, want.batch)
		}
		if got := summarize(in); !slices.Equal(got, want.messages) {
			t.Fatalf("inspect(%q) = %+v, reference says %+v", body, got, want.messages)
		}
	})
}

type referenceResult struct {
	code     int
	why      string
	batch    bool
	messages []inspected
}

// referenceInspect reads body with encoding/json, which decides syntax, and
// applies the filter's rules to every key it meets.
func referenceInspect(body []byte) referenceResult {
	if !json.Valid(body) || !utf8.Valid(body) {
		return referenceResult{code: CodeParseError, why: "not JSON"}
	}
	invalid := func(why string) referenceResult { return referenceResult{code: CodeInvalidRequest, why: why} }
	var res referenceResult
	body = bytes.TrimLeft(body, " \t\r\n")
	switch body[0] {
	case '{':
		m, why := referenceMessage(body)
		if why != "" {
			return invalid(why)
		}
		res.messages = []inspected{m}
	case '[':
		res.batch = true
		var elems []json.RawMessage
		if err := json.Unmarshal(body, &elems); err != nil {
			panic(err)
		}
		if len(elems) == 0 {
			return invalid("empty batch")
		}
		for _, e := range elems {
			if e[0] != '{' {
				return invalid("batch element not an object")
			}
			m, why := referenceMessage(e)
			if why != "" {
				return invalid(why)
			}
			res.messages = append(res.messages, m)
		}
	default:
		return invalid("neither object nor array")
	}
	return res
}

type referenceMember struct {
	key   string
	value json.RawMessage
}

// referenceMembers lists an object's keys, decoded, in order, duplicates
// included, with their raw values.
func referenceMembers(object []byte) []referenceMember {
	dec := json.NewDecoder(bytes.NewReader(object))
	if _, err := dec.Token(); err != nil { // {
		panic(err)
	}
	var members []referenceMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			panic(err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			panic(err)
		}
		members = append(members, referenceMember{key: tok.(string), value: v})
	}
	return members
}

// ambiguous says why a member set spells one of names other than
// exactly (as encoding/json's case folding would still match it) or more
// than once.
func ambiguous(members []referenceMember, names ...string) string {
	seen := map[string]int{}
	for _, m := range members {
		for _, n := range names {
			if strings.EqualFold(m.key, n) {
				if m.key != n {
					return fmt.Sprintf("%q is a case variant of %q", m.key, n)
				}
				seen[n]++
				if seen[n] > 1 {
					return fmt.Sprintf("%q appears twice", n)
				}
			}
		}
	}
	return ""
}

func referenceMessage(object []byte) (inspected, string) {
	members := referenceMembers(object)
	if why := ambiguous(members, "jsonrpc", "id", "method", "params"); why != "" {
		return inspected{}, why
	}
	fields := map[string]json.RawMessage{}
	for _, m := range members {
		fields[m.key] = m.value
	}
	var m inspected
	if params, ok := fields["params"]; ok && params[0] == '{' {
		if why := ambiguous(referenceMembers(params), "name"); why != "" {
			return inspected{}, why
		}
	}
	var version string
	if err := json.Unmarshal(fields["jsonrpc"], &version); err != nil || version != "2.0" {
		return inspected{}, "jsonrpc is not 2.0"
	}
	id, hasID := fields["id"]
	if hasID {
		switch c := id[0]; {
		case c == '"' || c == '-' || c >= '0' && c <= '9' || c == 'n':
			m.id = string(id)
		default:
			return inspected{}, "bad id"
		}
	}
	method, hasMethod := fields["method"]
	if hasMethod {
		if err := json.Unmarshal(method, &m.method); err != nil || method[0] != '"' {
			return inspected{}, "method is not a string"
		}
	} else if !hasID {
		return inspected{}, "neither method nor id"
	}
	if hasMethod && m.method == "tools/call" {
		m.call = true
		params, ok := fields["params"]
		if !ok || params[0] != '{' {
			return inspected{}, "tools/call params not an object"
		}
		var p map[string]json.RawMessage
		if err := json.Unmarshal(params, &p); err != nil {
			panic(err)
		}
		name, ok := p["name"]
		if !ok {
			return inspected{}, "tools/call without a name"
		}
		if err := json.Unmarshal(name, &m.name); err != nil || name[0] != '"' {
			return inspected{}, "tools/call name not a string"
		}
	}
	return m, ""
}
