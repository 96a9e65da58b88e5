package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRevokedClientIsToldSo follows the README: serve --crl certs/ca.crl,
// pki revoke a client, and call and doctor with that client's files. The
// server says only "bad certificate"; the list in --certs says the rest.
func TestRevokedClientIsToldSo(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	if _, errOut, code := runCommand(t.Context(), "pki", "issue", "client", "alice", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	crl := filepath.Join(certs, "ca.crl")
	url := startServe(t, certs, "--certs", certs, "--crl", crl)
	if _, errOut, code := runCommand(t.Context(), "pki", "revoke", filepath.Join(certs, "alice.crt"),
		"--certs", certs, "--reason", "keyCompromise"); code != exitOK {
		t.Fatal(errOut)
	}
	alice := []string{"--certs", certs, "--url", url,
		"--cert", filepath.Join(certs, "alice.crt"), "--key", filepath.Join(certs, "alice.key")}

	// The server picks the new list up from disk within moments.
	deadline := time.Now().Add(10 * time.Second)
	var errOut string
	for {
		var code int
		_, errOut, code = runCommand(t.Context(), append([]string{"call", "--protocol", "grpc"}, alice...)...)
		if code == exitFail && strings.Contains(errOut, "refused") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice still called after 10s: exit %d, %q", code, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{`alert "bad certificate"`, "it is revoked", crl + ` lists "CN=alice`,
		"keyCompromise", "issue a new one"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("call said %q, want it to mention %q", errOut, want)
		}
	}

	out, _, code := runCommand(t.Context(), append([]string{"doctor"}, alice...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitFail || len(lines) < 2 ||
		!strings.HasPrefix(lines[len(lines)-2], "[FAIL] server accepts the client certificate") ||
		!strings.Contains(lines[len(lines)-2], "it is revoked") {
		t.Errorf("doctor exited %d, want it to stop where the server refuses the revoked certificate:\n%s", code, out)
	}
}

func TestRevokeSerialZeroIsExplained(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	for _, serial := range []string{"00", "0:00"} {
		_, errOut, code := runCommand(t.Context(), "pki", "revoke", serial, "--certs", certs)
		if code != exitUsage || !strings.Contains(errOut, "is the serial number 0, which no certificate has") ||
			strings.Contains(errOut, "neither") {
			t.Errorf("revoke %s: exit %d, stderr %q; want serial 0 explained", serial, code, errOut)
		}
	}
}
