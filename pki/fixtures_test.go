package pki_test

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/echoloop/echoloop/pki"
)

func makeFixtures(t *testing.T, signer *pki.Authority) *pki.Fixtures {
	t.Helper()
	set, err := pki.MakeFixtures(signer)
	if err != nil {
		t.Fatalf("MakeFixtures: %v", err)
	}
	return set
}

// strictlyVerify is what a server that requires and verifies client
// certificates does: chain to the CA for clientAuth, a leaf and not a CA,
// and not revoked by the list it loaded.
func strictlyVerify(root *x509.Certificate, crl *x509.RevocationList, issued *pki.Issued) error {
	if issued == nil {
		return errSentinel("no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range issued.Chain {
		intermediates.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := issued.Certificate.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	switch {
	case err != nil:
		return err
	case issued.Certificate.IsCA:
		return errSentinel("a CA certificate")
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(issued.Certificate.SerialNumber) == 0 {
			return errSentinel("revoked")
		}
	}
	return nil
}

type errSentinel string

func (e errSentinel) Error() string { return string(e) }

func TestFixturesMeanWhatTheyExpect(t *testing.T) {
	t.Parallel()
	root, err := pki.NewAuthority("fixtures root")
	if err != nil {
		t.Fatal(err)
	}
	set := makeFixtures(t, root)
	crls, err := pki.ParseCRLs("fixtures CRL", set.CRL)
	if err != nil {
		t.Fatal(err)
	}
	if len(crls) != 1 || len(crls[0].RevokedCertificateEntries) != 1 || crls[0].CheckSignatureFrom(root.Certificate) != nil {
		t.Fatalf("the CRL should be signed by the signer and revoke one certificate: %+v", crls)
	}

	want := []string{"good", "no-certificate", "expired", "not-yet-valid", "server-auth-only", "no-eku",
		"self-signed", "foreign-ca", "ca-as-leaf", "with-intermediate", "without-intermediate",
		"intermediate-server-only", "revoked", "rsa-2048", "ecdsa-p384", "ed25519"}
	var names []string
	for _, f := range set.List {
		names = append(names, f.Name)
		if f.Skip != "" || f.Description == "" || f.Misconfiguration == "" {
			t.Errorf("%s: skipped %q, description %q, misconfiguration %q", f.Name, f.Skip, f.Description,
				f.Misconfiguration)
		}
		err := strictlyVerify(root.Certificate, crls[0], f.Issued)
		switch {
		case f.Expect == pki.ExpectAccept && err != nil:
			t.Errorf("%s: expected to be accepted, but a strict verifier refuses it: %v", f.Name, err)
		case f.Expect == pki.ExpectRefuse && err == nil:
			t.Errorf("%s: expected to be refused, but a strict verifier accepts it", f.Name)
		}
	}
	if !slices.Equal(names, want) {
		t.Errorf("fixtures = %q, want %q", names, want)
	}

	// The cases that differ from "good" in one respect only must not
	// differ in others, or they would test two things at once.
	if got := set.Find("revoked").Issued; strictlyVerify(root.Certificate, &x509.RevocationList{}, got) != nil {
		t.Error("revoked: refused even without the CRL")
	}
	if got := set.Find("foreign-ca").Issued; got.Certificate.CheckSignatureFrom(set.Foreign) != nil {
		t.Error("foreign-ca: not signed by the set's foreign CA")
	}
	for name, key := range map[string]string{"good": "ECDSA P-256", "rsa-2048": "RSA 2048",
		"ecdsa-p384": "ECDSA P-384", "ed25519": "Ed25519"} {
		if got := pki.DescribeKey(set.Find(name).Issued.Certificate.PublicKey); got != key {
			t.Errorf("%s: key %s, want %s", name, got, key)
		}
	}
}

func TestFixturesRoundTripThroughFiles(t *testing.T) {
	t.Parallel()
	root, err := pki.NewAuthority("fixtures root")
	if err != nil {
		t.Fatal(err)
	}
	set := makeFixtures(t, root)
	dir := filepath.Join(t.TempDir(), "fixtures")
	written, err := set.Write(dir, false)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	for _, path := range written {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if strings.HasSuffix(path, ".key") {
			want = 0o600
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, info.Mode().Perm(), want)
		}
	}

	loaded, err := pki.LoadFixtures(dir)
	if err != nil {
		t.Fatalf("LoadFixtures: %v", err)
	}
	if loaded.Signer != root.Certificate.Subject.String() || string(loaded.CRL) != string(set.CRL) {
		t.Errorf("signer %q and CRL do not survive the round trip", loaded.Signer)
	}
	if len(loaded.List) != len(set.List) {
		t.Fatalf("loaded %d fixtures, wrote %d", len(loaded.List), len(set.List))
	}
	for i, got := range loaded.List {
		made := set.List[i]
		if got.Name != made.Name || got.Expect != made.Expect || got.NeedsCRL != made.NeedsCRL ||
			got.Misconfiguration != made.Misconfiguration {
			t.Errorf("fixture %d: loaded %+v, made %+v", i, got, made)
		}
		if (got.Issued == nil) != (made.Issued == nil) {
			t.Fatalf("%s: certificate lost or gained", got.Name)
		}
		if got.Issued == nil {
			continue
		}
		if pki.Fingerprint(got.Issued.Certificate) != pki.Fingerprint(made.Issued.Certificate) ||
			len(got.Issued.Chain) != len(made.Issued.Chain) {
			t.Errorf("%s: loaded a different certificate or chain", got.Name)
		}
	}

	if _, err := set.Write(dir, false); err == nil || !strings.Contains(err.Error(), "already exist") {
		t.Errorf("second Write without force: %v, want a refusal", err)
	}
	if _, err := set.Write(dir, true); err != nil {
		t.Errorf("second Write with force: %v", err)
	}
}

func TestFixturesFromAnIntermediateSkipTheChainCases(t *testing.T) {
	t.Parallel()
	dir, res := initDir(t, pki.InitConfig{Intermediate: true})
	signer, err := pki.SigningAuthority(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	set := makeFixtures(t, signer)
	var skipped []string
	for _, f := range set.List {
		if f.Skip != "" {
			skipped = append(skipped, f.Name)
			if f.Issued != nil {
				t.Errorf("%s: skipped but made", f.Name)
			}
			continue
		}
		err := strictlyVerify(res.CA.Certificate, &x509.RevocationList{}, f.Issued)
		if f.Expect == pki.ExpectAccept && err != nil {
			t.Errorf("%s: refused by a strict verifier trusting the root: %v", f.Name, err)
		}
	}
	want := []string{"with-intermediate", "without-intermediate", "intermediate-server-only"}
	if !slices.Equal(skipped, want) {
		t.Errorf("skipped %q, want %q", skipped, want)
	}

	out := filepath.Join(t.TempDir(), "fixtures")
	if _, err := set.Write(out, false); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Fixtures []struct{ Name, Skipped, Cert string }
	}
	data, err := os.ReadFile(filepath.Join(out, pki.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Fixtures {
		if slices.Contains(want, f.Name) != (f.Skipped != "") || (f.Skipped != "" && f.Cert != "") {
			t.Errorf("manifest entry %+v", f)
		}
	}
	if _, err := pki.LoadFixtures(out); err != nil {
		t.Errorf("LoadFixtures of a set with skipped cases: %v", err)
	}
}

func TestLoadFixturesRefusesBadManifests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, manifest, want string
	}{
		{"refused/not JSON", "{", "does not parse"},
		{"refused/empty", `{"fixtures":[]}`, "lists no fixtures"},
		{"refused/unknown expectation", `{"fixtures":[{"name":"x","expect":"maybe"}]}`, `expects "maybe"`},
		{"refused/certificate without key", `{"fixtures":[{"name":"x","expect":"refuse","cert":"x.crt"}]}`,
			"without the other"},
		{"refused/accept without certificate", `{"fixtures":[{"name":"x","expect":"accept"}]}`,
			"presents no certificate"},
		{"refused/missing file", `{"fixtures":[{"name":"x","expect":"accept","cert":"x.crt","key":"x.key"}]}`,
			"no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, pki.ManifestFile), []byte(tc.manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := pki.LoadFixtures(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadFixtures: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
