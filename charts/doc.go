// Package charts holds toolgate's Helm chart, charts/toolgate, which is the
// source of config/: its tests lint the chart, compare what it renders with
// golden files, and check that config/ is what it renders by default.
package charts
