package limiter_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/filter/limiter"
)

func TestLimitJSONWritesTheRefillPeriodAsADuration(t *testing.T) {
	cases := []struct {
		name  string
		limit limiter.Limit
		json  string
	}{
		{"a minute", limiter.Limit{MaxTokens: 100, RefillPeriod: time.Minute}, `{"maxTokens":100,"refillPeriod":"1m0s"}`},
		{"a fraction of a second", limiter.Limit{MaxTokens: 1, RefillPeriod: 1500 * time.Millisecond}, `{"maxTokens":1,"refillPeriod":"1.5s"}`},
		{"an invalid limit, kept for Validate to refuse", limiter.Limit{}, `{"maxTokens":0,"refillPeriod":"0s"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := json.Marshal(tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != tc.json {
				t.Errorf("Marshal = %s, want %s", data, tc.json)
			}
			var got limiter.Limit
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if got != tc.limit {
				t.Errorf("Unmarshal(%s) = %+v, want %+v", data, got, tc.limit)
			}
		})
	}
}

func TestLimitJSONRefusesARefillPeriodThatIsNotADuration(t *testing.T) {
	for _, in := range []string{
		`{"maxTokens":1}`,
		`{"maxTokens":1,"refillPeriod":"1 minute"}`,
		`{"maxTokens":1,"refillPeriod":60000000000}`,
		`{"maxTokens":"1","refillPeriod":"1m"}`,
	} {
		var l limiter.Limit
		err := json.Unmarshal([]byte(in), &l)
		if err == nil {
			t.Errorf("Unmarshal(%s) = %+v, want an error", in, l)
			continue
		}
		if !strings.Contains(err.Error(), "limit: ") {
			t.Errorf("Unmarshal(%s): error %q does not say it is the limit", in, err)
		}
	}
}
