package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// TestPKIIssueSuggestsAValidForThatFits covers CAs that end within the
// hour: the suggested --valid-for is in minutes or seconds rather than a
// rounded-down zero, and --not-before comes up only when it was given.
func TestPKIIssueSuggestsAValidForThatFits(t *testing.T) {
	t.Parallel()
	hour, minute := t.TempDir(), t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", hour, "--ca-valid-for", "1h", "--valid-for", "30m")
	mustRun(t, exitOK, "pki", "init", "--certs", minute, "--ca-valid-for", "59s", "--valid-for", "10s")

	cases := []struct {
		name    string
		args    []string
		want    *regexp.Regexp
		wantNot string
	}{
		{"refused/an hour-long CA, minutes suggested",
			[]string{"--certs", hour, "--valid-for", "65m"},
			regexp.MustCompile(`; give --valid-for 59m or less, or make a longer-lived CA`), "--not-before"},
		{"refused/a minute-long CA, seconds suggested",
			[]string{"--certs", minute, "--valid-for", "1m"},
			regexp.MustCompile(`; give --valid-for [1-5]?[0-9]s or less`), "--not-before"},
		{"refused/a long validity, hours suggested",
			[]string{"--certs", hour, "--valid-for", "100000h"},
			regexp.MustCompile(`; give --valid-for 59m or less`), "--not-before"},
		{"refused/a start after the CA's end",
			[]string{"--certs", hour, "--not-before", "2h", "--valid-for", "1m"},
			regexp.MustCompile(`; move --not-before before the CA's end`), "give --valid-for"},
		{"refused/a start before the CA's end",
			[]string{"--certs", hour, "--not-before=-1h", "--valid-for", "3h"},
			regexp.MustCompile(`; give --valid-for 1h or less`), "move --not-before"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut := mustRun(t, exitFail, append([]string{"pki", "issue", "client", "z"}, tc.args...)...)
			if !tc.want.MatchString(errOut) {
				t.Errorf("stderr does not match %s:\n%s", tc.want, errOut)
			}
			if strings.Contains(errOut, tc.wantNot) {
				t.Errorf("stderr mentions %s:\n%s", tc.wantNot, errOut)
			}
		})
	}
}

func TestFittingValidFor(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		87599*time.Hour + 59*time.Minute:  "87599h",
		time.Hour:                         "1h",
		59*time.Minute + 59*time.Second:   "59m",
		time.Minute:                       "1m",
		59*time.Second + time.Millisecond: "59s",
		40 * time.Second:                  "40s",
		999 * time.Millisecond:            "",
		-time.Hour:                        "",
	} {
		if got := fittingValidFor(d); got != want {
			t.Errorf("fittingValidFor(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestPKIInitRefusesLeavesOutlivingTheCA holds init to the rule issue
// keeps, with the same kind of suggestion, and checks nothing is written.
func TestPKIInitRefusesLeavesOutlivingTheCA(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"refused/leaves longer than the CA", []string{"--ca-valid-for", "1h", "--valid-for", "2h"},
			[]string{"after its CA", "give --valid-for 59m or less, or give a longer --ca-valid-for"}},
		{"refused/leaves longer than the intermediate",
			[]string{"--intermediate", "--ca-valid-for", "3h", "--valid-for", "4h"},
			[]string{"intermediate", "give --valid-for 2h or less"}},
		{"refused/leaves starting after the CA's end",
			[]string{"--ca-valid-for", "1h", "--not-before", "2h", "--valid-for", "1h"},
			[]string{"move --not-before before the CA's end"}},
		{"refused/an expired CA and leaves from now",
			[]string{"--ca-not-before=-48h", "--ca-valid-for", "24h"},
			[]string{"the CA ends before the leaves would start", "--ca-not-before"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certs := filepath.Join(t.TempDir(), "certs")
			out, errOut := mustRun(t, exitFail, append([]string{"pki", "init", "--certs", certs}, tc.args...)...)
			wantLines(t, "stderr", errOut, tc.want...)
			if strings.Contains(out, "wrote ") {
				t.Errorf("a refused init reported files written:\n%s", out)
			}
			if _, err := os.Stat(certs); err == nil {
				t.Errorf("a refused init made %s", certs)
			}
		})
	}
}

// TestPKIInitShortCAWithTheDefaultLeafValidity: a CA shorter than the
// default --valid-for gets leaves that end with it, and init says so.
func TestPKIInitShortCAWithTheDefaultLeafValidity(t *testing.T) {
	t.Parallel()
	certs := filepath.Join(t.TempDir(), "certs")
	out, _ := mustRun(t, exitOK, "pki", "init", "--certs", certs, "--ca-valid-for", "1h")
	wantLines(t, "stdout", out, "until the CA ends", "the default --valid-for")
	ca, err := pki.LoadCertificates(filepath.Join(certs, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{pki.ServerCertFile, pki.ClientCertFile} {
		leaf, err := pki.LoadCertificates(filepath.Join(certs, name))
		if err != nil {
			t.Fatal(err)
		}
		if leaf[0].NotAfter.After(ca[0].NotAfter) || ca[0].NotAfter.Sub(leaf[0].NotAfter) > time.Minute {
			t.Errorf("%s ends at %s, want just before the CA's end %s", name, leaf[0].NotAfter, ca[0].NotAfter)
		}
	}
}

// TestPKIInspectRevocationLists checks what inspect says of lists: which
// CA signed them, the certificates a list file carries, and a list past
// its next update, which fails inspect as an expired certificate does.
func TestPKIInspectRevocationLists(t *testing.T) {
	t.Parallel()
	certs, theirs := t.TempDir(), t.TempDir()
	mustRun(t, exitOK, "pki", "init", "--certs", certs)
	mustRun(t, exitOK, "pki", "init", "--certs", theirs, "--intermediate")
	crl := filepath.Join(certs, pki.CRLFile)

	// The root's own list.
	out, _ := mustRun(t, exitOK, "pki", "inspect", "--certs", certs, crl)
	wantLines(t, "inspect of the root's list", out, "revocation list 1",
		"chains to "+filepath.Join(certs, pki.CACertFile), "  yes, signed by CN=echoloop development CA")

	// Another PKI's list, with the intermediate it carries: both shown,
	// neither chains, and that alone is no failure, as for certificates.
	out, _ = mustRun(t, exitOK, "pki", "inspect", "--json", "--certs", certs, filepath.Join(theirs, pki.CRLFile))
	lines := inspectJSON(t, out)
	if len(lines) != 2 || lines[0].Kind != "crl" || lines[1].Kind != "" || !lines[1].IsCA {
		t.Fatalf("inspect --json printed %d lines, want the list and then the intermediate:\n%s", len(lines), out)
	}
	if lines[0].Chains || !strings.Contains(lines[0].ChainError, "does not chain to "+filepath.Join(certs, "ca.crt")) {
		t.Errorf("another PKI's list: chains %v (%q), want false, naming the intermediate that signed it",
			lines[0].Chains, lines[0].ChainError)
	}
	if lines[1].Chains {
		t.Error("another PKI's intermediate chains to ca.crt")
	}

	// A stale list, signed by the right CA.
	ca, err := pki.LoadAuthority(filepath.Join(certs, pki.CACertFile), filepath.Join(certs, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(3), ThisUpdate: now.Add(-40 * 24 * time.Hour), NextUpdate: now.Add(-10 * 24 * time.Hour),
	}, ca.Certificate, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(t.TempDir(), "stale.crl")
	if err := os.WriteFile(stale, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut := mustRun(t, exitFail, "pki", "inspect", "--certs", certs, stale)
	wantLines(t, "inspect of a stale list", out, "(stale for 10 days)", "yes, signed by")
	wantLines(t, "inspect's error", errOut, "echoloop: outside its validity: "+stale+": revocation list 1 from ",
		"(stale for 10 days)")
	out, _ = mustRun(t, exitFail, "pki", "inspect", "--json", "--certs", certs, stale)
	if lines := inspectJSON(t, out); len(lines) != 1 || !lines[0].Stale || !lines[0].Chains {
		t.Errorf("inspect --json of a stale list = %s, want stale and chains true", out)
	}
}
