package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/echoloop/echoloop/pki"
)

func TestLoadKeyPairFromInit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := pki.Init(pki.InitConfig{Dir: dir})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	cases := []struct {
		name     string
		certFile string
		keyFile  string
		want     *pki.Issued
	}{
		{"ok/server", pki.ServerCertFile, pki.ServerKeyFile, res.Server},
		{"ok/client", pki.ClientCertFile, pki.ClientKeyFile, res.Client},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			pair, err := pki.LoadKeyPair(filepath.Join(dir, tc.certFile), filepath.Join(dir, tc.keyFile))
			if err != nil {
				t.Fatalf("LoadKeyPair: %v", err)
			}

			if len(pair.Certificate) != 1 || !bytes.Equal(pair.Certificate[0], tc.want.Certificate.Raw) {
				t.Errorf("pair holds %d certificates, want exactly the issued leaf", len(pair.Certificate))
			}
			if pair.Leaf == nil || !pair.Leaf.Equal(tc.want.Certificate) {
				t.Error("pair.Leaf is not the issued leaf")
			}
			signer, ok := pair.PrivateKey.(crypto.Signer)
			if !ok {
				t.Fatalf("PrivateKey is %T, want a crypto.Signer", pair.PrivateKey)
			}
			if !samePublic(signer.Public(), tc.want.Key.Public()) {
				t.Error("loaded key differs from the issued key")
			}
			if err := pki.CheckKeyMatches(pair.Leaf, signer); err != nil {
				t.Errorf("CheckKeyMatches: %v", err)
			}
		})
	}
}

func TestLoadKeyPairMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := pki.Init(pki.InitConfig{Dir: dir}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	cases := []struct {
		name     string
		certFile string
		keyFile  string
	}{
		{"refused/server cert with client key", pki.ServerCertFile, pki.ClientKeyFile},
		{"refused/client cert with server key", pki.ClientCertFile, pki.ServerKeyFile},
		{"refused/ca cert with server key", pki.CACertFile, pki.ServerKeyFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certPath := filepath.Join(dir, tc.certFile)
			keyPath := filepath.Join(dir, tc.keyFile)

			pair, err := pki.LoadKeyPair(certPath, keyPath)

			wantPKIError(t, err, "do not belong together", certPath, keyPath, "does not match")
			if pair.PrivateKey != nil || len(pair.Certificate) != 0 {
				t.Errorf("LoadKeyPair returned %+v with its error, want an empty pair", pair)
			}
		})
	}
}

func TestLoadKeyPairChain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	leaf, err := ca.IssueServer([]string{"chain.example"})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	certPath := writeFile(t, dir, "chain.crt", pki.EncodeCertificates(leaf.Certificate, ca.Certificate))
	keyPath := writeFile(t, dir, "leaf.key", keyPEM)

	pair, err := pki.LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}

	if len(pair.Certificate) != 2 ||
		!bytes.Equal(pair.Certificate[0], leaf.Certificate.Raw) ||
		!bytes.Equal(pair.Certificate[1], ca.Certificate.Raw) {
		t.Errorf("pair holds %d certificates, want the leaf then the CA", len(pair.Certificate))
	}
	if !pair.Leaf.Equal(leaf.Certificate) {
		t.Errorf("Leaf is %q, want the first certificate", pair.Leaf.Subject)
	}

	// The key must match the first certificate, not any of them.
	swapped := writeFile(t, dir, "swapped.crt", pki.EncodeCertificates(ca.Certificate, leaf.Certificate))
	_, err = pki.LoadKeyPair(swapped, keyPath)
	wantPKIError(t, err, "do not belong together")
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := pki.Init(pki.InitConfig{Dir: dir}); err != nil {
		t.Fatalf("Init: %v", err)
	}
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name string
		load func() error
	}{
		{"refused/LoadCertificates", func() error { _, err := pki.LoadCertificates(missing); return err }},
		{"refused/LoadCertPool", func() error { _, _, err := pki.LoadCertPool(missing); return err }},
		{"refused/LoadKey", func() error { _, err := pki.LoadKey(missing); return err }},
		{"refused/LoadKeyPair certificate", func() error {
			_, err := pki.LoadKeyPair(missing, filepath.Join(dir, pki.ServerKeyFile))
			return err
		}},
		{"refused/LoadKeyPair key", func() error {
			_, err := pki.LoadKeyPair(filepath.Join(dir, pki.ServerCertFile), missing)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			err := tc.load()

			wantPKIError(t, err, missing, "no such file")
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v does not wrap fs.ErrNotExist", err)
			}
		})
	}
}

func TestLoadCertificatesRefused(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	keyPEM, err := pki.EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER at all")})
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"refused/empty file", nil, []string{"is empty", "expected PEM certificates"}},
		{"refused/key given as certificate", keyPEM, []string{
			"holds no certificate", "PRIVATE KEY", "is it a key file given where a certificate was expected",
		}},
		{"refused/garbage text", []byte("hello, this is not a certificate\n"), []string{
			"holds no PEM certificate", "-----BEGIN CERTIFICATE-----",
		}},
		{"refused/der certificate", ca.Certificate.Raw, []string{
			"looks like DER, not PEM", "openssl x509 -inform der",
		}},
		{"refused/corrupt certificate", corrupt, []string{"certificate 1", "does not parse"}},
		{"refused/second certificate corrupt", append(ca.CertificatePEM(), corrupt...), []string{
			"certificate 2", "does not parse",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "input.crt", tc.data)

			certs, err := pki.LoadCertificates(path)

			if err == nil {
				t.Fatalf("LoadCertificates returned %d certificates, want an error", len(certs))
			}
			wantPKIError(t, err, append([]string{path}, tc.want...)...)
			if certs != nil {
				t.Errorf("LoadCertificates returned %d certificates with its error", len(certs))
			}
			if _, _, err := pki.LoadCertPool(path); err == nil {
				t.Error("LoadCertPool succeeded on the same file, want an error")
			}
		})
	}
}

func TestLoadCertificatesSkipsOtherBlocks(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	leaf, err := ca.IssueClient("mixed")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	data = append(data, keyPEM...)
	data = append(data, "some text between blocks\n"...)
	data = append(data, leaf.CertificatePEM()...)
	data = append(data, ca.CertificatePEM()...)
	path := writeFile(t, t.TempDir(), "mixed.pem", data)

	certs, err := pki.LoadCertificates(path)
	if err != nil {
		t.Fatalf("LoadCertificates: %v", err)
	}

	if len(certs) != 2 || !certs[0].Equal(leaf.Certificate) || !certs[1].Equal(ca.Certificate) {
		t.Errorf("got %d certificates, want the leaf then the CA", len(certs))
	}
}

func TestLoadKeyRefused(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519DER, err := x509.MarshalPKCS8PrivateKey(x25519)
	if err != nil {
		t.Fatal(err)
	}
	legacyHeaders := map[string]string{
		"Proc-Type": "4,ENCRYPTED",
		"DEK-Info":  "AES-128-CBC,00112233445566778899AABBCCDDEEFF",
	}
	encrypted := []string{"is an encrypted private key", "openssl pkey", "unencrypted keys only"}
	cases := []struct {
		name string
		data []byte
		want []string
	}{
		{"refused/empty file", nil, []string{"holds no PEM private key"}},
		{"refused/certificate given as key", ca.CertificatePEM(), []string{
			"holds no private key", "CERTIFICATE", "is it a certificate given where a key was expected",
		}},
		{"refused/garbage text", []byte("hello, this is not a key\n"), []string{"holds no PEM private key"}},
		{"refused/der key", keyDER, []string{"looks like a DER key, not PEM", "openssl pkey -inform der"}},
		{"refused/encrypted pkcs8", pemBlock("ENCRYPTED PRIVATE KEY", nil, []byte("opaque")), encrypted},
		{"refused/legacy encrypted rsa", pemBlock("RSA PRIVATE KEY", legacyHeaders, []byte("opaque")), encrypted},
		{"refused/legacy encrypted ec", pemBlock("EC PRIVATE KEY", legacyHeaders, []byte("opaque")), encrypted},
		{"refused/corrupt pkcs8", pemBlock("PRIVATE KEY", nil, []byte("opaque")), []string{
			"PRIVATE KEY does not parse",
		}},
		{"refused/corrupt pkcs1", pemBlock("RSA PRIVATE KEY", nil, []byte("opaque")), []string{
			"RSA PRIVATE KEY does not parse",
		}},
		{"refused/corrupt sec1", pemBlock("EC PRIVATE KEY", nil, []byte("opaque")), []string{
			"EC PRIVATE KEY does not parse", "named curve",
		}},
		{"refused/key that cannot sign", pemBlock("PRIVATE KEY", nil, x25519DER), []string{"cannot sign", "ecdh"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, t.TempDir(), "input.key", tc.data)

			key, err := pki.LoadKey(path)

			if err == nil {
				t.Fatalf("LoadKey returned a %T, want an error", key)
			}
			wantPKIError(t, err, append([]string{path}, tc.want...)...)
			if key != nil {
				t.Errorf("LoadKey returned a %T with its error", key)
			}
		})
	}
}

func TestLoadKeyEncodings(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// What `openssl ecparam -name prime256v1 -genkey` writes before the key.
	p256OID, err := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)

	cases := []struct {
		name string
		key  crypto.Signer
		pem  func(t *testing.T) []byte
	}{
		{"ok/pkcs1 rsa", rsaKey, func(*testing.T) []byte {
			return pemBlock("RSA PRIVATE KEY", nil, x509.MarshalPKCS1PrivateKey(rsaKey))
		}},
		{"ok/sec1 ecdsa p-256", p256, func(t *testing.T) []byte {
			return pemBlock("EC PRIVATE KEY", nil, mustDER(t)(x509.MarshalECPrivateKey(p256)))
		}},
		{"ok/sec1 ecdsa p-384", p384, func(t *testing.T) []byte {
			return pemBlock("EC PRIVATE KEY", nil, mustDER(t)(x509.MarshalECPrivateKey(p384)))
		}},
		{"ok/sec1 after ec parameters", p256, func(t *testing.T) []byte {
			return append(pemBlock("EC PARAMETERS", nil, p256OID),
				pemBlock("EC PRIVATE KEY", nil, mustDER(t)(x509.MarshalECPrivateKey(p256)))...)
		}},
		{"ok/pkcs8 rsa", rsaKey, func(t *testing.T) []byte {
			return pemBlock("PRIVATE KEY", nil, mustDER(t)(x509.MarshalPKCS8PrivateKey(rsaKey)))
		}},
		{"ok/pkcs8 ecdsa", p256, func(t *testing.T) []byte {
			return pemBlock("PRIVATE KEY", nil, mustDER(t)(x509.MarshalPKCS8PrivateKey(p256)))
		}},
		{"ok/pkcs8 ed25519", edKey, func(t *testing.T) []byte {
			return pemBlock("PRIVATE KEY", nil, mustDER(t)(x509.MarshalPKCS8PrivateKey(edKey)))
		}},
		{"ok/after a certificate in the same file", p256, func(t *testing.T) []byte {
			return append(ca.CertificatePEM(),
				pemBlock("PRIVATE KEY", nil, mustDER(t)(x509.MarshalPKCS8PrivateKey(p256)))...)
		}},
		{"ok/encoded by EncodeKey", edKey, func(t *testing.T) []byte {
			data, err := pki.EncodeKey(edKey)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data := tc.pem(t)
			path := writeFile(t, t.TempDir(), "input.key", data)

			key, err := pki.LoadKey(path)
			if err != nil {
				t.Fatalf("LoadKey: %v", err)
			}

			if reflect.TypeOf(key) != reflect.TypeOf(tc.key) {
				t.Errorf("LoadKey gave a %T, want a %T", key, tc.key)
			}
			if !samePublic(key.Public(), tc.key.Public()) {
				t.Error("LoadKey gave another key")
			}
			parsed, err := pki.ParseKey("inline", data)
			if err != nil {
				t.Fatalf("ParseKey: %v", err)
			}
			if !samePublic(parsed.Public(), tc.key.Public()) {
				t.Error("ParseKey gave another key")
			}
		})
	}
}

func TestLoadCertPoolBundle(t *testing.T) {
	t.Parallel()
	first := newCA(t)
	second := newCA(t, pki.WithKeyType(pki.KeyEd25519))
	stranger := newCA(t)

	// System bundles put a label line before each certificate.
	var bundle []byte
	bundle = append(bundle, "# first\n"...)
	bundle = append(bundle, first.CertificatePEM()...)
	bundle = append(bundle, "# second\n"...)
	bundle = append(bundle, second.CertificatePEM()...)
	path := writeFile(t, t.TempDir(), "bundle.crt", bundle)

	pool, certs, err := pki.LoadCertPool(path)
	if err != nil {
		t.Fatalf("LoadCertPool: %v", err)
	}

	if len(certs) != 2 || !certs[0].Equal(first.Certificate) || !certs[1].Equal(second.Certificate) {
		t.Fatalf("LoadCertPool returned %d certificates, want the two CAs in file order", len(certs))
	}
	cases := []struct {
		name   string
		issuer *pki.Authority
		ok     bool
	}{
		{"ok/leaf of the first CA", first, true},
		{"ok/leaf of the second CA", second, true},
		{"refused/leaf of a CA not in the bundle", stranger, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			leaf, err := tc.issuer.IssueClient("bundled")
			if err != nil {
				t.Fatal(err)
			}

			chains, err := leaf.Certificate.Verify(x509.VerifyOptions{
				Roots:     pool,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})

			if !tc.ok {
				var unknown x509.UnknownAuthorityError
				if !errors.As(err, &unknown) {
					t.Errorf("verify: got %v, want an UnknownAuthorityError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if root := chains[0][len(chains[0])-1]; !root.Equal(tc.issuer.Certificate) {
				t.Errorf("chain ends at %q, want the issuing CA", root.Subject)
			}
		})
	}
}

func TestCheckKeyMatches(t *testing.T) {
	t.Parallel()
	keys := make(map[pki.KeyType]crypto.Signer)
	for _, kt := range []pki.KeyType{pki.KeyECDSAP256, pki.KeyEd25519, pki.KeyRSA2048} {
		key, err := pki.GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		keys[kt] = key
	}
	other, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	certs := make(map[pki.KeyType]*x509.Certificate)
	for kt, key := range keys {
		issued, err := ca.IssueClient(string(kt), pki.WithKey(key))
		if err != nil {
			t.Fatal(err)
		}
		certs[kt] = issued.Certificate
	}

	rsaCert, ecCert := certs[pki.KeyRSA2048], certs[pki.KeyECDSAP256]
	cases := []struct {
		name string
		cert *x509.Certificate
		key  crypto.Signer
		want string // empty when the key matches
	}{
		{"ok/ecdsa", certs[pki.KeyECDSAP256], keys[pki.KeyECDSAP256], ""},
		{"ok/ed25519", certs[pki.KeyEd25519], keys[pki.KeyEd25519], ""},
		{"ok/rsa", certs[pki.KeyRSA2048], keys[pki.KeyRSA2048], ""},
		{"refused/other key of the same type", ecCert, other, "does not match"},
		{"refused/ed25519 key for an rsa certificate", rsaCert, keys[pki.KeyEd25519], "does not match"},
		{"refused/rsa key for an ecdsa certificate", ecCert, keys[pki.KeyRSA2048], "does not match"},
		{"refused/public key without Equal", &x509.Certificate{PublicKey: "a string"}, other, "cannot be compared"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			err := pki.CheckKeyMatches(tc.cert, tc.key)

			if tc.want == "" {
				if err != nil {
					t.Errorf("CheckKeyMatches: %v", err)
				}
				return
			}
			wantPKIError(t, err, tc.want)
		})
	}
}

func TestParseUsesName(t *testing.T) {
	t.Parallel()

	_, err := pki.ParseCertificates("from-env", []byte("junk"))
	wantPKIError(t, err, `"from-env"`)

	_, err = pki.ParseKey("from-env", []byte("junk"))
	wantPKIError(t, err, `"from-env"`)
}

// writeFile writes data into dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pemBlock(typ string, headers map[string]string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Headers: headers, Bytes: der})
}

// mustDER unwraps the result of a Marshal function.
func mustDER(t *testing.T) func([]byte, error) []byte {
	return func(der []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
}

func TestTextStartingWithZeroIsNotMistakenForDER(t *testing.T) {
	t.Parallel()
	_, err := pki.ParseCertificates("fingerprint.txt", []byte("0a1b2c3d4e5f\n"))
	if err == nil || strings.Contains(err.Error(), "DER") {
		t.Errorf("error = %v, want a refusal that does not call the text DER", err)
	}
}
