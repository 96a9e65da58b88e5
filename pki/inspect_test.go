package pki_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

func TestInspectKeys(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		keyType      pki.KeyType
		wantKey      string
		wantKeyUsage []string
	}{
		{"ok/ECDSA P-256", pki.KeyECDSAP256, "ECDSA P-256", []string{"digitalSignature"}},
		{"ok/ECDSA P-384", pki.KeyECDSAP384, "ECDSA P-384", []string{"digitalSignature"}},
		{"ok/Ed25519", pki.KeyEd25519, "Ed25519", []string{"digitalSignature"}},
		// An RSA key can also be encrypted to, in TLS 1.2's RSA key exchange.
		{"ok/RSA 2048", pki.KeyRSA2048, "RSA 2048", []string{"digitalSignature", "keyEncipherment"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := newCA(t, pki.WithKeyType(tc.keyType))
			leaf, err := ca.Issue("both", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				pki.WithKeyType(tc.keyType))
			if err != nil {
				t.Fatal(err)
			}

			in := pki.Inspect(leaf.Certificate, time.Now())
			caIn := pki.Inspect(ca.Certificate, time.Now())

			if in.Key != tc.wantKey || caIn.Key != tc.wantKey {
				t.Errorf("key = %q (CA %q), want %q", in.Key, caIn.Key, tc.wantKey)
			}
			if !slices.Equal(in.KeyUsage, tc.wantKeyUsage) {
				t.Errorf("key usage = %q, want %q", in.KeyUsage, tc.wantKeyUsage)
			}
			if want := []string{"serverAuth", "clientAuth"}; !slices.Equal(in.ExtKeyUsage, want) {
				t.Errorf("extended key usage = %q, want %q", in.ExtKeyUsage, want)
			}
			if want := []string{"digitalSignature", "keyCertSign", "cRLSign"}; !slices.Equal(caIn.KeyUsage, want) {
				t.Errorf("CA key usage = %q, want %q", caIn.KeyUsage, want)
			}
			if in.IsCA || !caIn.IsCA {
				t.Errorf("IsCA = %v for the leaf and %v for the CA", in.IsCA, caIn.IsCA)
			}
			if in.Subject != "CN=both,O=echoloop development" || in.Issuer != caIn.Subject {
				t.Errorf("subject %q issued by %q, want CN=both by %q", in.Subject, in.Issuer, caIn.Subject)
			}
			if in.SerialNumber != pki.SerialHex(leaf.Certificate) || in.SHA256 != pki.Fingerprint(leaf.Certificate) {
				t.Errorf("serial %s, sha256 %s: not the certificate's", in.SerialNumber, in.SHA256)
			}
		})
	}
}

func TestExtKeyUsageNames(t *testing.T) {
	t.Parallel()
	got := pki.ExtKeyUsageNames([]x509.ExtKeyUsage{
		x509.ExtKeyUsageAny, x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageEmailProtection,
		x509.ExtKeyUsageTimeStamping, x509.ExtKeyUsageOCSPSigning, x509.ExtKeyUsageIPSECUser,
	})
	want := []string{"any", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning", "usage(7)"}
	if !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsageNames = %q, want %q", got, want)
	}
	if got := pki.ExtKeyUsageNames(nil); got == nil || len(got) != 0 {
		t.Errorf("ExtKeyUsageNames(nil) = %#v, want an empty list that encodes as []", got)
	}
}

func TestInspectValidity(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	// A fixed moment, so every expected phrase is exact.
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

	cases := []struct {
		name            string
		from, to        time.Time
		wantLeft        string
		expired, notYet bool
	}{
		{name: "ok/days left", from: now.Add(-time.Hour), to: now.Add(10 * 24 * time.Hour), wantLeft: "10 days left"},
		{name: "ok/hours left", from: now.Add(-time.Hour), to: now.Add(5 * time.Hour), wantLeft: "5 hours left"},
		{name: "ok/minutes left", from: now.Add(-time.Hour), to: now.Add(30 * time.Minute), wantLeft: "30 minutes left"},
		{name: "ok/seconds left", from: now.Add(-time.Hour), to: now.Add(90 * time.Second), wantLeft: "1m30s left"},
		{
			name: "refused/expired", from: now.Add(-72 * time.Hour), to: now.Add(-3 * time.Hour),
			wantLeft: "expired 3 hours ago", expired: true,
		},
		{
			name: "refused/expired long ago", from: now.Add(-90 * 24 * time.Hour), to: now.Add(-60 * 24 * time.Hour),
			wantLeft: "expired 60 days ago", expired: true,
		},
		{
			name: "refused/not yet valid", from: now.Add(2 * 24 * time.Hour), to: now.Add(30 * 24 * time.Hour),
			wantLeft: "valid in 2 days", notYet: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			leaf, err := ca.IssueClient("timed", pki.WithValidity(tc.from, tc.to))
			if err != nil {
				t.Fatal(err)
			}

			in := pki.Inspect(leaf.Certificate, now)

			if in.TimeLeft != tc.wantLeft || in.Expired != tc.expired || in.NotYetValid != tc.notYet {
				t.Errorf("time left %q, expired %v, not yet valid %v; want %q, %v, %v",
					in.TimeLeft, in.Expired, in.NotYetValid, tc.wantLeft, tc.expired, tc.notYet)
			}
			if !in.NotBefore.Equal(tc.from) || !in.NotAfter.Equal(tc.to) || in.NotAfter.Location() != time.UTC {
				t.Errorf("validity %v to %v, want %v to %v in UTC", in.NotBefore, in.NotAfter, tc.from, tc.to)
			}
		})
	}
}

func TestInspectionCheckChain(t *testing.T) {
	t.Parallel()
	root := newCA(t)
	inter, err := root.NewIntermediate("inspect intermediate")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.IssueServer([]string{"chain.test"})
	if err != nil {
		t.Fatal(err)
	}
	stranger := newCA(t)

	cases := []struct {
		name          string
		intermediates []*x509.Certificate
		roots         *x509.CertPool
		wantErr       string
	}{
		{name: "ok/through the intermediate", intermediates: leaf.Chain, roots: root.Pool()},
		{name: "refused/intermediate missing", roots: root.Pool(), wantErr: "unknown authority"},
		{name: "refused/another root", intermediates: leaf.Chain, roots: stranger.Pool(), wantErr: "unknown authority"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := pki.Inspect(leaf.Certificate, time.Now())

			in.CheckChain(leaf.Certificate, tc.intermediates, tc.roots, "some/ca.crt")

			if in.ChainsTo != "some/ca.crt" || in.Chains != (tc.wantErr == "") {
				t.Errorf("chains to %q: %v, want some/ca.crt: %v", in.ChainsTo, in.Chains, tc.wantErr == "")
			}
			if !strings.Contains(in.ChainError, tc.wantErr) || (tc.wantErr == "") != (in.ChainError == "") {
				t.Errorf("chain error %q, want one containing %q", in.ChainError, tc.wantErr)
			}
		})
	}
}

// opensslPath finds the openssl binary, which the agreement test needs: it
// is the reference the inspection is checked against.
func opensslPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is not on PATH (%v): install it (apt-get install openssl) to check "+
			"that pki inspect agrees with it", err)
	}
	return path
}

func runOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, opensslPath(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// opensslField returns the value after "name=" in openssl's one-line output.
func opensslField(t *testing.T, out, name string) string {
	t.Helper()
	for line := range strings.Lines(out) {
		if value, ok := strings.CutPrefix(line, name+"="); ok {
			return strings.TrimSpace(value)
		}
	}
	t.Fatalf("openssl printed no %s= line:\n%s", name, out)
	return ""
}

// opensslExtension returns the line openssl prints under an extension's
// heading in -text output, and whether the extension is there.
func opensslExtension(text, heading string) (string, bool) {
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		if strings.Contains(line, "X509v3 "+heading+":") && i+1 < len(lines) {
			return strings.TrimSpace(lines[i+1]), true
		}
	}
	return "", false
}

// opensslNames maps openssl's spelling of usages to RFC 5280's.
var opensslNames = map[string]string{
	"TLS Web Server Authentication": "serverAuth",
	"TLS Web Client Authentication": "clientAuth",
	"Digital Signature":             "digitalSignature",
	"Key Encipherment":              "keyEncipherment",
	"Certificate Sign":              "keyCertSign",
	"CRL Sign":                      "cRLSign",
}

func TestInspectAgreesWithOpenSSL(t *testing.T) {
	t.Parallel()
	opensslPath(t)
	sans := []string{"agree.example.test", "192.0.2.7", "2001:db8::7", "spiffe://example.test/agree",
		"ops@example.test"}

	cases := []struct {
		name    string
		keyType pki.KeyType
		// wantText are lines openssl prints for the key.
		wantText []string
	}{
		{"ok/ECDSA P-256", pki.KeyECDSAP256, []string{"Public-Key: (256 bit)", "ASN1 OID: prime256v1", "NIST CURVE: P-256"}},
		{"ok/ECDSA P-384", pki.KeyECDSAP384, []string{"Public-Key: (384 bit)", "ASN1 OID: secp384r1"}},
		{"ok/RSA 2048", pki.KeyRSA2048, []string{"Public-Key: (2048 bit)", "Exponent: 65537"}},
		{"ok/Ed25519", pki.KeyEd25519, []string{"ED25519 Public-Key:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ca := newCA(t, pki.WithKeyType(tc.keyType))
			leaf, err := ca.Issue("agree", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				pki.WithKeyType(tc.keyType), pki.WithSANs(sans...))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			for _, c := range []struct {
				file string
				cert *x509.Certificate
			}{{"leaf.crt", leaf.Certificate}, {"ca.crt", ca.Certificate}} {
				path := writeFile(t, dir, c.file, pki.EncodeCertificates(c.cert))
				checkAgainstOpenSSL(t, path, pki.Inspect(c.cert, time.Now()), tc.wantText)
			}
		})
	}
}

func checkAgainstOpenSSL(t *testing.T, path string, in pki.Inspection, wantKeyText []string) {
	t.Helper()
	name := filepath.Base(path)
	text := runOpenSSL(t, "x509", "-in", path, "-noout", "-text")
	fields := runOpenSSL(t, "x509", "-in", path, "-noout", "-fingerprint", "-sha256", "-serial",
		"-enddate", "-startdate", "-subject", "-issuer", "-nameopt", "RFC2253")

	// Serial: openssl prints whole bytes in upper case, so a leading zero
	// nibble may show that big.Int's hex leaves out.
	if got := strings.TrimLeft(strings.ToLower(opensslField(t, fields, "serial")), "0"); got != in.SerialNumber {
		t.Errorf("%s: openssl serial %s, inspect %s", name, got, in.SerialNumber)
	}
	fingerprint := strings.ToLower(strings.ReplaceAll(opensslField(t, fields, "sha256 Fingerprint"), ":", ""))
	if fingerprint != in.SHA256 {
		t.Errorf("%s: openssl sha256 %s, inspect %s", name, fingerprint, in.SHA256)
	}
	for _, when := range []struct {
		field string
		want  time.Time
	}{{"notAfter", in.NotAfter}, {"notBefore", in.NotBefore}} {
		got, err := time.Parse("Jan _2 15:04:05 2006 MST", opensslField(t, fields, when.field))
		if err != nil {
			t.Fatalf("%s: openssl %s: %v", name, when.field, err)
		}
		if !got.Equal(when.want) {
			t.Errorf("%s: openssl %s %v, inspect %v", name, when.field, got, when.want)
		}
	}
	if got := opensslField(t, fields, "subject"); got != in.Subject {
		t.Errorf("%s: openssl subject %q, inspect %q", name, got, in.Subject)
	}
	if got := opensslField(t, fields, "issuer"); got != in.Issuer {
		t.Errorf("%s: openssl issuer %q, inspect %q", name, got, in.Issuer)
	}

	// The key.
	for _, want := range wantKeyText {
		if !strings.Contains(text, want) {
			t.Errorf("%s: openssl -text lacks %q for a key inspect calls %q:\n%s", name, want, in.Key, text)
		}
	}

	// Names: openssl lists them in certificate order; compare as sets.
	var fromInspect []string
	for _, n := range in.DNSNames {
		fromInspect = append(fromInspect, "dns:"+n)
	}
	for _, n := range in.IPAddresses {
		fromInspect = append(fromInspect, "ip:"+n)
	}
	for _, n := range in.URIs {
		fromInspect = append(fromInspect, "uri:"+n)
	}
	for _, n := range in.EmailAddresses {
		fromInspect = append(fromInspect, "email:"+n)
	}
	var fromOpenSSL []string
	if line, ok := opensslExtension(text, "Subject Alternative Name"); ok {
		for _, entry := range strings.Split(line, ", ") {
			kind, value, _ := strings.Cut(entry, ":")
			switch kind {
			case "DNS":
				fromOpenSSL = append(fromOpenSSL, "dns:"+value)
			case "IP Address":
				// openssl 3.0 writes IPv6 uncompressed (2001:DB8:0:...).
				fromOpenSSL = append(fromOpenSSL, "ip:"+net.ParseIP(value).String())
			case "URI":
				fromOpenSSL = append(fromOpenSSL, "uri:"+value)
			case "email":
				fromOpenSSL = append(fromOpenSSL, "email:"+value)
			default:
				fromOpenSSL = append(fromOpenSSL, "unknown:"+entry)
			}
		}
	}
	slices.Sort(fromInspect)
	slices.Sort(fromOpenSSL)
	if !slices.Equal(fromInspect, fromOpenSSL) {
		t.Errorf("%s: openssl names %q, inspect %q", name, fromOpenSSL, fromInspect)
	}

	// Usages and the CA flag.
	for _, ext := range []struct {
		heading string
		inspect []string
	}{{"Extended Key Usage", in.ExtKeyUsage}, {"Key Usage", in.KeyUsage}} {
		line, _ := opensslExtension(text, ext.heading)
		got := []string{}
		if line != "" {
			for _, u := range strings.Split(line, ", ") {
				if n, ok := opensslNames[u]; ok {
					u = n
				}
				got = append(got, u)
			}
		}
		if !slices.Equal(got, ext.inspect) {
			t.Errorf("%s: openssl %s %q, inspect %q", name, ext.heading, got, ext.inspect)
		}
	}
	constraints, present := opensslExtension(text, "Basic Constraints")
	switch {
	case in.IsCA && !strings.HasPrefix(constraints, "CA:TRUE"):
		t.Errorf("%s: inspect says CA, openssl's basic constraints say %q", name, constraints)
	case !in.IsCA && present && !strings.HasPrefix(constraints, "CA:FALSE"):
		t.Errorf("%s: inspect says not a CA, openssl's basic constraints say %q", name, constraints)
	}
	if in.IsCA != strings.Contains(text, "CA:TRUE") {
		t.Errorf("%s: inspect IsCA %v, openssl -text CA:TRUE %v", name, in.IsCA, strings.Contains(text, "CA:TRUE"))
	}
}

func TestInspectCRL(t *testing.T) {
	t.Parallel()
	root, other := newCA(t), newCA(t)
	inter, err := root.NewIntermediate("list intermediate")
	if err != nil {
		t.Fatal(err)
	}
	otherInter, err := other.NewIntermediate("list intermediate")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	list := func(signer *pki.Authority, nextUpdate time.Time) *x509.RevocationList {
		t.Helper()
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(7), ThisUpdate: now.Add(-72 * time.Hour), NextUpdate: nextUpdate,
		}, signer.Certificate, signer.Key)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return crl
	}
	roots := []*x509.Certificate{root.Certificate}

	cases := []struct {
		name         string
		crl          *x509.RevocationList
		carried      []*x509.Certificate
		wantChains   bool
		wantSignedBy string
		wantError    string
		wantStale    bool
		wantTimeLeft string
	}{
		{name: "ok/the root's list", crl: list(root, now.Add(48*time.Hour)),
			wantChains: true, wantSignedBy: root.Certificate.Subject.String()},
		{name: "ok/an intermediate's list with the intermediate carried", crl: list(inter, now.Add(time.Hour)),
			carried: []*x509.Certificate{inter.Certificate}, wantChains: true,
			wantSignedBy: inter.Certificate.Subject.String()},
		{name: "refused/an intermediate's list without the intermediate", crl: list(inter, now.Add(time.Hour)),
			wantError: "signed by none of the CAs in ca.crt"},
		{name: "refused/another PKI's intermediate carried", crl: list(otherInter, now.Add(time.Hour)),
			carried: []*x509.Certificate{otherInter.Certificate}, wantError: "which does not chain to ca.crt"},
		{name: "refused/another root's list", crl: list(other, now.Add(time.Hour)),
			carried: []*x509.Certificate{inter.Certificate}, wantError: "signed by none of the CAs in ca.crt"},
		{name: "stale/past its next update", crl: list(root, now.Add(-49*time.Hour)),
			wantChains: true, wantSignedBy: root.Certificate.Subject.String(), wantStale: true,
			wantTimeLeft: "stale for 2 days"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := pki.InspectCRL(tc.crl, now)
			in.CheckSignature(tc.crl, tc.carried, roots, "ca.crt")

			if in.Kind != "crl" || in.Number != "7" || in.ChainsTo != "ca.crt" {
				t.Errorf("kind %q, number %q, checked against %q", in.Kind, in.Number, in.ChainsTo)
			}
			if in.Chains != tc.wantChains || in.SignedBy != tc.wantSignedBy {
				t.Errorf("chains %v, signed by %q (%s); want %v, %q", in.Chains, in.SignedBy, in.ChainError,
					tc.wantChains, tc.wantSignedBy)
			}
			if (tc.wantError == "") != (in.ChainError == "") || !strings.Contains(in.ChainError, tc.wantError) {
				t.Errorf("chain error %q, want one containing %q", in.ChainError, tc.wantError)
			}
			if in.Stale != tc.wantStale {
				t.Errorf("stale %v, want %v (next update %s)", in.Stale, tc.wantStale, in.NextUpdate)
			}
			if tc.wantTimeLeft != "" && in.TimeLeft != tc.wantTimeLeft {
				t.Errorf("time left %q, want %q", in.TimeLeft, tc.wantTimeLeft)
			}
		})
	}
}
