package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/server"
)

// defaultBenchDuration is how long bench calls when neither --duration nor
// --requests says.
const defaultBenchDuration = 10 * time.Second

type benchCmd struct {
	clientFlags `embed:""`

	Protocol             string        `default:"connect" enum:"connect,grpc,grpc-web,http,all" help:"Protocol to call with: connect, grpc, grpc-web, http, or all, one after the other."`
	Concurrency          int           `default:"50" help:"Calls in flight at once (with --rate: at most)."`
	Connections          int           `default:"1" help:"Connections the calls share, opened before the measured calls."`
	Duration             time.Duration `help:"How long to call (default 10s, or until --requests are made)."`
	Requests             int64         `placeholder:"N" help:"Calls to make (per protocol); with --duration, whichever comes first."`
	MessageSize          int           `default:"64" placeholder:"BYTES" help:"Length of the message echoed."`
	Rate                 float64       `placeholder:"PER_SECOND" help:"Start this many calls a second whatever the answers (open loop); latency counts from when a call was due. Leave it out for a closed loop."`
	NewConnectionPerCall bool          `help:"Make every call on a new connection, TLS handshake included: a benchmark of handshakes."`
	Resume               bool          `help:"With --new-connection-per-call, resume TLS sessions from the server's tickets instead of full handshakes."`
	JSON                 bool          `name:"json" help:"Print one JSON object per protocol instead of the table."`
}

// Validate is kong's hook for checks its types cannot make.
func (c *benchCmd) Validate(kctx *kong.Context) error {
	flag := func(name string) string { return flagSource(kctx, name) }
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("%s must be at least 1, got %d", flag("concurrency"), c.Concurrency)
	case c.Connections < 1:
		return fmt.Errorf("%s must be at least 1, got %d", flag("connections"), c.Connections)
	case c.NewConnectionPerCall && c.Connections != 1:
		return fmt.Errorf("%s and %s contradict each other: every call makes its own connection; "+
			"drop %[1]s", flag("connections"), flag("new-connection-per-call"))
	case c.Resume && !c.NewConnectionPerCall:
		return fmt.Errorf("%s needs --new-connection-per-call: a kept connection has nothing to resume",
			flag("resume"))
	// Zero means "not given" to the run, which would then call for the
	// default 10s: a zero given on purpose is refused instead.
	case c.Duration < 0 || (c.Duration == 0 && given(kctx, "duration")):
		return fmt.Errorf("%s must be positive, got %s; leave it out for %s, or give --requests alone",
			flag("duration"), c.Duration, defaultBenchDuration)
	case c.Requests < 0 || (c.Requests == 0 && given(kctx, "requests")):
		return fmt.Errorf("%s must be at least 1, got %d; leave it out to call for --duration",
			flag("requests"), c.Requests)
	case c.MessageSize < 0 || c.MessageSize > server.DefaultMaxMessageBytes/2:
		return fmt.Errorf("%s must be between 0 and %d bytes, got %d",
			flag("message-size"), server.DefaultMaxMessageBytes/2, c.MessageSize)
	// The run reads zero as "no rate", a closed loop: a zero given on
	// purpose more likely meant a rate than no rate at all. ParseFloat
	// also takes NaN and Inf, which are no rate either.
	case given(kctx, "rate") && (c.Rate <= 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0)):
		return fmt.Errorf("%s must be positive, got %g; leave it out for a closed loop, each call "+
			"started as one ends", flag("rate"), c.Rate)
	}
	return c.validate(kctx)
}

func (c *benchCmd) Run(ctx context.Context, out *output) error {
	cl, err := c.newClient()
	if err != nil {
		return err
	}
	defer cl.Close()

	protocols := client.Protocols()
	if c.Protocol != "all" {
		p, err := client.ParseProtocol(c.Protocol)
		if err != nil {
			return usageError{err: err, command: "bench "}
		}
		protocols = []client.Protocol{p}
	}
	duration := c.Duration
	if duration == 0 && c.Requests == 0 {
		duration = defaultBenchDuration
	}
	if !c.JSON {
		fmt.Fprintf(out.out, "%s: %s\n\n", c.URL, c.describe(duration))
	}

	var results []*client.BenchResult
	for _, p := range protocols {
		bar := newBenchBar(out.err, string(p), duration, c.Requests)
		result, err := cl.Bench(ctx, client.BenchConfig{
			Protocol:             p,
			Connections:          c.Connections,
			MessageSize:          c.MessageSize,
			NewConnectionPerCall: c.NewConnectionPerCall,
			Resume:               c.Resume,
			CallTimeout:          c.Timeout,
			Load: client.Load{
				Concurrency: c.Concurrency,
				Duration:    duration,
				Requests:    c.Requests,
				Rate:        c.Rate,
				Progress:    bar.update,
			},
		})
		bar.finish()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		results = append(results, result)
		if c.JSON {
			if err := c.printJSON(out.out, result); err != nil {
				return err
			}
		}
	}
	if !c.JSON {
		c.printTable(out.out, results)
	}

	var failed, calls int64
	for _, r := range results {
		failed += r.Errs()
		calls += r.Calls
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d calls failed (by code above)", failed, calls)
	}
	return nil
}

// describe says in one line what the run does.
func (c *benchCmd) describe(duration time.Duration) string {
	var parts []string
	switch {
	case c.Rate > 0:
		parts = append(parts, fmt.Sprintf("%g calls/s (open loop, at most %d in flight)", c.Rate, c.Concurrency))
	default:
		parts = append(parts, fmt.Sprintf("%d in flight", c.Concurrency))
	}
	switch {
	case c.NewConnectionPerCall && c.Resume:
		parts = append(parts, "a new connection per call, resuming TLS sessions")
	case c.NewConnectionPerCall:
		parts = append(parts, "a new connection per call, full handshakes")
	case c.Connections == 1:
		parts = append(parts, "on 1 connection")
	default:
		parts = append(parts, fmt.Sprintf("on %d connections", c.Connections))
	}
	switch {
	case duration > 0 && c.Requests > 0:
		parts = append(parts, fmt.Sprintf("%d calls or %s per protocol", c.Requests, duration))
	case duration > 0:
		parts = append(parts, fmt.Sprintf("%s per protocol", duration))
	default:
		parts = append(parts, fmt.Sprintf("%d calls per protocol", c.Requests))
	}
	parts = append(parts, fmt.Sprintf("%d-byte messages", c.MessageSize))
	return strings.Join(parts, ", ")
}

func (c *benchCmd) printTable(w io.Writer, results []*client.BenchResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	header := "protocol\tcalls\tcalls/s\tp50\tp90\tp99\tmax\terrors\t"
	if c.NewConnectionPerCall {
		header += "handshakes\tresumed\t"
	}
	fmt.Fprintln(tw, header)
	for _, r := range results {
		line := fmt.Sprintf("%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%d\t", r.Protocol, r.Calls, r.PerSecond(),
			latency(r.Percentile(50)), latency(r.Percentile(90)), latency(r.Percentile(99)),
			latency(r.Max()), r.Errs())
		if c.NewConnectionPerCall {
			line += fmt.Sprintf("%d\t%d\t", r.Handshakes, r.Resumed)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()

	for _, r := range results {
		if len(r.Errors) == 0 {
			continue
		}
		codes := make([]string, 0, len(r.Errors))
		for code := range r.Errors {
			codes = append(codes, code)
		}
		sort.Strings(codes)
		counts := make([]string, 0, len(codes))
		for _, code := range codes {
			counts = append(counts, fmt.Sprintf("%s %d", code, r.Errors[code]))
		}
		fmt.Fprintf(w, "\n%s errors by code: %s", r.Protocol, strings.Join(counts, ", "))
	}
	if !c.NewConnectionPerCall && len(results) > 0 {
		fmt.Fprintf(w, "\nconnections: %d per protocol, opened before the measured calls; "+
			"TLS handshakes during them: %d\n", results[0].Connections, handshakesDuring(results))
	} else {
		fmt.Fprintln(w)
	}
}

func handshakesDuring(results []*client.BenchResult) int64 {
	var n int64
	for _, r := range results {
		n += r.Handshakes
	}
	return n
}

// latency prints a duration to three significant digits in the unit that
// suits it.
func latency(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

// benchJSON is the line --json prints per protocol. Latencies are in
// microseconds, of successful calls.
type benchJSON struct {
	Protocol       string           `json:"protocol"`
	Calls          int64            `json:"calls"`
	Errors         map[string]int64 `json:"errors"`
	Seconds        float64          `json:"seconds"`
	CallsPerSecond float64          `json:"callsPerSecond"`
	LatencyMicros  map[string]int64 `json:"latencyMicros"`
	Concurrency    int              `json:"concurrency"`
	Connections    int              `json:"connections"`
	Rate           float64          `json:"rate"`
	MessageSize    int              `json:"messageSize"`
	Handshakes     int64            `json:"handshakes"`
	Resumed        int64            `json:"resumed"`
}

func (c *benchCmd) printJSON(w io.Writer, r *client.BenchResult) error {
	line, err := json.Marshal(benchJSON{
		Protocol:       string(r.Protocol),
		Calls:          r.Calls,
		Errors:         r.Errors,
		Seconds:        r.Elapsed.Seconds(),
		CallsPerSecond: r.PerSecond(),
		LatencyMicros: map[string]int64{
			"p50":  r.Percentile(50).Microseconds(),
			"p90":  r.Percentile(90).Microseconds(),
			"p99":  r.Percentile(99).Microseconds(),
			"max":  r.Max().Microseconds(),
			"mean": r.Mean().Microseconds(),
		},
		Concurrency: c.Concurrency,
		Connections: r.Connections,
		Rate:        c.Rate,
		MessageSize: c.MessageSize,
		Handshakes:  r.Handshakes,
		Resumed:     r.Resumed,
	})
	if err != nil {
		return fmt.Errorf("encoding %s result: %w", r.Protocol, err)
	}
	fmt.Fprintln(w, string(line))
	return nil
}

// benchBar is the progress bar of one protocol's run, drawn on a terminal
// only: in a pipe or a log it would be noise.
type benchBar struct {
	bar      *progressbar.ProgressBar
	byTime   bool
	protocol string
}

func newBenchBar(w io.Writer, protocol string, duration time.Duration, requests int64) *benchBar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &benchBar{}
	}
	// Whichever limit comes first ends the run; the bar follows the time
	// when there is one, as it is the limit known in advance.
	total, byTime := requests, duration > 0
	if byTime {
		total = duration.Milliseconds()
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(protocol),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return &benchBar{bar: bar, byTime: byTime, protocol: protocol}
}

func (b *benchBar) update(p client.Progress) {
	if b.bar == nil {
		return
	}
	b.bar.Describe(fmt.Sprintf("%-8s %8d calls %6d errors", b.protocol, p.Calls, p.Errors))
	if b.byTime {
		_ = b.bar.Set64(min(p.Elapsed.Milliseconds(), b.bar.GetMax64()))
	} else {
		_ = b.bar.Set64(min(p.Calls, b.bar.GetMax64()))
	}
}

func (b *benchBar) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
	}
}
