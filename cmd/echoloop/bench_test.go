package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestBench(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	url := startServe(t, certs, "--certs", certs, "--log-level", "warn")
	foreign := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", foreign); code != exitOK {
		t.Fatal(errOut)
	}
	bench := func(args ...string) []string {
		return append([]string{"bench", "--url", url, "--certs", certs}, args...)
	}

	t.Run("ok/every protocol as JSON", func(t *testing.T) {
		t.Parallel()
		out, errOut, code := runCommand(t.Context(), bench("--protocol", "all", "--requests", "30",
			"--concurrency", "3", "--json")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("%d lines, want one per protocol:\n%s", len(lines), out)
		}
		for i, want := range []string{"connect", "grpc", "grpc-web", "http"} {
			var got benchJSON
			if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
				t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, lines[i])
			}
			if got.Protocol != want || got.Calls != 30 || len(got.Errors) != 0 || got.LatencyMicros["p99"] <= 0 {
				t.Errorf("line %d = %+v; want %s, 30 calls, no errors, a p99", i+1, got, want)
			}
		}
	})

	t.Run("ok/handshakes as a table", func(t *testing.T) {
		t.Parallel()
		out, errOut, code := runCommand(t.Context(), bench("--protocol", "grpc", "--requests", "8",
			"--new-connection-per-call", "--resume", "--concurrency", "2")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{"a new connection per call, resuming TLS sessions", "handshakes",
			"resumed", "p99"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		fields := strings.Fields(lastLine(out))
		if len(fields) != 10 || fields[1] != "8" || fields[8] != "8" || fields[9] != "8" {
			t.Errorf("grpc row = %q; want 8 calls, 8 handshakes, 8 resumed", lastLine(out))
		}
	})

	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"refused/resume on kept connections", bench("--resume"), exitUsage,
			"--resume needs --new-connection-per-call"},
		{"refused/connections with a new connection per call",
			bench("--new-connection-per-call", "--connections", "4"), exitUsage,
			"--connections and --new-connection-per-call contradict each other"},
		{"refused/no calls in flight", bench("--concurrency", "0"), exitUsage,
			"--concurrency must be at least 1"},
		{"refused/unknown protocol", bench("--protocol", "soap"), exitUsage, "--protocol"},
		{"refused/no requests", bench("--requests", "0"), exitUsage, "--requests must be at least 1, got 0"},
		{"refused/no time", bench("--duration", "0s"), exitUsage, "--duration must be positive, got 0s"},
		{"fails/no certificates in --certs", []string{"bench", "--url", url, "--certs", t.TempDir(),
			"--requests", "1"}, exitFail, "echoloop pki init"},
		{"fails/a client the server does not trust", []string{"bench", "--url", url, "--certs", foreign,
			"--cacert", filepath.Join(certs, "ca.crt"), "--requests", "1"}, exitFail,
			"connect: unavailable: the server does not trust the CA that issued"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCommand(t.Context(), tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantStderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q\nstdout: %s",
					code, errOut, tc.wantCode, tc.wantStderr, out)
			}
		})
	}
}

func TestBenchRefusesARateThatIsNoRate(t *testing.T) {
	t.Parallel()
	for _, rate := range []string{"0", "-5", "NaN", "Inf"} {
		_, errOut, code := runCommand(t.Context(), "bench", "--rate", rate)
		if code != exitUsage || !strings.Contains(errOut, "--rate must be positive") ||
			!strings.Contains(errOut, "leave it out for a closed loop") {
			t.Errorf("--rate %s: exit %d, stderr %q; want a usage error pointing to the closed loop",
				rate, code, errOut)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
