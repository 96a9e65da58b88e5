package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
)

// defaultKeyType is the key type of every comparison but the key types'
// own: echoloop's default, and the cheapest handshake of the common ones.
const defaultKeyType = pki.KeyECDSAP256

// keySet is a PKI of one key type, written to a directory as
// `echoloop pki init` writes it.
type keySet struct {
	keyType    pki.KeyType
	dir        string
	clientCert string // file names in dir
	clientKey  string
}

// series is one side of a comparison: a server, driven one way, measured
// once per round.
type series struct {
	label   string
	samples []sample
}

// suiteRun is the state of one run of the suite.
type suiteRun struct {
	cfg     suiteConfig
	dir     string // temporary: certificates, server logs
	started time.Time
	keys    map[pki.KeyType]keySet
	results results
}

// results is everything the report shows.
type results struct {
	grpc       []*series                     // echoloop, grpc-go, grpc-servehttp; grpc-go client
	protocols  map[client.Protocol][]*series // per protocol: echoloop, connect-go
	openLoop   []*series                     // echoloop, grpc-go; grpc-go client at a fixed rate
	full       []*series                     // echoloop, crypto-tls, connect-go: full handshakes
	resumed    []*series                     // echoloop, crypto-tls, connect-go: resumed handshakes
	bound      []cryptoCost                  // the default key type's, once per round
	keys       []keyResult
	identity   []*series // echoloop: plain client certificate, then one with many SANs
	manySANs   int
	idle       []idleResult
	machine    machine
	elapsed    time.Duration
	curve      string
	loadBefore string
	loadAfter  string
}

// keyResult is one key type's full handshakes on echoloop and their crypto.
type keyResult struct {
	keyType pki.KeyType
	full    *series
	bound   cryptoCost
}

func runSuite(ctx context.Context, cfg suiteConfig) (failed int, err error) {
	dir, err := os.MkdirTemp("", "echoloop-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	run := &suiteRun{cfg: cfg, dir: dir, started: time.Now(), keys: map[pki.KeyType]keySet{}}
	run.results.machine = describeMachine()
	run.results.loadBefore = loadAverage()
	run.logf("machine: %s; servers' logs and certificates in %s", run.results.machine.summary(), dir)

	steps := []struct {
		section string
		run     func(context.Context) error
	}{
		{"grpc", run.grpcSection},
		{"protocols", run.protocolSection},
		{"openloop", run.openLoopSection},
		{"handshakes", run.handshakeSection},
		{"keys", run.keySection},
		{"identity", run.identitySection},
		{"idle", run.idleSection},
	}
	for _, step := range steps {
		if !cfg.wants(step.section) {
			continue
		}
		run.logf("== %s", step.section)
		if err := step.run(ctx); err != nil {
			return 0, fmt.Errorf("%s: %w", step.section, err)
		}
	}
	run.results.elapsed = time.Since(run.started)
	run.results.loadAfter = loadAverage()

	report, verdicts := run.report()
	for _, v := range verdicts {
		fmt.Println(v.line())
		if !v.pass {
			failed++
		}
	}
	fmt.Printf("%d of %d budget lines pass; the suite took %s\n", len(verdicts)-failed, len(verdicts),
		run.results.elapsed.Round(time.Second))
	if cfg.out == "-" {
		fmt.Print(report)
		return failed, nil
	}
	if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil { //nolint:gosec // G306: a document for anyone to read
		return failed, fmt.Errorf("writing the report: %w", err)
	}
	run.logf("wrote %s", cfg.out)
	return failed, nil
}

// logf tells the person waiting how far the suite has got.
func (run *suiteRun) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%4.0fs] %s\n", time.Since(run.started).Seconds(), fmt.Sprintf(format, args...))
}

// keySet returns the PKI of a key type, making it on first use.
func (run *suiteRun) keySet(kt pki.KeyType) (keySet, error) {
	if keys, ok := run.keys[kt]; ok {
		return keys, nil
	}
	dir := filepath.Join(run.dir, string(kt))
	made, err := pki.Init(pki.InitConfig{Dir: dir, KeyType: kt, ClientName: "bench-client"})
	if err != nil {
		return keySet{}, fmt.Errorf("making a %s PKI: %w", kt, err)
	}
	keys := keySet{keyType: kt, dir: dir, clientCert: pki.ClientCertFile, clientKey: pki.ClientKeyFile}
	run.keys[kt] = keys

	if kt == defaultKeyType {
		// A second client certificate, for the identity check: one whose
		// identity costs far more to build than the first's.
		var sans []string
		for i := range manySANs / 2 {
			sans = append(sans, fmt.Sprintf("spiffe://bench.example/workload/%d", i),
				fmt.Sprintf("10.%d.%d.%d", i/65536%256, i/256%256, i%256))
		}
		many, err := made.CA.IssueClient("bench-client-many-sans", pki.WithSANs(sans...))
		if err != nil {
			return keySet{}, err
		}
		key, err := many.KeyPEM()
		if err != nil {
			return keySet{}, err
		}
		if err := pki.WriteFile(filepath.Join(dir, manySANsCert), many.CertificatePEM(), pki.CertFileMode); err != nil {
			return keySet{}, err
		}
		if err := pki.WriteFile(filepath.Join(dir, manySANsKey), key, pki.KeyFileMode); err != nil {
			return keySet{}, err
		}
	}
	return keys, nil
}

// The identity check's client certificate.
const (
	manySANs     = 64
	manySANsCert = "client-many-sans.crt"
	manySANsKey  = "client-many-sans.key"
)

// side is one server, and how it is driven, in a comparison.
type side struct {
	label string
	proc  *serverProc
	drive driver
}

// compare measures the sides in turn, A B A B, for the configured number
// of rounds, after one unmeasured warm-up interval each.
func (run *suiteRun) compare(ctx context.Context, name string, warmUp []driver, sides ...side) ([]*series, error) {
	out := make([]*series, len(sides))
	for i, s := range sides {
		out[i] = &series{label: s.label}
		if warmUp != nil && warmUp[i] != nil {
			if _, err := warmUp[i](ctx, s.proc.addr); err != nil {
				return nil, fmt.Errorf("warming up %s: %w", s.label, err)
			}
		}
	}
	for round := range run.cfg.pairs {
		for i, s := range sides {
			sm, err := measure(ctx, s.proc, s.drive)
			if err != nil {
				return nil, err
			}
			out[i].samples = append(out[i].samples, sm)
		}
		run.logf("%s: round %d of %d: %s", name, round+1, run.cfg.pairs, roundSummary(out, round))
	}
	return out, nil
}

func roundSummary(all []*series, round int) string {
	var s string
	for i, ser := range all {
		if i > 0 {
			s += ", "
		}
		sm := ser.samples[round]
		s += fmt.Sprintf("%s %.0f/s %.1fµs CPU", ser.label, sm.perSecond, micros(sm.cpu))
		if errs := sumErrors(sm.errors); errs > 0 {
			s += fmt.Sprintf(" (%d ERRORS %v)", errs, sm.errors)
		}
	}
	return s
}

func sumErrors(errs map[string]int64) int64 {
	var n int64
	for _, c := range errs {
		n += c
	}
	return n
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// warmUp is the length of the unmeasured interval before a comparison's
// rounds: enough to open connections and fill pools, at most a second.
func (run *suiteRun) warmUp(d time.Duration) time.Duration { return min(d, time.Second) }

// servers starts one server per kind, all with the same key set.
func (run *suiteRun) servers(keys keySet, kinds ...string) ([]*serverProc, func(), error) {
	var procs []*serverProc
	stop := func() {
		for _, p := range procs {
			p.stop()
		}
	}
	for _, kind := range kinds {
		p, err := startServer(run, kind, keys)
		if err != nil {
			stop()
			return nil, nil, err
		}
		procs = append(procs, p)
	}
	return procs, stop, nil
}

// grpcSection: echoloop's gRPC path, a native grpc-go server and grpc-go's
// ServeHTTP, all under the same grpc-go client.
func (run *suiteRun) grpcSection(ctx context.Context) error {
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		return err
	}
	procs, stop, err := run.servers(keys, kindEcholoop, kindGRPC, kindGRPCServeHTTP)
	if err != nil {
		return err
	}
	defer stop()

	cfg := run.cfg
	drive := grpcClientDriver(cfg, keys, cfg.duration, 0, cfg.concurrency)
	warm := grpcClientDriver(cfg, keys, run.warmUp(cfg.duration), 0, cfg.concurrency)
	sides := make([]side, len(procs))
	for i, p := range procs {
		sides[i] = side{label: p.label, proc: p, drive: drive}
	}
	run.results.grpc, err = run.compare(ctx, "grpc", []driver{warm, warm, warm}, sides...)
	return err
}

// protocolSection: each protocol on echoloop against a bare connect-go
// handler, with echoloop's own client.
func (run *suiteRun) protocolSection(ctx context.Context) error {
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		return err
	}
	procs, stop, err := run.servers(keys, kindEcholoop, kindConnect)
	if err != nil {
		return err
	}
	defer stop()

	// One round measures every protocol on both servers, so that each
	// echoloop ÷ connect-go pair is back to back and each protocol's
	// ratio to the gRPC path is taken within the same half minute.
	cfg := run.cfg
	var sides []side
	var warm []driver
	for _, p := range client.Protocols() {
		drive := echoloopClientDriver(cfg, keys, p, cfg.duration)
		short := echoloopClientDriver(cfg, keys, p, run.warmUp(cfg.duration))
		sides = append(sides,
			side{label: kindEcholoop + ", " + string(p), proc: procs[0], drive: drive},
			side{label: kindConnect + ", " + string(p), proc: procs[1], drive: drive})
		warm = append(warm, short, short)
	}
	got, err := run.compare(ctx, "protocols", warm, sides...)
	if err != nil {
		return err
	}
	run.results.protocols = map[client.Protocol][]*series{}
	for i, p := range client.Protocols() {
		run.results.protocols[p] = got[2*i : 2*i+2]
	}
	return nil
}

// openLoopSection: latency at a fixed rate, echoloop against grpc-go.
func (run *suiteRun) openLoopSection(ctx context.Context) error {
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		return err
	}
	procs, stop, err := run.servers(keys, kindEcholoop, kindGRPC)
	if err != nil {
		return err
	}
	defer stop()

	cfg := run.cfg
	// Enough workers that the client is never what holds a call back.
	inFlight := max(cfg.concurrency, 500)
	drive := grpcClientDriver(cfg, keys, cfg.duration, cfg.rate, inFlight)
	warm := grpcClientDriver(cfg, keys, run.warmUp(cfg.duration), cfg.rate, inFlight)
	run.results.openLoop, err = run.compare(ctx, "open loop", []driver{warm, warm},
		side{label: kindEcholoop, proc: procs[0], drive: drive},
		side{label: kindGRPC, proc: procs[1], drive: drive})
	return err
}

// handshakeSection: full and resumed handshakes on echoloop and on a bare
// crypto/tls listener, and the cost of the handshake's cryptography alone.
func (run *suiteRun) handshakeSection(ctx context.Context) error {
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		return err
	}
	// connect-go on net/http is there for scale: it pays for the same
	// HTTP/2 server as echoloop, which a bare TLS listener does not.
	procs, stop, err := run.servers(keys, kindEcholoop, kindTLS, kindConnect)
	if err != nil {
		return err
	}
	defer stop()

	cfg := run.cfg
	warmUp := run.warmUp(cfg.handshakeDuration)
	for _, resume := range []bool{false, true} {
		drive := handshakeDriver(cfg, keys, cfg.handshakeDuration, resume)
		warm := handshakeDriver(cfg, keys, warmUp, resume)
		name := "full handshakes"
		if resume {
			name = "resumed handshakes"
		}
		got, err := run.compare(ctx, name, []driver{warm, warm, warm},
			side{label: kindEcholoop, proc: procs[0], drive: drive},
			side{label: kindTLS, proc: procs[1], drive: drive},
			side{label: kindConnect, proc: procs[2], drive: drive})
		if err != nil {
			return err
		}
		if resume {
			run.results.resumed = got
		} else {
			run.results.full = got
			run.results.curve = got[0].samples[0].curve.String()
		}
	}

	for round := range cfg.pairs {
		cost, err := measureCrypto(keys, run.results.full[0].samples[0].curve)
		if err != nil {
			return err
		}
		run.results.bound = append(run.results.bound, cost)
		run.logf("crypto bound: round %d of %d: full %.0fµs, resumed %.0fµs of server CPU", round+1, cfg.pairs,
			micros(cost.full()), micros(cost.resumed()))
	}
	return nil
}

// keyTypes are the key types whose handshakes are compared.
var keyTypes = []pki.KeyType{pki.KeyECDSAP256, pki.KeyEd25519, pki.KeyRSA2048, pki.KeyRSA4096}

// keySection: echoloop's full handshakes with each key type.
func (run *suiteRun) keySection(ctx context.Context) error {
	cfg := run.cfg
	var sides []side
	var warm []driver
	var sets []keySet
	for _, kt := range keyTypes {
		keys, err := run.keySet(kt)
		if err != nil {
			return err
		}
		procs, stop, err := run.servers(keys, kindEcholoop)
		if err != nil {
			return err
		}
		defer stop()
		sides = append(sides, side{label: string(kt), proc: procs[0],
			drive: handshakeDriver(cfg, keys, cfg.handshakeDuration, false)})
		warm = append(warm, handshakeDriver(cfg, keys, run.warmUp(cfg.handshakeDuration)/2, false))
		sets = append(sets, keys)
	}
	got, err := run.compare(ctx, "key types", warm, sides...)
	if err != nil {
		return err
	}
	for i, kt := range keyTypes {
		cost, err := measureCrypto(sets[i], got[i].samples[0].curve)
		if err != nil {
			return err
		}
		run.results.keys = append(run.results.keys, keyResult{keyType: kt, full: got[i], bound: cost})
	}
	return nil
}

// identitySection: allocations per call on echoloop with a plain client
// certificate and with one of many SANs. Identity built per call would
// allocate for each SAN on every call; built per connection, the two
// certificates cost the same per call.
func (run *suiteRun) identitySection(ctx context.Context) error {
	keys, err := run.keySet(defaultKeyType)
	if err != nil {
		return err
	}
	procs, stop, err := run.servers(keys, kindEcholoop)
	if err != nil {
		return err
	}
	defer stop()

	many := keys
	many.clientCert, many.clientKey = manySANsCert, manySANsKey
	cfg := run.cfg
	duration := max(cfg.duration/4, 300*time.Millisecond)
	plain := echoloopClientDriver(cfg, keys, client.GRPC, duration)
	heavy := echoloopClientDriver(cfg, many, client.GRPC, duration)
	run.results.manySANs = manySANs
	run.results.identity, err = run.compare(ctx, "identity", []driver{plain, heavy},
		side{label: "plain client certificate", proc: procs[0], drive: plain},
		side{label: fmt.Sprintf("client certificate with %d SANs", manySANs), proc: procs[0], drive: heavy})
	return err
}
