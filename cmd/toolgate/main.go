// Command toolgate is the one toolgate binary: the Kubernetes controller,
// the per-Gateway proxy, and a standalone gateway that reads its
// configuration from files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	// Quotas align their windows to a time zone: the image carries no
	// zoneinfo of its own.
	_ "time/tzdata"
)

const usage = `toolgate is an MCP-aware Kubernetes Gateway API implementation.

Usage:
  toolgate controller [flags]   run the control plane in a cluster
  toolgate proxy --gateway NAMESPACE/NAME [flags]
                                serve one Gateway's listeners in a cluster
  toolgate standalone --config DIR [flags]
                                serve Gateways from manifest files, no cluster
  toolgate version              print the version and commit

Run 'toolgate COMMAND --help' for a command's flags.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "toolgate:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("a command is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "controller":
		return runController(ctx, args[1:], stderr)
	case "proxy":
		return runProxy(ctx, args[1:], stderr)
	case "standalone":
		return runStandalone(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "toolgate %s (commit %s, %s)\n", versionString(), commitString(), runtime.Version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// newFlagSet returns a flag set that prints its usage with a summary line.
func newFlagSet(name, summary string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("toolgate "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: toolgate %s\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: see 'toolgate %s --help'", fs.Arg(0), fs.Name())
	}
	return nil
}

func newLogger(out io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: l})), nil
}
