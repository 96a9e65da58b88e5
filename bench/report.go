package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/echoloop/echoloop/client"
)

// verdict is one budget line.
type verdict struct {
	pass   bool
	what   string
	value  string
	budget string
}

func (v verdict) line() string {
	word := "PASS"
	if !v.pass {
		word = "FAIL"
	}
	return fmt.Sprintf("%s  %s: %s (budget %s)", word, v.what, v.value, v.budget)
}

// budgets judges every budget whose section ran.
func (r *results) budgets() []verdict {
	var out []verdict
	atMost := func(what string, s spread, limit float64) {
		out = append(out, verdict{pass: s.n > 0 && s.median <= limit, what: what, value: s.String(),
			budget: fmt.Sprintf("≤ %.2f×", limit)})
	}

	for _, p := range client.Protocols() {
		if got := r.protocols[p]; got != nil {
			atMost(fmt.Sprintf("server CPU per call, echoloop ÷ bare connect-go, %s", p),
				ratio(got[0], got[1], cpuPerCall), 1.10)
		}
	}
	for _, h := range []struct {
		name string
		got  []*series
	}{{"full", r.full}, {"resumed", r.resumed}} {
		if h.got == nil {
			continue
		}
		s := ratio(h.got[0], h.got[1], capacity)
		out = append(out, verdict{pass: s.median >= 0.90, budget: "≥ 0.90×", value: s.String(),
			what: fmt.Sprintf("%s handshakes per second of server CPU, echoloop ÷ bare crypto/tls", h.name)})
	}
	if r.identity != nil {
		extra := r.identity[1].median(allocsPerCall) - r.identity[0].median(allocsPerCall)
		// Built per call, identity would add an allocation per URI and IP
		// SAN to every call; a quarter of that leaves room for what a
		// larger answer costs to write.
		out = append(out, verdict{pass: extra < float64(r.manySANs)/4,
			budget: fmt.Sprintf("< %d; built per call it would be ≥ %d", r.manySANs/4, r.manySANs),
			value:  fmt.Sprintf("%+.1f", extra),
			what: fmt.Sprintf("identity once per connection: allocations per call added by a client "+
				"certificate with %d SANs", r.manySANs)})
	}
	if r.grpc != nil {
		atMost("server CPU per call, echoloop gRPC ÷ native grpc-go", ratio(r.grpc[0], r.grpc[1], cpuPerCall), 2.3)
		s := ratio(r.grpc[0], r.grpc[2], cpuPerCall)
		out = append(out, verdict{pass: s.median < 1, what: "server CPU per call, echoloop gRPC ÷ grpc-go ServeHTTP",
			value: s.String(), budget: "< 1.00×"})
	}
	if grpc := r.protocols[client.GRPC]; grpc != nil {
		for _, b := range []struct {
			p     client.Protocol
			limit float64
		}{{client.Connect, 1.15}, {client.HTTP, 1.30}, {client.GRPCWeb, 1.65}} {
			atMost(fmt.Sprintf("server CPU per call on echoloop, %s ÷ gRPC", b.p),
				ratio(r.protocols[b.p][0], grpc[0], cpuPerCall), b.limit)
		}
	}
	for _, idle := range r.idle {
		if idle.server != kindEcholoop {
			continue
		}
		for _, point := range idle.points {
			out = append(out, verdict{pass: point.goMemory <= 64<<10, budget: "≤ 64 KiB",
				value: fmt.Sprintf("%.1f KiB", point.goMemory/1024),
				what:  fmt.Sprintf("memory per idle mTLS connection on echoloop, at %d", point.conns)})
		}
	}
	return out
}

// report renders BENCHMARKS.md.
func (run *suiteRun) report() (string, []verdict) {
	r := &run.results
	cfg := run.cfg
	verdicts := r.budgets()
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	intro := &strings.Builder{}
	wi := func(format string, args ...any) { fmt.Fprintf(intro, format, args...) }
	wi("# Benchmarks\n\n")
	wi("What echoloop's one port costs, measured side by side with a native grpc-go server, grpc-go's\n")
	wi("`ServeHTTP` on `net/http`, a bare connect-go handler and a bare `crypto/tls` listener, all in one\n")
	wi("run. This file is written by `go tool task bench` (`go run ./bench`); do not edit it by hand:\n")
	wi("the prose lives in `bench/report.go`.\n\n")
	wi("Run on %s: %s; %d cores, %s of memory, %s, %s. The suite took %s. Load average\n",
		r.machine.date, r.machine.cpu, r.machine.cores, r.machine.memory, r.machine.kernel, r.machine.goVer,
		r.elapsed.Round(time.Second))
	wi("(1, 5, 15 minutes) %s before and %s after: other work on the machine moves absolute figures;\n",
		r.loadBefore, r.loadAfter)
	wi("the ratios, each taken within one round, are what to read.\n\n")

	b.WriteString(reflow(intro.String(), 96))

	w("## Budgets\n\n")
	w("Each line is the median of the per-round ratios, with the least and greatest in brackets.\n\n")
	w("```\n")
	for _, v := range verdicts {
		w("%s\n", v.line())
	}
	failed := 0
	for _, v := range verdicts {
		if !v.pass {
			failed++
		}
	}
	w("```\n\n%d of %d budget lines pass.", len(verdicts)-failed, len(verdicts))
	if failed > 0 {
		w(" Why the others fail, and what would change them, is under [Where the time goes](#where-the-time-goes).")
	}
	w("\n\n")

	run.writeMethod(&b)
	if r.grpc != nil {
		w("## 1. gRPC: echoloop against grpc-go\n\n")
		w("The same grpc-go client (`grpc.NewClient`, `credentials.NewTLS` with echoloop's client TLS\n")
		w("settings), %d calls in flight on %d connection, %d-byte messages, %s per interval.\n\n",
			cfg.concurrency, cfg.connections, cfg.messageSize, cfg.duration)
		writeSeriesTable(&b, r.grpc)
		w("| ratio (per round) | server CPU per call | calls/s | p99 |\n| --- | --- | --- | --- |\n")
		for _, pair := range [][2]int{{0, 1}, {2, 1}, {0, 2}} {
			num, den := r.grpc[pair[0]], r.grpc[pair[1]]
			w("| %s ÷ %s | %s | %s | %s |\n", num.label, den.label, ratio(num, den, cpuPerCall),
				ratio(num, den, callsPerSec), ratio(num, den, p99))
		}
		w("\n")
	}
	if r.protocols != nil {
		w("## 2. echoloop against a bare connect-go handler, per protocol\n\n")
		w("echoloop's own client (`echoloop bench`: connect-go underneath, one connection pool per\n")
		w("protocol), %d calls in flight, %d-byte messages, %s per interval. The difference is the cost\n",
			cfg.concurrency, cfg.messageSize, cfg.duration)
		w("of everything echoloop adds: identity, policy, the access log, metrics, the protocol's name,\n")
		w("and for the plain route its mapping onto the Connect call. One round measures every protocol\n")
		w("on both servers in turn.\n\n")
		var all []*series
		for _, p := range client.Protocols() {
			all = append(all, r.protocols[p]...)
		}
		writeSeriesTable(&b, all)
		w("| protocol | server CPU per call, echoloop ÷ connect-go | calls/s | allocations per call | writes per call | p99 |\n")
		w("| --- | --- | --- | --- | --- | --- |\n")
		for _, p := range client.Protocols() {
			e, c := r.protocols[p][0], r.protocols[p][1]
			w("| %s | %s | %s | %s | %s | %s |\n", p, ratio(e, c, cpuPerCall), ratio(e, c, callsPerSec),
				ratio(e, c, allocsPerCall), ratio(e, c, writesPerCall), ratio(e, c, p99))
		}
		w("\n## 3. Protocol parity on echoloop\n\n")
		w("The same runs as above: each protocol's echoloop figures over the gRPC path's of the same round.\n\n")
		w("| protocol | server CPU per call ÷ gRPC | calls/s ÷ gRPC | p99 ÷ gRPC |\n| --- | --- | --- | --- |\n")
		grpc := r.protocols[client.GRPC][0]
		for _, p := range client.Protocols() {
			e := r.protocols[p][0]
			w("| %s | %s | %s | %s |\n", p, ratio(e, grpc, cpuPerCall), ratio(e, grpc, callsPerSec), ratio(e, grpc, p99))
		}
		w("\n")
	}
	if r.full != nil {
		run.writeHandshakes(&b)
	}
	if r.identity != nil {
		w("### Identity, once per connection\n\n")
		w("gRPC calls on echoloop with the suite's client certificate, then with one carrying %d SANs\n", r.manySANs)
		w("(half URIs, half IP addresses, each of which costs an allocation to put into the answer's\n")
		w("`peer`). Built per call, the second would cost at least %d more allocations per call. Its CPU\n", r.manySANs)
		w("per call is higher all the same: every answer carries the %d SANs, and is that much longer to\n", r.manySANs)
		w("encode and write.\n\n")
		writeSeriesTable(&b, r.identity)
	}
	if r.idle != nil {
		run.writeIdle(&b)
	}
	if r.openLoop != nil {
		w("## 6. Open-loop latency against grpc-go\n\n")
		w("The grpc-go client starts %.0f calls a second whatever the answers (up to 500 in flight);\n", cfg.rate)
		w("each call's latency counts from when it was due, so a server that falls behind shows it.\n\n")
		w("| server | calls/s | p50 | p90 | p99 | max | server CPU per call |\n| --- | --- | --- | --- | --- | --- | --- |\n")
		for _, s := range r.openLoop {
			w("| %s | %.0f | %s | %s | %s | %s | %.1f µs |\n", s.label, s.median(callsPerSec),
				us(s.median(p50)), us(s.median(p90)), us(s.median(p99)), us(s.median(maxLatency)), s.median(cpuPerCall))
		}
		e, g := r.openLoop[0], r.openLoop[1]
		w("\nPer round, echoloop ÷ grpc-go: p50 %s, p90 %s, p99 %s.\n\n", ratio(e, g, p50), ratio(e, g, p90),
			ratio(e, g, p99))
	}
	writeAnalysis(&b, r)
	w("## Running it\n\n")
	w("```sh\n")
	w("go tool task bench                         # this file, in about 10 minutes\n")
	w("go run ./bench -quick -out -               # a short run, to check that the suite works\n")
	w("go run ./bench -only grpc,protocols -profile /tmp/prof   # some sections, with a CPU profile per server\n")
	w("go tool pprof -top bin/bench /tmp/prof/echoloop.pprof\n")
	w("go test -run '^$' -bench . -benchmem ./server/   # the hot path, with allocations per operation\n")
	w("```\n\n")
	w("This run: `-pairs %d -duration %s -handshake-duration %s -concurrency %d -handshake-concurrency %d",
		cfg.pairs, cfg.duration, cfg.handshakeDuration, cfg.concurrency, cfg.handshakeConcurrency)
	w(" -connections %d -message-size %d -rate %.0f -idle %s`.\n", cfg.connections, cfg.messageSize, cfg.rate,
		joinInts(cfg.idle))
	return b.String(), verdicts
}

func (run *suiteRun) writeMethod(b *strings.Builder) {
	cfg := run.cfg
	fmt.Fprintf(b, `## Method

- **One process per server.** Each server under test is this program started again in a server
  role, on a loopback port of its own, with the same certificates (ECDSA P-256 unless said
  otherwise: CA, server and client made as `+"`echoloop pki init`"+` makes them). Before and after
  each measured interval the suite asks the server, over its standard input and output, for its
  own counters: CPU from `+"`getrusage(RUSAGE_SELF)`"+`, allocations from `+"`runtime.MemStats`"+`,
  write and read system calls from `+"`/proc/self/io`"+` (`+"`syscw`, `syscr`"+`). Per call means
  divided by the calls that ended in the interval. The load generator runs in the suite's own
  process, on the same %d cores.
- **A B A B.** The servers of a comparison are measured in turn, each for one interval, for %d
  rounds, after one unmeasured warm-up interval each. A ratio is taken within each round and the
  tables give the median of those ratios with the least and greatest.
- **The servers.**
  - *echoloop*: `+"`server.New`"+` with everything on, as `+"`echoloop serve`"+` runs it: credentials
    read from files and watched, identity and policy decided once per connection, a JSON access
    log line per call written to a file in batches, Prometheus metrics, the plain route mapped
    onto the Connect handler. Two limits differ from serve's defaults, for the idle count only:
    an idle timeout of an hour and room for 40,000 connections.
  - *grpc-go*: `+"`grpc.NewServer`"+` with `+"`credentials.NewTLS`"+` on its own listener; the Echo
    method registered by hand with a `+"`grpc.ServiceDesc`"+` (generated grpc-go code would serve the
    same, at the price of a second generator in the project).
  - *grpc-servehttp*: the same grpc-go server's `+"`ServeHTTP`"+` on `+"`net/http`"+`, with HTTP/2 from
    `+"`x/net/http2`"+` configured as echoloop configures it.
  - *connect-go*: connect-go's generated handler on the same `+"`net/http`"+` set-up, and nothing
    else but two choices that decide the bytes on the wire: answers under 1 KiB go uncompressed
    (connect-go's default gzips every answer), and JSON shows empty fields, as echoloop's
    contract does. The plain route is answered by connect-go's own JSON unary handler under the
    other path, with the deadline moved from `+"`X-Server-Timeout`"+` to the header connect-go reads.
  - *crypto-tls*: a `+"`crypto/tls`"+` listener that completes the handshake, writes an empty
    HTTP/2 SETTINGS frame (an HTTP/2 server's first bytes) and waits for the client to hang up.

  Every server has echoloop's TLS settings: TLS 1.3, a verified client certificate required,
  ALPN h2 and http/1.1. The baselines answer with the same `+"`EchoResponse`"+` echoloop sends, peer
  included, so that the bytes on the wire match; their peer is built once at start from the
  client certificate, where echoloop builds it from each connection's verified chain.
- **The clients.** Comparisons 1 and 6 use grpc-go's client; 2, 3 and the identity check use
  echoloop's own client, as `+"`echoloop bench`"+` does; handshakes are made by a loop of
  `+"`tls.Dialer`"+` with the client's TLS settings (`+"`client.Client.TLSConfig`"+`) that reads the
  server's first bytes and hangs up, %d in flight. Every call carries a %s deadline.
- **Crypto bound.** The server's share of a handshake's cryptography, each operation timed on
  its own in the suite's process (CPU time of the thread, %d times, once per round): the
  CertificateVerify signature, the check of the client's CertificateVerify, the check of the CA's
  signature on the client certificate, and the server's side of the key exchange the handshakes
  negotiated; a resumed handshake keeps only the key exchange.

`, run.results.machine.cores, cfg.pairs, cfg.handshakeConcurrency, callTimeout, cfg.pairs)
}

func (run *suiteRun) writeHandshakes(b *strings.Builder) {
	r := &run.results
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## 4. Handshakes\n\n")
	w("New connections, %d in flight, %s per interval; the key exchange negotiated was %s.\n", run.cfg.handshakeConcurrency,
		run.cfg.handshakeDuration, r.curve)
	w("*Per core* is what one core of the server could sustain at the CPU each handshake cost it;\n")
	w("*measured* is what this machine did with client and server sharing its cores.\n\n")
	bound := func(m func(cryptoCost) time.Duration) spread {
		var v []float64
		for _, c := range r.bound {
			v = append(v, micros(m(c)))
		}
		return spreadOf(v)
	}
	fullBound := bound(cryptoCost.full)
	resumedBound := bound(cryptoCost.resumed)
	w("| handshake | server | server CPU per handshake | per core | measured | resumed | p99 |\n")
	w("| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, h := range []struct {
		name  string
		got   []*series
		bound spread
	}{{"full", r.full, fullBound}, {"resumed", r.resumed, resumedBound}} {
		for _, s := range h.got {
			var resumed, total int64
			for _, sm := range s.samples {
				resumed += sm.resumed
				total += sm.handshakes
			}
			w("| %s | %s | %.0f µs | %.0f/s | %.0f/s | %d of %d | %s |\n", h.name, s.label, s.median(cpuPerCall),
				s.median(capacity), s.median(callsPerSec), resumed, total, us(s.median(p99)))
		}
		w("| %s | crypto bound | %.0f µs | %.0f/s | | | |\n", h.name, h.bound.median, 1e6/h.bound.median)
	}
	w("\n| ratio (per round) | full | resumed |\n| --- | --- | --- |\n")
	w("| handshakes/s per core, echoloop ÷ crypto-tls | %s | %s |\n", ratio(r.full[0], r.full[1], capacity),
		ratio(r.resumed[0], r.resumed[1], capacity))
	w("| handshakes/s measured, echoloop ÷ crypto-tls | %s | %s |\n", ratio(r.full[0], r.full[1], callsPerSec),
		ratio(r.resumed[0], r.resumed[1], callsPerSec))
	w("| handshakes/s per core, echoloop ÷ connect-go | %s | %s |\n", ratio(r.full[0], r.full[2], capacity),
		ratio(r.resumed[0], r.resumed[2], capacity))
	w("| handshakes/s per core, connect-go ÷ crypto-tls | %s | %s |\n", ratio(r.full[2], r.full[1], capacity),
		ratio(r.resumed[2], r.resumed[1], capacity))
	w("| crypto bound ÷ echoloop's server CPU | %.2f | %.2f |\n\n", fullBound.median/r.full[0].median(cpuPerCall),
		resumedBound.median/r.resumed[0].median(cpuPerCall))
	if len(r.bound) > 0 {
		c := r.bound[0]
		w("The full bound, first round: signature %.0f µs, client's signature checked %.0f µs, CA's\n",
			micros(c.sign), micros(c.verify))
		w("signature checked %.0f µs, key exchange %.0f µs.\n\n", micros(c.chainVerify), micros(c.keyExchange))
	}

	if r.keys != nil {
		w("### Key types\n\n")
		w("Full handshakes on echoloop with CA, server and client keys all of one type.\n\n")
		w("| key type | server CPU per handshake | ÷ %s | per core | measured | crypto bound | bound ÷ CPU |\n", defaultKeyType)
		w("| --- | --- | --- | --- | --- | --- | --- |\n")
		base := r.keys[0].full
		for _, k := range r.keys {
			w("| %s | %.0f µs | %s | %.0f/s | %.0f/s | %.0f µs | %.2f |\n", k.keyType, k.full.median(cpuPerCall),
				ratio(k.full, base, cpuPerCall), k.full.median(capacity), k.full.median(callsPerSec),
				micros(k.bound.full()), micros(k.bound.full())/k.full.median(cpuPerCall))
		}
		w("\n")
	}
}

func (run *suiteRun) writeIdle(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## 5. Idle connections\n\n")
	w("Connections opened one after another (eight at a time, from eight loopback source addresses),\n")
	w("each making one gRPC call and then going quiet; measured in the server after a garbage\n")
	w("collection, against the same server before the first was opened. *Go heap and stacks* is\n")
	w("`HeapInuse + StackInuse`, the budget's figure; *resident* is the change in RSS, which also counts\n")
	w("memory the runtime freed but has not yet handed back. Kernel socket buffers are in neither.\n\n")
	w("| server | connections | Go heap and stacks per connection | resident per connection | goroutines per connection |\n")
	w("| --- | --- | --- | --- | --- |\n")
	for _, idle := range run.results.idle {
		for _, p := range idle.points {
			w("| %s | %d | %.1f KiB | %.1f KiB | %.2f |\n", idle.server, p.conns, p.goMemory/1024, p.rss/1024, p.goroutines)
		}
	}
	w("\n")
}

// writeSeriesTable shows each series' medians.
func writeSeriesTable(b *strings.Builder, all []*series) {
	fmt.Fprintf(b, "| server | calls/s | server CPU per call | allocations per call | bytes allocated per call "+
		"| writes per call | reads per call | p50 | p99 | errors |\n")
	fmt.Fprintf(b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	reads := func(s sample) float64 { return s.reads }
	for _, s := range all {
		fmt.Fprintf(b, "| %s | %.0f | %.1f µs | %.1f | %.0f | %.2f | %.2f | %s | %s | %d |\n", s.label,
			s.median(callsPerSec), s.median(cpuPerCall), s.median(allocsPerCall), s.median(bytesPerCall),
			s.median(writesPerCall), s.median(reads), us(s.median(p50)), us(s.median(p99)), s.errorsOf())
	}
	fmt.Fprintln(b)
}

// us prints microseconds in the unit that suits them.
func us(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.2f ms", v/1e3)
	}
	return fmt.Sprintf("%.0f µs", v)
}

func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ",")
}

// writeAnalysis is the part a reader acts on: where echoloop's time goes,
// and what to choose. Figures come from this run; what the profiles showed
// (go run ./bench -profile DIR) is said as such.
func writeAnalysis(out *strings.Builder, r *results) {
	var b strings.Builder
	defer func() { out.WriteString(reflow(b.String(), 96)) }()
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("## Where the time goes\n\n")

	if r.grpc != nil {
		e, g, h := r.grpc[0], r.grpc[1], r.grpc[2]
		w("**A gRPC call.** echoloop spends %.0f µs of server CPU on a call that native grpc-go answers in\n",
			e.median(cpuPerCall))
		w("%.0f µs (%s). The difference is the HTTP/2 server, not echoloop's additions: x/net/http2, which\n",
			g.median(cpuPerCall), ratio(e, g, cpuPerCall))
		w("connect-go and grpc-go's `ServeHTTP` both run on, gives each call a goroutine of its own, moves\n")
		w("every frame through its serve loop over channels and allocates more per call (%.0f allocations\n",
			e.median(allocsPerCall))
		w("against grpc-go's %.0f). Left to itself it also flushes after nearly every answer: grpc-go's\n",
			g.median(allocsPerCall))
		w("`ServeHTTP` makes %.2f write system calls per call where grpc-go's own transport makes %.2f, and\n",
			h.median(writesPerCall), g.median(writesPerCall))
		w("on loopback a write also carries the receiving side's TCP work, which makes it the largest\n")
		w("single cost of a call in the profiles. echoloop gathers what the HTTP/2 server writes while a\n")
		w("write is under way, or until the goroutines already runnable have had a turn, as grpc-go's\n")
		w("writer does (`server/coalesce.go`): %.2f writes per call, and %s the CPU of `ServeHTTP`.\n",
			e.median(writesPerCall), ratio(e, h, cpuPerCall))
		w("Closing the rest of the gap would take an HTTP/2 server with grpc-go's design (one writer loop,\n")
		w("no goroutine per stream), that is, grpc-go's own transport, which serves gRPC alone.\n\n")
	}
	if got := r.protocols; got != nil {
		w("**echoloop against bare connect-go.** What echoloop adds to each call — reading the\n")
		w("connection's identity and policy decision (made once, at the connection's start), the protocol's\n")
		w("name, an access log line, four metric updates, the recorder that learns the code the client\n")
		w("got — comes to a few microseconds (`BenchmarkHandler` in `server/`, and the profiles: the\n")
		w("access log line was the largest part, about 7 %% of a call's CPU before it was built by hand and\n")
		w("written in batches). It is more than paid for by the coalesced writes, which the bare handler\n")
		w("does not have: per call, echoloop makes %.2f writes over gRPC where bare connect-go makes %.2f.\n\n",
			got[client.GRPC][0].median(writesPerCall), got[client.GRPC][1].median(writesPerCall))
		http, grpc := got[client.HTTP], got[client.GRPC]
		w("**The plain route.** It costs %s of echoloop's gRPC path, where bare connect-go's own JSON\n",
			ratio(http[0], grpc[0], cpuPerCall))
		w("call costs %s of its gRPC call. JSON is the larger part: protojson encodes the answer, peer\n",
			ratio(http[1], grpc[1], cpuPerCall))
		w("and timestamps included, several times slower than protobuf: in process\n")
		w("(`BenchmarkHandler` in `server/`) a Connect JSON call costs about 2× a protobuf one. The rest is\n")
		w("the transcoder: `POST /v1/echo` goes through connectrpc.com/vanguard, which matches the rule,\n")
		w("validates the request, rewrites its headers into a Connect call to the same handler and back,\n")
		w("and buffers the answer to translate its status; told that the handler speaks JSON\n")
		w("(`WithTargetCodecs`), it passes both bodies through instead of re-encoding them as protobuf,\n")
		w("which took about a tenth off the route. In process the route still costs about 1.25× the\n")
		w("Connect JSON call it becomes. Against bare connect-go's JSON call echoloop is at %s.\n",
			ratio(http[0], http[1], cpuPerCall))
		w("echoloop keeps the transcoder on purpose: REST mapping is a library's job, and the same rule\n")
		w("set grows to other routes and verbs without new code. A hand-written rewrite of the path onto\n")
		w("the Connect handler measured about 1.15× bare connect-go's JSON call in earlier runs of this\n")
		w("suite; cheaper still would be encoding the peer's part of the answer once per connection,\n")
		w("which protojson cannot do and a hand-written encoder could.\n\n")
	}
	if r.full != nil {
		e, t := r.full[0], r.full[1]
		bound := spreadOf(mapBound(r.bound, cryptoCost.full)).median
		w("**Handshakes.** A full mutual-TLS handshake costs echoloop %.0f µs of server CPU; its\n", e.median(cpuPerCall))
		w("cryptography alone, %.0f µs (%.0f %%). The key exchange is the largest part of that bound: Go's default,\n",
			bound, 100*bound/e.median(cpuPerCall))
		w("%s, is a hybrid with ML-KEM-768, which protects the session against a future quantum computer;\n", r.curve)
		w("it takes %.0f µs of the %.0f. ", spreadOf(mapBound(r.bound, func(c cryptoCost) time.Duration {
			return c.keyExchange
		})).median, bound)
		w("The rest of a handshake is crypto/tls's own work and the kernel's (messages,\n")
		w("transcript hashes, parsing and chain building, record encryption, three socket writes), which\n")
		w("the bare `crypto/tls` listener pays too: %.0f µs. What echoloop adds per connection is an\n", t.median(cpuPerCall))
		w("HTTP/2 server connection (x/net's: two goroutines, two timers, the SETTINGS and WINDOW_UPDATE\n")
		w("it writes first), the listener that logs refusals (a goroutine per handshake), and the identity\n")
		w("and policy decision. connect-go on the same HTTP/2 server pays the first and none of the others:\n")
		w("connect-go ÷ crypto-tls is %s in full handshakes per core, echoloop ÷ connect-go %s. The\n",
			ratio(r.full[2], t, capacity), ratio(e, r.full[2], capacity))
		w("HTTP/2 connection is a cost no HTTP/2 server skips, which only x/net could make smaller; of\n")
		w("echoloop's own share, the identity is about 8 µs (`BenchmarkPeerFromChain`), and it is needed\n")
		w("by the first call anyway. A resumed\n")
		w("handshake skips the signatures and the chain but keeps the key exchange, so it saves less than\n")
		w("one might hope (%.0f µs against %.0f), and the fixed\n", r.resumed[0].median(cpuPerCall), e.median(cpuPerCall))
		w("cost of an HTTP/2 connection weighs more on it. What would change the handshake figures: a\n")
		w("server that sets `CurvePreferences` to X25519 alone saves most of ML-KEM's share, at the price\n")
		w("of post-quantum protection; clients that keep their connections (every gRPC and HTTP/2 client\n")
		w("does by default) pay a handshake once, not per call.\n\n")
	}
	if r.idle != nil {
		w("**Idle connections.** An established HTTP/2 connection holds x/net's server connection (its\n")
		w("framer, header tables, flow-control state and write scheduler), crypto/tls's buffers and two\n")
		w("parked goroutines with their stacks; the coalescing writer keeps neither goroutine nor buffer\n")
		w("while the connection is idle.")
		for _, idle := range r.idle {
			if len(idle.points) > 0 {
				last := idle.points[len(idle.points)-1]
				w(" %s: %.0f KiB and %.0f goroutines per connection at %d.", idle.server, last.goMemory/1024,
					last.goroutines, last.conns)
			}
		}
		w("\n\n")
	}
	if r.openLoop != nil {
		w("**At a fixed rate.** CPU per call is higher in the open-loop runs than under 50 calls in flight:\n")
		w("at %.0f calls a second calls seldom overlap, so each pays alone for waking the server's\n",
			r.openLoop[0].median(callsPerSec))
		w("goroutines and for its own write, on every server alike.\n\n")
	}

	w("## What to conclude\n\n")
	if r.keys != nil {
		base := r.keys[0].full
		w("- **Key type.** ECDSA P-256, echoloop's default, or Ed25519: the cheapest handshakes. RSA-2048\n")
		w("  costs %s the server CPU of P-256 per full handshake and RSA-4096 %s (see [Key types](#key-types));\n",
			ratio(r.keys[2].full, base, cpuPerCall), ratio(r.keys[3].full, base, cpuPerCall))
		w("  after the handshake the key type costs nothing.\n")
	}
	if r.protocols != nil {
		got := r.protocols
		w("- **Protocol.** On echoloop, Connect costs %s and gRPC-Web %s of the gRPC path per call:\n",
			ratio(got[client.Connect][0], got[client.GRPC][0], cpuPerCall),
			ratio(got[client.GRPCWeb][0], got[client.GRPC][0], cpuPerCall))
		w("  the binary protocols are interchangeable, so choose them by client. The plain JSON route costs\n")
		w("  %s, the price of JSON; it is for curl and scripts, not for volume.\n",
			ratio(got[client.HTTP][0], got[client.GRPC][0], cpuPerCall))
	}
	if r.grpc != nil {
		e, g, h := r.grpc[0], r.grpc[1], r.grpc[2]
		w("- **Native grpc-go or echoloop.** A native grpc-go server spends %s of echoloop's CPU per gRPC\n",
			invert(ratio(e, g, cpuPerCall)))
		w("  call. It is worth its missing protocols when gRPC is the only protocol you will ever serve and\n")
		w("  CPU per call is what you pay for (many small calls); you then give up Connect, gRPC-Web and\n")
		w("  plain HTTP on the same port (a proxy such as Envoy has to translate gRPC-Web), and the identity,\n")
		w("  logs and metrics echoloop gives every call. If you serve more than gRPC, echoloop costs %s of\n",
			ratio(e, h, cpuPerCall))
		w("  what mounting grpc-go on net/http with `ServeHTTP` costs, and it serves all four protocols.\n")
	}
	if r.openLoop != nil {
		e, g := r.openLoop[0], r.openLoop[1]
		w("- **Latency.** At a steady %.0f calls a second, echoloop's p50 is %s and p99 %s, against\n",
			e.median(callsPerSec), us(e.median(p50)), us(e.median(p99)))
		w("  grpc-go's %s and %s (per round, p99 %s). Well below saturation both answer in the time\n",
			us(g.median(p50)), us(g.median(p99)), ratio(e, g, p99))
		w("  of the machine's scheduling; the gap in CPU per call turns into latency as the load nears\n")
		w("  what the cores can carry.\n")
	}
	if r.idle != nil {
		for _, idle := range r.idle {
			if idle.server == kindEcholoop && len(idle.points) > 0 {
				last := idle.points[len(idle.points)-1]
				w("- **Connections.** An idle mTLS connection costs echoloop %.0f KiB of Go memory: %d of them\n",
					last.goMemory/1024, last.conns)
				w("  take %.0f MiB. Memory is not what limits the connections a server holds; file descriptors\n",
					last.goMemory*float64(last.conns)/(1<<20))
				w("  (`--max-connections`, the process's limit) are.\n")
			}
		}
	}
	w("- **This machine.** Client and server share %d cores and talk over loopback, where every write\n", r.machine.cores)
	w("  system call also pays for the receiving side; absolute figures here are higher, and write-bound\n")
	w("  costs weigh more, than on servers with their clients elsewhere. The ratios are what carries over.\n\n")
}

func mapBound(costs []cryptoCost, f func(cryptoCost) time.Duration) []float64 {
	out := make([]float64, len(costs))
	for i, c := range costs {
		out[i] = micros(f(c))
	}
	return out
}

// invert turns a ratio a÷b into b÷a.
func invert(s spread) spread {
	if s.n == 0 || s.min == 0 || s.max == 0 || s.median == 0 {
		return s
	}
	return spread{median: 1 / s.median, min: 1 / s.max, max: 1 / s.min, n: s.n}
}

// reflow rewraps the paragraphs and top-level bullets of text at width
// columns, so that figures put into sentences leave no ragged lines.
// Headings are kept as they are.
func reflow(text string, width int) string {
	var out strings.Builder
	for _, block := range strings.Split(strings.TrimRight(text, "\n"), "\n\n") {
		if strings.HasPrefix(block, "#") {
			out.WriteString(block + "\n\n")
			continue
		}
		var items []string
		for _, line := range strings.Split(block, "\n") {
			if strings.HasPrefix(line, "- ") || len(items) == 0 {
				items = append(items, line)
				continue
			}
			items[len(items)-1] += " " + strings.TrimSpace(line)
		}
		for _, item := range items {
			indent := ""
			if strings.HasPrefix(item, "- ") {
				indent = "  "
			}
			line := ""
			for _, word := range strings.Fields(item) {
				switch {
				case line == "":
					line = word
				case len(line)+1+len(word) > width:
					out.WriteString(line + "\n")
					line = indent + word
				default:
					line += " " + word
				}
			}
			out.WriteString(line + "\n")
		}
		out.WriteString("\n")
	}
	return out.String()
}
