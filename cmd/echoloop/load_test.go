package main

// The load test: a real `echoloop serve` process and 1,000 mTLS clients,
// each with a certificate of its own, calling it on every protocol in turn
// for 30 seconds. It passes only with no failed call and no answer that
// names anyone but its caller, and it reports what the server's memory did.
// It is long, and meaningless under the race detector, so the plain test
// run skips it; .ci/run runs it as a step of its own.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
)

// loadSetting reads a positive number from the environment, or def.
func loadSetting[T int | time.Duration](t *testing.T, name string, def T, parse func(string) (T, error)) T {
	t.Helper()
	raw := os.Getenv(name)
	if raw == "" {
		return def
	}
	v, err := parse(raw)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive value like %v", name, raw, def)
	}
	return v
}

// loadClient is one caller and what every answer to it must say.
type loadClient struct {
	name        string
	fingerprint string
	cert        *pki.Issued
}

// loadStats is what the callers saw, merged at the end.
type loadStats struct {
	mu         sync.Mutex
	calls      map[client.Protocol]int
	latencies  []time.Duration
	failures   int
	mismatches int
	examples   []string
}

func (s *loadStats) merge(calls map[client.Protocol]int, latencies []time.Duration, failures, mismatches int,
	examples []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, n := range calls {
		s.calls[p] += n
	}
	s.latencies = append(s.latencies, latencies...)
	s.failures += failures
	s.mismatches += mismatches
	for _, e := range examples {
		if len(s.examples) < 5 {
			s.examples = append(s.examples, e)
		}
	}
}

func TestLoad(t *testing.T) {
	if os.Getenv("ECHOLOOP_LOAD") == "" {
		t.Skip("set ECHOLOOP_LOAD=1 to run it: 1,000 clients for 30 s; .ci/run does, on its own and without -race")
	}
	clients := loadSetting(t, "ECHOLOOP_LOAD_CLIENTS", 1000, strconv.Atoi)
	duration := loadSetting(t, "ECHOLOOP_LOAD_DURATION", 30*time.Second, time.ParseDuration)

	// The PKI: pki init's CA and server certificate, and one client
	// certificate per caller.
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	ca, err := pki.LoadAuthority(filepath.Join(certs, pki.CACertFile), filepath.Join(certs, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	callers := make([]loadClient, clients)
	for i := range callers {
		name := fmt.Sprintf("load-%04d", i)
		cert, err := ca.IssueClient(name)
		if err != nil {
			t.Fatal(err)
		}
		callers[i] = loadClient{name: name, fingerprint: pki.Fingerprint(cert.Certificate), cert: cert}
	}

	// The server, as users run it; its log goes to a file, since an access
	// line per call would otherwise fill this process's memory.
	addr, metricsAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
	url := "https://localhost:" + strings.Split(addr, ":")[1]
	logFile, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(t.Context(), duration+2*time.Minute)
	defer cancel()
	serve := exec.CommandContext(ctx, echoloopBinary(t), "serve", "--certs", certs, "--addr", addr,
		"--metrics-addr", metricsAddr, "--log-format", "json")
	serve.Stdout, serve.Stderr = io.Discard, logFile
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill() })
	waitHealthy(t, certs, url)
	watch := watchServer(serve.Process.Pid, metricsAddr)

	// Every caller cycles through the protocols with a client of its own,
	// and starts a new one (new connections, new handshakes) every 100
	// calls, until the time is up.
	stats := &loadStats{calls: map[client.Protocol]int{}}
	var running sync.WaitGroup
	var started atomic.Int64
	end := time.Now().Add(duration)
	for _, caller := range callers {
		running.Go(func() {
			started.Add(1)
			stats.merge(callUntil(ctx, url, filepath.Join(certs, pki.CACertFile), caller, end))
		})
	}
	running.Wait()
	peaks := watch.stop()
	// The clients have closed their connections; give the server a moment
	// to see them go before reading what it holds on to.
	var after map[string]float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if after, err = readMetrics(metricsAddr); err != nil || after["echoloop_connections_open"] == 0 {
			break
		}
	}
	if err != nil {
		t.Error(err)
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v (want exit 0)", err)
	}

	// The report.
	total := 0
	for _, n := range stats.calls {
		total += n
	}
	slices.Sort(stats.latencies)
	percentile := func(p float64) time.Duration {
		if len(stats.latencies) == 0 {
			return 0
		}
		return stats.latencies[int(p*float64(len(stats.latencies)-1))].Round(100 * time.Microsecond)
	}
	const mib = 1 << 20
	t.Logf("load: %d clients, each with its own certificate, for %s against one echoloop serve", started.Load(), duration)
	t.Logf("calls: %d (%.0f/s): connect %d, grpc %d, grpc-web %d, http %d", total, float64(total)/duration.Seconds(),
		stats.calls[client.Connect], stats.calls[client.GRPC], stats.calls[client.GRPCWeb], stats.calls[client.HTTP])
	t.Logf("latency: p50 %s, p90 %s, p99 %s, max %s", percentile(0.5), percentile(0.9), percentile(0.99), percentile(1))
	t.Logf("failed calls: %d; answers naming another identity: %d", stats.failures, stats.mismatches)
	t.Logf("server, sampled %d times: peak resident memory %d MiB (VmHWM), peak Go heap in use %.0f MiB, "+
		"peak open connections %.0f", peaks.samples, peaks.rss/mib, peaks.heapInUse/mib, peaks.connections)
	t.Logf("server once the clients had gone: open connections %.0f, resident %.0f MiB, Go heap in use %.0f MiB, "+
		"goroutines %.0f", after["echoloop_connections_open"], after["process_resident_memory_bytes"]/mib,
		after["go_memstats_heap_inuse_bytes"]/mib, after["go_goroutines"])

	for _, e := range stats.examples {
		t.Error(e)
	}
	if stats.failures > 0 || stats.mismatches > 0 {
		t.Errorf("%d failed calls and %d answers with another identity, want none", stats.failures, stats.mismatches)
	}
	for _, p := range client.Protocols() {
		if stats.calls[p] < clients {
			t.Errorf("%s: %d calls, fewer than one per client", p, stats.calls[p])
		}
	}
}

// callUntil is one caller's loop; it returns what the caller saw.
func callUntil(ctx context.Context, url, caFile string, caller loadClient, end time.Time) (
	calls map[client.Protocol]int, latencies []time.Duration, failures, mismatches int, examples []string,
) {
	calls = map[client.Protocol]int{}
	fail := func(mismatch bool, format string, args ...any) {
		if mismatch {
			mismatches++
		} else {
			failures++
		}
		if len(examples) < 2 {
			examples = append(examples, caller.name+": "+fmt.Sprintf(format, args...))
		}
	}
	for seq := 0; time.Now().Before(end); {
		c, err := client.New(url, client.WithCAFile(caFile), client.WithCertificate(caller.cert.TLSCertificate()))
		if err != nil {
			fail(false, "%v", err)
			return
		}
		for range 100 / len(client.Protocols()) {
			for _, p := range client.Protocols() {
				if !time.Now().Before(end) {
					break
				}
				seq++
				message := fmt.Sprintf("%s #%d", caller.name, seq)
				callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				start := time.Now()
				resp, err := c.Echo(callCtx, p, message)
				latencies = append(latencies, time.Since(start))
				cancel()
				calls[p]++
				switch {
				case err != nil:
					fail(false, "%s: %v", p, err)
				case resp.GetPeer().GetCommonName() != caller.name ||
					resp.GetPeer().GetSha256Fingerprint() != caller.fingerprint:
					fail(true, "%s: answered as %q (%s)", p, resp.GetPeer().GetCommonName(),
						resp.GetPeer().GetSha256Fingerprint())
				case resp.GetMessage() != message || resp.GetConnection().GetProtocol() != string(p):
					fail(true, "%s: answered %q over %s, want %q", p, resp.GetMessage(),
						resp.GetConnection().GetProtocol(), message)
				}
			}
		}
		c.Close()
	}
	return calls, latencies, failures, mismatches, examples
}

// serverWatch samples the server while the load runs: its resident memory
// from /proc, and its Go heap and open connections from its metrics.
type serverWatch struct {
	done   chan struct{}
	result chan serverPeaks
}

// serverPeaks are the highest values seen.
type serverPeaks struct {
	rss         int // bytes, the kernel's high-water mark (VmHWM)
	heapInUse   float64
	connections float64
	samples     int
}

func watchServer(pid int, metricsAddr string) *serverWatch {
	w := &serverWatch{done: make(chan struct{}), result: make(chan serverPeaks, 1)}
	go func() {
		var peaks serverPeaks
		for {
			if series, err := readMetrics(metricsAddr); err == nil {
				peaks.heapInUse = max(peaks.heapInUse, series["go_memstats_heap_inuse_bytes"])
				peaks.connections = max(peaks.connections, series["echoloop_connections_open"])
				peaks.samples++
			}
			select {
			case <-w.done:
				peaks.rss = procStatus(pid, "VmHWM")
				w.result <- peaks
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *serverWatch) stop() serverPeaks {
	close(w.done)
	return <-w.result
}

// procStatus reads one "kB" field of /proc/PID/status, in bytes; 0 where
// there is no /proc.
func procStatus(pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb << 10
		}
	}
	return 0
}

// readMetrics reads every unlabelled series from the plain metrics address.
func readMetrics(metricsAddr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("reading the server's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the server's metrics: %w", err)
	}
	series := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			series[name] = v
		}
	}
	return series, nil
}
