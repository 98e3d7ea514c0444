// Package authz decides which tools, prompts and resources a caller may
// use: ordered rules that name them (exact names, URIs or glob patterns),
// with an optional CEL condition over the caller's verified claims and the
// MCP request, and the OAuth scopes the caller's token must hold. It knows nothing of HTTP or
// Kubernetes; the filter applies it, the translator builds it from an
// MCPServer.
package authz

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/google/cel-go/cel"
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
	when cel.Program // nil when the rule has no condition
	// whenPartial is when, built to evaluate with parts of the request
	// unknown (for lists).
	whenPartial cel.Program
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
		cr := compiledRule{Rule: r}
		if r.When != "" {
			prg, partial, err := compileWhen(r.When)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.when: %w", at, err))
			}
			cr.when, cr.whenPartial = prg, partial
		}
		a.rules = append(a.rules, cr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// compileWhen parses and type-checks a condition, which must be a bool. It
// returns the program for calls, and one for lists, which may leave parts
// of the request unknown.
func compileWhen(expr string) (cel.Program, cel.Program, error) {
	if len(expr) > MaxWhenLength {
		return nil, nil, fmt.Errorf("the expression is %d characters long, at most %d", len(expr), MaxWhenLength)
	}
	ast, issues := env.Compile(expr)
	if issues != nil && issues.Err() != nil {
		return nil, nil, fmt.Errorf("%s (variables: claims, user, request.method, request.name, request.arguments)", strings.ReplaceAll(issues.Err().Error(), "\n", " "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, nil, fmt.Errorf("the expression gives %s, not bool", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(CostLimit))
	if err != nil {
		return nil, nil, err
	}
	partial, err := env.Program(ast, cel.CostLimit(CostLimit), cel.EvalOptions(cel.OptPartialEval))
	if err != nil {
		return nil, nil, err
	}
	return prg, partial, nil
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
	Name      string
	Arguments map[string]any // a tools/call's or prompts/get's arguments; nil when none
	// Scopes are the scopes the caller's token holds.
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
	var d Decision
	var activation map[string]any
	for _, rule := range a.rules {
		if !matchesAny(rule.names(r.Method), r.Name) {
			continue
		}
		if rule.when != nil {
			if activation == nil {
				activation = map[string]any{
					VarClaims:  nonNil(r.Claims),
					VarUser:    r.User,
					VarRequest: map[string]any{"method": r.Method, "name": r.Name, "arguments": nonNil(r.Arguments)},
				}
			}
			out, _, err := rule.when.Eval(activation)
			if err != nil {
				d.Errors = append(d.Errors, fmt.Errorf("rule %s: %w", rule.Name, err))
				continue
			}
			if ok, isBool := out.Value().(bool); !isBool || !ok {
				continue
			}
		}
		if missing := missingScopes(rule.Scopes, r.Scopes); len(missing) > 0 {
			if d.MissingScopes == nil {
				d.MissingScopes = missing
			}
			continue
		}
		d.Allowed, d.Rule, d.MissingScopes = true, rule.Name, nil
		return d
	}
	return d
}

func nonNil(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// matchesAny reports whether name is one of patterns, or matches one. A
// '/' in a tool name is a character like another: * matches it too.
func matchesAny(patterns []string, name string) bool {
	const slash = "\x00"
	escaped := ""
	for _, p := range patterns {
		if p == name {
			return true
		}
		if escaped == "" {
			escaped = strings.ReplaceAll(name, "/", slash)
		}
		if ok, _ := path.Match(strings.ReplaceAll(p, "/", slash), escaped); ok {
			return true
		}
	}
	return false
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
	for i, rule := range a.rules {
		switch {
		case len(rule.names(method)) == 0:
			l.holds[i] = -1
		case rule.whenPartial == nil:
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
	for i, rule := range l.a.rules {
		holds := l.holds[i]
		if holds < 0 || !matchesAny(rule.names(l.method), name) {
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
func (l *Lister) eval(rule compiledRule, unknown ...*cel.AttributePatternType) int8 {
	vars, err := cel.PartialVars(l.vars, unknown...)
	if err != nil {
		l.Errors = append(l.Errors, fmt.Errorf("rule %s: %w", rule.Name, err))
		return -1
	}
	out, _, err := rule.whenPartial.Eval(vars)
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

// names returns what the rule names for method.
func (r compiledRule) names(method string) []string {
	switch method {
	case MethodToolsCall:
		return r.Tools
	case MethodPromptsGet:
		return r.Prompts
	case MethodResourcesRead, MethodResourcesSubscribe:
		return r.Resources
	}
	return nil
}
