package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// runCommand runs echoloop in process and returns what it printed and the
// exit code main would have used.
func runCommand(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	return runWithInput(ctx, "", args...)
}

// runWithInput is runCommand with input as standard input.
func runWithInput(
	ctx context.Context,
	input string,
	args ...string,
) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	err := run(ctx, args, strings.NewReader(input), &out, &errOut)
	code = report(err, &errOut)
	return out.String(), errOut.String(), code
}

func TestDemoPasses(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCommand(t.Context(), "demo")
	if code != exitOK {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"identical on all 4 protocols",
		"demo passed",
		"connect   refused: the server does not trust the CA",
		"reason=unknown_authority",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// A refused handshake per protocol at least, each shown with its log
	// line; a client that lost the alert makes one more to recover it.
	if n := strings.Count(out, `msg="tls handshake refused"`); n < 4 {
		t.Errorf("demo shows %d refused-handshake log lines, want one per protocol:\n%s", n, out)
	}
}

func TestPKIInitServeCall(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if out, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatalf("pki init exited %d: %s%s", code, out, errOut)
	}
	for name, mode := range map[string]os.FileMode{
		"ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600,
		"client.crt": 0o644, "client.key": 0o600,
	} {
		info, err := os.Stat(filepath.Join(certs, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != mode {
			t.Errorf("%s has mode %o, want %o", name, info.Mode().Perm(), mode)
		}
	}

	url := startServe(t, certs, "--certs", certs)

	out, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", url,
		"--protocol", "all", "--json", "--message", "via the CLI")
	if code != exitOK {
		t.Fatalf("call exited %d: %s%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("call --protocol all --json printed %d lines, want 4:\n%s", len(lines), out)
	}
	fingerprints := map[string]bool{}
	for i, line := range lines {
		var answer struct {
			Message    string
			Peer       struct{ CommonName, Sha256Fingerprint string }
			Connection struct{ Protocol string }
		}
		if err := json.Unmarshal([]byte(line), &answer); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i+1, err, line)
		}
		want := []string{"connect", "grpc", "grpc-web", "http"}[i]
		if answer.Connection.Protocol != want || answer.Message != "via the CLI" || answer.Peer.CommonName != "client" {
			t.Errorf("line %d = %s, want protocol %s, message and CN client", i+1, line, want)
		}
		fingerprints[answer.Peer.Sha256Fingerprint] = true
	}
	if len(fingerprints) != 1 {
		t.Errorf("fingerprints differ across protocols: %v", fingerprints)
	}

	out, _, code = runCommand(t.Context(), "call", "--certs", certs, "--url", url, "--protocol", "all")
	if code != exitOK || !strings.Contains(out, "identical on all 4 protocols") {
		t.Errorf("call --protocol all exited %d:\n%s", code, out)
	}

}

// TestEnvironmentStandsInForFlags is not parallel: it sets the process
// environment, which every other test would see.
func TestEnvironmentStandsInForFlags(t *testing.T) {
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	t.Setenv("ECHOLOOP_CERTS", certs)
	url := startServe(t, certs) // --certs comes from the environment
	t.Setenv("ECHOLOOP_URL", url)
	t.Setenv("ECHOLOOP_PROTOCOL", "grpc-web")
	t.Setenv("ECHOLOOP_MESSAGE", "from the environment")

	out, errOut, code := runCommand(t.Context(), "call", "--json")
	if code != exitOK {
		t.Fatalf("call exited %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(out, `"protocol":"grpc-web"`) || !strings.Contains(out, "from the environment") {
		t.Errorf("call did not take its flags from the environment: %s", out)
	}
}

// TestMistakesInTheEnvironmentNameTheVariable is not parallel: it sets the
// process environment.
func TestMistakesInTheEnvironmentNameTheVariable(t *testing.T) {
	cases := []struct {
		env, value string
		args       []string
		want       string
	}{
		{"ECHOLOOP_PROTOCOL", "gprc", []string{"call"}, `ECHOLOOP_PROTOCOL must be one of "connect",`},
		{"ECHOLOOP_TIMEOUT", "0s", []string{"call"}, "ECHOLOOP_TIMEOUT must be positive, got 0s"},
		{"ECHOLOOP_URL", "https://localhost:8443/v1", []string{"health"}, `ECHOLOOP_URL "https://localhost:8443/v1" has a path`},
		{"ECHOLOOP_DELAY", "1m", []string{"call"}, "ECHOLOOP_DELAY 1m0s is over the server's limit"},
		{"ECHOLOOP_REQUESTS", "0", []string{"bench"}, "ECHOLOOP_REQUESTS must be at least 1"},
		{"ECHOLOOP_TLS_MIN", "1.1", []string{"serve"}, `ECHOLOOP_TLS_MIN must be one of "1.2","1.3"`},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			_, errOut, code := runCommand(t.Context(), tc.args...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("%s=%s: exit %d, stderr %q; want %d and %q", tc.env, tc.value, code, errOut,
					exitUsage, tc.want)
			}
			// The flag typed on the command line is named as the flag.
			flag := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(tc.env, "ECHOLOOP_")), "_", "-")
			_, errOut, _ = runCommand(t.Context(), append(tc.args, flag+"="+tc.value)...)
			if strings.Contains(errOut, tc.env) || !strings.Contains(errOut, flag) {
				t.Errorf("%s=%s: stderr %q; want it to blame %s, not the variable", flag, tc.value, errOut, flag)
			}
		})
	}
}

// TestEveryCheckNamesTheVariable covers the checks each command makes of
// its own flags: a value from the environment is blamed on its variable,
// the same value typed is blamed on the flag. It is not parallel: it sets
// the process environment.
func TestEveryCheckNamesTheVariable(t *testing.T) {
	cases := []struct {
		env, value string
		args       []string
		want       string
	}{
		{"ECHOLOOP_MAX_MESSAGE_BYTES", "0", []string{"serve"}, "_MAX_MESSAGE_BYTES must be between 1 and"},
		{"ECHOLOOP_ADDR", "nonsense", []string{"serve"}, `_ADDR "nonsense" is not HOST:PORT`},
		{"ECHOLOOP_ADDR", "127.0.0.1:99999", []string{"serve"}, `_ADDR "127.0.0.1:99999" has port 99999`},
		{"ECHOLOOP_DRAIN_TIMEOUT", "0s", []string{"serve"}, "_DRAIN_TIMEOUT must be positive"},
		{"ECHOLOOP_MAX_CONNECTIONS", "0", []string{"serve"}, "_MAX_CONNECTIONS must be positive"},
		{"ECHOLOOP_HANDSHAKE_TIMEOUT", "0s", []string{"serve"}, "_HANDSHAKE_TIMEOUT must be positive"},
		{"ECHOLOOP_MAX_HEADER_BYTES", "10", []string{"serve"}, "_MAX_HEADER_BYTES must be at least 1024"},
		{"ECHOLOOP_MAX_CONCURRENT_STREAMS", "0", []string{"serve"}, "_MAX_CONCURRENT_STREAMS must be positive"},
		{"ECHOLOOP_IDLE_TIMEOUT", "0s", []string{"serve"}, "_IDLE_TIMEOUT must be positive"},
		{"ECHOLOOP_READ_HEADER_TIMEOUT", "0s", []string{"serve"}, "_READ_HEADER_TIMEOUT must be positive"},
		{"ECHOLOOP_RATE", "0", []string{"bench"}, "_RATE must be positive"},
		{"ECHOLOOP_CONCURRENCY", "0", []string{"bench"}, "_CONCURRENCY must be at least 1"},
		{"ECHOLOOP_MESSAGE_SIZE", "-1", []string{"bench"}, "_MESSAGE_SIZE must be between 0 and"},
		{"ECHOLOOP_VALID_FOR", "0s", []string{"pki", "init"}, "_VALID_FOR must be positive"},
		{"ECHOLOOP_VALID_FOR", "0s", []string{"pki", "issue", "client", "x"}, "_VALID_FOR must be positive"},
		{"ECHOLOOP_NOT_BEFORE", "soon", []string{"pki", "issue", "client", "x"}, `_NOT_BEFORE "soon" is neither`},
		{"ECHOLOOP_SAN", "", []string{"pki", "init"}, "_SAN has an empty value"},
		{"ECHOLOOP_PATH", "v1", []string{"audit"}, `_PATH "v1" does not start with /`},
		{"ECHOLOOP_STREAM", "1", []string{"call", "--protocol", "http"}, "_STREAM takes one RPC protocol"},
	}
	for _, tc := range cases {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			// Kong names a variable's value as the flag, and the check
			// does not know where the value came from: the variable is
			// named only if the check asks.
			_, errOut, code := runCommand(t.Context(), tc.args...)
			if code != exitUsage || !strings.Contains(errOut, "ECHOLOOP"+tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, "ECHOLOOP"+tc.want)
			}
			flag := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(tc.env, "ECHOLOOP_")), "_", "-")
			_, errOut, code = runCommand(t.Context(), append(tc.args, flag+"="+tc.value)...)
			if code != exitUsage || strings.Contains(errOut, tc.env) || !strings.Contains(errOut, flag) {
				t.Errorf("%s=%s: exit %d, stderr %q; want it to blame %s, not the variable", flag, tc.value,
					code, errOut, flag)
			}
		})
	}
}

func TestServeChecksItsAddressesAtStart(t *testing.T) {
	t.Parallel()
	addr := freeLoopbackAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"refused/port out of range", []string{"--addr", "127.0.0.1:99999"},
			`--addr "127.0.0.1:99999" has port 99999, outside 0 to 65535`},
		{"refused/metrics port out of range", []string{"--metrics-addr", ":70000"},
			`--metrics-addr ":70000" has port 70000`},
		{"refused/metrics on the serving address", []string{"--addr", addr, "--metrics-addr", addr},
			"are the same port: the metrics listener needs a port of its own"},
		{"refused/metrics on the serving port of every interface",
			[]string{"--addr", ":" + port, "--metrics-addr", ":" + port}, "are the same port"},
		{"refused/metrics on the serving address by another name",
			[]string{"--addr", addr, "--metrics-addr", "localhost:" + port}, "are the same port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runCommand(t.Context(), append([]string{"serve", "--certs", t.TempDir()}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, tc.want)
			}
		})
	}
}

// TestServePolicyFromTheEnvironment is not parallel: it sets the process
// environment.
func TestServePolicyFromTheEnvironment(t *testing.T) {
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}

	t.Setenv("ECHOLOOP_ALLOW_CN", "")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second) // a server that starts fails here
	defer cancel()
	_, errOut, code := runCommand(ctx, "serve", "--certs", certs, "--addr", "127.0.0.1:0")
	if code != exitUsage || !strings.Contains(errOut, "ECHOLOOP_ALLOW_CN has an empty value") ||
		strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("ECHOLOOP_ALLOW_CN= : exit %d, stderr %q; want one line naming the variable", code, errOut)
	}

	// Spaces around the items are trimmed: the client, CN "client", may
	// call (the health check in startServeLogged is itself a call).
	t.Setenv("ECHOLOOP_ALLOW_CN", " carol , client ")
	url, logs := startServeLogged(t, certs, "--certs", certs)
	if _, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", url); code != exitOK {
		t.Errorf("client refused by ECHOLOOP_ALLOW_CN=\" carol , client \": %s", errOut)
	}
	waitForText(t, logs, `"msg":"policy","allow.cn":["carol","client"]}`)

	t.Setenv("ECHOLOOP_ALLOW_CN", "carol")
	url, logs = startServeLogged(t, certs, "--certs", certs, "--allow-cn", "client", "--allow-ou", "ops")
	// The flags win over the environment.
	waitForText(t, logs, `"msg":"policy","allow.cn":["client"],"allow.ou":["ops"]}`)
	if _, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", url); code != exitOK {
		t.Errorf("client refused by --allow-cn client: %s", errOut)
	}
}

func TestServeLogsAnOpenPolicy(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	_, logs := startServeLogged(t, certs, "--certs", certs)
	waitForText(t, logs, `"msg":"policy","allow":"any client of the CA"}`)
}

// startServe runs `echoloop serve` with args on a free loopback port until
// the test ends, waits until it is healthy, and returns its URL.
func startServe(t *testing.T, certs string, args ...string) string {
	t.Helper()
	url, _ := startServeLogged(t, certs, args...)
	return url
}

// startServeLogged is startServe that also returns what serve logs.
func startServeLogged(t *testing.T, certs string, args ...string) (string, *syncWriter) {
	t.Helper()
	addr := freeLoopbackAddr(t)
	url := "https://localhost:" + strings.Split(addr, ":")[1]
	serveCtx, stop := context.WithCancel(t.Context())
	logs := &syncWriter{w: &bytes.Buffer{}}
	served := make(chan error, 1)
	go func() {
		args := append([]string{"serve", "--addr", addr, "--log-format", "json"}, args...)
		served <- run(serveCtx, args, strings.NewReader(""), &bytes.Buffer{}, logs)
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve returned %v", err)
		}
	})
	waitHealthy(t, certs, url)
	return url, logs
}

// freeLoopbackAddr returns a loopback address whose port was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitHealthy(t *testing.T, certs, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := runCommand(t.Context(), "health", "--certs", certs, "--url", url, "--timeout", "1s")
		if code == exitOK && strings.TrimSpace(out) == "SERVING" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not healthy after 10s: %s%s", out, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServeRefusesBadInputWithOneLine(t *testing.T) {
	t.Parallel()
	good := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", good); code != exitOK {
		t.Fatal(errOut)
	}
	garbled := t.TempDir()
	for _, name := range []string{"ca.crt", "server.crt", "server.key"} {
		data, err := os.ReadFile(filepath.Join(good, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "server.crt" {
			data = []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
		}
		if err := os.WriteFile(filepath.Join(garbled, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	expired := t.TempDir()
	writeExpiredServerCertificate(t, expired)
	// A CA that expired yesterday, with a server certificate valid now:
	// pki init refuses to make leaves that outlive their CA, but such files
	// still come from elsewhere.
	expiredCA := t.TempDir()
	writeServerUnderExpiredCA(t, expiredCA)
	if _, errOut, code := runCommand(t.Context(), "pki", "issue", "server", "futsrv", "--certs", good,
		"--not-before=48h"); code != exitOK {
		t.Fatal(errOut)
	}
	encrypted := t.TempDir()
	for _, name := range []string{"ca.crt", "server.crt"} {
		data, err := os.ReadFile(filepath.Join(good, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(encrypted, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	encryptedKey := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x00}})
	if err := os.WriteFile(filepath.Join(encrypted, "server.key"), encryptedKey, 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"refused/expired server certificate", []string{"serve", "--certs", expired},
			exitFail, []string{"expired at", "this machine's clock says", "issue a new one",
				"echoloop pki issue server server --certs " + expired + " --san localhost --san 127.0.0.1 --san ::1 --force"}},
		{"refused/a client certificate as the CA bundle", []string{"serve", "--certs", good,
			"--cacert", filepath.Join(good, "client.crt")}, exitFail,
			[]string{"client CA bundle", "client.crt", "holds no CA certificate, only a client certificate, CN=client"}},
		{"refused/every client CA expired", []string{"serve", "--certs", expiredCA}, exitFail,
			[]string{"no CA in the client CA bundle " + filepath.Join(expiredCA, "ca.crt") + " is valid now",
				"expired at", "pki init --force"}},
		{"refused/server certificate not yet valid", []string{"serve", "--certs", good,
			"--cert", filepath.Join(good, "futsrv.crt"), "--key", filepath.Join(good, "futsrv.key")},
			exitFail, []string{`server certificate "CN=futsrv`, "is not valid until", "this machine's clock says"}},
		{"refused/encrypted key", []string{"serve", "--certs", encrypted},
			exitFail, []string{"encrypted private key", "openssl pkey"}},
		{"refused/unreadable file", []string{"serve", "--certs", good, "--cacert", good},
			exitFail, []string{"reading certificate file", "is a directory"}},
		{"refused/bad policy pattern", []string{"serve", "--certs", good, "--allow-uri", "spiffe://x/*/y"},
			exitFail, []string{"allowed URI", "wildcard"}},
		{"refused/unknown flag", []string{"serve", "--bogus"}, exitUsage, []string{"--bogus"}},
		{"refused/a port without its host", []string{"serve", "--port", "9000"}, exitUsage,
			[]string{"unknown flag --port; did you mean --addr :9000?"}},
		{"refused/bad TLS version", []string{"serve", "--tls-min", "1.0"}, exitUsage, []string{"--tls-min", "1.0"}},
		{"refused/limits out of range", []string{"serve", "--idle-timeout", "0s", "--max-connections", "0"},
			exitUsage, []string{"--idle-timeout must be positive", "--max-connections must be positive"}},
		{"refused/metrics address without a port", []string{"serve", "--metrics-addr", "localhost"},
			exitUsage, []string{"--metrics-addr", "HOST:PORT"}},
		{"refused/missing certificates", []string{"serve", "--certs", filepath.Join(good, "nowhere")},
			exitFail, []string{"no such file", "server.crt", "pki init"}},
		{"refused/unparsable certificate", []string{"serve", "--certs", garbled},
			exitFail, []string{"server.crt", "does not parse"}},
		{"refused/key of another certificate", []string{"serve", "--certs", good,
			"--key", filepath.Join(good, "client.key")}, exitFail, []string{"do not belong together"}},
		{"refused/CA file with no certificate", []string{"serve", "--certs", good,
			"--cacert", filepath.Join(good, "ca.key")}, exitFail, []string{"holds no certificate", "PRIVATE KEY"}},
		{"refused/empty --allow-cn", []string{"serve", "--certs", good, "--allow-cn="},
			exitUsage, []string{"--allow-cn has an empty value", "every client of the CA"}},
		{"refused/empty --allow-uri among others", []string{"serve", "--certs", good, "--allow-cn", "client",
			"--allow-uri", ""}, exitUsage, []string{"--allow-uri has an empty value"}},
		{"refused/empty item in a list", []string{"serve", "--certs", good, "--allow-ou", "a, ,b"},
			exitUsage, []string{"--allow-ou has an empty value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			out, errOut, code := runCommand(ctx, append(tc.args, "--addr", "127.0.0.1:0")...)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d; stdout %q stderr %q", code, tc.wantCode, out, errOut)
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n") + 1; lines != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", lines, errOut)
			}
			for _, want := range tc.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q does not mention %q", errOut, want)
				}
			}
		})
	}
}

// TestExpiredClientCertificateNamesItsReplacement checks that the fix
// offered for an expired client certificate replaces that certificate
// alone: pki init --force would replace the CA too, and orphan every
// certificate it issued.
func TestExpiredClientCertificateNamesItsReplacement(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	if _, errOut, code := runCommand(t.Context(), "pki", "issue", "client", "old", "--certs", certs,
		"--not-before", "-48h", "--valid-for", "24h"); code != exitOK {
		t.Fatal(errOut)
	}
	url := startServe(t, certs, "--certs", certs)
	old := []string{"--certs", certs, "--url", url,
		"--cert", filepath.Join(certs, "old.crt"), "--key", filepath.Join(certs, "old.key")}
	want := "echoloop pki issue client old --certs " + certs + " --force"

	_, errOut, code := runCommand(t.Context(), append([]string{"call"}, old...)...)
	if code != exitFail || !strings.Contains(errOut, "has expired") || !strings.Contains(errOut, want) ||
		strings.Contains(errOut, "pki init") {
		t.Errorf("call: exit %d, stderr %q; want the expiry and %q", code, errOut, want)
	}
	out, _, _ := runCommand(t.Context(), append([]string{"doctor"}, old...)...)
	if !strings.Contains(out, want) || strings.Contains(out, "pki init") {
		t.Errorf("doctor:\n%s\nwant the fix %q", out, want)
	}
}

func TestPKIInitNeverOverwritesWithoutForce(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	before, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}

	_, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs)
	if code != exitFail || !strings.Contains(errOut, "--force") {
		t.Errorf("second init exited %d with %q, want a refusal naming --force", code, errOut)
	}
	after, _ := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if !bytes.Equal(before, after) {
		t.Error("ca.crt changed without --force")
	}

	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--force"); code != exitOK {
		t.Fatalf("init --force exited %d: %s", code, errOut)
	}
	replaced, _ := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if bytes.Equal(before, replaced) {
		t.Error("ca.crt unchanged after --force")
	}
}

func TestCallExplainsAMissingServer(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	addr := freeLoopbackAddr(t)
	_, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", "https://"+addr)
	if code != exitFail || !strings.Contains(errOut, "nothing is listening") {
		t.Errorf("exit %d, stderr %q; want a failure saying nothing is listening", code, errOut)
	}
}

func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	out, _, code := runCommand(t.Context(), "serve", "--help")
	if code != exitOK {
		t.Fatalf("serve --help exited %d", code)
	}
	for _, want := range []string{"--addr", "--certs", "--cacert", "--tls-min", "ECHOLOOP_CERTS"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, out)
		}
	}
}

// syncWriter serialises writes from the server's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func writeExpiredServerCertificate(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.NewAuthority("expired test CA")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := ca.IssueServer(pki.DefaultServerNames, pki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	writeServerFiles(t, dir, ca, cert)
}

func writeServerUnderExpiredCA(t *testing.T, dir string) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewAuthority("expired test CA", pki.WithValidity(now.Add(-48*time.Hour), now.Add(-24*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	writeServerFiles(t, dir, ca, cert)
}

// writeServerFiles writes what serve reads from --certs.
func writeServerFiles(t *testing.T, dir string, ca *pki.Authority, cert *pki.Issued) {
	t.Helper()
	key, err := cert.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"ca.crt": ca.CertificatePEM(), "server.crt": cert.CertificatePEM(), "server.key": key,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServePolicyFlags(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	// The health check inside startServe is itself subject to the policy,
	// so the client certificate's CN is allowed there; then a second
	// server allows only someone else.
	allowed := startServe(t, certs, "--certs", certs, "--allow-cn", "client")
	if _, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", allowed); code != exitOK {
		t.Errorf("allowed client refused: %s", errOut)
	}

	addr := freeLoopbackAddr(t)
	url := "https://localhost:" + strings.Split(addr, ":")[1]
	ctx, stop := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--certs", certs, "--addr", addr, "--allow-cn", "someone-else"}, strings.NewReader(""),
			&bytes.Buffer{}, &syncWriter{w: &bytes.Buffer{}})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", url, "--protocol", "http")
		if strings.Contains(errOut, "permission_denied") {
			if code != exitFail || !strings.Contains(errOut, "not allowed by this server's policy") {
				t.Errorf("denied call exited %d with %q", code, errOut)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never denied; last: %d %q", code, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCallMistakesGetOneClearLine(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	// A port that accepts connections and never says a word.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
		}
	}()
	silentURL := "https://" + silent.Addr().String()
	closedURL := "https://" + freeLoopbackAddr(t)

	cases := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
		dontWant []string
	}{
		{"refused/zero timeout", []string{"call", "--timeout", "0s"}, exitUsage,
			[]string{"--timeout must be positive", "see echoloop call --help"}, nil},
		{"refused/URL with a path", []string{"call", "--certs", certs, "--url", closedURL + "/v1/echo"}, exitUsage,
			[]string{"--url", "has a path (/v1/echo)", "base URL"}, nil},
		{"refused/URL with a query", []string{"call", "--certs", certs, "--url", closedURL + "?x=1"}, exitUsage,
			[]string{"--url", "has a query (?x=1)", "base URL"}, []string{"has a path"}},
		{"refused/a port instead of a URL", []string{"call", "--port=9443"}, exitUsage,
			[]string{"unknown flag --port; did you mean --url https://localhost:9443?"}, nil},
		{"refused/port out of range", []string{"call", "--url", "https://localhost:99999"}, exitUsage,
			[]string{`--url "https://localhost:99999" has port 99999, outside 1 to 65535`}, nil},
		{"refused/delay over the server's limit", []string{"call", "--delay", "31s"}, exitUsage,
			[]string{"--delay 31s is over the server's limit of 30s"}, nil},
		{"refused/negative delay", []string{"call", "--delay", "-1s"}, exitUsage,
			[]string{"--delay must not be negative, got -1s"}, []string{"short flag"}},
		{"refused/stream over the server's limit", []string{"call", "--stream", "10001"}, exitUsage,
			[]string{"--stream must be between 1 and 10000 (the server's limit), got 10001"}, nil},
		{"refused/stream of none", []string{"call", "--stream", "0"}, exitUsage,
			[]string{"--stream must be between 1 and 10000", "got 0", "leave it out for a unary call"}, nil},
		{"refused/negative stream", []string{"call", "--stream", "-1"}, exitUsage,
			[]string{"--stream must be between 1 and 10000", "got -1"}, []string{"short flag"}},
		{"refused/interval over the server's limit", []string{"call", "--stream", "2", "--interval", "2m"},
			exitUsage, []string{"--interval must be between 0s and 1m0s (the server's limit), got 2m0s"}, nil},
		{"refused/delay on a stream", []string{"call", "--stream", "2", "--delay", "1s"}, exitUsage,
			[]string{"--delay applies to unary calls"}, nil},
		{"refused/mistyped CA path", []string{"call", "--certs", certs, "--cacert", filepath.Join(certs, "nope.crt")},
			exitFail, []string{"nope.crt", "no such file"}, []string{"pki init"}},
		{"refused/missing certs directory", []string{"call", "--certs", filepath.Join(certs, "absent")},
			exitFail, []string{"pki init --certs"}, nil},
		{"refused/nothing listening", []string{"call", "--certs", certs, "--url", closedURL}, exitFail,
			[]string{"nothing is listening at 127.0.0.1:"}, nil},
		{"refused/silent server", []string{"call", "--certs", certs, "--url", silentURL, "--timeout", "300ms"},
			exitFail, []string{"no answer from 127.0.0.1:", "before the deadline", "--timeout"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCommand(t.Context(), tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.wantCode, out, errOut)
			}
			if out != "" {
				t.Errorf("stdout = %q, want the error on stderr only", out)
			}
			if lines := strings.Count(strings.TrimSpace(errOut), "\n") + 1; lines != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", lines, errOut)
			}
			for _, want := range tc.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q lacks %q", errOut, want)
				}
			}
			for _, dont := range tc.dontWant {
				if strings.Contains(errOut, dont) {
					t.Errorf("stderr %q should not mention %q", errOut, dont)
				}
			}
		})
	}

	t.Run("interrupted", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, errOut, code := runCommand(ctx, "call", "--certs", certs, "--url", silentURL, "--timeout", "1m")
		if code != exitInterrupted || strings.TrimSpace(errOut) != "echoloop: interrupted" {
			t.Errorf("exit %d with %q, want %d and 'interrupted'", code, errOut, exitInterrupted)
		}
	})
}

func TestServeRefusesAClientCertificateAsItsOwn(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	_, errOut, code := runCommand(t.Context(), "serve", "--certs", certs, "--addr", "127.0.0.1:0",
		"--cert", filepath.Join(certs, "client.crt"), "--key", filepath.Join(certs, "client.key"))
	if code != exitFail || !strings.Contains(errOut, "not for server authentication") {
		t.Errorf("exit %d with %q, want a refusal naming the missing serverAuth usage", code, errOut)
	}
}

func TestCallStreamAndChat(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	url := startServe(t, certs, "--certs", certs)

	out, errOut, code := runCommand(t.Context(), "call", "--certs", certs, "--url", url,
		"--protocol", "grpc", "--stream", "3", "--interval", "10ms", "--message", "s")
	if code != exitOK {
		t.Fatalf("stream exited %d: %s", code, errOut)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 ||
		!strings.HasPrefix(lines[2], `3  "s"  grpc over HTTP/2.0  peer CN=client`) {
		t.Errorf("stream printed:\n%s", out)
	}

	out, errOut, code = runWithInput(t.Context(), "first\nsecond\n", "call", "--certs", certs, "--url", url,
		"--protocol", "connect", "--chat", "--json")
	if code != exitOK {
		t.Fatalf("chat exited %d: %s", code, errOut)
	}
	if !strings.Contains(out, `"message":"first"`) || !strings.Contains(out, `"message":"second"`) ||
		strings.Count(out, "\n") != 2 {
		t.Errorf("chat printed:\n%s", out)
	}

	// Lines past bufio's usual 64 KiB and the former 1 MiB cap go through;
	// one past the server's default message limit stops the chat, named.
	long := strings.Repeat("a", 2<<20)
	out, errOut, code = runWithInput(t.Context(), "first\n"+long+"\n"+strings.Repeat("b", maxChatLine+1)+"\n",
		"call", "--certs", certs, "--url", url, "--protocol", "grpc", "--chat", "--json")
	if code != exitFail || !strings.Contains(errOut, "longer than 4194304 bytes (4 MiB)") ||
		!strings.Contains(out, long) {
		t.Errorf("chat with long lines: exit %d, stderr %q, %d bytes printed", code, errOut, len(out))
	}

	_, errOut, code = runCommand(t.Context(), "call", "--certs", certs, "--url", url, "--protocol", "http", "--stream", "2")
	if code != exitUsage || !strings.Contains(errOut, "--stream takes one RPC protocol") {
		t.Errorf("stream over http: exit %d, %q", code, errOut)
	}
}

func TestDoctorExitCodeSaysPassOrFail(t *testing.T) {
	t.Parallel()
	certs, other := t.TempDir(), t.TempDir()
	for _, dir := range []string{certs, other} {
		if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", dir); code != exitOK {
			t.Fatal(errOut)
		}
	}
	url := startServe(t, certs, "--certs", certs)

	out, errOut, code := runCommand(t.Context(), "doctor", "--certs", certs, "--url", url)
	if code != exitOK || !strings.HasSuffix(out, "all checks passed\n") || strings.Contains(out, "[FAIL]") {
		t.Errorf("doctor with the right files: exit %d\n%s%s", code, out, errOut)
	}

	// A client certificate from another pki init: the server refuses it.
	out, errOut, code = runCommand(t.Context(), "doctor", "--certs", certs, "--url", url,
		"--cert", filepath.Join(other, "client.crt"), "--key", filepath.Join(other, "client.key"))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitFail || errOut != "" || len(lines) < 2 ||
		!strings.HasPrefix(lines[len(lines)-2], "[FAIL] server accepts the client certificate") ||
		!strings.HasPrefix(lines[len(lines)-1], "       fix: ") {
		t.Errorf("doctor with a foreign certificate: exit %d, want %d ending at the failing step\n%s%s",
			code, exitFail, out, errOut)
	}
}
