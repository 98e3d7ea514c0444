package authz_test

import (
	"strings"
	"testing"

	"github.com/toolgate/toolgate/filter/authz"
)

func TestCompileRefusesWhatCannotBeEnforced(t *testing.T) {
	tests := []struct {
		name   string
		policy authz.Policy
		want   string
	}{
		{"no rules", authz.Policy{}, "authorization.rules is empty"},
		{"a rule without a name", authz.Policy{Rules: []authz.Rule{{Tools: []string{"t"}}}}, "name is required"},
		{"two rules of one name", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"t"}}, {Name: "a", Tools: []string{"u"}}}}, "another rule has this name"},
		{"a rule that names nothing", authz.Policy{Rules: []authz.Rule{{Name: "a"}}}, "name tools, prompts or resources: the rule allows nothing"},
		{"a bad pattern", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"search_["}}}}, `tools: "search_[" is not a name or a valid glob pattern`},
		{"a bad resource pattern", authz.Policy{Rules: []authz.Rule{{Name: "a", Resources: []string{"file:///[docs"}}}}, `resources: "file:///[docs" is not a name or a valid glob pattern`},
		{"a syntax error", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"t"}, When: "claims.groups.exists(g, g == "}}}, "authorization.rules[a].when: ERROR"},
		{"an unknown variable", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"t"}, When: "token.sub == 'x'"}}}, "undeclared reference to 'token'"},
		{"not a bool", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"t"}, When: "user + '!'"}}}, "gives string, not bool"},
		{"a scope with a space", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"t"}, Scopes: []string{"a b"}}}}, "without spaces"},
		{"too long a condition", authz.Policy{Rules: []authz.Rule{{Name: "a", Tools: []string{"t"}, When: "user == '" + strings.Repeat("x", authz.MaxWhenLength) + "'"}}}, "at most 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := authz.Compile(tt.policy)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// testAuthorizer is the policy the decision and list tests share.
func testAuthorizer(t *testing.T) *authz.Authorizer {
	t.Helper()
	a, err := authz.Compile(authz.Policy{Rules: []authz.Rule{
		{Name: "readers", Tools: []string{"search_*", "get_issue"}, When: "'engineering' in claims.groups"},
		{Name: "team-a-repos", Tools: []string{"create_issue"}, When: "request.arguments.repo.startsWith('team-a/')"},
		{Name: "admins", Tools: []string{"delete_*"}, Scopes: []string{"repo:admin"}},
		{Name: "namespaced", Tools: []string{"github/*"}},
		{Name: "by-user", Tools: []string{"whoami"}, When: "user == claims.sub && request.method == 'tools/call' && request.name == 'whoami'"},
		{Name: "prompts", Prompts: []string{"review_*"}, When: "request.arguments.lang == 'go'"},
		{Name: "docs", Resources: []string{"file:///docs/*"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecide(t *testing.T) {
	a := testAuthorizer(t)
	engineer := map[string]any{"sub": "alice", "groups": []any{"engineering"}, "scope": "repo:read repo:admin"}
	sales := map[string]any{"sub": "bob", "groups": []any{"sales"}, "scp": []any{"repo:read"}}
	tests := []struct {
		name        string
		claims      map[string]any
		method      string // tools/call when ""
		tool        string
		arguments   map[string]any
		wantRule    string   // "" when refused
		wantMissing []string // the scopes a refusal asks for
	}{
		{"a glob, by group", engineer, "", "search_code", nil, "readers", nil},
		{"an exact name, by group", engineer, "", "get_issue", nil, "readers", nil},
		{"another group", sales, "", "search_code", nil, "", nil},
		{"no claim at all", map[string]any{"sub": "carol"}, "", "search_code", nil, "", nil},
		{"an argument allowed", sales, "", "create_issue", map[string]any{"repo": "team-a/api"}, "team-a-repos", nil},
		{"an argument refused", sales, "", "create_issue", map[string]any{"repo": "team-b/api"}, "", nil},
		{"a missing argument counts as false", sales, "", "create_issue", nil, "", nil},
		{"a scope held (scope claim)", engineer, "", "delete_repo", nil, "admins", nil},
		{"a scope missing (scp claim): step up", sales, "", "delete_repo", nil, "", []string{"repo:admin"}},
		{"a slash in the name", sales, "", "github/list_prs", nil, "namespaced", nil},
		{"no rule names the tool", engineer, "", "launch_missiles", nil, "", nil},
		{"user and request", sales, "", "whoami", nil, "by-user", nil},
		{"a prompt, by argument", sales, authz.MethodPromptsGet, "review_code", map[string]any{"lang": "go"}, "prompts", nil},
		{"a prompt refused", sales, authz.MethodPromptsGet, "review_code", map[string]any{"lang": "rust"}, "", nil},
		{"a tool name is not a prompt", sales, authz.MethodPromptsGet, "search_code", nil, "", nil},
		{"a resource under a pattern, deep", sales, authz.MethodResourcesRead, "file:///docs/a/b.md", nil, "docs", nil},
		{"a subscription", sales, authz.MethodResourcesSubscribe, "file:///docs/a.md", nil, "docs", nil},
		{"a resource elsewhere", sales, authz.MethodResourcesRead, "file:///etc/passwd", nil, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = authz.MethodToolsCall
			}
			d := a.Decide(authz.Request{
				User: tt.claims["sub"].(string), Claims: tt.claims, Method: method, Name: tt.tool,
				Arguments: tt.arguments, Scopes: authz.Scopes(tt.claims),
			})
			if d.Allowed != (tt.wantRule != "") || d.Rule != tt.wantRule {
				t.Errorf("Decide = allowed %v by %q, want %q (errors %v)", d.Allowed, d.Rule, tt.wantRule, d.Errors)
			}
			if strings.Join(d.MissingScopes, " ") != strings.Join(tt.wantMissing, " ") {
				t.Errorf("MissingScopes = %v, want %v", d.MissingScopes, tt.wantMissing)
			}
		})
	}
}

// A condition that runs past the cost limit counts as false, and says so.
func TestAConditionPastItsCostLimitIsFalse(t *testing.T) {
	a, err := authz.Compile(authz.Policy{Rules: []authz.Rule{{
		Name: "expensive", Tools: []string{"t"},
		When: "claims.items.all(x, claims.items.all(y, claims.items.all(z, x + y + z >= 0)))",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	items := make([]any, 200)
	for i := range items {
		items[i] = int64(i)
	}
	d := a.Decide(authz.Request{User: "u", Claims: map[string]any{"items": items}, Method: "tools/call", Name: "t"})
	if d.Allowed || len(d.Errors) != 1 || !strings.Contains(d.Errors[0].Error(), "cost") {
		t.Errorf("Decide = %+v, want refused with a cost error", d)
	}
}

// A list shows each caller what a call would not answer as unknown: what a
// rule names whose condition holds for some arguments, whatever scopes it
// needs.
func TestListerShowsWhatACallWouldNotAnswerAsUnknown(t *testing.T) {
	a := testAuthorizer(t)
	engineer := map[string]any{"sub": "alice", "groups": []any{"engineering"}}
	sales := map[string]any{"sub": "bob", "groups": []any{"sales"}}
	tests := []struct {
		name    string
		claims  map[string]any
		method  string
		visible []string
		hidden  []string
	}{
		{"tools, engineering", engineer, authz.MethodToolsCall,
			[]string{"search_code", "get_issue", "create_issue", "delete_repo", "github/list_prs"},
			[]string{"launch_missiles", "whoami", "review_code"}}, // whoami: user is "bob" below, not alice's sub
		{"tools, sales", sales, authz.MethodToolsCall,
			[]string{"create_issue", "delete_repo", "github/list_prs", "whoami"},
			[]string{"search_code", "get_issue", "launch_missiles"}},
		{"prompts", sales, authz.MethodPromptsGet, []string{"review_code"}, []string{"search_code", "summarize"}},
		{"resources", sales, authz.MethodResourcesRead, []string{"file:///docs/a.md", "file:///docs/{path}"}, []string{"file:///etc/passwd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := a.Lister(tt.method, "bob", tt.claims)
			for _, name := range tt.visible {
				if !l.Visible(name) {
					t.Errorf("%s is hidden, want it listed", name)
				}
			}
			for _, name := range tt.hidden {
				if l.Visible(name) {
					t.Errorf("%s is listed, want it hidden", name)
				}
			}
			if len(l.Errors) != 0 {
				t.Errorf("Errors = %v", l.Errors)
			}
		})
	}
}

// A condition over the name is decided per item; one over the claims once
// per list; one that cannot be evaluated hides what it governs, and says so.
func TestListerConditions(t *testing.T) {
	a, err := authz.Compile(authz.Policy{Rules: []authz.Rule{
		{Name: "safe", Tools: []string{"*"}, When: "request.name.startsWith('safe_') && 'dev' in claims.groups"},
		{Name: "whole-request", Tools: []string{"whole_*"}, When: "request.method == 'tools/call' && size(request) >= 2"},
		{Name: "broken", Tools: []string{"broken"}, When: "claims.missing == 'x'"},
		{Name: "args-or-claims", Tools: []string{"either"}, When: "claims.sub == 'root' || request.arguments.force == true"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dev := a.Lister(authz.MethodToolsCall, "u", map[string]any{"sub": "u", "groups": []any{"dev"}})
	ops := a.Lister(authz.MethodToolsCall, "u", map[string]any{"sub": "u", "groups": []any{"ops"}})
	for _, c := range []struct {
		l    *authz.Lister
		name string
		want bool
	}{
		{dev, "safe_read", true},
		{dev, "unsafe_write", false},
		{ops, "safe_read", false},
		{dev, "whole_thing", true},
		{dev, "either", true}, // some arguments let it through
		{dev, "broken", false},
	} {
		if got := c.l.Visible(c.name); got != c.want {
			t.Errorf("Visible(%q) = %v, want %v", c.name, got, c.want)
		}
	}
	if len(dev.Errors) != 1 || !strings.Contains(dev.Errors[0].Error(), "rule broken") {
		t.Errorf("Errors = %v, want the broken rule's", dev.Errors)
	}
}

// Names and patterns match as path.Match would, with / a character like
// another, whichever test a pattern compiles to.
func TestPatterns(t *testing.T) {
	for _, tt := range []struct {
		pattern, name string
		want          bool
	}{
		{"search", "search", true},
		{"search", "search_code", false},
		{"search_*", "search_code", true},
		{"search_*", "search_", true},
		{"search_*", "searc", false},
		{"*_admin", "repo_admin", true},
		{"*_admin", "repo_admin2", false},
		{"github/*", "github/list/prs", true},
		{"*", "anything/at/all", true},
		{"file:///docs/*.md", "file:///docs/a/b.md", true},
		{"file:///docs/*.md", "file:///docs/a/b.txt", false},
		{"get_?", "get_x", true},
		{"get_?", "get_xy", false},
		{"[ab]*", "alpha", true},
		{"[ab]*", "gamma", false},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
	} {
		a, err := authz.Compile(authz.Policy{Rules: []authz.Rule{{Name: "r", Tools: []string{tt.pattern}}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Decide(authz.Request{Method: authz.MethodToolsCall, Name: tt.name}).Allowed; got != tt.want {
			t.Errorf("%q matches %q: %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

// A caller's decisions are remembered when no condition read the
// arguments; an argument-based one is decided on every call; a new policy
// starts afresh.
func TestDecideCallRemembersWhatHoldsForEveryCall(t *testing.T) {
	policy := authz.Policy{Rules: []authz.Rule{
		{Name: "by-claims", Tools: []string{"search"}, When: "'eng' in claims.groups && request.name == 'search'"},
		{Name: "by-arguments", Tools: []string{"create"}, When: "request.arguments.repo.startsWith('a/')"},
	}}
	a, err := authz.Compile(policy)
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"groups": []any{"eng"}}
	memo := new(authz.Memo)
	call := func(a *authz.Authorizer, name, args string) bool {
		return a.DecideCall(memo, "u", claims, []byte(authz.MethodToolsCall), []byte(name), []byte(args)).Allowed
	}
	if !call(a, "search", "") {
		t.Fatal("search refused")
	}
	claims["groups"] = []any{} // a token's claims never change; this shows the memo answered
	if !call(a, "search", "") {
		t.Error("the remembered decision was not used")
	}
	if !call(a, "create", `{"repo":"a/x"}`) || call(a, "create", `{"repo":"b/x"}`) {
		t.Error("an argument-based decision was remembered")
	}
	b, err := authz.Compile(policy)
	if err != nil {
		t.Fatal(err)
	}
	if call(b, "search", "") {
		t.Error("another policy used the first one's decision")
	}
}

// BenchmarkDecideCallRemembered is a caller's call to a tool he called
// before, with 20 rules: the cost authorization adds to a tools/call.
func BenchmarkDecideCallRemembered(b *testing.B) {
	p := authz.Policy{}
	for i := range 19 {
		p.Rules = append(p.Rules, authz.Rule{Name: "team-" + string(rune('a'+i)), Tools: []string{"team_*", "report"}, When: "'x' in claims.groups"})
	}
	p.Rules = append(p.Rules, authz.Rule{Name: "engineers", Tools: []string{"expensive_*"}, When: "'engineering' in claims.groups"})
	a, err := authz.Compile(p)
	if err != nil {
		b.Fatal(err)
	}
	claims := map[string]any{"groups": []any{"engineering"}}
	memo := new(authz.Memo)
	method, name, args := []byte(authz.MethodToolsCall), []byte("expensive_tool"), []byte(`{"limit":10}`)
	if !a.DecideCall(memo, "alice", claims, method, name, args).Allowed {
		b.Fatal("refused")
	}
	b.ReportAllocs()
	for b.Loop() {
		if !a.DecideCall(memo, "alice", claims, method, name, args).Allowed {
			b.Fatal("refused")
		}
	}
}
