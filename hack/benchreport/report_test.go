package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/README.golden.md from testdata/results")

// fixtureFinished is when the fixture's run ended: 27 minutes after its
// machine.json says it started.
var fixtureFinished = time.Date(2026, 12, 7, 3, 24, 0, 0, time.UTC)

// copyFixture copies testdata/results into a new folder, less the files
// named in without, and returns the folder.
func copyFixture(t *testing.T, without ...string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir("testdata/results")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if slices.Contains(without, e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("testdata/results", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTheReportOfTheFixtureIsTheGoldenOne(t *testing.T) {
	r, err := load("testdata/results")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := render(r, fixtureFinished)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "README.golden.md")
	if *update {
		if err := os.WriteFile(golden, []byte(rep.Markdown), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Markdown != string(want) {
		t.Errorf("the report differs from %s (go test -update rewrites it):\n%s", golden, diff(string(want), rep.Markdown))
	}
}

// diff is the first line where want and got differ, with its neighbours.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\nwant: %s\ngot:  %s", i+1, wl, gl)
		}
	}
	return ""
}

func TestTheReportFolderHoldsTheReportItsChartsAndTheResults(t *testing.T) {
	in := copyFixture(t)
	out := t.TempDir()
	// A chart of an earlier report that this one does not draw is removed.
	if err := os.WriteFile(filepath.Join(out, editsChartFile), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := load(in)
	if err != nil {
		t.Fatal(err)
	}
	r.Scale.EditsByRoutes = nil
	rep, err := render(r, fixtureFinished)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeReport(rep, in, out); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if string(md) != rep.Markdown {
		t.Error("README.md is not the report's Markdown")
	}
	charts := map[string][]string{ // the chart, and texts it must show
		rpsChartFile:     {"Requests per second", "direct", "ReverseProxy", "Redis policy"},
		streamsChartFile: {"open idle event streams", "toolgate", "nginx"},
	}
	for name, texts := range charts {
		if !strings.Contains(rep.Markdown, "]("+name+")") {
			t.Errorf("the report does not link %s", name)
		}
		checkSVG(t, filepath.Join(out, name), texts)
	}
	if _, err := os.Stat(filepath.Join(out, editsChartFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s of the earlier report is still there (%v), though this report has no edits by routes", editsChartFile, err)
	}
	if strings.Contains(rep.Markdown, editsChartFile) {
		t.Errorf("the report links %s, which it does not draw", editsChartFile)
	}
	for _, name := range resultFiles {
		want, err := os.ReadFile(filepath.Join(in, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, "data", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("data/%s is not a copy of the results' (%v)", name, err)
		}
	}
}

func TestEveryChartOfTheFixtureIsAnSVGDocumentShowingItsData(t *testing.T) {
	r, err := load("testdata/results")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := render(r, fixtureFinished)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := rep.writeCharts(out); err != nil {
		t.Fatal(err)
	}
	if len(rep.Charts) != 3 {
		t.Errorf("%d charts, want 3: requests per second, memory against streams, edits against routes", len(rep.Charts))
	}
	checkSVG(t, filepath.Join(out, rpsChartFile), []string{"Requests per second", "median of 2 round(s)", "toolgate", "memory policy"})
	checkSVG(t, filepath.Join(out, streamsChartFile), []string{"resident memory (MiB)", "bare Go httputil.ReverseProxy", "nginx", "500"})
	checkSVG(t, filepath.Join(out, editsChartFile), []string{"HTTPRoutes", "p50", "p99", "10 clients", "200"})
}

// checkSVG fails the test unless path is a well-formed XML document whose
// root is an svg element, and whose text holds each of texts.
func checkSVG(t *testing.T, path string, texts []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatalf("%s is empty", path)
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
		case xml.CharData:
			text.Write(tok)
		}
	}
	if root != "svg" {
		t.Fatalf("%s: the root element is %q, want svg", path, root)
	}
	for _, want := range texts {
		if !strings.Contains(text.String(), want) {
			t.Errorf("%s shows no %q", path, want)
		}
	}
}
