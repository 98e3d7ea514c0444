// Command streamer is the load of hack/streams: an MCP backend that holds
// event streams open, clients that open many authenticated streams, and a
// bare httputil.ReverseProxy to compare the gateway with. Each role runs in
// a process of its own, so that no process holds more open files than the
// machine allows.
//
//	streamer backend   -listen 127.0.0.1:PORT [-keepalive 0]
//	streamer clients   -url URL -n 2000 [-token T] [-sessions] [-concurrency 64]
//	streamer bareproxy -listen ADDR -admin ADDR -backend http://HOST:PORT [-max-idle-per-host 0]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: streamer backend|clients|bareproxy [flags]")
		os.Exit(2)
	}
	raiseOpenFiles()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "backend":
		err = runBackend(ctx, os.Args[2:])
	case "clients":
		err = runClients(ctx, os.Args[2:])
	case "bareproxy":
		err = runBareProxy(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown role %q: give backend, clients or bareproxy", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "streamer:", err)
		os.Exit(1)
	}
}

// raiseOpenFiles sets the soft limit of open files to the hard one (Go
// does it too since 1.19; this says so in the output when it cannot).
func raiseOpenFiles() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			fmt.Fprintln(os.Stderr, "streamer: raise the open files limit:", err)
		}
	}
}

// runBackend serves an MCP endpoint on every path: a POST answers with a
// JSON-RPC result and, for initialize, a new Mcp-Session-Id; a GET that
// accepts text/event-stream gets an event stream that stays open and sends
// nothing but a comment every -keepalive (never when 0).
func runBackend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	keepalive := fs.Duration("keepalive", 0, "how often an open stream sends a comment; 0 never")
	_ = fs.Parse(args)
	var sessions, open atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), `"initialize"`) {
				w.Header().Set("Mcp-Session-Id", fmt.Sprintf("session-%d", sessions.Add(1)))
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"streamer","version":"1"}}}`)
		case http.MethodGet:
			if !strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
				http.Error(w, "GET takes Accept: text/event-stream", http.StatusMethodNotAllowed)
				return
			}
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			if rc.Flush() != nil {
				return
			}
			open.Add(1)
			defer open.Add(-1)
			var tick <-chan time.Time
			if *keepalive > 0 {
				t := time.NewTicker(*keepalive)
				defer t.Stop()
				tick = t.C
			}
			for {
				select {
				case <-r.Context().Done():
					return
				case <-tick:
					if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
						return
					}
				}
			}
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	})
	mux.HandleFunc("/open", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, open.Load())
	})
	return serve(ctx, *listen, mux)
}

// serve serves h on addr until ctx ends.
func serve(ctx context.Context, addr string, h http.Handler) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Println("listening on", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runClients opens -n event streams to -url, each on a connection of its
// own, -concurrency at a time, and holds them until the process is told to
// stop. With -sessions each client first initializes an MCP session (a
// POST on the same connection) and opens its stream with that session's
// id. It prints "established N failed M" once every stream has been tried,
// then "closed K" whenever streams end early.
func runClients(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clients", flag.ExitOnError)
	target := fs.String("url", "", "the MCP endpoint")
	n := fs.Int("n", 1000, "streams to open")
	token := fs.String("token", "", "bearer token")
	sessions := fs.Bool("sessions", false, "initialize a session before opening each stream")
	concurrency := fs.Int("concurrency", 64, "streams opened at once")
	_ = fs.Parse(args)
	if *target == "" {
		return errors.New("-url is required")
	}
	transport := &http.Transport{
		Proxy:               nil,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
	}
	client := &http.Client{Transport: transport}
	var established, failed, closed atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	sem := make(chan struct{}, *concurrency)
	var tried sync.WaitGroup
	for i := range *n {
		sem <- struct{}{}
		tried.Add(1)
		go func() {
			// Each client's own transport keeps its initialize and its
			// stream on one connection, as an agent would.
			c := client
			if *sessions {
				c = &http.Client{Transport: transport.Clone()}
			}
			res, err := openStream(ctx, c, *target, *token, *sessions, i)
			<-sem
			if err != nil {
				fail(err)
				tried.Done()
				return
			}
			established.Add(1)
			tried.Done()
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if ctx.Err() == nil {
				fmt.Println("closed", closed.Add(1))
			}
		}()
	}
	tried.Wait()
	if p := firstErr.Load(); p != nil {
		fmt.Println("first error:", *p)
	}
	fmt.Println("established", established.Load(), "failed", failed.Load())
	<-ctx.Done()
	return nil
}

// openStream opens one event stream, after an initialize when session.
func openStream(ctx context.Context, c *http.Client, target, token string, session bool, i int) (*http.Response, error) {
	sessionID := ""
	if session {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"streamer","version":"1"}}}`, i)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("initialize: %w", err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("initialize: %s", res.Status)
		}
		if sessionID = res.Header.Get("Mcp-Session-Id"); sessionID == "" {
			return nil, errors.New("initialize: no Mcp-Session-Id")
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		_ = res.Body.Close()
		return nil, fmt.Errorf("stream: %s, Content-Type %q", res.Status, res.Header.Get("Content-Type"))
	}
	return res, nil
}

// runBareProxy serves a bare httputil.ReverseProxy to -backend, as its
// documentation sets it up for event streams (FlushInterval -1) and nothing
// else, and Go's runtime metrics on -admin. -max-idle-per-host above 0
// keeps that many idle backend connections instead of
// http.DefaultTransport's 2: hack/dataplane sets it to toolgate's 256, so
// that its race of many requests at once compares the proxies rather than
// a pool that closes most connections after one request.
func runBareProxy(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bareproxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	admin := fs.String("admin", "127.0.0.1:0", "address of /metrics")
	backend := fs.String("backend", "", "backend URL")
	maxIdlePerHost := fs.Int("max-idle-per-host", 0, "idle backend connections kept; 0 keeps http.DefaultTransport's")
	_ = fs.Parse(args)
	u, err := url.Parse(*backend)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-backend %q: give a URL", *backend)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		FlushInterval: -1,
	}
	if *maxIdlePerHost > 0 {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = *maxIdlePerHost
		rp.Transport = t
	}
	metrics := http.NewServeMux()
	metrics.Handle("/metrics", promhttp.Handler())
	go func() { _ = serve(ctx, *admin, metrics) }()
	return serve(ctx, *listen, rp)
}
