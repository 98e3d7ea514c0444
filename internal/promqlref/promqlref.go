// Package promqlref finds the metric names and label names a PromQL
// expression refers to, so that tests can check dashboards and alerts
// against the metrics a binary exports. It reads selectors
// (name{label="value"}) and label lists (by, without, on, ignoring,
// group_left, group_right) and nothing else of the language: it does not
// evaluate, and it does not reject every invalid expression.
package promqlref

import (
	"fmt"
	"slices"
	"strings"
)

// Refs are what an expression refers to.
type Refs struct {
	// Selectors are the metric names selected, each with the label names
	// its matchers use (empty for a bare name), in order of appearance; a
	// name selected twice appears twice.
	Selectors []Selector
	// Grouping are the label names of by, without, on, ignoring,
	// group_left and group_right clauses, sorted, without duplicates.
	Grouping []string
}

// Selector is one vector selector.
type Selector struct {
	Metric string
	Labels []string
}

// groupingKeywords take a list of label names in parentheses.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// aggregations may be followed by a by or without clause before their
// arguments.
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// keywords are identifiers that are neither metric names nor functions.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"atan2": true, "inf": true, "nan": true, "start": true, "end": true,
}

// Parse returns the references of expr. Grafana's variables may appear in
// strings and ranges ("$namespace", [$__rate_interval]). A selector without
// a metric name ({__name__="x"}) is an error: its metric cannot be checked.
func Parse(expr string) (Refs, error) {
	toks, err := tokenize(expr)
	if err != nil {
		return Refs{}, err
	}
	var refs Refs
	grouping := map[string]bool{}
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch {
		case tok.kind == tokIdent && groupingKeywords[tok.text] && next(toks, i).text == "(":
			labels, end, err := labelList(toks, i+1)
			if err != nil {
				return Refs{}, fmt.Errorf("%s: %w", tok.text, err)
			}
			for _, l := range labels {
				grouping[l] = true
			}
			i = end
		case tok.kind == tokIdent && (next(toks, i).text == "(" || aggregations[tok.text]):
			// A function or an aggregation: its arguments follow.
		case tok.kind == tokIdent && keywords[strings.ToLower(tok.text)]:
		case tok.kind == tokIdent:
			sel := Selector{Metric: tok.text}
			if next(toks, i).text == "{" {
				labels, end, err := matchers(toks, i+1)
				if err != nil {
					return Refs{}, fmt.Errorf("%s: %w", tok.text, err)
				}
				sel.Labels, i = labels, end
			}
			refs.Selectors = append(refs.Selectors, sel)
		case tok.text == "{":
			return Refs{}, fmt.Errorf("a selector without a metric name at offset %d: name the metric", tok.pos)
		}
	}
	for l := range grouping {
		refs.Grouping = append(refs.Grouping, l)
	}
	slices.Sort(refs.Grouping)
	return refs, nil
}

// labelList reads "( name, ... )" starting at toks[open] and returns the
// names and the index of ")".
func labelList(toks []token, open int) ([]string, int, error) {
	var labels []string
	for i := open + 1; i < len(toks); i++ {
		switch t := toks[i]; {
		case t.text == ")":
			return labels, i, nil
		case t.text == ",":
		case t.kind == tokIdent:
			labels = append(labels, t.text)
		default:
			return nil, 0, fmt.Errorf("unexpected %q in a label list", t.text)
		}
	}
	return nil, 0, fmt.Errorf("a label list is not closed")
}

// matchers reads "{ name op "value", ... }" starting at toks[open] and
// returns the label names and the index of "}".
func matchers(toks []token, open int) ([]string, int, error) {
	var labels []string
	for i := open + 1; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.text == "}":
			return labels, i, nil
		case t.text == ",":
		case t.kind == tokIdent:
			if i+2 >= len(toks) || toks[i+1].kind != tokOp || toks[i+2].kind != tokString {
				return nil, 0, fmt.Errorf("matcher of %s: want label, operator, quoted value", t.text)
			}
			switch toks[i+1].text {
			case "=", "!=", "=~", "!~":
			default:
				return nil, 0, fmt.Errorf("matcher of %s: unknown operator %q", t.text, toks[i+1].text)
			}
			labels = append(labels, t.text)
			i += 2
		default:
			return nil, 0, fmt.Errorf("unexpected %q in label matchers", t.text)
		}
	}
	return nil, 0, fmt.Errorf("label matchers are not closed")
}

func next(toks []token, i int) token {
	if i+1 < len(toks) {
		return toks[i+1]
	}
	return token{}
}

type tokenKind int

const (
	tokIdent  tokenKind = iota + 1 // a name: metric, label, function, keyword
	tokNumber                      // a number or a duration
	tokString                      // a quoted string, contents dropped
	tokOp                          // operators and punctuation
)

type token struct {
	kind tokenKind
	text string
	pos  int
}

// tokenize splits expr into tokens, leaving out ranges and subqueries
// ([5m], [1h:1m], [$__rate_interval]) and the contents of strings.
func tokenize(expr string) ([]token, error) {
	var toks []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			end := i + 1
			for ; end < len(expr) && expr[end] != c; end++ {
				if expr[end] == '\\' && c != '`' {
					end++
				}
			}
			if end >= len(expr) {
				return nil, fmt.Errorf("a string at offset %d is not closed", i)
			}
			toks = append(toks, token{tokString, "", i})
			i = end + 1
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("a range at offset %d is not closed", i)
			}
			i += end + 1
		case isIdentStart(c):
			end := i
			for end < len(expr) && isIdentChar(expr[end]) {
				end++
			}
			toks = append(toks, token{tokIdent, expr[i:end], i})
			i = end
		case c >= '0' && c <= '9' || c == '.':
			end := i
			for end < len(expr) && (isIdentChar(expr[end]) || expr[end] == '.' ||
				(expr[end] == '+' || expr[end] == '-') && (expr[end-1] == 'e' || expr[end-1] == 'E')) {
				end++
			}
			toks = append(toks, token{tokNumber, expr[i:end], i})
			i = end
		case c == '$':
			return nil, fmt.Errorf("a variable at offset %d outside a string or a range", i)
		default:
			end := i + 1
			if end < len(expr) && strings.ContainsRune("=~", rune(expr[end])) && strings.ContainsRune("=!<>", rune(c)) {
				end++
			}
			toks = append(toks, token{tokOp, expr[i:end], i})
			i = end
		}
	}
	return toks, nil
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
