package env

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
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

// APIServerRequests is the API server's count of resource requests by
// "VERB group/resource[/subresource]", summed over response codes: its
// apiserver_request_total counter, from every client.
func (e *Env) APIServerRequests(ctx context.Context) (map[string]float64, error) {
	counts := map[string]float64{}
	err := e.scanAPIServerMetrics(ctx, func(line string) error {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			return nil
		}
		labels := metricLabels(line)
		if labels["resource"] == "" {
			return nil
		}
		key := labels["verb"] + " " + labels["group"] + "/" + labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return fmt.Errorf("parse %q: %w", line, err)
		}
		counts[key] += v
		return nil
	})
	return counts, err
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
