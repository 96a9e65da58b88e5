// Command bench measures echoloop side by side with the servers people
// weigh it against — a native grpc-go server, grpc-go's ServeHTTP on
// net/http, a bare connect-go handler, a bare crypto/tls listener — and
// writes BENCHMARKS.md: the method, the machine, the tables, and a PASS or
// FAIL line for each of echoloop's budgets.
//
// Each server runs as a process of its own (this program, started again
// in its server role), so that CPU from getrusage, allocations from the Go
// runtime and write system calls from /proc/PID/io are the server's alone.
// Servers under comparison are measured in turn, A B A B, for -pairs
// rounds, and each ratio is taken within a round, so that a machine
// getting busier or quieter moves both sides of a ratio together.
//
//	go run ./bench                     # the full suite, about 10 minutes
//	go run ./bench -quick -out -       # a short run, report on stdout
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// suiteConfig is the suite's flags.
type suiteConfig struct {
	out                  string
	pairs                int
	duration             time.Duration
	handshakeDuration    time.Duration
	concurrency          int
	handshakeConcurrency int
	connections          int
	messageSize          int
	rate                 float64
	idle                 []int
	only                 map[string]bool
	profile              string
	strict               bool
}

// The suite's sections, in the order they run; -only picks some.
var sections = []string{"grpc", "protocols", "openloop", "handshakes", "keys", "identity", "idle"}

func main() {
	var cfg suiteConfig
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		if err := serveFromArgs(os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(1)
		}
		return
	}

	var idle, only string
	var quick bool
	flag.StringVar(&cfg.out, "out", "BENCHMARKS.md", "where to write the report; - for standard output")
	flag.IntVar(&cfg.pairs, "pairs", 5, "rounds of each comparison (A B pairs)")
	flag.DurationVar(&cfg.duration, "duration", 4*time.Second, "length of each measured interval of calls")
	flag.DurationVar(&cfg.handshakeDuration, "handshake-duration", 2*time.Second,
		"length of each measured interval of handshakes")
	flag.IntVar(&cfg.concurrency, "concurrency", 50, "calls in flight")
	flag.IntVar(&cfg.handshakeConcurrency, "handshake-concurrency", 8, "handshakes in flight")
	flag.IntVar(&cfg.connections, "connections", 1, "connections the calls share")
	flag.IntVar(&cfg.messageSize, "message-size", 64, "bytes of each message echoed")
	flag.Float64Var(&cfg.rate, "rate", 2000, "calls per second of the open-loop comparison")
	flag.StringVar(&idle, "idle", "1000,10000", "idle connection counts, comma-separated")
	flag.StringVar(&only, "only", "", "run only these sections, comma-separated: "+strings.Join(sections, ", "))
	flag.StringVar(&cfg.profile, "profile", "", "write a CPU profile of each server process into this directory")
	flag.BoolVar(&cfg.strict, "strict", false, "exit 1 when a budget fails")
	flag.BoolVar(&quick, "quick", false, "a short run to check that the suite works: 5 pairs of 0.5s, 200 idle connections")
	flag.Parse()

	if quick {
		cfg.duration, cfg.handshakeDuration, idle = 500*time.Millisecond, 300*time.Millisecond, "200"
	}
	if err := cfg.parseLists(idle, only); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	failed, err := runSuite(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
	if failed > 0 && cfg.strict {
		os.Exit(1)
	}
}

func (cfg *suiteConfig) parseLists(idle, only string) error {
	for _, field := range strings.Split(idle, ",") {
		if field = strings.TrimSpace(field); field == "" {
			continue
		}
		n, err := strconv.Atoi(field)
		if err != nil || n <= 0 {
			return fmt.Errorf("-idle takes positive counts such as 1000,10000, not %q", field)
		}
		cfg.idle = append(cfg.idle, n)
	}
	cfg.only = map[string]bool{}
	for _, name := range strings.Split(only, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		known := false
		for _, s := range sections {
			known = known || s == name
		}
		if !known {
			return fmt.Errorf("-only: no section %q (sections: %s)", name, strings.Join(sections, ", "))
		}
		cfg.only[name] = true
	}
	return nil
}

func (cfg *suiteConfig) validate() error {
	var problems []error
	if cfg.pairs < 1 {
		problems = append(problems, fmt.Errorf("-pairs must be at least 1, got %d", cfg.pairs))
	}
	if cfg.duration <= 0 || cfg.handshakeDuration <= 0 {
		problems = append(problems, errors.New("-duration and -handshake-duration must be positive"))
	}
	if cfg.concurrency < 1 || cfg.handshakeConcurrency < 1 || cfg.connections < 1 {
		problems = append(problems, errors.New("-concurrency, -handshake-concurrency and -connections must be at least 1"))
	}
	if cfg.messageSize < 0 || cfg.messageSize > 1<<20 {
		problems = append(problems, fmt.Errorf("-message-size must be between 0 and 1 MiB, got %d", cfg.messageSize))
	}
	if cfg.rate <= 0 {
		problems = append(problems, fmt.Errorf("-rate must be positive, got %g", cfg.rate))
	}
	return errors.Join(problems...)
}

// wants reports whether a section is to run.
func (cfg *suiteConfig) wants(section string) bool {
	return len(cfg.only) == 0 || cfg.only[section]
}

// serveFromArgs runs the server role, which the suite starts as
// `bench -serve KIND -certs DIR [-cpuprofile FILE]`.
func serveFromArgs(args []string) error {
	flags := flag.NewFlagSet("bench -serve", flag.ContinueOnError)
	kind := flags.String("serve", "", "the kind of server to run")
	certs := flags.String("certs", "", "the server's certificates directory")
	profile := flags.String("cpuprofile", "", "where to write the server's CPU profile")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if err := serveRole(*kind, *certs, *profile); err != nil {
		return fmt.Errorf("%s server: %w", *kind, err)
	}
	return nil
}
