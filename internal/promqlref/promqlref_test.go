package promqlref

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		expr     string
		want     []Selector
		grouping []string
	}{
		{
			name: "a bare metric name is a selector without labels",
			expr: "up",
			want: []Selector{{Metric: "up"}},
		},
		{
			name: "matchers name their labels, whatever their operator and value",
			expr: `x{a="1", b!="2",c=~"$var|y", d!~'z'}`,
			want: []Selector{{Metric: "x", Labels: []string{"a", "b", "c", "d"}}},
		},
		{
			name:     "functions and aggregations are not metrics; by lists labels",
			expr:     `sum by (namespace, server) (rate(x_total{scope="tool"}[$__rate_interval]))`,
			want:     []Selector{{Metric: "x_total", Labels: []string{"scope"}}},
			grouping: []string{"namespace", "server"},
		},
		{
			name:     "a by clause after the aggregation's argument counts too",
			expr:     `sum(rate(x[5m])) without (instance)`,
			want:     []Selector{{Metric: "x"}},
			grouping: []string{"instance"},
		},
		{
			name:     "vector matching lists labels; set operators are not metrics",
			expr:     `a * on (instance) group_left (gateway) b unless ignoring(pod) c and d or e`,
			want:     []Selector{{Metric: "a"}, {Metric: "b"}, {Metric: "c"}, {Metric: "d"}, {Metric: "e"}},
			grouping: []string{"gateway", "instance", "pod"},
		},
		{
			name:     "numbers, durations, offsets and comparisons are skipped",
			expr:     `histogram_quantile(0.99, sum by (le) (rate(h_bucket[1h:5m] offset 1d))) > 1.5e-3 * 86400 - time()`,
			want:     []Selector{{Metric: "h_bucket"}},
			grouping: []string{"le"},
		},
		{
			name: "strings hide what looks like metrics and braces",
			expr: `label_replace(x, "dst", "$1 {y}", "src", "(.*)")`,
			want: []Selector{{Metric: "x"}},
		},
		{
			name: "bool and comparison keywords are not metrics",
			expr: `count(a == bool 1) >= 2`,
			want: []Selector{{Metric: "a"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Selectors, tc.want) {
				t.Errorf("selectors %+v, want %+v", got.Selectors, tc.want)
			}
			if !reflect.DeepEqual(got.Grouping, tc.grouping) {
				t.Errorf("grouping %q, want %q", got.Grouping, tc.grouping)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{`{__name__="x"}`, "without a metric name"},
		{`x{a="1"`, "not closed"},
		{`x{a}`, "want label, operator, quoted value"},
		{`sum by (a`, "not closed"},
		{`x{a="1}`, "string at offset"},
		{`rate(x[5m)`, "range at offset"},
		{`x > $threshold`, "variable at offset"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			_, err := Parse(tc.expr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse(%q) = %v, want an error saying %q", tc.expr, err, tc.want)
			}
		})
	}
}
