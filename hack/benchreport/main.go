// Command benchreport writes the report of `make bench`: it reads the
// results each benchmark wrote into one folder and writes a Markdown
// report with SVG charts (docs/bench/), and prints the table of ratios.
// It is a module of its own so that the product's module does not depend
// on the plotting library.
//
//	benchreport machine -out DIR/machine.json [-quick]   # before the first benchmark
//	benchreport render -in DIR -out docs/bench            # after the last
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchreport machine|render [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "machine":
		err = runMachine(os.Args[2:])
	case "render":
		err = runRender(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: give machine or render", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// runMachine writes the description of this machine and the start of the
// run.
func runMachine(args []string) error {
	fs := flag.NewFlagSet("machine", flag.ExitOnError)
	out := fs.String("out", "", "file to write (machine.json of the results folder)")
	quick := fs.Bool("quick", false, "the run is a quick one (BENCH_QUICK=1)")
	_ = fs.Parse(args)
	if *out == "" {
		return errors.New("machine: give -out")
	}
	b, err := json.MarshalIndent(collectMachine(*quick), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

// runRender reads the results folder and writes the report folder: its
// README.md, the charts, and a copy of the results in data/.
func runRender(args []string) error {
	fs := flag.NewFlagSet("render", flag.ExitOnError)
	in := fs.String("in", "", "the results folder make bench filled")
	out := fs.String("out", "", "the report folder to write (docs/bench)")
	_ = fs.Parse(args)
	if *in == "" || *out == "" {
		return errors.New("render: give -in and -out")
	}
	r, err := load(*in)
	if err != nil {
		return fmt.Errorf("read %s: %w", *in, err)
	}
	rep, err := render(r, time.Now())
	if err != nil {
		return err
	}
	if err := writeReport(rep, *in, *out); err != nil {
		return err
	}
	fmt.Print(textTable(rep.Ratios))
	fmt.Printf("\nreport: %s\n", filepath.Join(*out, "README.md"))
	return nil
}

// writeReport writes rep into dir, replacing the charts and the data of
// an earlier report, and copies the results of in into dir/data.
func writeReport(rep *Report, in, dir string) error {
	data := filepath.Join(dir, "data")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	for _, name := range []string{rpsChartFile, streamsChartFile, editsChartFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	for _, name := range resultFiles {
		b, err := os.ReadFile(filepath.Join(in, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(data, name), b, 0o644); err != nil {
			return err
		}
	}
	if err := rep.writeCharts(dir); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "README.md"), []byte(rep.Markdown), 0o644)
}
