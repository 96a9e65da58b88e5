package server_test

// Certificates made with the openssl binary, step by step as the usual
// mutual TLS guides do it: no subject alternative name on the client, no
// extended key usage anywhere, RSA keys, serial files. echoloop did not make
// them, and must read and accept them all the same.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// openssl runs the openssl binary in dir and returns what it printed.
func openssl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is not on PATH (%v): install it (apt-get install openssl); these tests "+
			"check that certificates made by it work", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// guideCA makes a CA as the guides do, as name.crt and name.key in dir.
func guideCA(t *testing.T, dir, name string) {
	t.Helper()
	openssl(t, dir, "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048",
		"-keyout", name+".key", "-out", name+".crt", "-subj", "/CN="+name, "-days", "30")
}

// guideLeaf makes a key and a CSR for cn and has the CA sign it, with the
// extensions in extfile if any, as name.crt and name.key in dir.
func guideLeaf(t *testing.T, dir, ca, name, cn, keySpec, extfile string) {
	t.Helper()
	openssl(t, dir, "req", "-new", "-newkey", keySpec, "-nodes", "-keyout", name+".key",
		"-out", name+".csr", "-subj", "/CN="+cn)
	args := []string{"x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
		"-CAcreateserial", "-out", name + ".crt", "-days", "30"}
	if extfile != "" {
		if err := os.WriteFile(filepath.Join(dir, name+".ext"), []byte(extfile), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-extfile", name+".ext")
	}
	openssl(t, dir, args...)
}

func loadPair(t *testing.T, dir, name string) tls.Certificate {
	t.Helper()
	pair, err := pki.LoadKeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatalf("LoadKeyPair(%s): %v", name, err)
	}
	return pair
}

// localhostURL is the server's URL by the name its guide certificate covers.
func localhostURL(t *testing.T, srv *servertest.Server) string {
	t.Helper()
	_, port, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return "https://localhost:" + port
}

func TestGuideCertificatesOnEveryProtocol(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	guideCA(t, dir, "ca")
	guideLeaf(t, dir, "ca", "client", "guide-client", "rsa:4096", "")
	guideLeaf(t, dir, "ca", "server", "localhost", "rsa:2048", "subjectAltName=DNS:localhost\n")

	serverPair := loadPair(t, dir, "server")
	clientPair := loadPair(t, dir, "client")
	pool, cas, err := pki.LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// The point of the test: these are the certificates guides make, not
	// ones shaped like echoloop's.
	leaf := clientPair.Leaf
	if len(leaf.ExtKeyUsage) != 0 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.URIs) != 0 {
		t.Fatalf("openssl gave the client EKU %v and SANs %v %v %v; want none",
			leaf.ExtKeyUsage, leaf.DNSNames, leaf.IPAddresses, leaf.URIs)
	}
	if pub, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || pub.N.BitLen() != 4096 {
		t.Fatalf("client key is %s, want RSA 4096", pki.DescribeKey(leaf.PublicKey))
	}
	if len(serverPair.Leaf.ExtKeyUsage) != 0 || len(serverPair.Leaf.DNSNames) != 1 {
		t.Fatalf("openssl gave the server EKU %v and DNS names %v; want none and localhost",
			serverPair.Leaf.ExtKeyUsage, serverPair.Leaf.DNSNames)
	}

	srv := servertest.Start(t, server.WithCertificate(serverPair), server.WithClientCAs(cas...))
	c, err := client.New(localhostURL(t, srv), client.WithRootCAs(pool), client.WithCertificate(clientPair))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	for _, p := range client.Protocols() {
		resp, err := c.Echo(callContext(t), p, "from a guide")
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if got := resp.GetPeer().GetCommonName(); got != "guide-client" {
			t.Errorf("%s: peer common name %q, want guide-client", p, got)
		}
		if got := resp.GetPeer().GetSha256Fingerprint(); got != pki.Fingerprint(leaf) {
			t.Errorf("%s: peer fingerprint %s, want the client certificate's", p, got)
		}
		if resp.GetMessage() != "from a guide" {
			t.Errorf("%s: message %q", p, resp.GetMessage())
		}
	}
}

func TestGuideCABundle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, ca := range []string{"first-ca", "second-ca", "stranger-ca"} {
		guideCA(t, dir, ca)
		guideLeaf(t, dir, ca, ca+"-client", "client of "+ca, "rsa:2048", "")
	}
	guideLeaf(t, dir, "first-ca", "server", "localhost", "rsa:2048", "subjectAltName=DNS:localhost\n")

	// Two CA files concatenated, as one bundle.
	var bundle []byte
	for _, ca := range []string{"first-ca", "second-ca"} {
		data, err := os.ReadFile(filepath.Join(dir, ca+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, data...)
	}
	bundlePath := filepath.Join(dir, "bundle.crt")
	if err := os.WriteFile(bundlePath, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	pool, cas, err := pki.LoadCertPool(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 2 {
		t.Fatalf("the bundle holds %d CAs, want 2", len(cas))
	}
	srv := servertest.Start(t, server.WithCertificate(loadPair(t, dir, "server")), server.WithClientCAs(cas...))

	cases := []struct {
		name    string
		ca      string
		refused bool
	}{
		{name: "ok/client of the first CA", ca: "first-ca"},
		{name: "ok/client of the second CA", ca: "second-ca"},
		{name: "refused/client of a CA outside the bundle", ca: "stranger-ca", refused: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pair := loadPair(t, dir, tc.ca+"-client")
			c, err := client.New(localhostURL(t, srv), client.WithRootCAs(pool), client.WithCertificate(pair))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)

			for _, p := range client.Protocols() {
				resp, err := c.Echo(callContext(t), p, "bundle")
				if tc.refused {
					var explained *client.Error
					if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "does not trust the CA") {
						t.Errorf("%s: got %v, want a refusal for an untrusted CA", p, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", p, err)
					continue
				}
				if got := resp.GetPeer().GetCommonName(); got != "client of "+tc.ca {
					t.Errorf("%s: peer common name %q", p, got)
				}
			}
		})
	}
}

// pemType returns the type of the first PEM block in a file.
func pemType(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	return block.Type
}

func TestOpenSSLKeyEncodings(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		make     [][]string // openssl commands, writing key.pem
		wantPEM  string
		wantType func(any) bool
	}{
		{
			name: "ok/PKCS #1 RSA from pkey -traditional",
			make: [][]string{
				{"genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "new.pem"},
				{"pkey", "-in", "new.pem", "-traditional", "-out", "key.pem"},
			},
			wantPEM:  "RSA PRIVATE KEY",
			wantType: func(k any) bool { _, ok := k.(*rsa.PrivateKey); return ok },
		},
		{
			name:     "ok/SEC 1 EC from ecparam",
			make:     [][]string{{"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.pem"}},
			wantPEM:  "EC PRIVATE KEY",
			wantType: func(k any) bool { _, ok := k.(*ecdsa.PrivateKey); return ok },
		},
		{
			name:     "ok/PKCS #8 Ed25519 from genpkey",
			make:     [][]string{{"genpkey", "-algorithm", "ed25519", "-out", "key.pem"}},
			wantPEM:  "PRIVATE KEY",
			wantType: func(k any) bool { _, ok := k.(ed25519.PrivateKey); return ok },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for _, args := range tc.make {
				openssl(t, dir, args...)
			}
			path := filepath.Join(dir, "key.pem")
			if got := pemType(t, path); got != tc.wantPEM {
				t.Fatalf("openssl wrote a %s block, want %s", got, tc.wantPEM)
			}

			key, err := pki.LoadKey(path)
			if err != nil {
				t.Fatalf("LoadKey: %v", err)
			}

			if !tc.wantType(key) {
				t.Errorf("LoadKey gave a %T", key)
			}
			// The public half openssl derives is the one Go derives.
			openssl(t, dir, "pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem")
			block, _ := pem.Decode(must[[]byte](t)(os.ReadFile(filepath.Join(dir, "pub.pem"))))
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
				t.Error("LoadKey's public key is not the one openssl derives")
			}
		})
	}
}

// backticked is the first command quoted in backticks in an error.
var backticked = regexp.MustCompile("`([^`]+)`")

func TestOpenSSLKeysRefusedWithAFix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		make    []string
		wantErr []string
		// passin unlocks the key when the suggested fix is run.
		passin string
	}{
		{
			name: "refused/EC key with explicit parameters",
			make: []string{"ecparam", "-name", "prime256v1", "-genkey", "-noout", "-param_enc", "explicit",
				"-out", "original.pem"},
			wantErr: []string{"EC PRIVATE KEY does not parse", "explicit curve parameters", "named curve"},
		},
		{
			name: "refused/encrypted key",
			make: []string{"genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256",
				"-pass", "pass:x", "-out", "original.pem"},
			wantErr: []string{"encrypted private key", "unencrypted keys only", "openssl pkey"},
			passin:  "pass:x",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			openssl(t, dir, tc.make...)
			path := filepath.Join(dir, "original.pem")

			_, err := pki.LoadKey(path)

			if err == nil {
				t.Fatal("LoadKey accepted the key")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}

			// The advice works: run the command the error gives.
			fix := backticked.FindStringSubmatch(err.Error())
			if fix == nil {
				t.Fatalf("error %q quotes no command", err)
			}
			args := strings.Fields(fix[1])
			if args[0] != "openssl" || !strings.Contains(fix[1], path) {
				t.Fatalf("the fix %q is not an openssl command on the key", fix[1])
			}
			if tc.passin != "" {
				args = append(args, "-passin", tc.passin) // the fix would prompt for it
			}
			openssl(t, dir, args[1:]...)
			fixed, err := pki.LoadKey(filepath.Join(dir, "key.pem"))
			if err != nil {
				// The fix writes key.pem in the directory it runs in, here
				// beside the original.
				t.Fatalf("the key the fix wrote does not load: %v", err)
			}
			if _, ok := fixed.(*ecdsa.PrivateKey); !ok {
				t.Errorf("the fixed key is a %T, want ECDSA", fixed)
			}
		})
	}
}
