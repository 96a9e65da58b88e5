package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// The command as users run it: a separate process, stopped by signals.

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryPath string
	binaryErr  error
)

// TestMain removes the binary echoloopBinary built, once every test is
// done with it: each build is over 20 MB. A run that panics or times out
// still leaves it behind in the system's temporary directory.
func TestMain(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		if err := os.RemoveAll(binaryDir); err != nil {
			fmt.Fprintf(os.Stderr, "removing the test build of echoloop: %v\n", err)
		}
	}
	os.Exit(code)
}

// echoloopBinary builds the command once for the tests that need a real
// process.
func echoloopBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "echoloop-bin")
		if err != nil {
			binaryErr = err
			return
		}
		binaryDir = dir
		binaryPath = filepath.Join(dir, "echoloop")
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", binaryPath, ".").
			CombinedOutput()
		if err != nil {
			binaryErr = err
			binaryPath = string(out)
		}
	})
	if binaryErr != nil {
		t.Fatalf("building echoloop: %v\n%s", binaryErr, binaryPath)
	}
	return binaryPath
}

// lockedLog collects a child's output while it runs.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestSIGTERMDrainsAndSIGHUPReloads(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	// The server's files are hard links to files in a directory of their
	// own: a write there, in place, raises no event in --certs, so only
	// SIGHUP can bring in the new certificate.
	live := t.TempDir()
	for _, name := range []string{pki.ServerCertFile, pki.ServerKeyFile} {
		if err := os.Rename(filepath.Join(certs, name), filepath.Join(live, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(live, name), filepath.Join(certs, name)); err != nil {
			t.Fatal(err)
		}
	}
	addr, metricsAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
	url := "https://localhost:" + strings.Split(addr, ":")[1]

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	logs := &lockedLog{}
	serve := exec.CommandContext(ctx, echoloopBinary(t), "serve", "--certs", certs, "--addr", addr,
		"--metrics-addr", metricsAddr, "--log-format", "json", "--drain-timeout", "20s")
	serve.Stdout, serve.Stderr = io.Discard, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill() })
	waitHealthy(t, certs, url)

	// A SIGHUP with nothing changed on disk says so.
	if err := serve.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForText(t, logs, `"msg":"certificates unchanged","server.serial":"`)

	// SIGHUP re-reads the files: the new certificate is in use at once.
	ca, err := pki.LoadAuthority(filepath.Join(certs, pki.CACertFile), filepath.Join(certs, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	next, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	key, err := next.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live, pki.ServerKeyFile), key, pki.KeyFileMode); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(live, pki.ServerCertFile), next.CertificatePEM(), pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	// Time for a watch to act, were it to see the writes (it reloads 100ms
	// after an event, and info lines reach the log within 100ms more):
	// the reload must come from the signal.
	time.Sleep(500 * time.Millisecond)
	if strings.Contains(logs.String(), `"msg":"certificates reloaded"`) {
		t.Fatalf("the new certificate was loaded before SIGHUP asked for it:\n%s", logs.String())
	}
	if err := serve.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitForText(t, logs, `"msg":"certificates reloaded","server.serial":"`+pki.SerialHex(next.Certificate)+`"`)
	if reloads := strings.Count(logs.String(), `"msg":"certificates reloaded"`); reloads != 1 {
		t.Errorf("%d reloads logged, want the one SIGHUP asked for:\n%s", reloads, logs.String())
	}

	// Calls in flight when SIGTERM arrives all complete.
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, code := runCommand(ctx, "call", "--certs", certs, "--url", url, "--protocol", "all",
			"--delay", "2s", "--timeout", "30s")
		done <- result{out, errOut, code}
	}()
	waitForInFlight(t, metricsAddr, 4)
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	got := <-done
	if got.code != exitOK || !strings.Contains(got.out, "identical on all 4 protocols") {
		t.Errorf("calls in flight during the drain: exit %d\n%s%s", got.code, got.out, got.errOut)
	}
	if err := serve.Wait(); err != nil {
		t.Errorf("serve after SIGTERM: %v (want exit 0)\n%s", err, logs.String())
	}
	for _, want := range []string{`"msg":"draining"`, `"msg":"stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("serve's log lacks %s", want)
		}
	}
}

// TestDrainThatRunsOutCutsCallsAndFails interrupts serve with SIGINT, the
// other drain signal, while a call outlasts --drain-timeout: the call is
// cut, and serve says so and exits 1 rather than reporting an interrupt.
func TestDrainThatRunsOutCutsCallsAndFails(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	addr, metricsAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
	url := "https://localhost:" + strings.Split(addr, ":")[1]

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	logs := &lockedLog{}
	serve := exec.CommandContext(ctx, echoloopBinary(t), "serve", "--certs", certs, "--addr", addr,
		"--metrics-addr", metricsAddr, "--log-format", "json", "--drain-timeout", "1s")
	serve.Stdout, serve.Stderr = io.Discard, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Process.Kill() })
	waitHealthy(t, certs, url)

	done := make(chan int, 1)
	go func() {
		_, _, code := runCommand(ctx, "call", "--certs", certs, "--url", url, "--delay", "4s", "--timeout", "30s")
		done <- code
	}()
	waitForInFlight(t, metricsAddr, 1)
	if err := serve.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}

	err := serve.Wait()
	if code := serve.ProcessState.ExitCode(); code != exitFail {
		t.Errorf("serve after a drain that ran out: %v, want exit %d\n%s", err, exitFail, logs.String())
	}
	if code := <-done; code == exitOK {
		t.Error("the call that outlasted the drain succeeded; want it cut")
	}
	out := logs.String()
	for _, want := range []string{
		`"msg":"drain timed out; calls still in flight were cut","timeout":1000000000,"calls_cut":1}`,
		"\necholoop: server: the drain timed out after 1s: 1 call was still in flight and cut\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("serve's output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "interrupted") {
		t.Errorf("serve reported an interrupt for the drain it was asked for:\n%s", out)
	}
}

// waitForText polls logs, which serve writes in batches, until they hold text.
func waitForText(t *testing.T, logs fmt.Stringer, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", text, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitForInFlight polls the plain metrics address until n calls are being
// answered.
func waitForInFlight(t *testing.T, metricsAddr string, n int) {
	t.Helper()
	want := "\necholoop_calls_in_flight " + strconv.Itoa(n) + "\n"
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw %d calls in flight", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
