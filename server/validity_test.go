package server_test

// The server's own material out of its validity: a server certificate that
// has expired or is not valid yet, a client CA bundle in which no CA is
// valid now (no client could be verified), and the cases that stop only
// some clients, which the server logs and serves on.

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

func TestNewRefusesMaterialOutsideItsValidity(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good := servertest.Authority(t, "good CA", now.Add(-time.Hour), now.Add(time.Hour))
	expired := servertest.Authority(t, "expired CA", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	future := servertest.Authority(t, "future CA", now.Add(24*time.Hour), now.Add(48*time.Hour))
	issue := func(opts ...pki.Option) *pki.Issued {
		cert, err := good.IssueServer(pki.DefaultServerNames, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	valid := issue()

	cases := []struct {
		name    string
		cert    *pki.Issued
		cas     []*pki.Authority
		wantErr []string
	}{
		{"refused/server certificate not yet valid", issue(pki.WithValidity(now.Add(time.Hour), now.Add(48*time.Hour))),
			[]*pki.Authority{good}, []string{`server certificate "CN=localhost`, "is not valid until", "clock says"}},
		{"refused/server certificate expired", issue(pki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour))),
			[]*pki.Authority{good}, []string{"expired at", "issue a new one"}},
		{"refused/the only client CA expired", valid, []*pki.Authority{expired},
			[]string{"no CA in the client CA bundle given to the server is valid now", "no client certificate could be verified",
				`"CN=expired CA`, "expired at", "pki init --force", "renew the CA"}},
		{"refused/every client CA expired or not yet valid", valid, []*pki.Authority{expired, future},
			[]string{`"CN=expired CA`, "expired at", `"CN=future CA`, "not valid until"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cas []*x509.Certificate
			for _, ca := range tc.cas {
				cas = append(cas, ca.Certificate)
			}
			srv, err := server.New(server.WithCertificate(tc.cert.TLSCertificate()), server.WithClientCAs(cas...))
			if err == nil || srv != nil {
				t.Fatalf("New returned %v, %v; want a refusal", srv, err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

// warned reports whether the server logged a warning with msg about subject.
func warned(srv *servertest.Server, msg, subject string) bool {
	for _, line := range srv.Logs() {
		if line["level"] == "WARN" && strings.HasPrefix(line["msg"].(string), msg) && line[server.KeyCASubject] == subject {
			return true
		}
	}
	return false
}

func TestSomeClientCAsOutOfValidityAreLogged(t *testing.T) {
	t.Parallel()
	now := time.Now()
	good := servertest.Authority(t, "good CA", now.Add(-time.Hour), now.Add(time.Hour))
	expired := servertest.Authority(t, "expired CA", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	subject := expired.Certificate.Subject.String()
	serverCert, err := good.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := good.IssueClient("client")
	if err != nil {
		t.Fatal(err)
	}

	// One good CA and one expired: the server serves the good one's clients
	// and says which CA cannot verify anyone.
	srv := servertest.Start(t, server.WithClientCAs(good.Certificate, expired.Certificate),
		server.WithCertificate(serverCert.TLSCertificate()))
	if !warned(srv, "client CA outside its validity", subject) {
		t.Errorf("no warning naming %s; logs:\n%v", subject, srv.Logs())
	}
	if warned(srv, "client CA outside its validity", good.Certificate.Subject.String()) ||
		warned(srv, "the CA that issued the server's certificate", subject) {
		t.Errorf("warned about the good CA, or that the expired CA issued the server's certificate; logs:\n%v",
			srv.Logs())
	}
	c, err := client.New(srv.URL, client.WithRootCAs(good.Pool()), client.WithCertificate(clientCert.TLSCertificate()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Echo(callContext(t), client.Connect, "good CA"); err != nil {
		t.Errorf("a client of the good CA was refused: %v", err)
	}

	// The server's own certificate from the expired CA: the leaf is valid,
	// and the server starts, but clients that trust that CA will refuse it.
	fromExpired, err := expired.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	other := servertest.Start(t, server.WithClientCAs(good.Certificate, expired.Certificate),
		server.WithCertificate(fromExpired.TLSCertificate()))
	if !warned(other, "the CA that issued the server's certificate is outside its validity", subject) {
		t.Errorf("no warning that the server's own CA %s expired; logs:\n%v", subject, other.Logs())
	}
}

func TestReloadRefusesABundleWithNoValidCA(t *testing.T) {
	t.Parallel()
	now := time.Now()
	expired := servertest.Authority(t, "expired CA", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	srv := servertest.StartWithFiles(t, t.TempDir())
	caFile := filepath.Join(srv.CertDir, pki.CACertFile)

	if err := pki.WriteFile(caFile, expired.CertificatePEM(), pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	err := srv.Server.Reload()
	if err == nil || !strings.Contains(err.Error(), "no CA in the client CA bundle "+caFile+" is valid now") {
		t.Fatalf("reload returned %v, want a refusal naming %s", err, caFile)
	}
	found := false
	for _, line := range srv.Logs() {
		if line["msg"] == "certificates not reloaded; the ones in use stay" &&
			strings.Contains(line[server.KeyError].(string), "expired at") {
			found = true
		}
	}
	if !found {
		t.Errorf("no log line for the refused reload; logs:\n%v", srv.Logs())
	}
	if _, err := echoOnce(t, srv, client.GRPC, client.WithCertificate(srv.Client.TLSCertificate())); err != nil {
		t.Errorf("after the refused reload the old CA's client was refused: %v", err)
	}
}
