package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// auditContext bounds a test's commands in time.
func auditContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestPKIFixturesThenAuditServe(t *testing.T) {
	t.Parallel()
	ctx := auditContext(t)
	certs, fixtures := t.TempDir(), filepath.Join(t.TempDir(), "fixtures")
	if out, errOut, code := runCommand(ctx, "pki", "init", "--certs", certs); code != exitOK {
		t.Fatalf("pki init exited %d: %s%s", code, out, errOut)
	}
	out, errOut, code := runCommand(ctx, "pki", "fixtures", "--certs", certs, "--out", fixtures)
	if code != exitOK {
		t.Fatalf("pki fixtures exited %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(out, "serve --crl "+filepath.Join(fixtures, pki.RevokedCRLFile)) {
		t.Errorf("pki fixtures does not say how to load the revocation list:\n%s", out)
	}
	if !strings.Contains(out, "\nwrote 16 fixtures signed by ") || strings.Contains(out, "skipped") {
		t.Errorf("pki fixtures from a root CA does not say it wrote all 16:\n%s", out)
	}
	for name, mode := range map[string]os.FileMode{"good.key": 0o600, "good.crt": 0o644,
		pki.RevokedCRLFile: 0o644, pki.ManifestFile: 0o644} {
		info, err := os.Stat(filepath.Join(fixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != mode {
			t.Errorf("%s has mode %o, want %o", name, info.Mode().Perm(), mode)
		}
	}
	if _, errOut, code := runCommand(ctx, "pki", "fixtures", "--certs", certs, "--out", fixtures); code != exitFail ||
		!strings.Contains(errOut, "already exist") {
		t.Errorf("pki fixtures over existing files exited %d: %s", code, errOut)
	}

	url := startServe(t, certs, "--certs", certs, "--crl", filepath.Join(fixtures, pki.RevokedCRLFile))
	out, errOut, code = runCommand(ctx, "audit", "--certs", certs, "--url", url, "--fixtures", fixtures)
	if code != exitOK {
		t.Fatalf("audit of echoloop exited %d:\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "16 right, 0 wrongly accepted, 0 wrongly refused, 0 could not tell, 0 skipped") ||
		strings.Contains(out, "WRONGLY") {
		t.Errorf("audit of echoloop:\n%s", out)
	}

	out, errOut, code = runCommand(ctx, "audit", "--certs", certs, "--url", url, "--fixtures", fixtures,
		"--json", "--protocol", "grpc", "--protocol", "http")
	if code != exitOK {
		t.Fatalf("audit --json exited %d: %s%s", code, out, errOut)
	}
	var report struct {
		Protocols []string
		Results   []struct {
			Fixture, Verdict string
			Observed         []struct{ Protocol, Outcome string }
		}
		Summary struct{ Right int }
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("audit --json is not one JSON object: %v\n%s", err, out)
	}
	if strings.Join(report.Protocols, ",") != "grpc,http" || report.Summary.Right != 16 ||
		len(report.Results) != 16 || len(report.Results[0].Observed) != 2 {
		t.Errorf("audit --json = %s", out)
	}
}

// TestPKIFixturesCountsWhatItSkipped mints fixtures with the intermediate
// of `pki init --intermediate`, whose path length 0 rules out the three
// chain cases: the summary counts only what was written and names those.
func TestPKIFixturesCountsWhatItSkipped(t *testing.T) {
	t.Parallel()
	ctx := auditContext(t)
	dir := t.TempDir()
	certs, fixtures := filepath.Join(dir, "certs"), filepath.Join(dir, "fixtures")
	if out, errOut, code := runCommand(ctx, "pki", "init", "--certs", certs, "--intermediate",
		"--root-key-out", filepath.Join(dir, "offline", "root.key")); code != exitOK {
		t.Fatalf("pki init --intermediate exited %d: %s%s", code, out, errOut)
	}
	out, errOut, code := runCommand(ctx, "pki", "fixtures", "--certs", certs, "--out", fixtures)
	if code != exitOK {
		t.Fatalf("pki fixtures exited %d: %s%s", code, out, errOut)
	}
	chainCases := []string{"with-intermediate", "without-intermediate", "intermediate-server-only"}
	for _, want := range []string{
		"\nwrote 13 of 16 fixtures signed by ",
		"\nskipped " + strings.Join(chainCases, ", ") + ": ",
		"may not sign a CA below itself (path length 0)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("pki fixtures printed no %q:\n%s", want, out)
		}
	}
	for _, name := range chainCases {
		if _, err := os.Stat(filepath.Join(fixtures, name+".key")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s.key of a skipped fixture: %v, want it absent", name, err)
		}
	}
	keys, err := filepath.Glob(filepath.Join(fixtures, "*.key"))
	if err != nil || len(keys) != 12 { // the 13 written, less no-certificate
		t.Errorf("fixtures holds %d keys (%v), want 12", len(keys), err)
	}
}

// startRequireAnyClientCert serves HTTPS with the server certificate in
// certs and takes any client certificate at all, unverified.
func startRequireAnyClientCert(t *testing.T, certs string) string {
	t.Helper()
	cert, err := pki.LoadKeyPair(filepath.Join(certs, pki.ServerCertFile), filepath.Join(certs, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// The server certificate covers localhost, not the address httptest
	// reports.
	return strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
}

func TestAuditMintsWithACAAndNamesTheHoles(t *testing.T) {
	t.Parallel()
	ctx := auditContext(t)
	certs := t.TempDir()
	if out, errOut, code := runCommand(ctx, "pki", "init", "--certs", certs); code != exitOK {
		t.Fatalf("pki init exited %d: %s%s", code, out, errOut)
	}
	url := startRequireAnyClientCert(t, certs)

	out, errOut, code := runCommand(ctx, "audit", "--url", url, "--cacert", filepath.Join(certs, pki.CACertFile),
		"--ca-cert", filepath.Join(certs, pki.CACertFile), "--ca-key", filepath.Join(certs, pki.CAKeyFile))
	if code != exitFail {
		t.Fatalf("audit of a RequireAnyClientCert server exited %d, want %d:\n%s%s", code, exitFail, out, errOut)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[3], "WRONGLY ACCEPTED") {
		t.Errorf("the first fixture listed is not a wrongly accepted one:\n%s", out)
	}
	for _, want := range []string{
		"self-signed: a self-signed certificate was let in: the server probably uses RequireAnyClientCert",
		"foreign-ca: a certificate from a CA the server should not trust was let in",
		"skipped           revoked",
		"revoked: the server cannot hold the revocation list this run made",
		"7 right, 8 wrongly accepted, 0 wrongly refused, 0 could not tell, 1 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestAuditMistakesAreUsageErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"refused/fixtures and a CA", []string{"--fixtures", "x", "--ca-cert", "a", "--ca-key", "b"},
			"exclude each other"},
		{"refused/CA without its key", []string{"--ca-cert", "a"}, "--ca-cert needs --ca-key"},
		{"refused/unknown protocol", []string{"--protocol", "grpc,smtp"}, `unknown protocol "smtp"`},
		{"refused/call without a service", []string{"--call", "Echo"}, "/package.Service/Method"},
		{"refused/path without a slash", []string{"--path", "v1/echo"}, "does not start with /"},
		{"refused/plain http URL", []string{"--url", "http://localhost:8443"}, "mutual TLS needs TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runCommand(auditContext(t), append([]string{"audit"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, tc.want)
			}
		})
	}
}

func TestAuditUnreadableFixturesAreUsageErrors(t *testing.T) {
	t.Parallel()
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, pki.ManifestFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, pki.ManifestFile), []byte(`{"fixtures":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	cases := []struct {
		name, dir, want string
	}{
		{"refused/no such directory", missing, filepath.Join(missing, pki.ManifestFile)},
		{"refused/a manifest that does not parse", broken, "does not parse"},
		{"refused/a manifest that lists nothing", empty, "lists no fixtures"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runCommand(auditContext(t), "audit", "--fixtures", tc.dir)
			if code != exitUsage || !strings.Contains(errOut, tc.want) ||
				!strings.Contains(errOut, "echoloop pki fixtures --out "+tc.dir) {
				t.Errorf("exit %d, stderr %q; want %d, %q and how to write fixtures", code, errOut,
					exitUsage, tc.want)
			}
		})
	}
}
