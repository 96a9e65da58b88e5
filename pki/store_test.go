package pki_test

// Tests of the certificates directory as the CLI keeps it: the signing
// authority it holds, the leaves issued into it, and its revocation list.

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// initDir runs Init into a fresh directory and returns it with the result.
func initDir(t *testing.T, cfg pki.InitConfig) (string, *pki.InitResult) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	res, err := pki.Init(cfg)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return cfg.Dir, res
}

// readCerts reads every PEM certificate in a file, without the package's
// loaders, so that what IssueFiles wrote is checked independently.
func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("%s: unexpected %s block", path, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		t.Fatalf("%s: no certificate", path)
	}
	return certs
}

// readCRL reads the one revocation list a file must hold.
func readCRL(t *testing.T, path string) *x509.RevocationList {
	t.Helper()
	crl, _ := readCRLFile(t, path)
	return crl
}

// readCRLFile reads a file that must hold one X509 CRL block followed by
// nothing but certificates, and returns both.
func readCRLFile(t *testing.T, path string) (*x509.RevocationList, []*x509.Certificate) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "X509 CRL" {
		t.Fatalf("%s: want an X509 CRL block first", path)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var certs []*x509.Certificate
	for len(strings.TrimSpace(string(rest))) != 0 {
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			t.Fatalf("%s: want only certificates after the list", path)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, cert)
	}
	return crl, certs
}

func TestLoadAuthority(t *testing.T) {
	t.Parallel()
	dir, res := initDir(t, pki.InitConfig{Intermediate: true})
	other := newCA(t)
	otherKeyPEM, err := pki.EncodeKey(other.Key)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := writeFile(t, t.TempDir(), "other.key", otherKeyPEM)

	cases := []struct {
		name      string
		cert, key string
		want      *pki.Authority
		wantChain int
		wantErr   []string
	}{
		{
			name: "ok/root", cert: pki.CACertFile, key: pki.CAKeyFile,
			want: res.CA, wantChain: 0,
		},
		{
			name: "ok/intermediate carries itself as the chain", cert: pki.IntermediateCertFile,
			key: pki.IntermediateKeyFile, want: res.Intermediate, wantChain: 1,
		},
		{
			name: "refused/leaf is no CA", cert: pki.ServerCertFile, key: pki.ServerKeyFile,
			wantErr: []string{"is not a CA certificate", "give the CA's own certificate"},
		},
		{
			name: "refused/key of another CA", cert: pki.CACertFile, key: otherKey,
			wantErr: []string{"do not belong together", "does not match"},
		},
		{
			name: "refused/intermediate with the root's key", cert: pki.IntermediateCertFile,
			key: pki.CAKeyFile, wantErr: []string{"do not belong together"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key := tc.key
			if !filepath.IsAbs(key) {
				key = filepath.Join(dir, key)
			}

			a, err := pki.LoadAuthority(filepath.Join(dir, tc.cert), key)

			if tc.wantErr != nil {
				wantPKIError(t, err, tc.wantErr...)
				if a != nil {
					t.Errorf("refused, yet returned an authority %q", a.Certificate.Subject)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadAuthority: %v", err)
			}
			if !a.Certificate.Equal(tc.want.Certificate) || !samePublic(a.Key.Public(), tc.want.Key.Public()) {
				t.Errorf("loaded %q, want %q with its key", a.Certificate.Subject, tc.want.Certificate.Subject)
			}
			if len(a.Chain) != tc.wantChain {
				t.Fatalf("chain has %d certificates, want %d", len(a.Chain), tc.wantChain)
			}
			if tc.wantChain > 0 && !a.Chain[0].Equal(res.Intermediate.Certificate) {
				t.Errorf("chain starts with %q, want the intermediate", a.Chain[0].Subject)
			}
		})
	}
}

func TestSigningAuthority(t *testing.T) {
	t.Parallel()
	rootDir, rootRes := initDir(t, pki.InitConfig{})
	interDir, interRes := initDir(t, pki.InitConfig{Intermediate: true})
	offlineKey := filepath.Join(t.TempDir(), "root.key")
	offlineDir, offlineRes := initDir(t, pki.InitConfig{RootKeyPath: offlineKey})

	cases := []struct {
		name      string
		dir       string
		caKeyPath string
		want      *pki.Authority
		wantErr   []string
	}{
		{name: "ok/root when there is no intermediate", dir: rootDir, want: rootRes.CA},
		{name: "ok/intermediate when there is one", dir: interDir, want: interRes.Intermediate},
		{
			// The intermediate signs; the root key given is not needed.
			name: "ok/intermediate even with a root key given", dir: interDir,
			caKeyPath: filepath.Join(interDir, pki.CAKeyFile), want: interRes.Intermediate,
		},
		{name: "ok/root key from elsewhere", dir: offlineDir, caKeyPath: offlineKey, want: offlineRes.CA},
		{
			name: "refused/root key missing", dir: offlineDir,
			wantErr: []string{pki.CAKeyFile, "--ca-key", "pki init --certs " + offlineDir},
		},
		{
			name: "refused/root key path wrong", dir: offlineDir, caKeyPath: offlineKey + ".gone",
			wantErr: []string{"root.key.gone", "--ca-key", "pki init"},
		},
		{
			name: "refused/empty directory", dir: t.TempDir(),
			wantErr: []string{pki.CACertFile, "pki init"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			a, err := pki.SigningAuthority(tc.dir, tc.caKeyPath)

			if tc.wantErr != nil {
				wantPKIError(t, err, tc.wantErr...)
				return
			}
			if err != nil {
				t.Fatalf("SigningAuthority: %v", err)
			}
			if !a.Certificate.Equal(tc.want.Certificate) || !samePublic(a.Key.Public(), tc.want.Key.Public()) {
				t.Errorf("signing authority is %q, want %q", a.Certificate.Subject, tc.want.Certificate.Subject)
			}
		})
	}
}

func TestIssueFiles(t *testing.T) {
	t.Parallel()
	rootDir, rootRes := initDir(t, pki.InitConfig{})
	interDir, interRes := initDir(t, pki.InitConfig{Intermediate: true})

	cases := []struct {
		name      string
		dir       string
		usage     pki.Usage
		file      string
		sans      []string
		wantCN    string
		wantDNS   []string
		wantIPs   []net.IP
		wantURIs  []string
		wantEmail []string
		wantEKU   x509.ExtKeyUsage
	}{
		{
			name: "ok/server names itself when no SAN is given", dir: rootDir, usage: pki.ServerUsage,
			file: "api.internal", wantCN: "api.internal", wantDNS: []string{"api.internal"},
			wantEKU: x509.ExtKeyUsageServerAuth,
		},
		{
			name: "ok/server with every kind of SAN", dir: rootDir, usage: pki.ServerUsage, file: "web",
			sans: []string{
				"web.example.test", "10.1.2.3", "::1", "https://web.example.test/",
				"ops@example.test", "web.example.test",
			},
			wantCN: "web.example.test", wantDNS: []string{"web.example.test"},
			wantIPs:  []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("::1")},
			wantURIs: []string{"https://web.example.test/"}, wantEmail: []string{"ops@example.test"},
			wantEKU: x509.ExtKeyUsageServerAuth,
		},
		{
			name: "ok/client is named by its file name", dir: rootDir, usage: pki.ClientUsage,
			file: "billing", wantCN: "billing", wantEKU: x509.ExtKeyUsageClientAuth,
		},
		{
			name: "ok/client with a SPIFFE ID and a DNS name", dir: interDir, usage: pki.ClientUsage,
			file: "worker-1", sans: []string{"spiffe://example.test/ns/jobs/sa/worker", "worker-1.jobs"},
			wantCN: "worker-1", wantDNS: []string{"worker-1.jobs"},
			wantURIs: []string{"spiffe://example.test/ns/jobs/sa/worker"},
			wantEKU:  x509.ExtKeyUsageClientAuth,
		},
		{
			name: "ok/server from the intermediate", dir: interDir, usage: pki.ServerUsage,
			file: "edge", sans: []string{"edge.example.test"}, wantCN: "edge.example.test",
			wantDNS: []string{"edge.example.test"}, wantEKU: x509.ExtKeyUsageServerAuth,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := time.Now()

			issued, paths, err := pki.IssueFiles(tc.dir, "", tc.usage, tc.file, tc.sans, false)
			if err != nil {
				t.Fatalf("IssueFiles: %v", err)
			}

			// The files, their modes, and what they hold.
			certPath := filepath.Join(tc.dir, tc.file+".crt")
			keyPath := filepath.Join(tc.dir, tc.file+".key")
			if !slices.Equal(paths, []string{certPath, keyPath}) {
				t.Errorf("paths = %q, want %q", paths, []string{certPath, keyPath})
			}
			checkMode(t, certPath, pki.CertFileMode)
			checkMode(t, keyPath, pki.KeyFileMode)
			certs := readCerts(t, certPath)
			leaf := certs[0]
			if !leaf.Equal(issued.Certificate) {
				t.Fatal("the certificate file does not start with the issued certificate")
			}
			if !samePublic(readPKCS8Key(t, keyPath).Public(), leaf.PublicKey) {
				t.Error("the key file does not hold the certificate's key")
			}

			// The subject and its names.
			if leaf.Subject.CommonName != tc.wantCN {
				t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, tc.wantCN)
			}
			if !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNS names = %q, want %q", leaf.DNSNames, tc.wantDNS)
			}
			if !sameIPs(leaf.IPAddresses, tc.wantIPs) {
				t.Errorf("IP addresses = %v, want %v", leaf.IPAddresses, tc.wantIPs)
			}
			var uris []string
			for _, u := range leaf.URIs {
				uris = append(uris, u.String())
			}
			if !slices.Equal(uris, tc.wantURIs) {
				t.Errorf("URIs = %q, want %q", uris, tc.wantURIs)
			}
			if !slices.Equal(leaf.EmailAddresses, tc.wantEmail) {
				t.Errorf("e-mail addresses = %q, want %q", leaf.EmailAddresses, tc.wantEmail)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{tc.wantEKU}) || leaf.IsCA {
				t.Errorf("EKU = %v (CA %v), want only %v on a leaf", leaf.ExtKeyUsage, leaf.IsCA, tc.wantEKU)
			}
			checkNotAfter(t, leaf, before, time.Now(), pki.DefaultLeafValidity)

			// The chain: the file carries the intermediate after the leaf,
			// and the leaf verifies through it to the root for its purpose.
			root, wantChain := rootRes.CA, []*x509.Certificate(nil)
			if tc.dir == interDir {
				root, wantChain = interRes.CA, []*x509.Certificate{interRes.Intermediate.Certificate}
			}
			if !slices.EqualFunc(certs[1:], wantChain, (*x509.Certificate).Equal) {
				t.Errorf("the file holds %d certificates after the leaf, want %d", len(certs)-1, len(wantChain))
			}
			intermediates := x509.NewCertPool()
			for _, c := range certs[1:] {
				intermediates.AddCert(c)
			}
			_, err = leaf.Verify(x509.VerifyOptions{
				Roots: root.Pool(), Intermediates: intermediates, DNSName: firstOf(tc.wantDNS),
				KeyUsages: []x509.ExtKeyUsage{tc.wantEKU},
			})
			if err != nil {
				t.Errorf("the issued file does not verify to the root: %v", err)
			}
		})
	}
}

func firstOf(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != want {
		t.Errorf("%s has mode %04o, want %04o", filepath.Base(path), info.Mode().Perm(), want)
	}
}

func TestIssueFilesRefused(t *testing.T) {
	t.Parallel()
	dir, _ := initDir(t, pki.InitConfig{})

	cases := []struct {
		name    string
		usage   pki.Usage
		file    string
		sans    []string
		wantErr []string
	}{
		{name: "refused/a path leaving the directory", usage: pki.ClientUsage, file: "../x",
			wantErr: []string{`"../x" cannot name a certificate file`}},
		{name: "refused/a path into a subdirectory", usage: pki.ClientUsage, file: "sub/x",
			wantErr: []string{"cannot name a certificate file"}},
		{name: "refused/no name", usage: pki.ServerUsage, file: "",
			wantErr: []string{`"" cannot name a certificate file`}},
		{name: "refused/a hidden file", usage: pki.ServerUsage, file: ".x",
			wantErr: []string{"starting with a letter or digit"}},
		{name: "refused/the CA's name", usage: pki.ClientUsage, file: "ca",
			wantErr: []string{`"ca" is the CA's own file name`}},
		{name: "refused/the intermediate's name", usage: pki.ServerUsage, file: "intermediate",
			wantErr: []string{"the CA's own file name"}},
		{name: "refused/an existing file without force", usage: pki.ClientUsage, file: "client",
			wantErr: []string{"client.crt", "client.key", "already exist", "nothing was written", "--force"}},
		{name: "refused/an unknown usage", usage: "peer", file: "p",
			wantErr: []string{`unknown usage "peer"`}},
		{name: "refused/a SAN that is no name", usage: pki.ServerUsage, file: "bad",
			sans: []string{"bad.example:8443"}, wantErr: []string{"is not a DNS name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := readAll(t, dir)

			_, paths, err := pki.IssueFiles(dir, "", tc.usage, tc.file, tc.sans, false)

			wantPKIError(t, err, tc.wantErr...)
			if paths != nil {
				t.Errorf("refused, yet reported writing %q", paths)
			}
			for name, data := range readAll(t, dir) {
				if string(data) != string(before[name]) {
					t.Errorf("%s changed", name)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x.crt")); err == nil {
		t.Error("a refused name wrote x.crt outside the directory")
	}
}

func TestIssueFilesForceReplaces(t *testing.T) {
	t.Parallel()
	dir, res := initDir(t, pki.InitConfig{})

	issued, _, err := pki.IssueFiles(dir, "", pki.ClientUsage, "client", nil, true)
	if err != nil {
		t.Fatalf("IssueFiles with force: %v", err)
	}

	got := readCerts(t, filepath.Join(dir, pki.ClientCertFile))[0]
	if got.Equal(res.Client.Certificate) || !got.Equal(issued.Certificate) {
		t.Error("client.crt is not the newly issued certificate")
	}
}

func TestIssueFilesValidity(t *testing.T) {
	t.Parallel()
	dir, _ := initDir(t, pki.InitConfig{})
	start := time.Now().Add(-72 * time.Hour).Truncate(time.Second)
	end := start.Add(24 * time.Hour)

	issued, _, err := pki.IssueFiles(dir, "", pki.ClientUsage, "expired", nil, false,
		pki.WithValidity(start, end))
	if err != nil {
		t.Fatalf("IssueFiles: %v", err)
	}

	leaf := readCerts(t, filepath.Join(dir, "expired.crt"))[0]
	if !leaf.NotBefore.Equal(start) || !leaf.NotAfter.Equal(end) {
		t.Errorf("validity %v to %v, want %v to %v", leaf.NotBefore, leaf.NotAfter, start, end)
	}
	roots, _, err := pki.LoadCertPool(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	_, err = issued.Certificate.Verify(x509.VerifyOptions{
		Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("verify = %v, want the certificate refused as expired", err)
	}
}

func TestInitWithOfflineRootKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rootKey := filepath.Join(t.TempDir(), "offline", "root.key")
	if err := os.MkdirAll(filepath.Dir(rootKey), 0o700); err != nil {
		t.Fatal(err)
	}

	res, err := pki.Init(pki.InitConfig{Dir: dir, Intermediate: true, RootKeyPath: rootKey})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}

	// The root key is where it was asked to be, and only there.
	if _, err := os.Stat(filepath.Join(dir, pki.CAKeyFile)); err == nil {
		t.Errorf("%s was written into the directory although the root key goes elsewhere", pki.CAKeyFile)
	}
	checkMode(t, rootKey, pki.KeyFileMode)
	if !samePublic(readPKCS8Key(t, rootKey).Public(), res.CA.Certificate.PublicKey) {
		t.Error("the offline key is not the root's")
	}
	if !slices.Contains(res.Files, rootKey) {
		t.Errorf("Files = %q, want it to list %s", res.Files, rootKey)
	}
	for _, name := range []string{pki.CACertFile, pki.IntermediateCertFile, pki.IntermediateKeyFile,
		pki.ServerCertFile, pki.ServerKeyFile, pki.ClientCertFile, pki.ClientKeyFile, pki.CRLFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	checkMode(t, filepath.Join(dir, pki.IntermediateKeyFile), pki.KeyFileMode)

	// The intermediate is a CA that signs leaves only, under the root.
	root := readCerts(t, filepath.Join(dir, pki.CACertFile))[0]
	inter := readCerts(t, filepath.Join(dir, pki.IntermediateCertFile))[0]
	if !inter.IsCA || !inter.MaxPathLenZero || inter.CheckSignatureFrom(root) != nil {
		t.Errorf("intermediate: CA %v, max path 0 %v, signed by root %v",
			inter.IsCA, inter.MaxPathLenZero, inter.CheckSignatureFrom(root))
	}

	// Each leaf file carries the intermediate, and verifies through it to
	// the root alone.
	for _, leaf := range []struct {
		file  string
		usage x509.ExtKeyUsage
		name  string
	}{
		{pki.ServerCertFile, x509.ExtKeyUsageServerAuth, "localhost"},
		{pki.ClientCertFile, x509.ExtKeyUsageClientAuth, ""},
	} {
		certs := readCerts(t, filepath.Join(dir, leaf.file))
		if len(certs) != 2 || !certs[1].Equal(inter) {
			t.Errorf("%s holds %d certificates, want the leaf then the intermediate", leaf.file, len(certs))
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(root)
		intermediates := x509.NewCertPool()
		intermediates.AddCert(certs[1])
		chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates,
			DNSName: leaf.name, KeyUsages: []x509.ExtKeyUsage{leaf.usage}})
		if err != nil {
			t.Errorf("%s does not verify: %v", leaf.file, err)
			continue
		}
		if len(chains[0]) != 3 {
			t.Errorf("%s verifies in %d steps, want leaf, intermediate, root", leaf.file, len(chains[0]))
		}
		// Without the intermediate the root alone does not vouch for it.
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots,
			KeyUsages: []x509.ExtKeyUsage{leaf.usage}}); err == nil {
			t.Errorf("%s verifies without its intermediate; the root signed it directly", leaf.file)
		}
	}

	// Issuing later needs no root key: the intermediate signs.
	if _, _, err := pki.IssueFiles(dir, "", pki.ClientUsage, "later", nil, false); err != nil {
		t.Errorf("IssueFiles without the root key: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		intermediate bool
		rootKeyAway  bool
	}{
		{name: "ok/root signs"},
		{name: "ok/intermediate signs", intermediate: true},
		{name: "ok/root key kept elsewhere", rootKeyAway: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := pki.InitConfig{Intermediate: tc.intermediate}
			caKey := ""
			if tc.rootKeyAway {
				caKey = filepath.Join(t.TempDir(), "root.key")
				cfg.RootKeyPath = caKey
			}
			dir, res := initDir(t, cfg)
			signer := res.CA
			if tc.intermediate {
				signer = res.Intermediate
			}
			crlPath := filepath.Join(dir, pki.CRLFile)
			initial := readCRL(t, crlPath)
			if len(initial.RevokedCertificateEntries) != 0 || initial.CheckSignatureFrom(signer.Certificate) != nil {
				t.Fatalf("Init's CRL lists %d serials (signature: %v), want an empty list from the signer",
					len(initial.RevokedCertificateEntries), initial.CheckSignatureFrom(signer.Certificate))
			}
			other, _, err := pki.IssueFiles(dir, caKey, pki.ClientUsage, "other", nil, false)
			if err != nil {
				t.Fatal(err)
			}

			// First by file, then by serial written as openssl prints it.
			serial, gotPath, err := pki.Revoke(dir, caKey, filepath.Join(dir, pki.ClientCertFile), "keyCompromise")
			if err != nil {
				t.Fatalf("Revoke by file: %v", err)
			}
			if serial.Cmp(res.Client.Certificate.SerialNumber) != 0 || gotPath != crlPath {
				t.Errorf("Revoke = %x, %s; want the client's serial %x and %s",
					serial, gotPath, res.Client.Certificate.SerialNumber, crlPath)
			}
			first := readCRL(t, crlPath)
			colons := colonHex(other.Certificate.SerialNumber)
			if _, _, err := pki.Revoke(dir, caKey, colons, "superseded"); err != nil {
				t.Fatalf("Revoke by serial %s: %v", colons, err)
			}
			second, carried := readCRLFile(t, crlPath)
			// An intermediate's list carries the intermediate, for servers
			// that trust only the root; a root's carries nothing.
			if want := len(signer.Chain); len(carried) != want ||
				(want == 1 && !carried[0].Equal(res.Intermediate.Certificate)) {
				t.Errorf("the list carries %d certificates, want the signer's chain of %d", len(carried), want)
			}

			for i, crl := range []*x509.RevocationList{first, second} {
				if err := crl.CheckSignatureFrom(signer.Certificate); err != nil {
					t.Errorf("CRL %d: signature does not verify against %q: %v", i+1, signer.Certificate.Subject, err)
				}
				want := new(big.Int).Add(initial.Number, big.NewInt(int64(i+1)))
				if crl.Number.Cmp(want) != 0 {
					t.Errorf("CRL %d: number %v, want %v", i+1, crl.Number, want)
				}
				if crl.NextUpdate.Before(time.Now().Add(pki.CRLValidity - time.Hour)) {
					t.Errorf("CRL %d: next update %v is sooner than the list's validity", i+1, crl.NextUpdate)
				}
			}
			checkMode(t, crlPath, pki.CertFileMode)
			wantEntries := map[string]int{
				res.Client.Certificate.SerialNumber.String(): 1, // keyCompromise
				other.Certificate.SerialNumber.String():      4, // superseded
			}
			if len(second.RevokedCertificateEntries) != len(wantEntries) {
				t.Fatalf("CRL lists %d serials, want %d", len(second.RevokedCertificateEntries), len(wantEntries))
			}
			for _, e := range second.RevokedCertificateEntries {
				code, ok := wantEntries[e.SerialNumber.String()]
				if !ok || e.ReasonCode != code {
					t.Errorf("CRL entry %x with reason %d, want one of %v", e.SerialNumber, e.ReasonCode, wantEntries)
				}
				if time.Since(e.RevocationTime) > time.Minute {
					t.Errorf("CRL entry %x revoked at %v, want about now", e.SerialNumber, e.RevocationTime)
				}
			}
		})
	}
}

// colonHex spells a serial as openssl does: upper-case byte pairs joined
// by colons.
func colonHex(n *big.Int) string {
	var pairs []string
	for _, b := range n.Bytes() {
		pairs = append(pairs, strings.ToUpper(hexByte(b)))
	}
	return strings.Join(pairs, ":")
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0xf]})
}

func TestRevokeRefused(t *testing.T) {
	t.Parallel()
	dir, res := initDir(t, pki.InitConfig{})
	if _, _, err := pki.Revoke(dir, "", filepath.Join(dir, pki.ClientCertFile), "unspecified"); err != nil {
		t.Fatal(err)
	}

	// A certificate from a CA this directory does not hold, and one from
	// another CA that bears the same name but has another key.
	foreignDir, _ := initDir(t, pki.InitConfig{})
	twinCA, err := pki.NewAuthority(res.CA.Certificate.Subject.CommonName)
	if err != nil {
		t.Fatal(err)
	}
	twinLeaf, err := twinCA.IssueClient("twin")
	if err != nil {
		t.Fatal(err)
	}
	twinFile := writeFile(t, t.TempDir(), "twin.crt", twinLeaf.CertificatePEM())

	cases := []struct {
		name    string
		dir     string
		target  string
		reason  string
		wantErr []string
	}{
		{
			name: "refused/revoked twice", target: filepath.Join(dir, pki.ClientCertFile), reason: "superseded",
			wantErr: []string{"already revoked", pki.SerialHex(res.Client.Certificate)},
		},
		{
			name: "refused/revoked twice by serial", target: strings.ToUpper(pki.SerialHex(res.Client.Certificate)),
			reason: "superseded", wantErr: []string{"already revoked"},
		},
		{
			name: "refused/unknown reason", target: filepath.Join(dir, pki.ServerCertFile), reason: "lost",
			wantErr: append([]string{`unknown revocation reason "lost"`}, pki.ReasonNames()...),
		},
		{
			name: "refused/certificate of another CA", target: filepath.Join(foreignDir, pki.ClientCertFile),
			reason: "unspecified", wantErr: []string{"was issued by", "not by", res.CA.Certificate.Subject.String()},
		},
		{
			name: "refused/certificate of a same-named CA", target: twinFile, reason: "unspecified",
			wantErr: []string{twinFile, "was not issued by this directory's CA", "another CA named"},
		},
		{
			name: "refused/a file that does not exist", target: "no-such-file.crt", reason: "unspecified",
			wantErr: []string{`there is no file "no-such-file.crt" to revoke`},
		},
		{
			name: "refused/a path that does not exist", target: filepath.Join(dir, "gone"), reason: "unspecified",
			wantErr: []string{"there is no file", "to revoke"},
		},
		{
			name: "refused/neither file nor serial", target: "not-hex", reason: "unspecified",
			wantErr: []string{"neither a certificate file nor a serial number in hex"},
		},
		{
			name: "refused/the CA itself", target: filepath.Join(dir, pki.CACertFile), reason: "unspecified",
			wantErr: []string{"is the certificate of the CA that signs this revocation list",
				"cannot revoke itself", "--cacert"},
		},
		{
			name: "refused/the CA itself by serial", target: pki.SerialHex(res.CA.Certificate), reason: "unspecified",
			wantErr: []string{"cannot revoke itself"},
		},
		{
			name: "refused/serial zero", target: "00", reason: "unspecified",
			wantErr: []string{"neither a certificate file nor a serial number"},
		},
		{
			name: "refused/directory without a CA", dir: t.TempDir(), target: "0a", reason: "unspecified",
			wantErr: []string{"pki init"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: each case must find the list as the first
			// revocation left it, and none may change it.
			in := dir
			if tc.dir != "" {
				in = tc.dir
			}
			before, _ := os.ReadFile(filepath.Join(dir, pki.CRLFile))

			serial, _, err := pki.Revoke(in, "", tc.target, tc.reason)

			wantPKIError(t, err, tc.wantErr...)
			if serial != nil {
				t.Errorf("refused, yet returned serial %x", serial)
			}
			after, _ := os.ReadFile(filepath.Join(dir, pki.CRLFile))
			if string(before) != string(after) {
				t.Error("a refused revocation changed the list")
			}
		})
	}
}
