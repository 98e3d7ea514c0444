package main

import (
	"fmt"
	"math"
	"strings"
)

// thousands writes v rounded to a whole number, with commas between
// thousands: 21345.6 is "21,346".
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", math.Abs(v))
	var b strings.Builder
	if v <= -0.5 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// formatValue writes a figure in its unit: a rate per second ("/s") as
// a whole number with thousands, microseconds from 1,000 on as
// milliseconds, and every figure with the precision its size calls for.
func formatValue(v float64, unit string) string {
	switch unit {
	case "/s":
		return thousands(v) + "/s"
	case "":
		return trimmed(v)
	case "µs":
		if math.Abs(v) >= 1000 {
			return trimmed(v/1000) + " ms"
		}
		return trimmed(v) + " µs"
	default:
		return trimmed(v) + " " + unit
	}
}

// trimmed is v with three significant digits below 100 and none after the
// point above: 0.114, 4.17, 46.7, 312, 1,024.
func trimmed(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return thousands(v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// formatRatio writes measured / baseline as 0.47×, or with two
// significant digits when smaller than 0.1 (0.0025×).
func formatRatio(v float64) string {
	if v < 0.1 {
		return fmt.Sprintf("%.2g×", v)
	}
	return fmt.Sprintf("%.2f×", v)
}

// textTable writes the ratios as aligned plain text, a heading a group.
func textTable(rows []Ratio) string {
	wWhat, wMeasured, wBaseline, wRatio := len("measured / baseline"), len("measured"), len("baseline"), len("ratio")
	for _, r := range rows {
		wWhat = max(wWhat, len([]rune(r.What))+2)
		wMeasured = max(wMeasured, len([]rune(formatValue(r.Measured, r.Unit))))
		wBaseline = max(wBaseline, len([]rune(formatValue(r.Baseline, r.Unit))))
		wRatio = max(wRatio, len([]rune(formatRatio(r.Value()))))
	}
	var b strings.Builder
	line := func(what, measured, baseline, ratio string) {
		fmt.Fprintf(&b, "%s  %s  %s  %s\n", pad(what, wWhat, false), pad(measured, wMeasured, true), pad(baseline, wBaseline, true), pad(ratio, wRatio, true))
	}
	line("measured / baseline", "measured", "baseline", "ratio")
	group := ""
	for _, r := range rows {
		if r.Group != group {
			group = r.Group
			b.WriteString(group + "\n")
		}
		line("  "+r.What, formatValue(r.Measured, r.Unit), formatValue(r.Baseline, r.Unit), formatRatio(r.Value()))
	}
	return b.String()
}

// pad pads s with spaces to width runes, on the left when right-aligned.
func pad(s string, width int, right bool) string {
	n := width - len([]rune(s))
	if n <= 0 {
		return s
	}
	if right {
		return strings.Repeat(" ", n) + s
	}
	return s + strings.Repeat(" ", n)
}

// markdownTable writes the ratios as a Markdown table, a group's name in
// bold on a line of its own.
func markdownTable(rows []Ratio) string {
	var b strings.Builder
	b.WriteString("| measured / baseline | measured | baseline | ratio |\n|---|--:|--:|--:|\n")
	group := ""
	for _, r := range rows {
		if r.Group != group {
			group = r.Group
			fmt.Fprintf(&b, "| **%s** | | | |\n", group)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.What, formatValue(r.Measured, r.Unit), formatValue(r.Baseline, r.Unit), formatRatio(r.Value()))
	}
	return b.String()
}
