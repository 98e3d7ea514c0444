package env

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"k8s.io/client-go/rest"
)

// APIServerWatches is the number of watches the API server is serving now:
// the sum of its apiserver_longrunning_requests gauge over verb="WATCH".
func (e *Env) APIServerWatches(ctx context.Context) (float64, error) {
	var sum float64
	found := false
	err := e.scanAPIServerMetrics(ctx, func(line string) error {
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || metricLabels(line)["verb"] != "WATCH" {
			return nil
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return fmt.Errorf("parse %q: %w", line, err)
		}
		sum, found = sum+v, true
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("the API server reports no apiserver_longrunning_requests for WATCH")
	}
	return sum, nil
}

// scanAPIServerMetrics calls each with every line of the API server's
// /metrics.
func (e *Env) scanAPIServerMetrics(ctx context.Context, each func(line string) error) error {
	hc, err := rest.HTTPClientFor(e.RESTConfig)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(e.RESTConfig.Host, "/")+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("read the API server's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("read the API server's metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if err := each(sc.Text()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// metricLabels returns the labels of one line of the Prometheus text
// format. The API server's label values hold no quotes or commas.
func metricLabels(line string) map[string]string {
	labels := map[string]string{}
	open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
	if open < 0 || end < open {
		return labels
	}
	for _, pair := range strings.Split(line[open+1:end], ",") {
		name, value, ok := strings.Cut(pair, "=")
		if ok {
			labels[name] = strings.Trim(value, `"`)
		}
	}
	return labels
}

// AuditOffset is the size of the suite's API server's audit log now: a
// mark for ControllerRequests.
func (e *Env) AuditOffset() (int64, error) {
	if e.kube == nil {
		return 0, errors.New("the audit log needs the suite's own API server")
	}
	info, err := os.Stat(e.kube.AuditLogPath)
	if err != nil {
		return 0, err
	}
	return info.Size(), nil
}

// auditEvent is what ControllerRequests reads of an audit.k8s.io/v1 Event.
type auditEvent struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
}

// ControllerRequests is every request of the controller's ServiceAccount
// that the audit log recorded after offset, as "verb resource[/subresource]
// namespace/name" (or the URI of a request for no resource), once each: a
// watch when it starts, any other request when it ends.
func (e *Env) ControllerRequests(offset int64) ([]string, error) {
	if e.kube == nil {
		return nil, errors.New("the audit log needs the suite's own API server")
	}
	f, err := os.Open(e.kube.AuditLogPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	user := "system:serviceaccount:" + controllerNamespace + ":" + controllerServiceAccount
	var requests []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", e.kube.AuditLogPath, err)
		}
		once := (ev.Verb == "watch" && ev.Stage == "ResponseStarted") || (ev.Verb != "watch" && ev.Stage == "ResponseComplete")
		if ev.User.Username != user || !once {
			continue
		}
		what := ev.RequestURI
		if r := ev.ObjectRef; r != nil {
			what = r.Resource
			if r.Subresource != "" {
				what += "/" + r.Subresource
			}
			what += " " + r.Namespace + "/" + r.Name
		}
		requests = append(requests, ev.Verb+" "+what)
	}
	return requests, sc.Err()
}
