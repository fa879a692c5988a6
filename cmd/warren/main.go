// Command warren is the operator's tool for warren workers: it runs a
// worker for a program in any language, publishes messages, inspects and
// replays dead letters, plans and applies topology, and serves an
// operator's web console.
//
// Every subcommand reads the same WARREN_* environment variables as the
// worker package, and takes flags; run `warren <command> -h` for them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "consume a queue and hand each message to a command or an HTTP endpoint", runCmd},
		{"publish", "publish a message with a broker confirm", publishCmd},
		{"dlq", "list, show, replay or purge dead letters (ls, show, replay, purge)", dlqCmd},
		{"topology", "show (plan) or declare (apply) the topology of a queue", topologyCmd},
		{"console", "serve the operator's web console: queues, dead letters by cause, replay", consoleCmd},
		{"bench", "measure throughput against the local broker and Redis", benchCmd},
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == guardCommand {
		os.Exit(runGuard(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "warren:", err)
		}
		os.Exit(exitCode(err))
	}
}

func dispatch(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(errOut)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			if c.name == "bench" {
				return c.run(ctx, args[1:], out)
			}
			ctx, stop, err := withTracing(ctx)
			if err != nil {
				return err
			}
			defer stop()
			return c.run(ctx, args[1:], out)
		}
	}
	usage(errOut)
	return fmt.Errorf("unknown command %q", args[0])
}

var errUsage = errors.New("a command is required")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: warren <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Configuration comes from WARREN_* environment variables (WARREN_AMQP_URL,")
	fmt.Fprintln(w, "WARREN_REDIS_URL, ...); run 'warren <command> -h' for a command's flags.")
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}

// flags returns a flag set for a subcommand that prints its usage on -h.
func flags(name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet("warren "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: warren %s %s\n\nflags:\n", name, usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may stand before, between or after the
// positional arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return fmt.Sprint(*m) }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
