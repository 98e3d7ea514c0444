package env

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Metric reads one sample of the proxy's /metrics: the series of name whose
// labels include every pair of labels. A series not exported yet reads 0.
func (p *Proxy) Metric(ctx context.Context, name string, labels map[string]string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.AdminURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", p.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", p.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: status %d", p.Name, resp.StatusCode)
	}
	for _, line := range bytes.Split(body, []byte("\n")) {
		s := string(line)
		if !strings.HasPrefix(s, name+"{") && !strings.HasPrefix(s, name+" ") {
			continue
		}
		matches := true
		for k, v := range labels {
			if !strings.Contains(s, k+"="+strconv.Quote(v)) {
				matches = false
				break
			}
		}
		if !matches {
			continue
		}
		fields := strings.Fields(s)
		return strconv.ParseFloat(fields[len(fields)-1], 64)
	}
	return 0, nil
}
