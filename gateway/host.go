package gateway

import (
	"net"
	"sort"
	"strings"
)

// requestHostname returns the host name of a Host header or SNI value: port
// removed, lower case, without a trailing dot. The spec says ports in the
// Host header are ignored for matching.
func requestHostname(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}

// hostnameMatches reports whether host (from requestHostname) matches a
// configured hostname: empty matches every host, "*.example.com" matches
// one or more labels in front of ".example.com", anything else is exact.
func hostnameMatches(pattern, host string) bool {
	switch {
	case pattern == "":
		return true
	case strings.HasPrefix(pattern, "*."):
		suffix := pattern[1:] // ".example.com"
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	default:
		return pattern == host
	}
}

// hostIndex finds, for a request host, the values registered under matching
// hostnames in precedence order: the exact name, then wildcards from the
// longest to the shortest, then the catch-all (empty hostname).
type hostIndex[T any] struct {
	exact     map[string]T
	wildcards []wildcardEntry[T] // longest suffix first
	any       T
	hasAny    bool
}

type wildcardEntry[T any] struct {
	pattern string
	value   T
}

func newHostIndex[T any](entries map[string]T) hostIndex[T] {
	idx := hostIndex[T]{exact: map[string]T{}}
	for name, v := range entries {
		switch {
		case name == "":
			idx.any, idx.hasAny = v, true
		case strings.HasPrefix(name, "*."):
			idx.wildcards = append(idx.wildcards, wildcardEntry[T]{name, v})
		default:
			idx.exact[name] = v
		}
	}
	sort.Slice(idx.wildcards, func(i, j int) bool {
		a, b := idx.wildcards[i].pattern, idx.wildcards[j].pattern
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	return idx
}

// first returns the best match for host.
func (idx *hostIndex[T]) first(host string) (T, bool) {
	var found T
	ok := false
	idx.each(host, func(v T) bool { found, ok = v, true; return false })
	return found, ok
}

// each calls f with every match for host in precedence order until f
// returns false.
func (idx *hostIndex[T]) each(host string, f func(T) bool) {
	if v, ok := idx.exact[host]; ok && !f(v) {
		return
	}
	for _, w := range idx.wildcards {
		if hostnameMatches(w.pattern, host) && !f(w.value) {
			return
		}
	}
	if idx.hasAny {
		f(idx.any)
	}
}
