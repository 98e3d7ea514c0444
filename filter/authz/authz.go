// Package authz decides which tools, prompts and resources a caller may
// use: ordered rules that name them (exact names, URIs or glob patterns),
// with an optional CEL condition over the caller's verified claims and the
// MCP request, and the OAuth scopes the caller's token must hold. It knows nothing of HTTP or
// Kubernetes; the filter applies it, the translator builds it from an
// MCPServer.
package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
)

// Limits of a Policy, which the CRD states too.
const (
	MaxRules         = 64
	MaxNamesPerRule  = 64 // tools, prompts and resources each
	MaxScopesPerRule = 16
	MaxWhenLength    = 2048
	// CostLimit bounds the evaluation of one condition, in CEL's cost
	// units (about one per operation and per element visited): past it
	// the condition counts as false.
	CostLimit = 100_000
)

// Policy is the authorization of one MCP server: plain data, in the JSON
// form the MCPServer API spells.
type Policy struct {
	// Rules are tried in order. A governed request (Governs) is allowed
	// when a rule names what it uses, its condition holds and the token
	// holds its scopes; what no rule allows is refused.
	Rules []Rule `json:"rules"`
}

// Clone returns a deep copy of p, sharing nothing with it.
func (p Policy) Clone() Policy {
	c := Policy{Rules: make([]Rule, len(p.Rules))}
	for i, r := range p.Rules {
		c.Rules[i] = Rule{
			Name: r.Name, When: r.When, Scopes: slices.Clone(r.Scopes),
			Tools: slices.Clone(r.Tools), Prompts: slices.Clone(r.Prompts), Resources: slices.Clone(r.Resources),
		}
	}
	return c
}

// Rule allows the use of some tools, prompts and resources.
type Rule struct {
	// Name names the rule in logs and status; unique in a Policy.
	Name string `json:"name"`
	// Tools are tool names, or glob patterns (* any run of characters,
	// ? one character, [...] a class; path.Match syntax, where / is a
	// character like another here), for tools/call.
	Tools []string `json:"tools,omitempty"`
	// Prompts are prompt names or patterns, for prompts/get.
	Prompts []string `json:"prompts,omitempty"`
	// Resources are resource URIs or patterns (file:///docs/*), for
	// resources/read and resources/subscribe.
	Resources []string `json:"resources,omitempty"`
	// When is a CEL expression that must be true: see Variables.
	When string `json:"when,omitempty"`
	// Scopes are OAuth scopes the caller's token must hold, all of them.
	Scopes []string `json:"scopes,omitempty"`
}

// The variables a condition may read.
const (
	// VarClaims is the verified token's claims (map(string, dyn)).
	VarClaims = "claims"
	// VarUser is the caller, the configured user claim (string).
	VarUser = "user"
	// VarRequest is the MCP request: request.method, request.name and,
	// for tools/call, request.arguments (map(string, dyn)).
	VarRequest = "request"
)

var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable(VarClaims, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(VarUser, cel.StringType),
		cel.Variable(VarRequest, cel.MapType(cel.StringType, cel.DynType)),
		ext.Strings(),
	)
	if err != nil {
		panic(fmt.Sprintf("authz: CEL environment: %v", err))
	}
	return e
}()

// Authorizer is a compiled Policy. It is immutable and safe for concurrent
// use.
type Authorizer struct {
	rules []compiledRule
}

type compiledRule struct {
	Rule
	// when is nil when the rule has no condition. It is built for partial
	// evaluation: lists evaluate it with parts of the request unknown.
	when cel.Program
	// readsArguments says the condition may read request.arguments: a
	// decision that evaluates it depends on the call, not only on the
	// caller and the name.
	readsArguments bool
	// tools, prompts and resources are the rule's names, compiled.
	tools, prompts, resources patterns
}

// Compile checks p and compiles its conditions. The error names each rule
// and field at fault and what to change.
func Compile(p Policy) (*Authorizer, error) {
	var errs []error
	if len(p.Rules) == 0 {
		errs = append(errs, errors.New("authorization.rules is empty: every call would be refused; add a rule, or remove authorization"))
	}
	if len(p.Rules) > MaxRules {
		errs = append(errs, fmt.Errorf("authorization.rules holds %d rules, at most %d", len(p.Rules), MaxRules))
	}
	a := &Authorizer{}
	seen := map[string]bool{}
	for i, r := range p.Rules {
		at := fmt.Sprintf("authorization.rules[%d]", i)
		if r.Name != "" {
			at = fmt.Sprintf("authorization.rules[%s]", r.Name)
		}
		switch {
		case r.Name == "":
			errs = append(errs, fmt.Errorf("%s: name is required", at))
		case seen[r.Name]:
			errs = append(errs, fmt.Errorf("%s: another rule has this name", at))
		}
		seen[r.Name] = true
		if len(r.Tools)+len(r.Prompts)+len(r.Resources) == 0 {
			errs = append(errs, fmt.Errorf("%s: name tools, prompts or resources: the rule allows nothing", at))
		}
		for _, f := range []struct {
			field string
			names []string
		}{{"tools", r.Tools}, {"prompts", r.Prompts}, {"resources", r.Resources}} {
			field, names := f.field, f.names
			if len(names) > MaxNamesPerRule {
				errs = append(errs, fmt.Errorf("%s.%s: at most %d names or patterns", at, field, MaxNamesPerRule))
			}
			for _, t := range names {
				if _, err := path.Match(t, ""); t == "" || err != nil {
					errs = append(errs, fmt.Errorf("%s.%s: %q is not a name or a valid glob pattern", at, field, t))
				}
			}
		}
		if len(r.Scopes) > MaxScopesPerRule || slices.Contains(r.Scopes, "") || strings.ContainsAny(strings.Join(r.Scopes, ""), " \"\\") {
			errs = append(errs, fmt.Errorf("%s.scopes: at most %d scopes, each non-empty, without spaces, quotes or backslashes", at, MaxScopesPerRule))
		}
		cr := compiledRule{Rule: r, tools: compilePatterns(r.Tools), prompts: compilePatterns(r.Prompts), resources: compilePatterns(r.Resources)}
		if r.When != "" {
			prg, readsArguments, err := compileWhen(r.When)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.when: %w", at, err))
			}
			cr.when, cr.readsArguments = prg, readsArguments
		}
		a.rules = append(a.rules, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// compileWhen parses and type-checks a condition, which must be a bool. It
// returns its program and whether the condition may read the arguments.
func compileWhen(expr string) (cel.Program, bool, error) {
	if len(expr) > MaxWhenLength {
		return nil, false, fmt.Errorf("the expression is %d characters long, at most %d", len(expr), MaxWhenLength)
	}
	checked, issues := env.Compile(expr)
	if issues != nil && issues.Err() != nil {
		return nil, false, fmt.Errorf("%s (variables: claims, user, request.method, request.name, request.arguments)", strings.ReplaceAll(issues.Err().Error(), "\n", " "))
	}
	if !checked.OutputType().IsExactType(cel.BoolType) {
		return nil, false, fmt.Errorf("the expression gives %s, not bool", checked.OutputType())
	}
	// One program serves calls and lists: with every variable known, a
	// program built for partial evaluation gives what a plain one gives,
	// and a policy holds one program per rule, not two.
	prg, err := env.Program(checked, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptPartialEval))
	if err != nil {
		return nil, false, err
	}
	return prg, readsArguments(checked), nil
}

// readsArguments reports whether an expression may read
// request.arguments: it does unless every use of request selects its
// method or name.
func readsArguments(checked *cel.Ast) bool {
	root := celast.NavigateAST(checked.NativeRep())
	for _, ident := range celast.MatchDescendants(root, celast.KindMatcher(celast.IdentKind)) {
		if ident.AsIdent() != VarRequest {
			continue
		}
		parent, ok := ident.Parent()
		if !ok || parent.Kind() != celast.SelectKind {
			return true
		}
		if field := parent.AsSelect().FieldName(); field != "method" && field != "name" {
			return true
		}
	}
	return false
}

// patterns are compiled names and glob patterns.
type patterns []pattern

// pattern is one name or glob pattern, compiled to the cheapest test that
// decides it.
type pattern struct {
	kind patternKind
	text string // the name; the prefix or suffix; the glob with / escaped
}

type patternKind uint8

const (
	patternExact  patternKind = iota
	patternPrefix             // text then anything: "search_*"
	patternSuffix             // anything then text: "*_admin"
	patternGlob               // anything else, by path.Match
)

// slashEscape stands for / in globs: path.Match would not let * match it.
const slashEscape = "\x00"

func compilePatterns(names []string) patterns {
	ps := make(patterns, 0, len(names))
	for _, n := range names {
		meta := strings.IndexAny(n, "*?[\\")
		switch {
		case meta < 0:
			ps = append(ps, pattern{patternExact, n})
		case meta == len(n)-1 && n[meta] == '*':
			ps = append(ps, pattern{patternPrefix, n[:meta]})
		case meta == 0 && n[0] == '*' && !strings.ContainsAny(n[1:], "*?[\\"):
			ps = append(ps, pattern{patternSuffix, n[1:]})
		default:
			ps = append(ps, pattern{patternGlob, strings.ReplaceAll(n, "/", slashEscape)})
		}
	}
	return ps
}

// match reports whether name is one of the names, or matches one of the
// patterns. A '/' in a name is a character like another: * matches it too.
func (ps patterns) match(name string) bool {
	escaped := ""
	for _, p := range ps {
		switch p.kind {
		case patternExact:
			if name == p.text {
				return true
			}
		case patternPrefix:
			if strings.HasPrefix(name, p.text) {
				return true
			}
		case patternSuffix:
			if strings.HasSuffix(name, p.text) {
				return true
			}
		default:
			if escaped == "" {
				escaped = strings.ReplaceAll(name, "/", slashEscape)
			}
			if ok, _ := path.Match(p.text, escaped); ok {
				return true
			}
		}
	}
	return false
}

// The methods rules govern, and what names what they use.
const (
	MethodToolsCall          = "tools/call"          // params.name, a tool
	MethodPromptsGet         = "prompts/get"         // params.name, a prompt
	MethodResourcesRead      = "resources/read"      // params.uri, a resource
	MethodResourcesSubscribe = "resources/subscribe" // params.uri, a resource
)

// Governs reports whether rules decide requests of method.
func Governs(method string) bool {
	switch method {
	case MethodToolsCall, MethodPromptsGet, MethodResourcesRead, MethodResourcesSubscribe:
		return true
	}
	return false
}

// Request is what a decision reads.
type Request struct {
	User   string
	Claims map[string]any
	Method string
	// Name is the tool or prompt name, or the resource URI.
	Name string
	// Arguments are a tools/call's or prompts/get's arguments; nil when
	// none. When nil, RawArguments (their JSON) is decoded for the first
	// condition that reads them; arguments that are not an object leave
	// the variable empty.
	Arguments    map[string]any
	RawArguments []byte
	// Scopes are the scopes the caller's token holds; nil reads them from
	// Claims (Scopes) when a rule needs scopes.
	Scopes []string
}

// Decision is the outcome for one request.
type Decision struct {
	// Allowed is true when a rule allows the request; Rule names it.
	Allowed bool
	Rule    string
	// MissingScopes, when not allowed, are the scopes that would let a rule
	// allow it (the first such rule's): the caller may step up to them.
	// Empty means no rule would: the request is refused as if the tool
	// did not exist.
	MissingScopes []string
	// Errors are conditions that could not be evaluated (they count as
	// false), for the log.
	Errors []error
}

// Decide applies the rules to one request of a governed method; any other
// is refused.
func (a *Authorizer) Decide(r Request) Decision {
	d, _ := a.decide(&r)
	return d
}

// decide is Decide; it also says whether the decision holds for every call
// of the caller to the same name: no condition it evaluated read the
// arguments, and none failed.
func (a *Authorizer) decide(r *Request) (Decision, bool) {
	var d Decision
	var activation map[string]any
	memoizable := true
	scopesRead := r.Scopes != nil
	for i := range a.rules {
		rule := &a.rules[i]
		if !rule.names(r.Method).match(r.Name) {
			continue
		}
		if rule.when != nil {
			if rule.readsArguments {
				memoizable = false
				if r.Arguments == nil && len(r.RawArguments) > 0 {
					_ = json.Unmarshal(r.RawArguments, &r.Arguments)
				}
			}
			if activation == nil {
				activation = map[string]any{
					VarClaims:  nonNil(r.Claims),
					VarUser:    r.User,
					VarRequest: map[string]any{"method": r.Method, "name": r.Name, "arguments": nonNil(r.Arguments)},
				}
			} else if rule.readsArguments {
				activation[VarRequest].(map[string]any)["arguments"] = nonNil(r.Arguments)
			}
			out, _, err := rule.when.Eval(activation)
			if err != nil {
				d.Errors = append(d.Errors, fmt.Errorf("rule %s: %w", rule.Name, err))
				memoizable = false
				continue
			}
			if ok, isBool := out.Value().(bool); !isBool || !ok {
				continue
			}
		}
		if len(rule.Scopes) > 0 && !scopesRead {
			r.Scopes, scopesRead = Scopes(r.Claims), true
		}
		if missing := missingScopes(rule.Scopes, r.Scopes); len(missing) > 0 {
			if d.MissingScopes == nil {
				d.MissingScopes = missing
			}
			continue
		}
		d.Allowed, d.Rule, d.MissingScopes = true, rule.Name, nil
		return d, memoizable
	}
	return d, memoizable
}

// Memo remembers one caller's decisions (a verified token's: its claims
// and scopes do not change) that do not depend on a call's arguments, so
// that a caller calling the same tool again costs a map lookup. It holds
// the decisions of one Authorizer at a time, and at most MemoSize. It is
// safe for concurrent use; the zero value is ready.
type Memo struct {
	mu        sync.Mutex
	authority *Authorizer
	size      int
	decisions [numGoverned]map[string]Decision // by method, then name
}

// MemoSize bounds the decisions one Memo holds; past it, it starts afresh.
const MemoSize = 256

// The governed methods, as indexes.
const (
	governedToolsCall = iota
	governedPromptsGet
	governedResourcesRead
	governedResourcesSubscribe
	numGoverned
)

// governedIndex returns a governed method's index, -1 for another method.
func governedIndex(method []byte) int {
	switch string(method) {
	case MethodToolsCall:
		return governedToolsCall
	case MethodPromptsGet:
		return governedPromptsGet
	case MethodResourcesRead:
		return governedResourcesRead
	case MethodResourcesSubscribe:
		return governedResourcesSubscribe
	}
	return -1
}

// DecideCall is Decide for a request read from the wire, remembering in m
// (nil: no memory) what holds for every call of the caller to the same
// name: a call already decided for the caller costs no allocation.
func (a *Authorizer) DecideCall(m *Memo, user string, claims map[string]any, method, name, arguments []byte) Decision {
	k := governedIndex(method)
	if m != nil && k >= 0 {
		m.mu.Lock()
		if m.authority == a {
			if d, ok := m.decisions[k][string(name)]; ok {
				m.mu.Unlock()
				return d
			}
		}
		m.mu.Unlock()
	}
	r := Request{User: user, Claims: claims, Method: string(method), Name: string(name), RawArguments: arguments}
	d, memoizable := a.decide(&r)
	if m == nil || k < 0 || !memoizable {
		return d
	}
	m.mu.Lock()
	if m.authority != a || m.size >= MemoSize {
		m.authority, m.size, m.decisions = a, 0, [numGoverned]map[string]Decision{}
	}
	if m.decisions[k] == nil {
		m.decisions[k] = make(map[string]Decision)
	}
	m.decisions[k][r.Name] = d
	m.size++
	m.mu.Unlock()
	return d
}

func nonNil(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// missingScopes returns the scopes of want that have lacks.
func missingScopes(want, have []string) []string {
	var missing []string
	for _, s := range want {
		if !slices.Contains(have, s) {
			missing = append(missing, s)
		}
	}
	return missing
}

// Scopes returns the scopes a token's claims grant: the space-separated
// "scope" claim (RFC 9068, RFC 8693), or the "scp" claim as a list or a
// string, as some issuers send it.
func Scopes(claims map[string]any) []string {
	var scopes []string
	add := func(v any) {
		switch v := v.(type) {
		case string:
			scopes = append(scopes, strings.Fields(v)...)
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok && s != "" {
					scopes = append(scopes, s)
				}
			}
		}
	}
	add(claims["scope"])
	add(claims["scp"])
	return scopes
}

// MissingScopes returns the scopes of want that the claims do not grant.
func MissingScopes(want []string, claims map[string]any) []string {
	if len(want) == 0 {
		return nil
	}
	return missingScopes(want, Scopes(claims))
}

// Lists: which items of a tools/list, prompts/list, resources/list or
// resources/templates/list result a caller sees. An item is listed when a
// call to it would not be answered as unknown: a rule names it and its
// condition can hold for some call, whatever the call's arguments. The
// scopes a rule needs do not hide an item: a call without them is answered
// 403 insufficient_scope, for the client to step up, which tells the tool
// exists.

// The list methods, and the method a listed item is used by.
const (
	MethodToolsList             = "tools/list"
	MethodPromptsList           = "prompts/list"
	MethodResourcesList         = "resources/list"
	MethodResourceTemplatesList = "resources/templates/list"
)

// Lister decides, for one caller and one kind of item, which items of a
// list he sees. It is made per list response and is not safe for
// concurrent use.
type Lister struct {
	a      *Authorizer
	method string // the governed method that uses the items
	vars   map[string]any
	// holds is each rule's condition when it does not depend on the
	// item's name: 1 true, -1 false, 0 when it must be evaluated per item.
	holds []int8
	// Errors are conditions that could not be evaluated (they count as
	// false), for the log.
	Errors []error
}

// Lister returns the Lister of the items used by method (MethodToolsCall
// for tools, MethodPromptsGet for prompts, MethodResourcesRead for
// resources and resource templates) for one caller.
func (a *Authorizer) Lister(method, user string, claims map[string]any) *Lister {
	l := &Lister{a: a, method: method, holds: make([]int8, len(a.rules))}
	request := map[string]any{"method": method}
	l.vars = map[string]any{VarClaims: nonNil(claims), VarUser: user, VarRequest: request}
	for i := range a.rules {
		rule := &a.rules[i]
		switch {
		case len(rule.names(method)) == 0:
			l.holds[i] = -1
		case rule.when == nil:
			l.holds[i] = 1
		default:
			// The name and the arguments unknown: most conditions read
			// neither, and are decided once for the whole list.
			l.holds[i] = l.eval(rule, cel.AttributePattern(VarRequest).QualString("name"), cel.AttributePattern(VarRequest).QualString("arguments"))
		}
	}
	return l
}

// Visible reports whether the caller sees the item of the given name (a
// tool or prompt name, a resource URI or URI template).
func (l *Lister) Visible(name string) bool {
	for i := range l.a.rules {
		rule := &l.a.rules[i]
		holds := l.holds[i]
		if holds < 0 || !rule.names(l.method).match(name) {
			continue
		}
		if holds == 0 {
			request := l.vars[VarRequest].(map[string]any)
			request["name"] = name
			holds = l.eval(rule, cel.AttributePattern(VarRequest).QualString("arguments"))
			delete(request, "name")
		}
		if holds > 0 {
			return true
		}
	}
	return false
}

// eval evaluates a rule's condition with the given parts of the request
// unknown: 1 when it holds or may hold, -1 when it cannot, 0 when it
// depends on a part of the name that is unknown.
func (l *Lister) eval(rule *compiledRule, unknown ...*cel.AttributePatternType) int8 {
	vars, err := cel.PartialVars(l.vars, unknown...)
	if err != nil {
		l.Errors = append(l.Errors, fmt.Errorf("rule %s: %w", rule.Name, err))
		return -1
	}
	out, _, err := rule.when.Eval(vars)
	if err != nil {
		l.Errors = append(l.Errors, fmt.Errorf("rule %s: %w", rule.Name, err))
		return -1
	}
	if unk, ok := out.(*types.Unknown); ok {
		if len(unknown) == 2 && dependsOnName(unk) {
			return 0
		}
		return 1 // some arguments may make it hold
	}
	if ok, isBool := out.Value().(bool); isBool && ok {
		return 1
	}
	return -1
}

// dependsOnName reports whether an unknown result waits on request.name.
func dependsOnName(u *types.Unknown) bool {
	for _, id := range u.IDs() {
		trails, _ := u.GetAttributeTrails(id)
		for _, trail := range trails {
			// request itself, or request.name
			if q := trail.QualifierPath(); len(q) == 0 || q[0] == "name" {
				return true
			}
		}
	}
	return false
}

// names returns what the rule names for method, compiled.
func (r *compiledRule) names(method string) patterns {
	switch method {
	case MethodToolsCall:
		return r.tools
	case MethodPromptsGet:
		return r.prompts
	case MethodResourcesRead, MethodResourcesSubscribe:
		return r.resources
	}
	return nil
}
