package filter

import (
	"fmt"
	"time"

	"github.com/toolgate/toolgate/filter/limiter"
)

// Quota limits calls (their cost) per calendar window.
type Quota struct {
	// Max is the most tokens the window's calls may take.
	Max int64 `json:"max"`
	// Window is hour, day, week (from Monday) or month, in the policy's
	// time zone.
	Window string `json:"window"`
	// Shadow decides and counts the quota as if enforced, but it refuses
	// nothing.
	Shadow bool `json:"shadow,omitempty"`
}

// Quota windows.
const (
	WindowHour  = "hour"
	WindowDay   = "day"
	WindowWeek  = "week"
	WindowMonth = "month"
)

func (q *Quota) validate() error {
	switch {
	case q.Max < 1:
		return fmt.Errorf("max must be at least 1, got %d", q.Max)
	case q.Window != WindowHour && q.Window != WindowDay && q.Window != WindowWeek && q.Window != WindowMonth:
		return fmt.Errorf("window must be hour, day, week or month, got %q", q.Window)
	}
	return nil
}

// window returns the calendar window of the given kind that holds t, in
// loc: it starts and ends at local midnight (or the hour), whatever the
// day's length.
func window(kind string, t time.Time, loc *time.Location) limiter.Window {
	l := t.In(loc)
	y, m, d := l.Date()
	var start, end time.Time
	switch kind {
	case WindowHour:
		start = time.Date(y, m, d, l.Hour(), 0, 0, 0, loc)
		end = start.Add(time.Hour)
	case WindowDay:
		start, end = time.Date(y, m, d, 0, 0, 0, 0, loc), time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case WindowWeek:
		back := (int(l.Weekday()) + 6) % 7 // days since Monday
		start, end = time.Date(y, m, d-back, 0, 0, 0, 0, loc), time.Date(y, m, d-back+7, 0, 0, 0, 0, loc)
	default: // month
		start, end = time.Date(y, m, 1, 0, 0, 0, 0, loc), time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	}
	return limiter.Window{Start: start, End: end}
}

// quotaDemand is a quota's demand for cost tokens now: its window's length
// stands for the limit's period, which the RateLimit fields report.
func quotaDemand(id limiter.BucketID, q *Quota, cost int64, now time.Time, loc *time.Location) limiter.Demand {
	w := window(q.Window, now, loc)
	return limiter.Demand{Bucket: id, Limit: limiter.Limit{MaxTokens: q.Max, RefillPeriod: w.End.Sub(w.Start), Shadow: q.Shadow}, Tokens: cost, Window: w}
}
