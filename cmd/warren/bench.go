package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cmd/warren/internal/bench"
	"github.com/warrenmq/warren/worker"
)

// idleChildFlag runs the idle-rss child of `warren bench` (internal).
const idleChildFlag = "-idle-child"

func benchCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == idleChildFlag {
		return benchIdleChild(ctx, args[1:], out)
	}
	fs := flags("bench", "[flags]")
	rounds := fs.Int("rounds", bench.DefaultRounds, "rounds of each case")
	messages := fs.Int("messages", bench.DefaultMessages, "messages per throughput round")
	ioWait := fs.String("io-wait", bench.WaitSleep, "how the I/O cases' handlers wait 2 ms: sleep (time.Sleep) or syscall (a blocking nanosleep, exact to the kernel's timers)")
	queueTypes := fs.String("queue-type", string(worker.DefaultQueueType), "comma-separated queue types to run every case on: classic, quorum or both (default the worker's)")
	cases := fs.String("cases", "", "comma-separated cases to run (default all: "+strings.Join(bench.CaseNames(), ",")+")")
	// The defaults are resolved after parsing, so that -h never prints a
	// password from the environment.
	amqpURL := fs.String("amqp-url", "", "broker URL (default $WARREN_AMQP_URL, else "+worker.DefaultAMQPURL+")")
	redisURL := fs.String("redis-url", "", "Redis URL for the dedupe case (default $WARREN_REDIS_URL, else "+worker.DefaultRedisURL+")")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (see go tool pprof)")
	memProfile := fs.String("memprofile", "", "write an allocation profile of the whole run to this file (see go tool pprof -sample_index=alloc_space)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *memProfile != "" {
		defer func() {
			if err := writeHeapProfile(*memProfile); err != nil {
				fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			}
		}()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if len(pos) > 0 {
		return fmt.Errorf("bench takes no arguments, got %q", pos)
	}
	if *rounds < 1 || *messages < 1 {
		return fmt.Errorf("bench: -rounds and -messages must be at least 1, got %d and %d", *rounds, *messages)
	}
	if *amqpURL == "" {
		*amqpURL = envOr("WARREN_AMQP_URL", worker.DefaultAMQPURL)
	}
	if *redisURL == "" {
		*redisURL = envOr("WARREN_REDIS_URL", worker.DefaultRedisURL)
	}
	var names []string
	if *cases != "" {
		names = strings.Split(*cases, ",")
	}
	var types []broker.QueueType
	for _, t := range strings.Split(*queueTypes, ",") {
		types = append(types, broker.QueueType(strings.TrimSpace(t)))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: finding this program for the idle-rss child: %w", err)
	}
	_, err = bench.Run(ctx, bench.Options{
		AMQPURL:    *amqpURL,
		RedisURL:   *redisURL,
		Rounds:     *rounds,
		Messages:   *messages,
		IOWait:     *ioWait,
		Cases:      names,
		QueueTypes: types,
		Out:        out,
		IdleCommand: func(amqpURL, prefix string) (*exec.Cmd, error) {
			cmd := exec.Command(exe, "bench", idleChildFlag, "-prefix", prefix)
			// The URL goes through the environment, so that its password
			// does not show in the process list.
			cmd.Env = append(os.Environ(), "WARREN_AMQP_URL="+amqpURL)
			return cmd, nil
		},
	})
	return err
}

// benchIdleChild is the child process of the idle-rss case.
func benchIdleChild(ctx context.Context, args []string, out io.Writer) error {
	fs := flags("bench "+idleChildFlag, "-prefix NAME  (internal: the idle-rss child of warren bench)")
	prefix := fs.String("prefix", "", "queue name prefix")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *prefix == "" {
		return errors.New("bench: -idle-child needs -prefix")
	}
	return bench.IdleChild(ctx, envOr("WARREN_AMQP_URL", worker.DefaultAMQPURL), *prefix, os.Stdin, out)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// writeHeapProfile writes the allocation profile (every allocation since
// the start, sampled) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing the memory profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing the memory profile: %w", err)
	}
	return f.Close()
}
