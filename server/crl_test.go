package server_test

// Revocation as an operator meets it: `pki revoke` rewrites the list next to
// the CA, and the running server refuses the certificate from its next
// handshake on, on every protocol, without a restart.

import (
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// echoOnce calls the server over p on a connection of its own: revocation
// is checked at the handshake, so a connection kept from an earlier call
// would not show a list loaded since.
func echoOnce(
	t *testing.T,
	srv *servertest.Server,
	p client.Protocol,
	opts ...client.Option,
) (*echov1.EchoResponse, error) {
	t.Helper()
	c, err := client.New(srv.URL, append([]client.Option{client.WithRootCAs(srv.CA.Pool())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Echo(callContext(t), p, "revocation")
}

// waitForLog waits up to five seconds for a log line that match accepts.
func waitForLog(
	t *testing.T,
	srv *servertest.Server,
	what string,
	match func(map[string]any) bool,
) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range srv.Logs() {
			if match(line) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %s after 5s; logs:\n%v", what, srv.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantAccepted checks that the certificate files pass on every protocol and
// that the server names them.
func wantAccepted(
	t *testing.T,
	srv *servertest.Server,
	certFile, keyFile string,
	want *x509.Certificate,
) {
	t.Helper()
	for _, p := range client.Protocols() {
		resp, err := echoOnce(t, srv, p, client.WithCertificateFiles(certFile, keyFile))
		if err != nil {
			t.Errorf("%s: %s refused, want accepted: %v", p, want.Subject.CommonName, err)
			continue
		}
		if resp.GetPeer().GetSha256Fingerprint() != pki.Fingerprint(want) ||
			resp.GetPeer().GetCommonName() != want.Subject.CommonName {
			t.Errorf("%s: server saw %q (%s), want %q", p, resp.GetPeer().GetCommonName(),
				resp.GetPeer().GetSha256Fingerprint(), want.Subject.CommonName)
		}
	}
}

// wantRevoked checks that the certificate files are refused on every
// protocol with an explanation that names revocation among its causes.
func wantRevoked(t *testing.T, srv *servertest.Server, certFile, keyFile string) {
	t.Helper()
	for _, p := range client.Protocols() {
		_, err := echoOnce(t, srv, p, client.WithCertificateFiles(certFile, keyFile))
		var explained *client.Error
		if !errors.As(err, &explained) {
			t.Errorf("%s: got %v, want a refusal explained", p, err)
			continue
		}
		// The server ends the handshake with TLS's generic alert; the client
		// cannot know the cause, so its advice lists revocation.
		if !strings.Contains(explained.Cause, `alert "bad certificate"`) || !strings.Contains(explained.Fix, "not revoked") {
			t.Errorf("%s: cause %q, fix %q; want the bad certificate alert and revocation among the fixes",
				p, explained.Cause, explained.Fix)
		}
	}
}

func TestRevokedClientIsRefusedWithoutRestart(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		intermediate bool
	}{
		{name: "ok/root signs the list"},
		{name: "ok/intermediate signs the list", intermediate: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			res, err := pki.Init(pki.InitConfig{Dir: dir, Intermediate: tc.intermediate})
			if err != nil {
				t.Fatal(err)
			}
			crlPath := filepath.Join(dir, pki.CRLFile)
			srv := servertest.Start(t, server.WithClientCAs(res.CA.Certificate), server.WithCRLFile(crlPath))
			kept, _, err := pki.IssueFiles(dir, "", pki.ClientUsage, "kept", nil, false)
			if err != nil {
				t.Fatal(err)
			}
			lost, _, err := pki.IssueFiles(dir, "", pki.ClientUsage, "lost", nil, false)
			if err != nil {
				t.Fatal(err)
			}
			keptCert, keptKey := filepath.Join(dir, "kept.crt"), filepath.Join(dir, "kept.key")
			lostCert, lostKey := filepath.Join(dir, "lost.crt"), filepath.Join(dir, "lost.key")

			// Both pass while the list is empty.
			if _, err := echoOnce(t, srv, client.Connect, client.WithCertificateFiles(lostCert, lostKey)); err != nil {
				t.Fatalf("before revocation the client is refused: %v", err)
			}

			// Revoke one; the server says when it has the new list.
			if _, _, err := pki.Revoke(dir, "", lostCert, "keyCompromise"); err != nil {
				t.Fatal(err)
			}
			waitForLog(t, srv, "loading the list that revokes one serial", func(line map[string]any) bool {
				return line["msg"] == "revocation list loaded" && line["file"] == crlPath && line["revoked"] == 1.0
			})

			wantRevoked(t, srv, lostCert, lostKey)
			wantAccepted(t, srv, keptCert, keptKey, kept.Certificate)
			for _, line := range srv.WaitForRefusals(t, server.ReasonRevoked, len(client.Protocols())) {
				checkRevokedLine(t, line, lost.Certificate)
			}

			// A list rewritten with garbage is refused; the one in force stays.
			if err := os.WriteFile(crlPath, []byte("this is no revocation list\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			waitForLog(t, srv, "refusing the garbled list", func(line map[string]any) bool {
				return line["msg"] == "revocation list not reloaded; the previous one stays in force" &&
					line["file"] == crlPath
			})
			wantRevoked(t, srv, lostCert, lostKey)
			wantAccepted(t, srv, keptCert, keptKey, kept.Certificate)
			srv.WaitForRefusals(t, server.ReasonRevoked, 2*len(client.Protocols()))
		})
	}
}

// checkRevokedLine checks that a refusal names the revoked certificate.
func checkRevokedLine(t *testing.T, line map[string]any, revoked *x509.Certificate) {
	t.Helper()
	want := map[string]string{
		server.KeyPeerSubject: revoked.Subject.String(),
		server.KeyPeerSerial:  pki.SerialHex(revoked),
		server.KeyPeerSHA256:  pki.Fingerprint(revoked),
	}
	for key, value := range want {
		if line[key] != value {
			t.Errorf("refusal line %s = %v, want %q", key, line[key], value)
		}
	}
	if msg, _ := line[server.KeyError].(string); !strings.Contains(msg, "revoked at") ||
		!strings.Contains(msg, pki.SerialHex(revoked)) {
		t.Errorf("refusal line error = %q, want it to say which serial was revoked when", msg)
	}
}

func TestNewRefusesAnUnreadableCRL(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewAuthority("crl test CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, data string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	cases := []struct {
		name    string
		path    string
		wantErr []string
	}{
		{
			name: "refused/text that is no list", path: write("text.crl", "revoked: everyone\n"),
			wantErr: []string{"holds no revocation list", "-----BEGIN X509 CRL-----"},
		},
		{
			name:    "refused/a list block that does not parse",
			path:    write("broken.crl", "-----BEGIN X509 CRL-----\nbm90IGEgbGlzdA==\n-----END X509 CRL-----\n"),
			wantErr: []string{"revocation list 1", "does not parse"},
		},
		{
			name: "refused/a certificate given as the list", path: write("cert.crl", string(ca.CertificatePEM())),
			wantErr: []string{"holds no revocation list"},
		},
		{
			name: "refused/no such file", path: filepath.Join(dir, "missing.crl"),
			wantErr: []string{"reading revocation list", "no such file"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, err := server.New(server.WithCertificate(serverCert.TLSCertificate()),
				server.WithClientCAs(ca.Certificate), server.WithCRLFile(tc.path))
			if err == nil {
				t.Fatalf("New accepted %s, want it refused", filepath.Base(tc.path))
			}
			if srv != nil {
				t.Error("New returned a server along with its error")
			}
			for _, want := range append([]string{"server: ", tc.path}, tc.wantErr...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestCRLCountsOnlyFromTheClientsCA(t *testing.T) {
	t.Parallel()
	const name = "crl issuer"
	ca, err := pki.NewAuthority(name)
	if err != nil {
		t.Fatal(err)
	}
	// Same name, other key: its list must not speak for the real CA.
	twin, err := pki.NewAuthority(name)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := pki.NewAuthority("stranger CA")
	if err != nil {
		t.Fatal(err)
	}
	innocent, err := ca.IssueClient("innocent")
	if err != nil {
		t.Fatal(err)
	}
	listing := []x509.RevocationListEntry{{
		SerialNumber: innocent.Certificate.SerialNumber, RevocationTime: time.Now(), ReasonCode: 1,
	}}

	cases := []struct {
		name    string
		signers []*pki.Authority
		refused bool
	}{
		{name: "ok/listed by a CA of the same name", signers: []*pki.Authority{twin}},
		{name: "ok/listed by another CA", signers: []*pki.Authority{stranger}},
		{name: "ok/listed by both", signers: []*pki.Authority{twin, stranger}},
		// The control: the same entry from the client's own CA refuses it.
		{name: "refused/listed by the client's CA", signers: []*pki.Authority{twin, ca}, refused: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var file []byte
			for _, signer := range tc.signers {
				crl, err := signer.RevocationList(big.NewInt(1), listing)
				if err != nil {
					t.Fatal(err)
				}
				file = append(file, crl...)
			}
			crlPath := filepath.Join(t.TempDir(), "lists.crl")
			if err := os.WriteFile(crlPath, file, 0o644); err != nil {
				t.Fatal(err)
			}
			srv := servertest.Start(t, server.WithClientCAs(ca.Certificate), server.WithCRLFile(crlPath))

			for _, p := range client.Protocols() {
				_, err := echoOnce(t, srv, p, client.WithCertificate(innocent.TLSCertificate()))
				if tc.refused != (err != nil) {
					t.Errorf("%s: error %v, want refused %v", p, err, tc.refused)
				}
			}
			if tc.refused {
				for _, line := range srv.WaitForRefusals(t, server.ReasonRevoked, len(client.Protocols())) {
					checkRevokedLine(t, line, innocent.Certificate)
				}
			}
		})
	}
}
