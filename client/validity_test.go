package client_test

// Certificates out of their validity, named for what they are: the
// server's own, an intermediate it sends, the CA this client trusts for it,
// the CA that issued the client's certificate; and a client certificate
// that the revocation list at hand names.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// writeCAs writes a CA bundle of the given CAs and returns its path.
func writeCAs(t *testing.T, cas ...*pki.Authority) string {
	t.Helper()
	var bundle []byte
	for _, ca := range cas {
		bundle = append(bundle, ca.CertificatePEM()...)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startGoTLSServer runs a net/http server over TLS with the given chain:
// unlike echoloop's, it serves whatever certificate it is given.
func startGoTLSServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the client refuses every handshake
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// explained makes one call and returns the explanation of its failure.
func explained(t *testing.T, url string, opts ...client.Option) *client.Error {
	t.Helper()
	c := newClient(t, url, opts...)
	_, err := c.Echo(callContext(t), client.Connect, "validity")
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want an explained one", err)
	}
	return e
}

func TestServerChainOutOfValidityIsNamed(t *testing.T) {
	t.Parallel()
	now := time.Now()
	yesterday, lastWeek, tomorrow := now.Add(-24*time.Hour), now.Add(-7*24*time.Hour), now.Add(24*time.Hour)
	good := servertest.Authority(t, "good CA", lastWeek, now.Add(365*24*time.Hour))
	expired := servertest.Authority(t, "expired CA", lastWeek, yesterday)
	expiredIntermediate, err := good.NewIntermediate("expired intermediate", pki.WithValidity(lastWeek, yesterday))
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.Authority, opts ...pki.Option) tls.Certificate {
		cert, err := ca.IssueServer(pki.DefaultServerNames, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return cert.TLSCertificate()
	}
	clientCert, err := good.IssueClient("client")
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name      string
		cert      tls.Certificate
		trusted   *pki.Authority
		wantCause []string
		wantFix   string
	}{
		{"refused/the server's certificate expired", issue(good, pki.WithValidity(lastWeek, yesterday)), good,
			[]string{`the server's certificate "CN=localhost`, "has expired: valid " + stamp(lastWeek) + " to " + stamp(yesterday)},
			"renew the server certificate"},
		{"refused/the server's certificate not yet valid", issue(good, pki.WithValidity(tomorrow, tomorrow.Add(time.Hour))), good,
			[]string{`the server's certificate "CN=localhost`, "is not yet valid: valid " + stamp(tomorrow)},
			"renew the server certificate"},
		{"refused/the intermediate the server sends expired", issue(expiredIntermediate), good,
			[]string{`the intermediate CA in the server's chain "CN=expired intermediate`, "has expired"},
			"renew the intermediate"},
		{"refused/the CA this client trusts expired", issue(expired), expired,
			[]string{"ca.crt (--cacert) that this client trusts for the server", `"CN=expired CA`,
				"has expired: valid " + stamp(lastWeek) + " to " + stamp(yesterday),
				"the server's own certificate is valid until"},
			"pki init --force"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := startGoTLSServer(t, tc.cert)
			e := explained(t, url, client.WithCAFile(writeCAs(t, tc.trusted)),
				client.WithCertificate(clientCert.TLSCertificate()))
			for _, want := range tc.wantCause {
				if !strings.Contains(e.Cause, want) {
					t.Errorf("cause %q lacks %q", e.Cause, want)
				}
			}
			if !strings.Contains(e.Fix, tc.wantFix) {
				t.Errorf("fix %q lacks %q", e.Fix, tc.wantFix)
			}
		})
	}
}

func TestClientRefusedForItsCAsValidity(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good := servertest.Authority(t, "good CA", now.Add(-time.Hour), now.Add(time.Hour))
	expired := servertest.Authority(t, "expired CA", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	serverCert, err := good.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	// A valid certificate from the expired CA, which the server trusts
	// too: Go's verifier refuses the chain for the CA's dates.
	clientCert, err := expired.IssueClient("below the expired CA")
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, server.WithCertificate(serverCert.TLSCertificate()),
		server.WithClientCAs(good.Certificate, expired.Certificate))
	caFile := writeCAs(t, good, expired)

	e := explained(t, srv.URL, client.WithCAFile(caFile), client.WithCertificate(clientCert.TLSCertificate()))
	for _, want := range []string{"refused the client certificate as expired", "it is valid, but the CA that issued it",
		caFile, `"CN=expired CA`, "has expired"} {
		if !strings.Contains(e.Cause, want) {
			t.Errorf("cause %q lacks %q", e.Cause, want)
		}
	}
	if !strings.Contains(e.Fix, "make a new CA") {
		t.Errorf("fix %q does not say to replace the CA", e.Fix)
	}
}

func TestRevokedClientIsToldSoWhenTheListIsAtHand(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewAuthority("revoking CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := ca.IssueClient("lost")
	if err != nil {
		t.Fatal(err)
	}
	list, err := ca.RevocationList(big.NewInt(1), []x509.RevocationListEntry{{
		SerialNumber: lost.Certificate.SerialNumber, RevocationTime: time.Now(), ReasonCode: 1,
	}})
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(t.TempDir(), pki.CRLFile)
	if err := os.WriteFile(crlFile, list, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, server.WithCertificate(serverCert.TLSCertificate()),
		server.WithClientCAs(ca.Certificate), server.WithCRLFile(crlFile))
	caFile := writeCAs(t, ca)

	for _, p := range client.Protocols() {
		c := newClient(t, srv.URL, client.WithCAFile(caFile), client.WithCertificate(lost.TLSCertificate()),
			client.WithRevocationListFile(crlFile))
		_, err := c.Echo(callContext(t), p, "revoked?")
		var e *client.Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: error = %v, want an explained one", p, err)
		}
		for _, want := range []string{"it is revoked", crlFile, `"CN=lost`, pki.SerialHex(lost.Certificate), "keyCompromise"} {
			if !strings.Contains(e.Cause, want) {
				t.Errorf("%s: cause %q lacks %q", p, e.Cause, want)
			}
		}
		if !strings.Contains(e.Fix, "issue a new one") {
			t.Errorf("%s: fix %q does not say to issue a new certificate", p, e.Fix)
		}
	}

	// A list of another CA's that names the same serial says nothing
	// about this certificate.
	stranger, err := pki.NewAuthority("revoking CA")
	if err != nil {
		t.Fatal(err)
	}
	strangerList, err := stranger.RevocationList(big.NewInt(1), []x509.RevocationListEntry{{
		SerialNumber: lost.Certificate.SerialNumber, RevocationTime: time.Now(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	strangerFile := filepath.Join(t.TempDir(), pki.CRLFile)
	if err := os.WriteFile(strangerFile, strangerList, 0o600); err != nil {
		t.Fatal(err)
	}
	e := explained(t, srv.URL, client.WithCAFile(caFile), client.WithCertificate(lost.TLSCertificate()),
		client.WithRevocationListFile(strangerFile))
	if strings.Contains(e.Cause, "it is revoked") || !strings.Contains(e.Fix, "not revoked") {
		t.Errorf("with another CA's list: cause %q, fix %q; want the generic refusal", e.Cause, e.Fix)
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
