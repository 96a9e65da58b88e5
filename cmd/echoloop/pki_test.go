package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// mustRun runs echoloop and fails the test unless it exits with want.
func mustRun(t *testing.T, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := runCommand(t.Context(), args...)
	if code != want {
		t.Fatalf("echoloop %s exited %d, want %d\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

// inspected is what one line of `pki inspect --json` holds, for either kind.
type inspected struct {
	pki.Inspection
	Kind     string   `json:"kind"`
	Number   string   `json:"number"`
	Revoked  []string `json:"revokedSerials"`
	SignedBy string   `json:"signedBy"`
	Stale    bool     `json:"stale"`
}

func inspectJSON(t *testing.T, out string) []inspected {
	t.Helper()
	var lines []inspected
	for line := range strings.Lines(strings.TrimSpace(out)) {
		var in inspected
		dec := json.NewDecoder(strings.NewReader(line))
		if err := dec.Decode(&in); err != nil {
			t.Fatalf("inspect --json printed a line that is not one JSON object: %v: %s", err, line)
		}
		lines = append(lines, in)
	}
	return lines
}

func TestPKICommandsWithIntermediate(t *testing.T) {
	t.Parallel()
	certs := filepath.Join(t.TempDir(), "certs")
	rootKey := filepath.Join(t.TempDir(), "root.key")

	// init: the root key goes where it was sent, the intermediate signs.
	out, _ := mustRun(t, exitOK, "pki", "init", "--certs", certs, "--intermediate", "--root-key-out", rootKey)
	wantLines(t, "init output", out,
		"wrote "+rootKey+" (0600)",
		"wrote "+filepath.Join(certs, "intermediate.key")+" (0600)",
		"wrote "+filepath.Join(certs, "ca.crl")+" (0644)",
		"the intermediate's key "+filepath.Join(certs, "intermediate.key")+" signs new certificates",
		"the root key "+rootKey+" is needed only for a new intermediate",
	)
	if _, err := os.Stat(filepath.Join(certs, "ca.key")); err == nil {
		t.Error("init wrote ca.key into the directory despite --root-key-out")
	}
	if mode := fileMode(t, rootKey); mode != 0o600 {
		t.Errorf("root key has mode %04o, want 0600", mode)
	}

	// issue server: every SAN form, read from its form.
	out, _ = mustRun(t, exitOK, "pki", "issue", "server", "web", "--certs", certs,
		"--san", "web.example.test", "--san", "10.0.0.9", "--key-type", "ed25519")
	wantLines(t, "issue server output", out,
		"wrote "+filepath.Join(certs, "web.crt")+" (0644)",
		"wrote "+filepath.Join(certs, "web.key")+" (0600)",
		"server certificate CN=web.example.test,O=echoloop development, serial ",
		"covers: web.example.test, 10.0.0.9",
	)

	// issue client: the name is the common name; a SPIFFE ID rides along.
	out, _ = mustRun(t, exitOK, "pki", "issue", "client", "alice", "--certs", certs,
		"--spiffe-id", "spiffe://example.test/team/alice", "--valid-for", "720h")
	wantLines(t, "issue client output", out,
		"client certificate CN=alice,O=echoloop development",
		"covers: spiffe://example.test/team/alice",
	)
	alice, err := pki.LoadCertificates(filepath.Join(certs, "alice.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(alice) != 2 || alice[1].Subject.CommonName != alice[0].Issuer.CommonName {
		t.Fatalf("alice.crt holds %d certificates, want the leaf and then its intermediate", len(alice))
	}
	if got := alice[0].NotAfter.Sub(alice[0].NotBefore); got != 720*time.Hour+pki.Backdate {
		t.Errorf("alice is valid for %s, want 720h and the backdate", got)
	}
	wantLines(t, "issue client output", out, "sha256 "+pki.Fingerprint(alice[0]))

	// An expired certificate, which inspect reports and fails on.
	mustRun(t, exitOK, "pki", "issue", "client", "old", "--certs", certs, "--not-before=-48h", "--valid-for", "24h")
	out, errOut := mustRun(t, exitFail, "pki", "inspect", "--certs", certs, filepath.Join(certs, "old.crt"))
	wantLines(t, "inspect of an expired certificate", out, "CN=old,O=echoloop development", "(expired 24 hours ago)")
	wantLines(t, "inspect's error", errOut, "echoloop: outside its validity: ", "old.crt: CN=old")
	old, err := pki.LoadCertificates(filepath.Join(certs, "old.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !time.Now().After(old[0].NotAfter) || time.Since(old[0].NotBefore) < 47*time.Hour {
		t.Errorf("old.crt is valid %v to %v, want a day-long window that ended a day ago",
			old[0].NotBefore, old[0].NotAfter)
	}

	// revoke, then inspect the list and the certificates as JSON.
	out, _ = mustRun(t, exitOK, "pki", "revoke", filepath.Join(certs, "alice.crt"), "--certs", certs,
		"--reason", "keyCompromise")
	crlPath := filepath.Join(certs, "ca.crl")
	wantLines(t, "revoke output", out,
		"revoked serial "+pki.SerialHex(alice[0])+" (keyCompromise); "+crlPath+" is re-signed",
		"--crl "+crlPath,
	)
	out, _ = mustRun(t, exitOK, "pki", "inspect", "--json", "--certs", certs, crlPath,
		filepath.Join(certs, "alice.crt"), filepath.Join(certs, "web.crt"))
	lines := inspectJSON(t, out)
	if len(lines) != 6 {
		t.Fatalf("inspect --json printed %d lines, want 6 (the list and the intermediate it carries, "+
			"then two certificates from each file):\n%s", len(lines), out)
	}
	crl := lines[0]
	if crl.Kind != "crl" || crl.Number != "2" || !slices.Equal(crl.Revoked, []string{pki.SerialHex(alice[0])}) ||
		crl.File != crlPath || !strings.Contains(crl.Issuer, "intermediate") {
		t.Errorf("CRL line = %+v, want list number 2 from the intermediate naming alice's serial", crl)
	}
	if !crl.Chains || crl.ChainsTo != filepath.Join(certs, "ca.crt") || crl.SignedBy != alice[1].Subject.String() {
		t.Errorf("CRL line: chains %v to %q, signed by %q (%s), want the intermediate under ca.crt",
			crl.Chains, crl.ChainsTo, crl.SignedBy, crl.ChainError)
	}
	for i, want := range []struct {
		file    string
		index   int
		subject string
		isCA    bool
	}{
		{"ca.crl", 1, alice[1].Subject.String(), true},
		{"alice.crt", 1, "CN=alice,O=echoloop development", false},
		{"alice.crt", 2, alice[1].Subject.String(), true},
		{"web.crt", 1, "CN=web.example.test,O=echoloop development", false},
		{"web.crt", 2, alice[1].Subject.String(), true},
	} {
		got := lines[i+1]
		if got.File != filepath.Join(certs, want.file) || got.Index != want.index || got.Subject != want.subject ||
			got.IsCA != want.isCA {
			t.Errorf("line %d = %s #%d %q CA %v, want %s #%d %q CA %v", i+2, got.File, got.Index, got.Subject,
				got.IsCA, want.file, want.index, want.subject, want.isCA)
		}
		if !got.Chains || got.ChainsTo != filepath.Join(certs, "ca.crt") || got.ChainError != "" {
			t.Errorf("line %d: chains %v to %q (%s), want it to chain to ca.crt", i+2, got.Chains, got.ChainsTo,
				got.ChainError)
		}
	}
	if web := lines[4]; web.Key != "Ed25519" || !slices.Equal(web.IPAddresses, []string{"10.0.0.9"}) ||
		!slices.Equal(web.ExtKeyUsage, []string{"serverAuth"}) {
		t.Errorf("web.crt line = key %q, IPs %q, EKU %q", web.Key, web.IPAddresses, web.ExtKeyUsage)
	}
	if !slices.Equal(lines[2].URIs, []string{"spiffe://example.test/team/alice"}) {
		t.Errorf("alice's URIs = %q", lines[2].URIs)
	}

	// Revoking alice again is refused, and the list stays as it was.
	before, err := os.ReadFile(crlPath)
	if err != nil {
		t.Fatal(err)
	}
	_, errOut = mustRun(t, exitFail, "pki", "revoke", pki.SerialHex(alice[0]), "--certs", certs)
	wantLines(t, "second revoke", errOut, "already revoked")
	if after, _ := os.ReadFile(crlPath); string(after) != string(before) {
		t.Error("a refused revoke changed ca.crl")
	}
}

func TestPKIInspectChainsFalse(t *testing.T) {
	t.Parallel()
	ours, theirs := t.TempDir(), t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", ours)
	mustRun(t, exitOK, "pki", "init", "--certs", theirs)

	out, _ := mustRun(t, exitOK, "pki", "inspect", "--json", "--certs", ours, filepath.Join(theirs, "client.crt"))

	lines := inspectJSON(t, out)
	if len(lines) != 1 {
		t.Fatalf("inspect --json printed %d lines, want 1:\n%s", len(lines), out)
	}
	if lines[0].Chains || !strings.Contains(lines[0].ChainError, "unknown authority") {
		t.Errorf("a certificate of another CA: chains %v (%q), want false with the verifier's reason",
			lines[0].Chains, lines[0].ChainError)
	}
	if !strings.Contains(out, `"chains":false`) {
		t.Errorf("the JSON does not spell chains false: %s", out)
	}

	// Text output says the same in words.
	out, _ = mustRun(t, exitOK, "pki", "inspect", "--certs", ours, filepath.Join(theirs, "client.crt"))
	wantLines(t, "inspect text", out, "chains to "+filepath.Join(ours, "ca.crt"), "no: x509: certificate signed by unknown authority")
}

func TestPKIRootKeyElsewhere(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	rootKey := filepath.Join(t.TempDir(), "root.key")
	out, _ := mustRun(t, exitOK, "pki", "init", "--certs", certs, "--root-key-out", rootKey)
	wantLines(t, "init output", out, "the CA key "+rootKey+" signs new certificates")

	// Without the key the command says where to point it.
	_, errOut := mustRun(t, exitFail, "pki", "issue", "client", "bob", "--certs", certs)
	wantLines(t, "issue without the key", errOut, "--ca-key", "ca.key")
	if _, err := os.Stat(filepath.Join(certs, "bob.crt")); err == nil {
		t.Error("a refused issue wrote bob.crt")
	}

	out, _ = mustRun(t, exitOK, "pki", "issue", "client", "bob", "--certs", certs, "--ca-key", rootKey)
	wantLines(t, "issue with --ca-key", out, "client certificate CN=bob")
	out, _ = mustRun(t, exitOK, "pki", "revoke", filepath.Join(certs, "bob.crt"), "--certs", certs,
		"--ca-key", rootKey, "--reason", "superseded")
	wantLines(t, "revoke with --ca-key", out, "(superseded)")

	crls, err := pki.LoadCRLs(filepath.Join(certs, "ca.crl"))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := pki.LoadCertificates(filepath.Join(certs, "bob.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCertificates(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(crls) != 1 || crls[0].CheckSignatureFrom(ca[0]) != nil || len(crls[0].RevokedCertificateEntries) != 1 ||
		crls[0].RevokedCertificateEntries[0].SerialNumber.Cmp(bob[0].SerialNumber) != 0 {
		t.Errorf("ca.crl does not list bob under the root's signature")
	}
}

// TestPKIInitValidity makes whole PKIs that are expired or not yet valid,
// as tests of a server's clock handling need them.
func TestPKIInitValidity(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cases := []struct {
		name               string
		args               []string
		caStart, leafStart time.Time
		caFor, leafFor     time.Duration
	}{
		{
			name:    "ok/already expired CA and leaves",
			args:    []string{"--ca-not-before=-48h", "--ca-valid-for=24h", "--not-before=-30h", "--valid-for=1h"},
			caStart: now.Add(-48 * time.Hour), caFor: 24 * time.Hour,
			leafStart: now.Add(-30 * time.Hour), leafFor: time.Hour,
		},
		{
			name:    "ok/leaves not yet valid",
			args:    []string{"--not-before", now.Add(72 * time.Hour).UTC().Format(time.RFC3339)},
			caStart: now.Add(-pki.Backdate), caFor: pki.Backdate + pki.DefaultCAValidity,
			leafStart: now.Add(72 * time.Hour), leafFor: pki.DefaultLeafValidity,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certs := t.TempDir()
			mustRun(t, exitOK, append([]string{"pki", "init", "--certs", certs}, tc.args...)...)
			for file, want := range map[string]struct {
				start time.Time
				valid time.Duration
			}{
				pki.CACertFile:     {tc.caStart, tc.caFor},
				pki.ServerCertFile: {tc.leafStart, tc.leafFor},
				pki.ClientCertFile: {tc.leafStart, tc.leafFor},
			} {
				chain, err := pki.LoadCertificates(filepath.Join(certs, file))
				if err != nil {
					t.Fatal(err)
				}
				cert := chain[0]
				if d := cert.NotBefore.Sub(want.start).Abs(); d > time.Minute {
					t.Errorf("%s starts %s, want %s", file, cert.NotBefore, want.start)
				}
				if got := cert.NotAfter.Sub(cert.NotBefore); got != want.valid {
					t.Errorf("%s is valid for %s, want %s", file, got, want.valid)
				}
			}
		})
	}
}

func TestPKICommandsRefused(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", certs)
	shortLived := t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", shortLived, "--ca-valid-for", "48h", "--valid-for", "24h")
	shortCA, err := pki.LoadCertificates(filepath.Join(shortLived, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}

	client, err := os.ReadFile(filepath.Join(certs, pki.ClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "trunc.crt")
	if err := os.WriteFile(truncated, client[:300], 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{
			name:     "refused/inspect of a certificate cut short",
			args:     []string{"pki", "inspect", "--certs", certs, truncated},
			wantCode: exitFail, wantErr: []string{`"` + truncated + `" holds an incomplete CERTIFICATE block, ` +
				"starting at line 1: no -----END line follows"},
		},
		{
			name: "refused/unknown reason", args: []string{"pki", "revoke", filepath.Join(certs, "client.crt"),
				"--certs", certs, "--reason", "lost"}, wantCode: exitFail,
			wantErr: []string{`unknown revocation reason "lost"`, "keyCompromise", "superseded"},
		},
		{
			name:     "refused/a name outside the directory",
			args:     []string{"pki", "issue", "client", "../x", "--certs", certs},
			wantCode: exitFail, wantErr: []string{`"../x" cannot name a certificate file`},
		},
		{
			name:     "refused/an existing certificate",
			args:     []string{"pki", "issue", "server", "server", "--certs", certs},
			wantCode: exitFail, wantErr: []string{"already exist", "--force"},
		},
		{
			name:     "refused/a SPIFFE ID without its scheme",
			args:     []string{"pki", "issue", "client", "c", "--certs", certs, "--spiffe-id", "example.test/c"},
			wantCode: exitUsage, wantErr: []string{"--spiffe-id", "must start with spiffe://"},
		},
		{
			name:     "refused/a SPIFFE ID without a trust domain",
			args:     []string{"pki", "issue", "client", "c", "--certs", certs, "--spiffe-id", "spiffe://"},
			wantCode: exitUsage, wantErr: []string{"--spiffe-id", "has no trust domain"},
		},
		{
			name: "refused/a SPIFFE ID with a trailing slash",
			args: []string{"pki", "issue", "client", "c", "--certs", certs,
				"--spiffe-id", "spiffe://example.org/"},
			wantCode: exitUsage, wantErr: []string{"--spiffe-id", "empty path segment"},
		},
		{
			name: "refused/a SPIFFE ID with an upper-case trust domain",
			args: []string{"pki", "issue", "client", "c", "--certs", certs,
				"--spiffe-id", "spiffe://EXAMPLE.org/x"},
			wantCode: exitUsage, wantErr: []string{"--spiffe-id", "lower-case letters"},
		},
		{
			name: "refused/a SPIFFE ID beside another URI",
			args: []string{"pki", "issue", "client", "c", "--certs", certs,
				"--spiffe-id", "spiffe://example.org/x", "--san", "https://example.org/y"},
			wantCode: exitUsage, wantErr: []string{`--san "https://example.org/y"`,
				"an X.509-SVID holds exactly one URI SAN"},
		},
		{
			name:     "refused/a start that is no time",
			args:     []string{"pki", "issue", "client", "c", "--certs", certs, "--not-before", "yesterday"},
			wantCode: exitUsage, wantErr: []string{`--not-before "yesterday"`, "-48h"},
		},
		{
			name:     "refused/init with a CA validity that is not positive",
			args:     []string{"pki", "init", "--certs", t.TempDir(), "--ca-valid-for", "0s", "--valid-for=-1h"},
			wantCode: exitUsage, wantErr: []string{"--ca-valid-for must be positive, got 0s",
				"--valid-for must be positive, got -1h0m0s", "--not-before"},
		},
		{
			name:     "refused/init with a start that is no time",
			args:     []string{"pki", "init", "--certs", t.TempDir(), "--ca-not-before", "soon"},
			wantCode: exitUsage, wantErr: []string{`--ca-not-before "soon" is neither`},
		},
		{
			name:     "refused/a validity that is not positive",
			args:     []string{"pki", "issue", "client", "c", "--certs", certs, "--valid-for=0s"},
			wantCode: exitUsage, wantErr: []string{"--valid-for must be positive"},
		},
		{
			name:     "refused/init with an empty client name",
			args:     []string{"pki", "init", "--certs", t.TempDir(), "--name", ""},
			wantCode: exitUsage, wantErr: []string{`--name "" names no one`},
		},
		{
			name:     "refused/a validity past the CA's",
			args:     []string{"pki", "issue", "client", "c", "--certs", shortLived, "--valid-for", "72h"},
			wantCode: exitFail, wantErr: []string{"after its CA", "which ends at " +
				shortCA[0].NotAfter.UTC().Format(time.RFC3339), "give --valid-for 47h or less", "--ca-valid-for"},
		},
		{
			name:     "refused/revoking the CA itself",
			args:     []string{"pki", "revoke", filepath.Join(certs, pki.CACertFile), "--certs", certs},
			wantCode: exitFail, wantErr: []string{"cannot revoke itself in its own list", "--cacert"},
		},
		{
			name:     "refused/revoking a file that does not exist",
			args:     []string{"pki", "revoke", "nosuch.crt", "--certs", certs},
			wantCode: exitFail, wantErr: []string{`there is no file "nosuch.crt" to revoke`},
		},
		{
			name:     "refused/inspect of a key file",
			args:     []string{"pki", "inspect", "--certs", certs, filepath.Join(certs, "client.key")},
			wantCode: exitFail, wantErr: []string{"holds no certificate", "PRIVATE KEY"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut := mustRun(t, tc.wantCode, tc.args...)
			wantLines(t, "stderr", errOut, tc.wantErr...)
			if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("stderr is more than one line:\n%s", errOut)
			}
			if strings.Contains(out, "wrote ") || strings.Contains(out, "revoked serial") {
				t.Errorf("a refused command reported work done:\n%s", out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(certs, "c.crt")); err == nil {
		t.Error("a refused issue wrote c.crt")
	}
}

// TestTaskCertsRewritesTheForceHint keeps `go tool task certs`, which turns
// pki init's "pass --force" into FORCE=1, in step with the words pki init
// really prints when the set exists.
func TestTaskCertsRewritesTheForceHint(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", certs)
	_, errOut := mustRun(t, exitFail, "pki", "init", "--certs", certs)
	hint := regexp.MustCompile(`\([^()]*--force[^()]*\)`).FindString(errOut)
	if hint == "" {
		t.Fatalf("pki init over an existing set names no --force in parentheses:\n%s", errOut)
	}
	taskfile, err := os.ReadFile(filepath.Join("..", "..", "Taskfile.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(taskfile), "sed 's/"+hint+"/") {
		t.Errorf("the certs task's sed does not rewrite %q, what pki init prints now", hint)
	}
}

// TestReissueCommandRuns runs the command that messages about an expired
// certificate give for init's server certificate, and checks that what it
// writes covers the same names.
func TestReissueCommandRuns(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", certs, "--san", "api.internal")
	file := filepath.Join(certs, pki.ServerCertFile)
	before, err := pki.LoadCertificates(file)
	if err != nil {
		t.Fatal(err)
	}

	fields := strings.Fields(pki.ReissueCommand(file, before[0]))
	if fields[0] != "echoloop" {
		t.Fatalf("command %q is not echoloop's", fields)
	}
	mustRun(t, exitOK, fields[1:]...)

	after, err := pki.LoadCertificates(file)
	if err != nil {
		t.Fatal(err)
	}
	if after[0].Equal(before[0]) {
		t.Fatal("the certificate was not replaced")
	}
	if got, want := pki.SANs(after[0]), pki.SANs(before[0]); !slices.Equal(got, want) {
		t.Errorf("the new server certificate covers %q, want %q", got, want)
	}
	if after[0].Subject.CommonName != before[0].Subject.CommonName {
		t.Errorf("common name %q, want %q", after[0].Subject.CommonName, before[0].Subject.CommonName)
	}
}

func TestPKIRefusesAnEmptySAN(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	for _, args := range [][]string{
		{"pki", "init", "--certs", t.TempDir(), "--san", ""},
		{"pki", "init", "--certs", t.TempDir(), "--san", "api", "--san", " "},
		{"pki", "issue", "server", "api", "--certs", certs, "--san", ""},
	} {
		_, errOut, code := runCommand(t.Context(), args...)
		if code != exitUsage || !strings.Contains(errOut, "--san has an empty value") {
			t.Errorf("%q: exit %d, stderr %q; want the empty --san refused", args, code, errOut)
		}
	}
}
