package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// allFiles is every file Init writes, in the order it writes them.
var allFiles = []string{
	pki.CACertFile, pki.CAKeyFile,
	pki.ServerCertFile, pki.ServerKeyFile,
	pki.ClientCertFile, pki.ClientKeyFile,
	pki.CRLFile,
}

// oidExtKeyUsage is the extended key usage extension, RFC 5280 section 4.2.1.12.
var oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}

func TestInitWritesFilesWithModes(t *testing.T) {
	t.Parallel()
	// A directory that does not exist yet: Init must create it.
	dir := filepath.Join(t.TempDir(), "nested", "certs")

	res, err := pki.Init(pki.InitConfig{Dir: dir})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}

	var wantPaths []string
	for _, name := range allFiles {
		wantPaths = append(wantPaths, filepath.Join(dir, name))
	}
	if !slices.Equal(res.Files, wantPaths) {
		t.Errorf("Files = %q, want %q", res.Files, wantPaths)
	}

	wantModes := map[string]fs.FileMode{
		pki.CACertFile:     0o644,
		pki.CAKeyFile:      0o600,
		pki.ServerCertFile: 0o644,
		pki.ServerKeyFile:  0o600,
		pki.ClientCertFile: 0o644,
		pki.ClientKeyFile:  0o600,
		pki.CRLFile:        0o644,
	}
	for name, want := range wantModes {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("stat %s: %v", name, err)
			continue
		}
		if !info.Mode().IsRegular() {
			t.Errorf("%s: mode %v, want a regular file", name, info.Mode())
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: permissions %#o, want %#o", name, got, want)
		}
	}

	// Nothing else is left behind, such as temporary files.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := slices.Sorted(slices.Values(allFiles))
	if !slices.Equal(got, want) {
		t.Errorf("directory holds %q, want exactly %q", got, want)
	}

	// The files hold what the result says was made.
	checks := []struct {
		name string
		cert *x509.Certificate
		key  crypto.Signer
	}{
		{pki.CACertFile, res.CA.Certificate, res.CA.Key},
		{pki.ServerCertFile, res.Server.Certificate, res.Server.Key},
		{pki.ClientCertFile, res.Client.Certificate, res.Client.Key},
	}
	for _, c := range checks {
		onDisk := readCert(t, filepath.Join(dir, c.name))
		if !bytes.Equal(onDisk.Raw, c.cert.Raw) {
			t.Errorf("%s differs from the certificate in the result", c.name)
		}
		keyName := strings.TrimSuffix(c.name, ".crt") + ".key"
		key := readPKCS8Key(t, filepath.Join(dir, keyName))
		if !samePublic(key.Public(), onDisk.PublicKey) {
			t.Errorf("%s does not hold the private key of %s", keyName, c.name)
		}
		if !samePublic(key.Public(), c.key.Public()) {
			t.Errorf("%s differs from the key in the result", keyName)
		}
	}
}

func TestInitCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	before := time.Now()
	_, err := pki.Init(pki.InitConfig{
		Dir:        dir,
		ServerSANs: []string{"echo.internal", "10.1.2.3", "fd00::7"},
	})
	after := time.Now()
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	ca := readCert(t, filepath.Join(dir, pki.CACertFile))
	server := readCert(t, filepath.Join(dir, pki.ServerCertFile))
	client := readCert(t, filepath.Join(dir, pki.ClientCertFile))
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	t.Run("ok/ca is a ca without eku", func(t *testing.T) {
		t.Parallel()
		if !ca.IsCA || !ca.BasicConstraintsValid {
			t.Errorf("IsCA = %v, BasicConstraintsValid = %v, want both true", ca.IsCA, ca.BasicConstraintsValid)
		}
		if ca.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("KeyUsage = %b, want KeyUsageCertSign set", ca.KeyUsage)
		}
		if len(ca.ExtKeyUsage) != 0 || len(ca.UnknownExtKeyUsage) != 0 {
			t.Errorf("CA has extended key usages %v %v, want none", ca.ExtKeyUsage, ca.UnknownExtKeyUsage)
		}
		if hasExtension(ca, oidExtKeyUsage) {
			t.Error("CA carries an extended key usage extension, want none")
		}
		if err := ca.CheckSignatureFrom(ca); err != nil {
			t.Errorf("CA is not self-signed: %v", err)
		}
		if ca.Subject.CommonName == "" {
			t.Error("CA has an empty common name")
		}
	})

	t.Run("ok/server has serverAuth only and the loopback names", func(t *testing.T) {
		t.Parallel()
		if want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}; !slices.Equal(server.ExtKeyUsage, want) {
			t.Errorf("ExtKeyUsage = %v, want %v", server.ExtKeyUsage, want)
		}
		if server.IsCA {
			t.Error("server certificate is a CA")
		}
		if server.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
			t.Errorf("KeyUsage = %b, want KeyUsageDigitalSignature set", server.KeyUsage)
		}
		if want := []string{"localhost", "echo.internal"}; !slices.Equal(server.DNSNames, want) {
			t.Errorf("DNSNames = %q, want %q", server.DNSNames, want)
		}
		wantIPs := []net.IP{
			net.ParseIP("127.0.0.1"), net.ParseIP("::1"),
			net.ParseIP("10.1.2.3"), net.ParseIP("fd00::7"),
		}
		if !sameIPs(server.IPAddresses, wantIPs) {
			t.Errorf("IPAddresses = %v, want %v", server.IPAddresses, wantIPs)
		}
		if server.Subject.CommonName != "localhost" {
			t.Errorf("CommonName = %q, want %q (the first DNS name)", server.Subject.CommonName, "localhost")
		}
		if len(server.URIs) != 0 || len(server.EmailAddresses) != 0 {
			t.Errorf("unexpected SANs: URIs %v, e-mail %v", server.URIs, server.EmailAddresses)
		}
	})

	t.Run("ok/client has clientAuth only and the default name", func(t *testing.T) {
		t.Parallel()
		if want := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}; !slices.Equal(client.ExtKeyUsage, want) {
			t.Errorf("ExtKeyUsage = %v, want %v", client.ExtKeyUsage, want)
		}
		if client.Subject.CommonName != "client" {
			t.Errorf("CommonName = %q, want %q", client.Subject.CommonName, "client")
		}
		if client.IsCA {
			t.Error("client certificate is a CA")
		}
		if len(client.DNSNames)+len(client.IPAddresses)+len(client.URIs)+len(client.EmailAddresses) != 0 {
			t.Errorf("client has SANs: %v %v %v %v",
				client.DNSNames, client.IPAddresses, client.URIs, client.EmailAddresses)
		}
	})

	t.Run("ok/server verifies for every name it covers", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{"localhost", "127.0.0.1", "::1", "echo.internal", "10.1.2.3", "fd00::7"} {
			_, err := server.Verify(x509.VerifyOptions{
				Roots:     roots,
				DNSName:   name,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				t.Errorf("verify server for %q: %v", name, err)
			}
		}
	})

	t.Run("refused/server for a name it does not cover", func(t *testing.T) {
		t.Parallel()
		_, err := server.Verify(x509.VerifyOptions{
			Roots:     roots,
			DNSName:   "example.com",
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		var hostErr x509.HostnameError
		if !errors.As(err, &hostErr) {
			t.Errorf("verify server for example.com: got %v, want a HostnameError", err)
		}
	})

	t.Run("ok/client verifies for clientAuth", func(t *testing.T) {
		t.Parallel()
		_, err := client.Verify(x509.VerifyOptions{
			Roots:     roots,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			t.Errorf("verify client: %v", err)
		}
	})

	t.Run("refused/leaves for the other usage", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name  string
			cert  *x509.Certificate
			usage x509.ExtKeyUsage
		}{
			{"server as client", server, x509.ExtKeyUsageClientAuth},
			{"client as server", client, x509.ExtKeyUsageServerAuth},
		}
		for _, c := range cases {
			_, err := c.cert.Verify(x509.VerifyOptions{
				Roots:     roots,
				KeyUsages: []x509.ExtKeyUsage{c.usage},
			})
			var invalid x509.CertificateInvalidError
			if !errors.As(err, &invalid) || invalid.Reason != x509.IncompatibleUsage {
				t.Errorf("%s: got %v, want an IncompatibleUsage error", c.name, err)
			}
		}
	})

	t.Run("ok/validity is backdated", func(t *testing.T) {
		t.Parallel()
		// Certificates hold whole seconds, so allow one second of truncation.
		earliest := before.Add(-pki.Backdate - time.Second)
		latest := after.Add(-pki.Backdate)
		for _, c := range []*x509.Certificate{ca, server, client} {
			if c.NotBefore.Before(earliest) || c.NotBefore.After(latest) {
				t.Errorf("%s: NotBefore = %v, want between %v and %v",
					c.Subject.CommonName, c.NotBefore, earliest, latest)
			}
			if !c.NotBefore.Before(before) {
				t.Errorf("%s: NotBefore = %v is not before the call", c.Subject.CommonName, c.NotBefore)
			}
		}
		checkNotAfter(t, ca, before, after, pki.DefaultCAValidity)
		checkNotAfter(t, server, before, after, pki.DefaultLeafValidity)
		checkNotAfter(t, client, before, after, pki.DefaultLeafValidity)
	})

	t.Run("ok/keys are ecdsa p-256 by default", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{pki.CAKeyFile, pki.ServerKeyFile, pki.ClientKeyFile} {
			key := readPKCS8Key(t, filepath.Join(dir, name))
			ec, ok := key.(*ecdsa.PrivateKey)
			if !ok {
				t.Errorf("%s: key is %T, want *ecdsa.PrivateKey", name, key)
				continue
			}
			if ec.Curve != elliptic.P256() {
				t.Errorf("%s: curve %s, want P-256", name, ec.Curve.Params().Name)
			}
		}
	})

	t.Run("ok/serial numbers differ", func(t *testing.T) {
		t.Parallel()
		if ca.SerialNumber.Cmp(server.SerialNumber) == 0 || server.SerialNumber.Cmp(client.SerialNumber) == 0 {
			t.Errorf("serials repeat: %x %x %x", ca.SerialNumber, server.SerialNumber, client.SerialNumber)
		}
		for _, c := range []*x509.Certificate{ca, server, client} {
			if c.SerialNumber.Sign() <= 0 {
				t.Errorf("%s: serial %v is not positive", c.Subject.CommonName, c.SerialNumber)
			}
		}
	})
}

func TestInitClientName(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	res, err := pki.Init(pki.InitConfig{Dir: dir, ClientName: "alice"})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}

	client := readCert(t, filepath.Join(dir, pki.ClientCertFile))
	if client.Subject.CommonName != "alice" {
		t.Errorf("client CommonName = %q, want %q", client.Subject.CommonName, "alice")
	}
	if res.Client.Certificate.Subject.CommonName != "alice" {
		t.Errorf("result client CommonName = %q, want %q", res.Client.Certificate.Subject.CommonName, "alice")
	}
}

func TestInitKeyTypes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		keyType pki.KeyType
		check   func(crypto.PublicKey) bool
		rsa     bool
	}{
		{
			name:    "ok/ed25519",
			keyType: pki.KeyEd25519,
			check:   func(k crypto.PublicKey) bool { _, ok := k.(ed25519.PublicKey); return ok },
		},
		{
			name:    "ok/rsa-2048",
			keyType: pki.KeyRSA2048,
			check: func(k crypto.PublicKey) bool {
				r, ok := k.(*rsa.PublicKey)
				return ok && r.N.BitLen() == 2048
			},
			rsa: true,
		},
		{
			name:    "ok/ecdsa-p384",
			keyType: pki.KeyECDSAP384,
			check: func(k crypto.PublicKey) bool {
				e, ok := k.(*ecdsa.PublicKey)
				return ok && e.Curve == elliptic.P384()
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()

			if _, err := pki.Init(pki.InitConfig{Dir: dir, KeyType: tc.keyType}); err != nil {
				t.Fatalf("Init: %v", err)
			}

			ca := readCert(t, filepath.Join(dir, pki.CACertFile))
			roots := x509.NewCertPool()
			roots.AddCert(ca)
			for _, name := range []string{pki.CACertFile, pki.ServerCertFile, pki.ClientCertFile} {
				cert := readCert(t, filepath.Join(dir, name))
				if !tc.check(cert.PublicKey) {
					t.Errorf("%s: public key %T is not %s", name, cert.PublicKey, tc.keyType)
				}
				key := readPKCS8Key(t, filepath.Join(dir, strings.TrimSuffix(name, ".crt")+".key"))
				if !samePublic(key.Public(), cert.PublicKey) {
					t.Errorf("%s: key file does not match the certificate", name)
				}
				if cert.IsCA {
					continue
				}
				// Only RSA keys can be encrypted to, so only they carry keyEncipherment.
				if got := cert.KeyUsage&x509.KeyUsageKeyEncipherment != 0; got != tc.rsa {
					t.Errorf("%s: keyEncipherment = %v, want %v", name, got, tc.rsa)
				}
				if _, err := cert.Verify(x509.VerifyOptions{
					Roots:     roots,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
				}); err != nil {
					t.Errorf("%s: verify: %v", name, err)
				}
			}
		})
	}
}

func TestInitRefusedBeforeWriting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  func(dir string) pki.InitConfig
		want []string
	}{
		{
			name: "refused/no directory",
			cfg:  func(string) pki.InitConfig { return pki.InitConfig{} },
			want: []string{"no directory"},
		},
		{
			name: "refused/unknown key type",
			cfg:  func(dir string) pki.InitConfig { return pki.InitConfig{Dir: dir, KeyType: "dsa-1024"} },
			want: []string{`unknown key type "dsa-1024"`, "ecdsa-p256", "rsa-4096"},
		},
		{
			name: "refused/empty server name",
			cfg: func(dir string) pki.InitConfig {
				return pki.InitConfig{Dir: dir, ServerSANs: []string{"ok.example", " "}}
			},
			want: []string{"empty subject alternative name"},
		},
		{
			name: "refused/leaves that outlive the CA",
			cfg: func(dir string) pki.InitConfig {
				return pki.InitConfig{Dir: dir, CAValidFor: time.Hour, LeafValidFor: 2 * time.Hour}
			},
			want: []string{"after its CA", "a certificate stops working when its CA does"},
		},
		{
			name: "refused/leaves that outlive the intermediate",
			cfg: func(dir string) pki.InitConfig {
				return pki.InitConfig{Dir: dir, Intermediate: true, CAValidFor: time.Hour, LeafValidFor: 2 * time.Hour}
			},
			want: []string{"after its CA", "intermediate"},
		},
		{
			name: "refused/leaves that start after an expired CA",
			cfg: func(dir string) pki.InitConfig {
				return pki.InitConfig{Dir: dir, CANotBefore: time.Now().Add(-48 * time.Hour), CAValidFor: 24 * time.Hour}
			},
			want: []string{"after its CA"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "certs")

			res, err := pki.Init(tc.cfg(dir))
			if err == nil {
				t.Fatalf("Init succeeded with %+v, want an error", res)
			}
			wantPKIError(t, err, tc.want...)
			var outlives *pki.OutlivesCAError
			if strings.Contains(tc.name, "outlive") && !errors.As(err, &outlives) {
				t.Errorf("Init refused with %T, want an *OutlivesCAError as IssueFiles gives", err)
			}
			if res != nil {
				t.Errorf("Init returned %+v with its error, want nil", res)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("stat %s after a refused Init: %v, want it not to exist", dir, err)
			}
		})
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := pki.Init(pki.InitConfig{Dir: dir})
	if err != nil {
		t.Fatalf("first Init: %v", err)
	}
	original := readAll(t, dir)

	res, err := pki.Init(pki.InitConfig{Dir: dir})
	if err == nil {
		t.Fatal("second Init succeeded, want a refusal")
	}
	if res != nil {
		t.Errorf("refused Init returned %+v, want nil", res)
	}
	wantPKIError(t, err, "--force", "already exist", "nothing was written",
		filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.ClientKeyFile))
	for name, data := range readAll(t, dir) {
		if !bytes.Equal(data, original[name]) {
			t.Errorf("%s changed although Init refused", name)
		}
	}

	forced, err := pki.Init(pki.InitConfig{Dir: dir, Force: true})
	if err != nil {
		t.Fatalf("Init with Force: %v", err)
	}
	if pki.Fingerprint(forced.CA.Certificate) == pki.Fingerprint(first.CA.Certificate) {
		t.Error("Init with Force kept the old CA")
	}
	replaced := readAll(t, dir)
	for _, name := range allFiles {
		if bytes.Equal(replaced[name], original[name]) {
			t.Errorf("%s was not replaced by Init with Force", name)
		}
	}
	onDisk := readCert(t, filepath.Join(dir, pki.CACertFile))
	if got, want := pki.Fingerprint(onDisk), pki.Fingerprint(forced.CA.Certificate); got != want {
		t.Errorf("ca.crt fingerprint %s, want the new CA's %s", got, want)
	}
	// The replaced leaves chain to the replacing CA, not the old one.
	server := readCert(t, filepath.Join(dir, pki.ServerCertFile))
	if err := server.CheckSignatureFrom(forced.CA.Certificate); err != nil {
		t.Errorf("new server.crt is not signed by the new CA: %v", err)
	}
	if info, err := os.Stat(filepath.Join(dir, pki.ServerKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("server.key after Force: %v, %v; want mode 0600", info, err)
	}
}

func TestInitRefusesWhenAnyFileExists(t *testing.T) {
	t.Parallel()
	for _, existing := range allFiles {
		t.Run("refused/"+existing, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			sentinel := []byte("left by someone else\n")
			path := filepath.Join(dir, existing)
			if err := os.WriteFile(path, sentinel, 0o640); err != nil {
				t.Fatal(err)
			}

			_, err := pki.Init(pki.InitConfig{Dir: dir})
			if err == nil {
				t.Fatal("Init succeeded, want a refusal")
			}
			wantPKIError(t, err, "--force", path)

			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != existing {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %q, want only %q", names, existing)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, sentinel) {
				t.Errorf("%s now holds %q (%v), want it untouched", existing, got, err)
			}
		})
	}
}

func TestWithSANs(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	type sans struct {
		dns, ips, uris, emails []string
	}
	cases := []struct {
		name   string
		values []string
		want   sans
		cn     string
	}{
		{
			name:   "ok/dns",
			values: []string{"api.example.org"},
			want:   sans{dns: []string{"api.example.org"}},
			cn:     "api.example.org",
		},
		{
			name:   "ok/wildcard dns",
			values: []string{"*.example.org"},
			want:   sans{dns: []string{"*.example.org"}},
			cn:     "*.example.org",
		},
		{
			name:   "ok/ipv4",
			values: []string{"192.0.2.10"},
			want:   sans{ips: []string{"192.0.2.10"}},
		},
		{
			name:   "ok/ipv6",
			values: []string{"2001:db8::1"},
			want:   sans{ips: []string{"2001:db8::1"}},
		},
		{
			name:   "ok/spiffe uri",
			values: []string{"spiffe://example.org/ns/a"},
			want:   sans{uris: []string{"spiffe://example.org/ns/a"}},
		},
		{
			name:   "ok/https uri",
			values: []string{"https://example.org/path"},
			want:   sans{uris: []string{"https://example.org/path"}},
		},
		{
			name:   "ok/email",
			values: []string{"alice@example.org"},
			want:   sans{emails: []string{"alice@example.org"}},
		},
		{
			name:   "ok/email with a display name keeps the address",
			values: []string{"Alice <alice@example.org>"},
			want:   sans{emails: []string{"alice@example.org"}},
		},
		{
			name: "ok/mixed, first dns name is the common name",
			values: []string{
				"10.0.0.1", "spiffe://example.org/ns/b", "b.example", "c.example",
				"bob@example.org", "::1",
			},
			want: sans{
				dns:    []string{"b.example", "c.example"},
				ips:    []string{"10.0.0.1", "::1"},
				uris:   []string{"spiffe://example.org/ns/b"},
				emails: []string{"bob@example.org"},
			},
			cn: "b.example",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			issued, err := ca.IssueServer(tc.values)
			if err != nil {
				t.Fatalf("IssueServer(%q): %v", tc.values, err)
			}

			c := issued.Certificate
			if !slices.Equal(c.DNSNames, tc.want.dns) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tc.want.dns)
			}
			var wantIPs []net.IP
			for _, s := range tc.want.ips {
				wantIPs = append(wantIPs, net.ParseIP(s))
			}
			if !sameIPs(c.IPAddresses, wantIPs) {
				t.Errorf("IPAddresses = %v, want %v", c.IPAddresses, wantIPs)
			}
			var uris []string
			for _, u := range c.URIs {
				uris = append(uris, u.String())
			}
			if !slices.Equal(uris, tc.want.uris) {
				t.Errorf("URIs = %q, want %q", uris, tc.want.uris)
			}
			if !slices.Equal(c.EmailAddresses, tc.want.emails) {
				t.Errorf("EmailAddresses = %q, want %q", c.EmailAddresses, tc.want.emails)
			}
			if c.Subject.CommonName != tc.cn {
				t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, tc.cn)
			}
		})
	}
}

func TestWithSANsRefused(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	cases := []struct {
		name  string
		value string
		want  []string
	}{
		{"refused/empty", "", []string{"empty subject alternative name"}},
		{"refused/blank", "  \t", []string{"empty subject alternative name"}},
		{"refused/bad uri", "spiffe://example.org/%zz", []string{`"spiffe://example.org/%zz"`, "not a valid URI"}},
		{"refused/bad email", "a@b@c", []string{`"a@b@c"`, "not a valid e-mail address"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			issued, err := ca.Issue("leaf", nil, pki.WithSANs(tc.value))
			if err == nil {
				t.Fatalf("Issue with SAN %q succeeded: %v", tc.value, issued.Certificate.Subject)
			}
			wantPKIError(t, err, tc.want...)
		})
	}
}

func TestWithUsage(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	cases := []struct {
		name  string
		issue func() (*pki.Issued, error)
		want  []x509.ExtKeyUsage
	}{
		{
			name:  "ok/no arguments removes the eku",
			issue: func() (*pki.Issued, error) { return ca.IssueServer([]string{"a.example"}, pki.WithUsage()) },
			want:  nil,
		},
		{
			name: "ok/replaces the server default",
			issue: func() (*pki.Issued, error) {
				return ca.IssueServer([]string{"a.example"},
					pki.WithUsage(x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth))
			},
			want: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		},
		{
			name: "ok/replaces the issue default",
			issue: func() (*pki.Issued, error) {
				return ca.Issue("signer", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
					pki.WithUsage(x509.ExtKeyUsageCodeSigning))
			},
			want: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		},
		{
			name: "ok/issue default kept without the option",
			issue: func() (*pki.Issued, error) {
				return ca.Issue("kept", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
			},
			want: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			issued, err := tc.issue()
			if err != nil {
				t.Fatalf("issue: %v", err)
			}

			c := issued.Certificate
			if !slices.Equal(c.ExtKeyUsage, tc.want) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tc.want)
			}
			if got, want := hasExtension(c, oidExtKeyUsage), len(tc.want) > 0; got != want {
				t.Errorf("EKU extension present = %v, want %v", got, want)
			}
		})
	}

	// A certificate without EKU is good for any purpose.
	noEKU, err := ca.IssueServer([]string{"a.example"}, pki.WithUsage())
	if err != nil {
		t.Fatal(err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := noEKU.Certificate.Verify(x509.VerifyOptions{
			Roots:     ca.Pool(),
			KeyUsages: []x509.ExtKeyUsage{usage},
		}); err != nil {
			t.Errorf("certificate without EKU refused for usage %v: %v", usage, err)
		}
	}
}

func TestWithValidity(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	now := time.Now().Truncate(time.Second)
	cases := []struct {
		name      string
		notBefore time.Time
		notAfter  time.Time
		valid     bool
	}{
		{"refused/expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), false},
		{"refused/not yet valid", now.Add(time.Hour), now.Add(2 * time.Hour), false},
		{"ok/current", now.Add(-time.Hour), now.Add(time.Hour), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			issued, err := ca.IssueClient("timed", pki.WithValidity(tc.notBefore, tc.notAfter))
			if err != nil {
				t.Fatalf("IssueClient: %v", err)
			}

			c := issued.Certificate
			if !c.NotBefore.Equal(tc.notBefore) || !c.NotAfter.Equal(tc.notAfter) {
				t.Errorf("validity %v to %v, want %v to %v", c.NotBefore, c.NotAfter, tc.notBefore, tc.notAfter)
			}
			_, err = c.Verify(x509.VerifyOptions{
				Roots:     ca.Pool(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if tc.valid {
				if err != nil {
					t.Errorf("verify: %v", err)
				}
				return
			}
			var invalid x509.CertificateInvalidError
			if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
				t.Errorf("verify: got %v, want a CertificateInvalidError with reason Expired", err)
			}
		})
	}
}

func TestValidityOptions(t *testing.T) {
	t.Parallel()
	ca := newCA(t)

	t.Run("ok/valid for", func(t *testing.T) {
		t.Parallel()
		before := time.Now()
		issued, err := ca.IssueClient("short", pki.WithValidFor(time.Hour))
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		checkNotAfter(t, issued.Certificate, before, after, time.Hour)
	})

	t.Run("ok/validity overrides valid for", func(t *testing.T) {
		t.Parallel()
		nb := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
		na := time.Date(2021, 1, 2, 3, 4, 5, 0, time.UTC)
		issued, err := ca.IssueClient("fixed", pki.WithValidFor(time.Hour), pki.WithValidity(nb, na))
		if err != nil {
			t.Fatal(err)
		}
		if c := issued.Certificate; !c.NotBefore.Equal(nb) || !c.NotAfter.Equal(na) {
			t.Errorf("validity %v to %v, want %v to %v", c.NotBefore, c.NotAfter, nb, na)
		}
	})

	refusals := []struct {
		name string
		opt  pki.Option
	}{
		{"refused/ends before it starts", pki.WithValidity(time.Now(), time.Now().Add(-time.Hour))},
		{"refused/ends when it starts", pki.WithValidity(time.Unix(1e9, 0), time.Unix(1e9, 0))},
		{"refused/negative duration", pki.WithValidFor(-time.Hour)},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ca.IssueClient("x", tc.opt); err == nil {
				t.Error("IssueClient succeeded, want an error")
			} else {
				wantPKIError(t, err, "validity ends")
			}
			if _, err := pki.NewAuthority("x", tc.opt); err == nil {
				t.Error("NewAuthority succeeded, want an error")
			} else {
				wantPKIError(t, err, "validity ends")
			}
		})
	}
}

func TestNewAuthority(t *testing.T) {
	t.Parallel()

	t.Run("ok/defaults", func(t *testing.T) {
		t.Parallel()
		before := time.Now()
		ca, err := pki.NewAuthority("test root")
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		c := ca.Certificate
		if c.Subject.CommonName != "test root" {
			t.Errorf("CommonName = %q, want %q", c.Subject.CommonName, "test root")
		}
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || len(c.ExtKeyUsage) != 0 {
			t.Errorf("IsCA %v, KeyUsage %b, ExtKeyUsage %v; want a CA with certSign and no EKU",
				c.IsCA, c.KeyUsage, c.ExtKeyUsage)
		}
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
		}
		if !samePublic(ca.Key.Public(), c.PublicKey) {
			t.Error("Key does not match Certificate")
		}
		checkNotAfter(t, c, before, after, pki.DefaultCAValidity)
	})

	t.Run("ok/with key", func(t *testing.T) {
		t.Parallel()
		key, err := pki.GenerateKey(pki.KeyEd25519)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := pki.NewAuthority("own key", pki.WithKey(key))
		if err != nil {
			t.Fatal(err)
		}
		if !samePublic(ca.Certificate.PublicKey, key.Public()) {
			t.Error("authority does not use the given key")
		}
		if !samePublic(ca.Key.Public(), key.Public()) {
			t.Error("Authority.Key is not the given key")
		}
	})

	t.Run("refused/unknown key type", func(t *testing.T) {
		t.Parallel()
		_, err := pki.NewAuthority("x", pki.WithKeyType("ecdsa-p521"))
		wantPKIError(t, err, `unknown key type "ecdsa-p521"`)
	})
}

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	for _, kt := range pki.KeyTypes() {
		if strings.HasPrefix(string(kt), "rsa-") && kt != pki.KeyRSA2048 {
			continue // larger RSA keys take seconds and test nothing the 2048-bit one does not
		}
		t.Run("ok/"+string(kt), func(t *testing.T) {
			t.Parallel()
			key, err := pki.GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			switch k := key.(type) {
			case *ecdsa.PrivateKey:
				got = "ecdsa-p" + strings.TrimPrefix(k.Curve.Params().Name, "P-")
			case ed25519.PrivateKey:
				got = "ed25519"
			case *rsa.PrivateKey:
				got = "rsa-" + strconv.Itoa(k.N.BitLen())
			}
			if got != string(kt) {
				t.Errorf("GenerateKey(%q) made a %T (%s)", kt, key, got)
			}
		})
	}
	if got := len(pki.KeyTypes()); got != 6 {
		t.Errorf("KeyTypes has %d entries, want 6", got)
	}
	if pki.KeyTypes()[0] != pki.KeyECDSAP256 {
		t.Errorf("KeyTypes()[0] = %q, want the default %q", pki.KeyTypes()[0], pki.KeyECDSAP256)
	}
}

// TestMutualTLS checks that what the package issues is what crypto/tls
// accepts: a full mutual handshake in memory.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	server, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("tester")
	if err != nil {
		t.Fatal(err)
	}

	serverConn, clientConn := net.Pipe()
	t.Cleanup(func() {
		serverConn.Close()
		clientConn.Close()
	})
	tlsServer := tls.Server(serverConn, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	tlsClient := tls.Client(clientConn, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{client.TLSCertificate()},
		RootCAs:      ca.Pool(),
		ServerName:   "localhost",
	})

	// In TLS 1.3 the client finishes its handshake before the server has
	// checked the client certificate, so the client reads a greeting to learn
	// whether the server accepted it. The timeout turns a stuck handshake into
	// a failure rather than a hung test.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	serverErr := make(chan error, 1)
	go func() {
		err := tlsServer.HandshakeContext(ctx)
		if err == nil {
			_, err = tlsServer.Write([]byte("ok"))
		}
		serverErr <- err
	}()
	if err := tlsClient.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	greeting := make([]byte, 2)
	if _, err := io.ReadFull(tlsClient, greeting); err != nil {
		t.Errorf("client read: %v", err)
	}
	if err := <-serverErr; err != nil {
		t.Fatalf("server handshake: %v", err)
	}

	peers := tlsServer.ConnectionState().PeerCertificates
	if len(peers) != 1 || peers[0].Subject.CommonName != "tester" {
		t.Errorf("server saw peers %v, want the client certificate", peers)
	}
	if got := tlsClient.ConnectionState().PeerCertificates[0]; !got.Equal(server.Certificate) {
		t.Errorf("client saw %v, want the server certificate", got.Subject)
	}
}

func TestWriteFile(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		existing []byte
		oldMode  fs.FileMode
		mode     fs.FileMode
	}{
		{name: "ok/new key", mode: 0o600},
		{name: "ok/new certificate", mode: 0o644},
		{
			name:     "ok/replaces content",
			existing: []byte("old content that is longer than the new\n"),
			oldMode:  0o644,
			mode:     0o644,
		},
		{name: "ok/tightens mode", existing: []byte("old\n"), oldMode: 0o644, mode: 0o600},
		{name: "ok/loosens mode", existing: []byte("old\n"), oldMode: 0o600, mode: 0o644},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "file.pem")
			if tc.existing != nil {
				if err := os.WriteFile(path, tc.existing, tc.oldMode); err != nil {
					t.Fatal(err)
				}
			}
			data := []byte("new\n")

			if err := pki.WriteFile(path, data, tc.mode); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}

			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("file holds %q, want %q", got, data)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != tc.mode {
				t.Errorf("mode %#o, want %#o", info.Mode().Perm(), tc.mode)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Name() != "file.pem" {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %q, want only file.pem (no temporary files)", names)
			}
		})
	}

	t.Run("ok/empty data", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "empty")
		if err := pki.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if info, err := os.Stat(path); err != nil || info.Size() != 0 {
			t.Errorf("stat: %v, %v; want an empty file", info, err)
		}
	})

	t.Run("refused/missing directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := filepath.Join(dir, "missing", "file.pem")
		err := pki.WriteFile(path, []byte("x"), 0o600)
		wantPKIError(t, err, path, "no such file")
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v does not wrap fs.ErrNotExist", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("directory holds %d entries, want none", len(entries))
		}
	})

	t.Run("refused/path is a directory", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path := filepath.Join(dir, "sub")
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := pki.WriteFile(path, []byte("x"), 0o600)
		wantPKIError(t, err, path)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 1 || entries[0].Name() != "sub" {
			t.Errorf("directory holds %v, want only sub (the temporary file removed)", entries)
		}
	})
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	leaf, err := ca.IssueClient("fp")
	if err != nil {
		t.Fatal(err)
	}
	lowerHex := regexp.MustCompile(`^[0-9a-f]{64}$`)

	for _, c := range []*x509.Certificate{ca.Certificate, leaf.Certificate} {
		fp := pki.Fingerprint(c)
		if !lowerHex.MatchString(fp) {
			t.Errorf("Fingerprint = %q, want 64 lower-case hex digits", fp)
		}
		sum := sha256.Sum256(c.Raw)
		if want := hex.EncodeToString(sum[:]); fp != want {
			t.Errorf("Fingerprint = %s, want sha256 of the DER %s", fp, want)
		}
	}
	if pki.Fingerprint(ca.Certificate) == pki.Fingerprint(leaf.Certificate) {
		t.Error("two certificates share a fingerprint")
	}
}

func TestSerialHex(t *testing.T) {
	t.Parallel()
	ca := newCA(t)

	for range 5 {
		leaf, err := ca.IssueClient("serial")
		if err != nil {
			t.Fatal(err)
		}
		h := pki.SerialHex(leaf.Certificate)
		if h == "" || h != strings.ToLower(h) {
			t.Errorf("SerialHex = %q, want non-empty lower-case hex", h)
		}
		back, ok := new(big.Int).SetString(h, 16)
		if !ok {
			t.Fatalf("SerialHex = %q does not parse as hex", h)
		}
		if back.Cmp(leaf.Certificate.SerialNumber) != 0 {
			t.Errorf("SerialHex = %s round-trips to %v, want %v", h, back, leaf.Certificate.SerialNumber)
		}
	}

	cases := []struct {
		name   string
		serial *big.Int
		want   string
	}{
		{"ok/nil serial", nil, ""},
		{"ok/small", big.NewInt(255), "ff"},
		{"ok/no leading zeros", big.NewInt(0x0a0b), "a0b"},
	}
	for _, tc := range cases {
		if got := pki.SerialHex(&x509.Certificate{SerialNumber: tc.serial}); got != tc.want {
			t.Errorf("%s: SerialHex = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestEncode(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	leaf, err := ca.IssueServer([]string{"enc.example"})
	if err != nil {
		t.Fatal(err)
	}

	bundle := pki.EncodeCertificates(leaf.Certificate, ca.Certificate)
	var raws [][]byte
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				t.Errorf("trailing bytes after the PEM blocks: %q", rest)
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Errorf("block type %q, want CERTIFICATE", block.Type)
		}
		raws = append(raws, block.Bytes)
	}
	if len(raws) != 2 ||
		!bytes.Equal(raws[0], leaf.Certificate.Raw) ||
		!bytes.Equal(raws[1], ca.Certificate.Raw) {
		t.Errorf("EncodeCertificates gave %d blocks, want the leaf then the CA", len(raws))
	}
	if !bytes.Equal(leaf.CertificatePEM(), pki.EncodeCertificates(leaf.Certificate)) {
		t.Error("Issued.CertificatePEM differs from EncodeCertificates")
	}
	if !bytes.Equal(ca.CertificatePEM(), pki.EncodeCertificates(ca.Certificate)) {
		t.Error("Authority.CertificatePEM differs from EncodeCertificates")
	}

	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" || len(rest) != 0 {
		t.Fatalf("KeyPEM gave %q, want one PRIVATE KEY block", keyPEM)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("KeyPEM is not PKCS #8: %v", err)
	}
	if !samePublic(key.(crypto.Signer).Public(), leaf.Certificate.PublicKey) {
		t.Error("KeyPEM holds another key")
	}

	pair := leaf.TLSCertificate()
	if len(pair.Certificate) != 1 || !bytes.Equal(pair.Certificate[0], leaf.Certificate.Raw) ||
		pair.Leaf != leaf.Certificate || pair.PrivateKey != leaf.Key {
		t.Errorf("TLSCertificate = %+v, want the leaf and its key", pair)
	}
}

// newCA makes a throw-away authority for one test.
func newCA(t *testing.T, opts ...pki.Option) *pki.Authority {
	t.Helper()
	ca, err := pki.NewAuthority("test CA "+t.Name(), opts...)
	if err != nil {
		t.Fatalf("NewAuthority: %v", err)
	}
	return ca
}

// readCert reads a file that must hold exactly one PEM certificate. It does
// not use the package's loaders, so that Init is checked independently.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: %d bytes after the certificate", path, len(rest))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cert
}

// readPKCS8Key reads a file that must hold exactly one PKCS #8 PEM key.
func readPKCS8Key(t *testing.T, path string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("%s: no PRIVATE KEY block", path)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("%s: %d bytes after the key", path, len(rest))
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("%s: %T is not a signer", path, key)
	}
	return signer
}

// readAll returns the content of every file Init writes in dir.
func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := make(map[string][]byte)
	for _, name := range allFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = data
	}
	return out
}

func samePublic(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

func sameIPs(got, want []net.IP) bool {
	return slices.EqualFunc(got, want, func(a, b net.IP) bool { return a.Equal(b) })
}

func hasExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	return slices.ContainsFunc(c.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oid) })
}

// checkNotAfter checks that c expires validFor after a moment between before
// and after, give or take the second that encoding truncates.
func checkNotAfter(
	t *testing.T,
	c *x509.Certificate,
	before, after time.Time,
	validFor time.Duration,
) {
	t.Helper()
	earliest := before.Add(validFor - time.Second)
	latest := after.Add(validFor)
	if c.NotAfter.Before(earliest) || c.NotAfter.After(latest) {
		t.Errorf("%s: NotAfter = %v, want between %v and %v", c.Subject.CommonName, c.NotAfter, earliest, latest)
	}
}

// wantPKIError checks that err is one of the package's errors, which all
// start with "pki: ", and that its message holds every one of subs.
func wantPKIError(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("got no error, want one containing %q", subs)
		return
	}
	if !strings.HasPrefix(err.Error(), "pki: ") {
		t.Errorf("error %q does not start with %q", err, "pki: ")
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func TestSANForms(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewAuthority("san forms CA")
	if err != nil {
		t.Fatal(err)
	}

	leaf, err := ca.IssueServer([]string{"[::1]", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"})
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.Certificate.IPAddresses) != 1 || leaf.Certificate.IPAddresses[0].String() != "::1" {
		t.Errorf("[::1] became IPs %v, want ::1", leaf.Certificate.IPAddresses)
	}
	if len(leaf.Certificate.URIs) != 1 || leaf.Certificate.URIs[0].Scheme != "urn" {
		t.Errorf("urn: value became URIs %v, want one urn URI", leaf.Certificate.URIs)
	}

	for _, bad := range []string{"host:8443", "example.org/path", "fe80::1%eth0", "two words"} {
		_, err := ca.IssueServer([]string{bad})
		if err == nil || !strings.Contains(err.Error(), "is not a DNS name") {
			t.Errorf("SAN %q: error = %v, want it refused as not a DNS name", bad, err)
		}
	}
}

func TestInitWithForceLeavesTheOldSetWholeWhenAFileCannotBeReplaced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := pki.Init(pki.InitConfig{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	// A directory where a key should be cannot be renamed over.
	if err := os.Remove(filepath.Join(dir, pki.ServerKeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, pki.ServerKeyFile), 0o755); err != nil {
		t.Fatal(err)
	}

	_, err = pki.Init(pki.InitConfig{Dir: dir, Force: true})
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("error = %v, want a refusal naming the directory", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if !bytes.Equal(before, after) {
		t.Error("ca.crt was replaced although the set could not be written whole")
	}
}

func TestInitMakesTheRootKeyDirectory(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	keyPath := filepath.Join(base, "offline", "root.key")
	if _, err := pki.Init(pki.InitConfig{Dir: filepath.Join(base, "certs"), Intermediate: true, RootKeyPath: keyPath}); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Dir(keyPath))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("root key directory mode %o, want 700", info.Mode().Perm())
	}
	if info, err := os.Stat(keyPath); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("root key: %v, mode %v; want a 0600 file", err, info)
	}
}
