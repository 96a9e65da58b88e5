package pki

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Expectation is what a correctly configured server does with a [Fixture].
type Expectation string

// The two things a server can do with a client certificate at the TLS layer.
const (
	ExpectAccept Expectation = "accept"
	ExpectRefuse Expectation = "refuse"
)

// ManifestFile is the name of the manifest [Fixtures.Write] puts beside the
// fixture files, and [LoadFixtures] reads.
const ManifestFile = "manifest.json"

// RevokedCRLFile is the revocation list [Fixtures.Write] writes for the
// revoked fixture. A server has to load it before it can refuse that fixture.
const RevokedCRLFile = "revoked.crl"

// Fixture is one client certificate case of [MakeFixtures]: what it is,
// what a correct server does with it, and what a server that does otherwise
// most likely has wrong.
type Fixture struct {
	// Name is short, stable and safe as a file name, for example "self-signed".
	Name string
	// Description says what the certificate is, in a sentence.
	Description string
	// Expect is what a correctly configured server does with it.
	Expect Expectation
	// Misconfiguration is the likely fault of a server that does the
	// opposite of Expect.
	Misconfiguration string
	// NeedsCRL is set when a refusal can only be expected of a server that
	// loaded [Fixtures.CRL].
	NeedsCRL bool
	// Skip, when set, says why the fixture was not made; Issued is then nil.
	Skip string
	// Issued is the certificate to present, with its chain; nil presents
	// no certificate at all.
	Issued *Issued
}

// Fixtures is a full set of client certificate cases.
type Fixtures struct {
	// Signer is the subject of the CA that signed the fixtures meant to be
	// trusted.
	Signer string
	// CRL is a PEM revocation list, signed by the signer, that revokes the
	// "revoked" fixture and nothing else.
	CRL []byte
	// Foreign is the CA that signed the "foreign-ca" fixture: a CA the
	// target must not trust. It is nil for a set read by [LoadFixtures].
	Foreign *x509.Certificate
	// List holds the cases, in the order reports show them.
	List []Fixture
}

// The validity windows of the fixtures that are outside theirs. A year on
// either side keeps them so for as long as a fixture directory is likely
// to be kept.
const (
	fixtureFarOff = 365 * 24 * time.Hour
	fixtureSpan   = 30 * 24 * time.Hour
)

// MakeFixtures mints, with signer, every client certificate case a server
// that requires client certificates has to get right: the good one and the
// key types it should take, and the expired, not yet valid, wrong-purpose,
// self-signed, foreign, CA and revoked ones it should refuse, and chains with
// and without their intermediate.
//
// The intermediate cases need a signer that may sign a CA below itself. A
// signer whose path length is zero (an intermediate from `pki init
// --intermediate`) cannot, and those cases come back with Skip set.
func MakeFixtures(signer *Authority) (*Fixtures, error) {
	now := time.Now()
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	set := &Fixtures{Signer: signer.Certificate.Subject.String()}
	var err error
	add := func(f Fixture, issue func() (*Issued, error)) {
		if err != nil || f.Skip != "" || issue == nil {
			set.List = append(set.List, f)
			return
		}
		f.Issued, err = issue()
		set.List = append(set.List, f)
	}

	add(Fixture{
		Name:        "good",
		Description: "a client certificate from the CA, ECDSA P-256 key, extended key usage clientAuth",
		Expect:      ExpectAccept,
		Misconfiguration: "a valid client certificate was refused: the server does not trust the CA " +
			"that signed it (check its client CA bundle), or it refuses this client at the TLS layer",
	}, func() (*Issued, error) { return signer.IssueClient("audit good") })
	add(Fixture{
		Name:        "no-certificate",
		Description: "no client certificate at all",
		Expect:      ExpectRefuse,
		Misconfiguration: "a client without a certificate was let in: the server asks for one but " +
			"does not require it (Go's VerifyClientCertIfGiven or RequestClientCert, " +
			"nginx's ssl_verify_client optional)",
	}, nil)
	add(Fixture{
		Name:        "expired",
		Description: "from the CA, but its validity ended a year ago",
		Expect:      ExpectRefuse,
		Misconfiguration: "an expired certificate was let in: the server does not check validity " +
			"dates, most likely because it does not verify client certificates at all " +
			"(RequireAnyClientCert, or a verification callback that ignores the time)",
	}, func() (*Issued, error) {
		return signer.IssueClient("audit expired",
			WithValidity(now.Add(-fixtureFarOff-fixtureSpan), now.Add(-fixtureFarOff)))
	})
	add(Fixture{
		Name:        "not-yet-valid",
		Description: "from the CA, but its validity starts a year from now",
		Expect:      ExpectRefuse,
		Misconfiguration: "a certificate that is not valid yet was let in: the server does not check " +
			"validity dates, most likely because it does not verify client certificates at all",
	}, func() (*Issued, error) {
		return signer.IssueClient("audit not yet valid",
			WithValidity(now.Add(fixtureFarOff), now.Add(fixtureFarOff+fixtureSpan)))
	})
	add(Fixture{
		Name:        "server-auth-only",
		Description: "from the CA, extended key usage serverAuth only: a server's certificate",
		Expect:      ExpectRefuse,
		Misconfiguration: "a certificate made for servers was let in as a client's: the server does not " +
			"check extended key usage (a verifier run with ExtKeyUsageAny, or no verification)",
	}, func() (*Issued, error) { return signer.IssueServer([]string{"audit-server-only.invalid"}) })
	add(Fixture{
		Name:        "no-eku",
		Description: "from the CA, with no extended key usage extension, which RFC 5280 reads as any purpose",
		Expect:      ExpectAccept,
		Misconfiguration: "a certificate without extended key usage was refused: the server insists " +
			"that clientAuth be listed, which is stricter than RFC 5280 and harmless unless your " +
			"clients hold such certificates",
	}, func() (*Issued, error) { return signer.IssueClient("audit no eku", WithUsage()) })
	add(Fixture{
		Name:        "self-signed",
		Description: "a self-signed client certificate: no CA vouches for it",
		Expect:      ExpectRefuse,
		Misconfiguration: "a self-signed certificate was let in: the server probably uses " +
			"RequireAnyClientCert (nginx: ssl_verify_client optional_no_ca) or skips verification",
	}, func() (*Issued, error) { return NewSelfSigned("audit self-signed", clientAuth) })

	var foreign *Authority
	add(Fixture{
		Name:        "foreign-ca",
		Description: "a client certificate from another CA, made for this audit",
		Expect:      ExpectRefuse,
		Misconfiguration: "a certificate from a CA the server should not trust was let in: its client " +
			"CA bundle holds more than your CA (the system roots, or a bundle with other CAs in it), " +
			"or it skips verification",
	}, func() (*Issued, error) {
		var err error
		if foreign, err = NewAuthority("audit foreign CA"); err != nil {
			return nil, err
		}
		return foreign.IssueClient("audit foreign")
	})
	add(Fixture{
		Name:        "ca-as-leaf",
		Description: "a CA certificate signed by the CA, presented as the client's own",
		Expect:      ExpectRefuse,
		Misconfiguration: "a CA certificate was let in as a client's: the server does not check that " +
			"the client's certificate is a leaf (Go's verifier alone does not), so whoever holds a " +
			"CA key below yours can pose as a client without issuing a certificate",
	}, func() (*Issued, error) {
		ca, err := signer.NewIntermediate("audit CA as leaf")
		if err != nil {
			return nil, err
		}
		return ca.AsIssued(), nil
	})

	// The three chain cases hang below an intermediate made here, which no
	// server can hold in its bundle: only the chain the client sends links
	// the leaf to the CA.
	skip := ""
	if signer.Certificate.MaxPathLen == 0 && signer.Certificate.MaxPathLenZero {
		skip = fmt.Sprintf("%s may not sign a CA below itself (path length 0): make fixtures with the root "+
			"CA to include this case", set.Signer)
	}
	var issuing *Authority
	add(Fixture{
		Name:        "with-intermediate",
		Description: "a client certificate from an intermediate below the CA, sent with that intermediate",
		Expect:      ExpectAccept,
		Skip:        skip,
		Misconfiguration: "a valid chain through an intermediate was refused: the server does not use " +
			"the intermediates a client sends (a verification depth of 1, such as nginx's " +
			"ssl_verify_depth 1), or limits the path length",
	}, func() (*Issued, error) {
		var err error
		if issuing, err = signer.NewIntermediate("audit issuing CA"); err != nil {
			return nil, err
		}
		return issuing.IssueClient("audit chained")
	})
	add(Fixture{
		Name:        "without-intermediate",
		Description: "a client certificate from that intermediate, sent without it",
		Expect:      ExpectRefuse,
		Skip:        skip,
		Misconfiguration: "a leaf was let in without the intermediate that links it to your CA: that " +
			"intermediate was made for this audit and is in no bundle, so the server cannot have " +
			"verified the chain; it probably skips verification",
	}, func() (*Issued, error) {
		leaf, err := issuing.IssueClient("audit orphan")
		if err != nil {
			return nil, err
		}
		return leaf.LeafOnly(), nil
	})
	add(Fixture{
		Name:        "intermediate-server-only",
		Description: "a client certificate below an intermediate whose extended key usage is serverAuth only",
		Expect:      ExpectRefuse,
		Skip:        skip,
		Misconfiguration: "a client certificate was let in although an intermediate above it may only " +
			"vouch for servers: the server checks extended key usage on the leaf alone, or not at all",
	}, func() (*Issued, error) {
		servers, err := signer.NewIntermediate("audit servers-only CA", WithUsage(x509.ExtKeyUsageServerAuth))
		if err != nil {
			return nil, err
		}
		return servers.IssueClient("audit misplaced")
	})
	add(Fixture{
		Name:        "revoked",
		Description: "from the CA, and revoked by " + RevokedCRLFile + ", which the server must load",
		Expect:      ExpectRefuse,
		NeedsCRL:    true,
		Misconfiguration: "a revoked certificate was let in: the server does not load " + RevokedCRLFile +
			" (echoloop: serve --crl), or does not check revocation of client certificates",
	}, func() (*Issued, error) { return signer.IssueClient("audit revoked") })

	for _, kt := range []struct {
		name string
		kt   KeyType
	}{{"rsa-2048", KeyRSA2048}, {"ecdsa-p384", KeyECDSAP384}, {"ed25519", KeyEd25519}} {
		add(Fixture{
			Name:        kt.name,
			Description: "a good client certificate with a key of type " + string(kt.kt),
			Expect:      ExpectAccept,
			Misconfiguration: "a valid client certificate with a " + string(kt.kt) + " key was refused: " +
				"the server's TLS stack, or the signature algorithms it allows, leave this key type out",
		}, func() (*Issued, error) { return signer.IssueClient("audit "+kt.name, WithKeyType(kt.kt)) })
	}
	if err != nil {
		return nil, err
	}
	if foreign != nil {
		set.Foreign = foreign.Certificate
	}

	revoked := set.Find("revoked")
	set.CRL, err = signer.RevocationList(big.NewInt(1), []x509.RevocationListEntry{{
		SerialNumber:   revoked.Issued.Certificate.SerialNumber,
		RevocationTime: now.UTC(),
		ReasonCode:     RevocationReasons["keyCompromise"],
	}})
	if err != nil {
		return nil, err
	}
	return set, nil
}

// Find returns the fixture named name, or nil.
func (s *Fixtures) Find(name string) *Fixture {
	for i := range s.List {
		if s.List[i].Name == name {
			return &s.List[i]
		}
	}
	return nil
}

// manifest is the JSON form of a fixture set, written as [ManifestFile].
type manifest struct {
	Signer   string          `json:"signer"`
	CRL      string          `json:"crl"`
	CRLNote  string          `json:"crlNote"`
	Fixtures []manifestEntry `json:"fixtures"`
}

type manifestEntry struct {
	Name             string      `json:"name"`
	Description      string      `json:"description"`
	Expect           Expectation `json:"expect"`
	Misconfiguration string      `json:"misconfiguration"`
	Cert             string      `json:"cert,omitempty"`
	Key              string      `json:"key,omitempty"`
	CRL              string      `json:"crl,omitempty"`
	Skipped          string      `json:"skipped,omitempty"`
}

// Write puts the set into dir: NAME.crt (leaf, then chain) and NAME.key for
// each fixture that has a certificate, [RevokedCRLFile], and
// [ManifestFile]. Keys are written 0600. Existing files are replaced only
// with force; nothing is written unless all can be.
func (s *Fixtures) Write(dir string, force bool) ([]string, error) {
	m := manifest{
		Signer: s.Signer,
		CRL:    RevokedCRLFile,
		CRLNote: "the revoked fixture is refused only by a server that loads " + RevokedCRLFile +
			" (echoloop serve --crl " + RevokedCRLFile + ", or your server's equivalent); the list is " +
			fmt.Sprintf("current for %d days from when it was written", int(CRLValidity.Hours()/24)),
	}
	set := fileSet{}
	for _, f := range s.List {
		entry := manifestEntry{Name: f.Name, Description: f.Description, Expect: f.Expect,
			Misconfiguration: f.Misconfiguration, Skipped: f.Skip}
		if f.NeedsCRL {
			entry.CRL = RevokedCRLFile
		}
		if f.Issued != nil {
			if !fileNamePattern.MatchString(f.Name) {
				return nil, fmt.Errorf("pki: fixture %q cannot name a file", f.Name)
			}
			entry.Cert, entry.Key = f.Name+".crt", f.Name+".key"
			if err := set.issued(filepath.Join(dir, f.Name), f.Issued); err != nil {
				return nil, err
			}
		}
		m.Fixtures = append(m.Fixtures, entry)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pki: encoding the fixture manifest: %w", err)
	}
	set = append(set,
		encodedFile{filepath.Join(dir, RevokedCRLFile), s.CRL, CertFileMode},
		encodedFile{filepath.Join(dir, ManifestFile), append(data, '\n'), CertFileMode},
	)

	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: certificates in it are for others to read; each key is 0600
		return nil, fmt.Errorf("pki: creating directory %q: %w", dir, err)
	}
	return set.write(force)
}

// LoadFixtures reads a set that [Fixtures.Write] wrote, or that was made
// elsewhere in the same form: dir/manifest.json and the files it names,
// relative to dir. Each key is checked against its certificate.
func LoadFixtures(dir string) (*Fixtures, error) {
	path := filepath.Join(dir, ManifestFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: reading fixture manifest: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("pki: fixture manifest %q does not parse: %w", path, err)
	}
	if len(m.Fixtures) == 0 {
		return nil, fmt.Errorf("pki: fixture manifest %q lists no fixtures", path)
	}

	set := &Fixtures{Signer: m.Signer}
	if m.CRL != "" {
		if set.CRL, err = os.ReadFile(filepath.Join(dir, m.CRL)); err != nil {
			return nil, fmt.Errorf("pki: reading the fixtures' revocation list: %w", err)
		}
	}
	for _, e := range m.Fixtures {
		f := Fixture{Name: e.Name, Description: e.Description, Expect: e.Expect,
			Misconfiguration: e.Misconfiguration, NeedsCRL: e.CRL != "", Skip: e.Skipped}
		if e.Expect != ExpectAccept && e.Expect != ExpectRefuse {
			return nil, fmt.Errorf("pki: fixture %q in %q expects %q: want accept or refuse", e.Name, path, e.Expect)
		}
		if (e.Cert == "") != (e.Key == "") {
			return nil, fmt.Errorf("pki: fixture %q in %q names a certificate or a key without the other",
				e.Name, path)
		}
		if e.Cert != "" && e.Skipped == "" {
			if f.Issued, err = loadIssued(filepath.Join(dir, e.Cert), filepath.Join(dir, e.Key)); err != nil {
				return nil, fmt.Errorf("pki: fixture %q: %w", e.Name, err)
			}
		}
		if e.Cert == "" && e.Skipped == "" && e.Expect == ExpectAccept {
			return nil, fmt.Errorf("pki: fixture %q in %q presents no certificate but expects to be accepted",
				e.Name, path)
		}
		set.List = append(set.List, f)
	}
	return set, nil
}

// loadIssued reads a leaf, its chain and its key.
func loadIssued(certPath, keyPath string) (*Issued, error) {
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	key, err := LoadKey(keyPath)
	if err != nil {
		return nil, err
	}
	if err := checkKeyMatches(certs[0], key); err != nil {
		return nil, fmt.Errorf("pki: %q and %q do not belong together: %w", certPath, keyPath, err)
	}
	return &Issued{Certificate: certs[0], Key: key, Chain: certs[1:]}, nil
}
