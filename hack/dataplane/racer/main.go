// Command racer is the load of hack/dataplane: an MCP backend that answers
// every POST with a small tools/call result, and a load generator that
// sends one tools/call after another on each of its connections, as wrk
// does, and prints what it measured as one JSON line. Each role runs in a
// process of its own.
//
//	racer backend -listen 127.0.0.1:PORT
//	racer load    -url URL [-connections 64] [-duration 10s] [-warmup 2s] [-tokens FILE]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// call is the request every connection sends: a small MCP tools/call.
const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}`

// result is the backend's answer to every POST.
const result = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: racer backend|load [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "backend":
		err = runBackend(ctx, os.Args[2:])
	case "load":
		err = runLoad(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown role %q: give backend or load", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "racer:", err)
		os.Exit(1)
	}
}

// runBackend serves the MCP endpoint on every path: a POST is read whole
// and answered with result; the backend does no other work, so that the
// race measures transport and proxies, not an MCP server.
func runBackend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve on")
	_ = fs.Parse(args)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST a JSON-RPC message", http.StatusMethodNotAllowed)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, result)
	})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", *listen)
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

// Measurement is what load prints: the requests answered 200 within the
// measured window (after the warmup), their rate and latency percentiles,
// and the answers that were not 200 or failed.
type Measurement struct {
	Connections int
	Seconds     float64
	Requests    int
	Errors      int
	FirstError  string `json:",omitempty"`
	RPS         float64
	P50Micros   float64
	P99Micros   float64
}

// runLoad sends call to -url on -connections keep-alive connections, each
// sending its next request as soon as it has read the last answer, for
// -warmup and then -duration, and prints the Measurement of the duration
// as JSON. Connection i sends the bearer token on line i (modulo their
// number) of -tokens, when given.
func runLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("url", "", "the MCP endpoint")
	connections := fs.Int("connections", 64, "connections, each with one request in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long requests are measured, after the warmup")
	warmup := fs.Duration("warmup", 2*time.Second, "how long requests are sent before they are measured")
	tokensFile := fs.String("tokens", "", "file of bearer tokens, one a line")
	_ = fs.Parse(args)
	if *target == "" || *connections < 1 || *duration <= 0 {
		return errors.New("give -url, -connections of at least 1 and a positive -duration")
	}
	var tokens []string
	if *tokensFile != "" {
		b, err := os.ReadFile(*tokensFile)
		if err != nil {
			return err
		}
		tokens = strings.Fields(string(b))
	}
	transport := &http.Transport{
		Proxy:               nil,
		MaxConnsPerHost:     *connections,
		MaxIdleConnsPerHost: *connections,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport}

	start := time.Now()
	measureFrom, measureTo := start.Add(*warmup), start.Add(*warmup+*duration)
	ctx, cancel := context.WithDeadline(ctx, measureTo.Add(10*time.Second))
	defer cancel()
	type tally struct {
		latencies  []time.Duration
		errors     int
		firstError string
	}
	tallies := make([]tally, *connections)
	var wg sync.WaitGroup
	for i := range *connections {
		bearer := ""
		if len(tokens) > 0 {
			bearer = "Bearer " + tokens[i%len(tokens)]
		}
		wg.Go(func() {
			mine := &tallies[i]
			mine.latencies = make([]time.Duration, 0, 1<<14)
			body := bytes.NewReader(nil)
			for {
				t0 := time.Now()
				if !t0.Before(measureTo) {
					return
				}
				body.Reset([]byte(call))
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, *target, io.NopCloser(body))
				if err != nil {
					mine.errors++
					mine.firstError = err.Error()
					return
				}
				req.ContentLength = int64(len(call))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				if bearer != "" {
					req.Header.Set("Authorization", bearer)
				}
				status, err := send(client, req)
				t1 := time.Now()
				if t0.Before(measureFrom) || t1.After(measureTo) {
					continue
				}
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("status %d", status)
				}
				if err != nil {
					mine.errors++
					if mine.firstError == "" {
						mine.firstError = err.Error()
					}
					if ctx.Err() != nil {
						return
					}
					continue
				}
				mine.latencies = append(mine.latencies, t1.Sub(t0))
			}
		})
	}
	wg.Wait()

	m := Measurement{Connections: *connections, Seconds: duration.Seconds()}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.latencies...)
		m.Errors += t.errors
		if m.FirstError == "" {
			m.FirstError = t.firstError
		}
	}
	slices.Sort(all)
	m.Requests = len(all)
	m.RPS = float64(len(all)) / duration.Seconds()
	if n := len(all); n > 0 {
		m.P50Micros = float64(all[n/2].Microseconds())
		m.P99Micros = float64(all[n*99/100].Microseconds())
	}
	return json.NewEncoder(os.Stdout).Encode(m)
}

// send sends req and reads the answer to its end, so that the connection
// is reused; it returns the status.
func send(client *http.Client, req *http.Request) (int, error) {
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	return res.StatusCode, err
}
