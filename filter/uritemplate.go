package filter

import (
	"errors"
	"regexp"
	"strings"
)

// compileURITemplate compiles a resources[] entry of a policy: a URI, or a
// URI template (RFC 6570) whose expressions stand for any text. A simple
// expression ({name}) percent-encodes '/' when expanded, so it matches no
// '/'; every other ({+path}, {#frag}, {/seg*}, {?q} ...) matches anything.
// A URI without expressions matches itself only.
func compileURITemplate(t string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	rest := t
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			b.WriteString(regexp.QuoteMeta(rest))
			break
		}
		if rest[open] == '}' {
			return nil, errors.New("a '}' closes no expression")
		}
		b.WriteString(regexp.QuoteMeta(rest[:open]))
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] == '{' {
			return nil, errors.New("an expression '{' is not closed")
		}
		expr := rest[open+1 : open+1+end]
		switch {
		case expr == "":
			return nil, errors.New("an expression '{}' is empty")
		case strings.ContainsAny(expr[:1], "+#./;?&"):
			b.WriteString(".*")
		default:
			b.WriteString("[^/]*")
		}
		rest = rest[open+1+end+1:]
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
