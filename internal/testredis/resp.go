package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// command sends one command to the server on addr over a new connection and
// returns its reply: a string (simple or bulk), an int64, nil, or a []any of
// those. A Redis error reply is returned as an error.
func command(addr string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, req.String()); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", args[0], addr, err)
	}
	reply, err := readReply(bufio.NewReader(c))
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", args[0], addr, err)
	}
	return reply, nil
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	kind, rest := line[0], line[1:]
	switch kind {
	case '+':
		return rest, nil
	case '-':
		return nil, errors.New(rest)
	case ':':
		return strconv.ParseInt(rest, 10, 64)
	case '$', '*':
		n, err := strconv.Atoi(rest)
		if err != nil {
			return nil, fmt.Errorf("reply %q: %w", line, err)
		}
		if n < 0 {
			return nil, nil
		}
		if kind == '$' {
			b := make([]byte, n+2)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, err
			}
			return string(b[:n]), nil
		}
		items := make([]any, n)
		for i := range items {
			if items[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return items, nil
	default:
		return nil, fmt.Errorf("unexpected reply %q", line)
	}
}

// fields reads a reply that is a flat list of names and values, like
// SENTINEL MASTER's.
func fields(reply any) (map[string]string, error) {
	items, ok := reply.([]any)
	if !ok || len(items)%2 != 0 {
		return nil, fmt.Errorf("reply %v is not a list of names and values", reply)
	}
	m := make(map[string]string, len(items)/2)
	for i := 0; i < len(items); i += 2 {
		name, ok1 := items[i].(string)
		value, ok2 := items[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("reply %v is not a list of names and values", reply)
		}
		m[name] = value
	}
	return m, nil
}
