package filter_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toolgate/toolgate/filter"
	"github.com/toolgate/toolgate/filter/authz"
)

// listPolicy lets engineers search, everyone create issues in team-a's
// repositories, and admins (by scope) delete; it shows go prompts and the
// docs.
func listPolicy(iss *testIssuer) filter.Policy {
	return filter.Policy{
		Server: testServer, Auth: iss.auth(),
		Authorization: &authz.Policy{Rules: []authz.Rule{
			{Name: "engineers", Tools: []string{"search_*"}, When: "'engineering' in claims.groups"},
			{Name: "team-a", Tools: []string{"create_issue"}, When: "request.arguments.repo.startsWith('team-a/')"},
			{Name: "admins", Tools: []string{"delete_repo"}, Scopes: []string{"repo:admin"}},
			{Name: "prompts", Prompts: []string{"review_*"}},
			{Name: "docs", Resources: []string{"file:///docs/*"}},
		}},
	}
}

// scripted is a backend that answers with a fixed response, written in the
// given pieces with a flush after each.
type scripted struct {
	contentType string
	status      int
	pieces      []string
	headers     []http.Header // what reached it
	writeErr    error         // the first write error it saw
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.headers = append(s.headers, r.Header.Clone())
	if s.contentType != "" {
		w.Header().Set("Content-Type", s.contentType)
	}
	w.WriteHeader(max(s.status, http.StatusOK))
	for _, p := range s.pieces {
		if _, err := w.Write([]byte(p)); err != nil {
			s.writeErr = err
			return
		}
		_ = http.NewResponseController(w).Flush()
	}
}

func newListHarness(t *testing.T, policy filter.Policy, next http.Handler) (http.Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	shared, err := filter.NewShared(filter.SharedOptions{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	f, err := filter.New(policy, shared)
	if err != nil {
		t.Fatal(err)
	}
	return f.Wrap(next), reg
}

func listRequest(method, token, body string) *http.Request {
	r := httptest.NewRequest(method, "/mcp", strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("Accept-Encoding", "gzip")
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

const toolsListResult = `{"jsonrpc":"2.0","id":7,"result":{"tools":[` +
	`{"name":"search_code","inputSchema":{"type":"object"}},` +
	`{"name":"create_issue","inputSchema":{"type":"object"}},` +
	`{"name":"delete_repo","inputSchema":{"type":"object"}},` +
	`{"name":"launch","inputSchema":{"type":"object"}},` +
	`{"Name":"search_spelled_otherwise"},` +
	`{"title":"no name"}` +
	`],"nextCursor":"page-2"}}`

// names returns the names listed under key in a JSON-RPC message's result.
func names(t *testing.T, message, key, nameKey string) []string {
	t.Helper()
	var m struct {
		Result map[string]json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal([]byte(message), &m); err != nil {
		t.Fatalf("%v: %s", err, message)
	}
	var items []map[string]any
	if err := json.Unmarshal(m.Result[key], &items); err != nil {
		t.Fatalf("result.%s: %v: %s", key, err, message)
	}
	var out []string
	for _, item := range items {
		s, _ := item[nameKey].(string)
		out = append(out, s)
	}
	return out
}

func TestToolsListShowsEachCallerWhatHeMayCall(t *testing.T) {
	iss := newIssuer(t)
	engineer := iss.token(t, "alice", func(c claims) { c["groups"] = []string{"engineering"} })
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	for _, tt := range []struct {
		name, token string
		want        []string
	}{
		// delete_repo needs a scope neither holds: listed, for a step up.
		{"engineer", engineer, []string{"search_code", "create_issue", "delete_repo"}},
		{"sales", sales, []string{"create_issue", "delete_repo"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			backend := &scripted{contentType: "application/json", pieces: []string{toolsListResult[:40], toolsListResult[40:]}}
			h, reg := newListHarness(t, listPolicy(iss), backend)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, listRequest(http.MethodPost, tt.token, `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"page-1"}}`))
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if got := names(t, w.Body.String(), "tools", "name"); !slices.Equal(got, tt.want) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
			if cl := w.Header().Get("Content-Length"); cl != "" && cl != itoa(w.Body.Len()) {
				t.Errorf("Content-Length %s for a body of %d bytes", cl, w.Body.Len())
			}
			if !strings.Contains(w.Body.String(), `"nextCursor":"page-2"`) || !strings.Contains(w.Body.String(), `"id":7`) {
				t.Errorf("the cursor or id was not kept: %s", w.Body)
			}
			if got := backend.headers[0].Get("Accept-Encoding"); got != "" {
				t.Errorf("the backend was offered Accept-Encoding %q for a response the filter reads", got)
			}
			hidden := metricValue(t, reg, filter.MetricListItemsHidden, map[string]string{"server": "github"})
			if want := float64(6 - len(tt.want)); hidden != want {
				t.Errorf("%s = %v, want %v", filter.MetricListItemsHidden, hidden, want)
			}
		})
	}
}

// Every kind of list, in an event stream with other events around the
// response, lines ended every way SSE allows and data split over lines.
func TestListsInEventStreams(t *testing.T) {
	iss := newIssuer(t)
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	priming := "id: 0\r\ndata:\r\n\r\n"
	progress := "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1,\"tools\":[{\"name\":\"launch\"}]}}\n\n"
	for _, tt := range []struct {
		method, result, key, nameKey string
		want                         []string
	}{
		{"tools/list", `{"tools":[{"name":"search_code"},{"name":"create_issue"}]}`, "tools", "name", []string{"create_issue"}},
		{"prompts/list", `{"prompts":[{"name":"review_code"},{"name":"summarize"}]}`, "prompts", "name", []string{"review_code"}},
		{"resources/list", `{"resources":[{"uri":"file:///docs/a.md","name":"a"},{"uri":"file:///etc/passwd","name":"docs"}]}`, "resources", "uri", []string{"file:///docs/a.md"}},
		{"resources/templates/list", `{"resourceTemplates":[{"uriTemplate":"file:///docs/{path}","name":"d"},{"uriTemplate":"file:///etc/{path}","name":"e"}]}`, "resourceTemplates", "uriTemplate", []string{"file:///docs/{path}"}},
	} {
		t.Run(tt.method, func(t *testing.T) {
			response := `{"jsonrpc":"2.0","id":"a-1","result":` + tt.result + `}`
			// The data split over two lines (joined with a newline, which
			// JSON reads as space), the event over three writes.
			split := strings.Index(response, ",")
			event := "id: 1\rdata: " + response[:split] + "\rdata:" + response[split:] + "\r\r"
			backend := &scripted{contentType: "text/event-stream", pieces: []string{priming + progress[:20], progress[20:] + event[:30], event[30:50], event[50:]}}
			h, _ := newListHarness(t, listPolicy(iss), backend)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, listRequest(http.MethodPost, sales, `{"jsonrpc":"2.0","id":"a-1","method":"`+tt.method+`"}`))
			out := w.Body.String()
			if !strings.HasPrefix(out, priming+progress) {
				t.Fatalf("the events before the response changed:\n%q", out)
			}
			rest := strings.TrimPrefix(out, priming+progress)
			if !strings.HasPrefix(rest, "id: 1\ndata: ") || !strings.HasSuffix(rest, "\n\n") || strings.Count(rest, "data:") != 1 {
				t.Fatalf("the response event is not one event with its id and one data line:\n%q", rest)
			}
			data := strings.TrimSuffix(strings.TrimPrefix(rest, "id: 1\ndata: "), "\n\n")
			if got := names(t, data, tt.key, tt.nameKey); !slices.Equal(got, tt.want) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
			if backend.writeErr != nil {
				t.Errorf("the backend's write failed: %v", backend.writeErr)
			}
		})
	}
}

// A 2026-07-28 list result that may be cached for everyone is, once
// filtered, for its caller only; a batch's lists are filtered too.
func TestAFilteredListIsNeverShared(t *testing.T) {
	iss := newIssuer(t)
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	body := `[{"jsonrpc":"2.0","id":1,"result":{"ttlMs":60000,"cacheScope":"public","tools":[{"name":"launch"}]}},` +
		`{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"{\"tools\":[]}"}]}}]`
	backend := &scripted{contentType: "application/json; charset=utf-8", pieces: []string{body}}
	h, _ := newListHarness(t, listPolicy(iss), backend)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, listRequest(http.MethodPost, sales, `[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_issue","arguments":{"repo":"team-a/x"}}}]`))
	var batch []map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &batch); err != nil || len(batch) != 2 {
		t.Fatalf("%v: %s", err, w.Body)
	}
	var result map[string]json.RawMessage
	_ = json.Unmarshal(batch[0]["result"], &result)
	if string(result["tools"]) != "[]" || string(result["cacheScope"]) != `"private"` || string(result["ttlMs"]) != "60000" {
		t.Errorf("the filtered result is %s; want no tools, private, the same ttl", batch[0]["result"])
	}
	if string(batch[1]["result"]) != `{"content":[{"type":"text","text":"{\"tools\":[]}"}]}` {
		t.Errorf("the tool call's result changed: %s", batch[1]["result"])
	}
}

// A resumed event stream (GET) can replay a list response: it is filtered
// too.
func TestAResumedStreamsListsAreFiltered(t *testing.T) {
	iss := newIssuer(t)
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	backend := &scripted{contentType: "text/event-stream", pieces: []string{
		"id: 3\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"search_code\"},{\"name\":\"create_issue\"}]}}\n\n",
	}}
	h, _ := newListHarness(t, listPolicy(iss), backend)
	r := listRequest(http.MethodGet, sales, "")
	r.Header.Set("Last-Event-ID", "2")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if strings.Contains(w.Body.String(), "search_code") || !strings.Contains(w.Body.String(), "create_issue") {
		t.Errorf("the replayed list was not filtered: %q", w.Body)
	}
}

// What the filter cannot read it does not forward.
func TestAListResponseThatCannotBeReadIsNotForwarded(t *testing.T) {
	iss := newIssuer(t)
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, tt := range []struct {
		name        string
		backend     *scripted
		wantStatus  int
		wantMessage string // in the 502's error, or "" when the stream is cut
	}{
		{"not JSON", &scripted{contentType: "application/json", pieces: []string{`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search_code"}]}} trailing`}}, http.StatusBadGateway, "cannot be read"},
		{"another media type", &scripted{contentType: "text/plain", pieces: []string{`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search_code"}]}}`}}, http.StatusBadGateway, "is not JSON"},
		{"an event that is not JSON", &scripted{contentType: "text/event-stream", pieces: []string{"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"search_code\"}]}}}\n\n"}}, http.StatusOK, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, reg := newListHarness(t, listPolicy(iss), tt.backend)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, listRequest(http.MethodPost, sales, list))
			if w.Code != tt.wantStatus || strings.Contains(w.Body.String(), "search_code") {
				t.Fatalf("status %d, body %q: want %d without the hidden tool", w.Code, w.Body, tt.wantStatus)
			}
			if tt.wantMessage == "" {
				if tt.backend.writeErr == nil {
					t.Error("the backend's write did not fail: the stream was not cut")
				}
				return
			}
			if resp := decodeError(t, w); !strings.Contains(resp.Error.Message, tt.wantMessage) {
				t.Errorf("message %q, want it to say %q", resp.Error.Message, tt.wantMessage)
			}
			if got := metricValue(t, reg, filter.MetricRejectedRequests, map[string]string{"reason": "list_unreadable"}); got != 1 {
				t.Errorf("list_unreadable refusals = %v, want 1", got)
			}
		})
	}
}

// Without authorization, or for a request that lists nothing, the response
// passes byte for byte.
func TestResponsesWithoutListsPassUntouched(t *testing.T) {
	iss := newIssuer(t)
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	body := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search_code"}]} }`
	open := listPolicy(iss)
	open.Authorization = nil
	for _, tt := range []struct {
		name, request string
		policy        filter.Policy
	}{
		{"no authorization", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, open},
		{"a tool call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"repo":"team-a/x"}}}`, listPolicy(iss)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			backend := &scripted{contentType: "application/json", pieces: []string{body}}
			h, _ := newListHarness(t, tt.policy, backend)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, listRequest(http.MethodPost, sales, tt.request))
			if w.Body.String() != body {
				t.Errorf("body %q, want the backend's", w.Body)
			}
			if backend.headers[0].Get("Accept-Encoding") != "gzip" {
				t.Errorf("Accept-Encoding was dropped from a response the filter does not read")
			}
		})
	}
}

// The filter reads keys as clients decode them, and strings whole: an
// escaped key is the key it spells, a bracket in a string is text.
func TestListsAreReadAsClientsReadThem(t *testing.T) {
	iss := newIssuer(t)
	sales := iss.token(t, "bob", func(c claims) { c["groups"] = []string{"sales"} })
	body := `{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[` +
		`{"name":"create_issue","description":"has \"]}, in it\\"},` +
		`{"description":"\"name\":\"create_issue\"","n\u0061me":"search_code"},` +
		`{"name":"create_issue","name":"search_code"}` +
		`],"ttlMs":5}}`
	backend := &scripted{contentType: "application/json", pieces: []string{body}}
	h, _ := newListHarness(t, listPolicy(iss), backend)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, listRequest(http.MethodPost, sales, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	var m struct {
		Result struct {
			Tools []struct {
				Name        string `json:"name"`
				Description string `json:"description"`
			} `json:"tools"`
			CacheScope string `json:"cacheScope"`
		} `json:"result"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, w.Body)
	}
	if len(m.Result.Tools) != 1 || m.Result.Tools[0].Name != "create_issue" || m.Result.Tools[0].Description != `has "]}, in it\` {
		t.Errorf("tools %+v, want create_issue alone, its description whole", m.Result.Tools)
	}
	if m.Result.CacheScope != "private" {
		t.Errorf("cacheScope %q, want private added next to ttlMs", m.Result.CacheScope)
	}
}
