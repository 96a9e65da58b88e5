package client_test

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server/servertest"
)

// runDoctor returns every step reported and the overall verdict.
func runDoctor(t *testing.T, cfg client.DoctorConfig) ([]client.Step, bool) {
	t.Helper()
	var steps []client.Step
	ok := client.Doctor(callContext(t), cfg, func(s client.Step) { steps = append(steps, s) })
	return steps, ok
}

func lastStep(steps []client.Step) client.Step { return steps[len(steps)-1] }

func TestDoctorPassesAgainstEcholoop(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	caFile, certFile, keyFile := srv.WriteFiles(t, t.TempDir())
	steps, ok := runDoctor(t, client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile})
	if !ok {
		t.Fatalf("doctor failed: %+v", lastStep(steps))
	}
	if len(steps) != 15 {
		t.Errorf("%d steps reported, want 15", len(steps))
	}
	if last := lastStep(steps); !strings.Contains(last.Detail, "Echo answered") ||
		!strings.Contains(last.Detail, pki.Fingerprint(srv.Client.Certificate)) {
		t.Errorf("last step = %+v, want the Echo answer with the client's fingerprint", last)
	}

	// Offering only HTTP/1.1, the checks and the call go that way.
	steps, ok = runDoctor(t, client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: certFile,
		KeyFile: keyFile, HTTP1: true})
	if !ok {
		t.Fatalf("doctor over HTTP/1.1 failed: %+v", lastStep(steps))
	}
	for _, s := range steps {
		if s.Check == "application protocol (ALPN)" && !strings.HasPrefix(s.Detail, "http/1.1") {
			t.Errorf("ALPN step = %+v, want http/1.1", s)
		}
	}
	if last := lastStep(steps); !strings.Contains(last.Detail, "Echo answered over HTTP/1.1") {
		t.Errorf("last step = %+v, want the Echo answer over HTTP/1.1", last)
	}
}

func TestDoctorStopsAtTheFirstFailure(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := srv.WriteFiles(t, dir)

	foreignCA, err := pki.NewAuthority("foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := foreignCA.IssueClient("stranger")
	if err != nil {
		t.Fatal(err)
	}
	foreignKey, _ := foreign.KeyPEM()
	foreignCert := filepath.Join(dir, "foreign.crt")
	foreignKeyFile := filepath.Join(dir, "foreign.key")
	if err := os.WriteFile(foreignCert, foreign.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreignKeyFile, foreignKey, 0o600); err != nil {
		t.Fatal(err)
	}
	// writePair writes a freshly issued certificate and key as name.crt
	// and name.key.
	writePair := func(name string) func(*pki.Issued, error) (string, string) {
		return func(issued *pki.Issued, err error) (string, string) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			key, _ := issued.KeyPEM()
			certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
			if err := os.WriteFile(certPath, issued.CertificatePEM(), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyPath, key, 0o600); err != nil {
				t.Fatal(err)
			}
			return certPath, keyPath
		}
	}
	now := time.Now()
	expiredCert, expiredKey := writePair("expired")(srv.CA.IssueClient("old",
		pki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour))))
	serverAsClient, serverAsClientKey := writePair("server")(srv.CA.IssueServer(pki.DefaultServerNames))

	// A PKI whose CA expired yesterday, its leaves valid now, as
	// `pki init --ca-not-before=-48h --ca-valid-for 24h` makes it.
	expiredCA, err := pki.NewAuthority("expired CA", pki.WithValidity(now.Add(-48*time.Hour), now.Add(-24*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	expiredCAFile := filepath.Join(dir, "expired-ca.crt")
	if err := os.WriteFile(expiredCAFile, expiredCA.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	belowExpired, belowExpiredKey := writePair("below-expired")(expiredCA.IssueClient("client"))

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "https://" + closed.Addr().String()
	closed.Close()

	cases := []struct {
		name      string
		cfg       client.DoctorConfig
		wantCheck string
		wantText  string
	}{
		{"refused/missing key file",
			client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: filepath.Join(dir, "none.key")},
			"private key", "no such file"},
		{"refused/key of another certificate",
			client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: foreignKeyFile},
			"key belongs to the certificate", "not a pair"},
		{"refused/every CA in the bundle expired",
			client.DoctorConfig{URL: srv.URL, CAFile: expiredCAFile, CertFile: belowExpired, KeyFile: belowExpiredKey},
			"CA bundle " + expiredCAFile + " is valid now", `"CN=expired CA,O=echoloop development" has expired: valid`},
		{"refused/expired certificate",
			client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: expiredCert, KeyFile: expiredKey},
			"client certificate is valid now", "has expired: valid until"},
		{"refused/server certificate as the client's",
			client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: serverAsClient, KeyFile: serverAsClientKey},
			"client certificate is for client authentication", "extended key usages are serverAuth"},
		{"refused/nothing listening",
			client.DoctorConfig{URL: closedURL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile},
			"TCP connection", "refused"},
		{"refused/server name not covered",
			client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile, ServerName: "api.example.org"},
			"TLS handshake", `does not cover "api.example.org"`},
		{"refused/certificate from a foreign CA",
			client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: foreignCert, KeyFile: foreignKeyFile},
			"server accepts the client certificate", "does not trust the CA"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			steps, ok := runDoctor(t, tc.cfg)
			if ok {
				t.Fatal("doctor passed")
			}
			last := lastStep(steps)
			if last.Verdict != client.Fail || !strings.Contains(last.Check, tc.wantCheck) ||
				!strings.Contains(last.Detail, tc.wantText) || last.Fix == "" {
				t.Errorf("last step = %+v, want a failure of %q mentioning %q with a fix", last, tc.wantCheck, tc.wantText)
			}
		})
	}
}

func TestDoctorWarnsOfACAOutOfItsValidityWithoutMisdirecting(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	dir := t.TempDir()
	caFile, _, _ := srv.WriteFiles(t, dir)
	now := time.Now()
	expiredCA, err := pki.NewAuthority("expired CA", pki.WithValidity(now.Add(-48*time.Hour), now.Add(-24*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, append(bundle, expiredCA.CertificatePEM()...), 0o600); err != nil {
		t.Fatal(err)
	}
	below, err := expiredCA.IssueClient("below the expired CA")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := below.KeyPEM()
	certFile, keyFile := filepath.Join(dir, "below.crt"), filepath.Join(dir, "below.key")
	if err := os.WriteFile(certFile, below.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}

	steps, _ := runDoctor(t, client.DoctorConfig{URL: srv.URL, CAFile: caFile, CertFile: certFile, KeyFile: keyFile})
	seen := map[string]client.Step{}
	for _, s := range steps {
		seen[s.Check] = s
	}
	validity := seen["CA bundle "+caFile+" is valid now"]
	if validity.Verdict != client.Warn || !strings.Contains(validity.Detail, `"CN=expired CA`) ||
		!strings.Contains(validity.Detail, "has expired") || !strings.Contains(validity.Fix, "pki init --force") {
		t.Errorf("CA validity step = %+v, want a warning naming the expired CA, with the fix", validity)
	}
	chains := seen["client certificate chains to "+caFile]
	if chains.Verdict != client.Warn || !strings.Contains(chains.Detail, `"CN=expired CA`) ||
		strings.Contains(chains.Detail, "x509:") || strings.Contains(chains.Fix, "issue the client certificate from the CA in") {
		t.Errorf("chain step = %+v, want the expired CA named, without x509's text or a fix it already meets", chains)
	}
}

// TestDoctorAgainstOtherServers points the doctor at servers echoloop did
// not write: a net/http server that does mTLS, and one that does not.
func TestDoctorAgainstOtherServers(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewAuthority("plain net/http CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := ca.IssueClient("net/http client")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPEM, _ := clientCert.KeyPEM()
	files := map[string][]byte{"ca.crt": ca.CertificatePEM(), "client.crt": clientCert.CertificatePEM(), "client.key": keyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(url string) client.DoctorConfig {
		return client.DoctorConfig{URL: url, CAFile: filepath.Join(dir, "ca.crt"),
			CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key")}
	}
	start := func(clientAuth tls.ClientAuthType) *httptest.Server {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("hello from net/http"))
		}))
		srv.EnableHTTP2 = true
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
		srv.TLS = &tls.Config{
			Certificates: []tls.Certificate{serverCert.TLSCertificate()},
			ClientCAs:    ca.Pool(),
			ClientAuth:   clientAuth,
		}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}

	t.Run("ok/net/http with mTLS", func(t *testing.T) {
		t.Parallel()
		srv := start(tls.RequireAndVerifyClientCert)
		steps, ok := runDoctor(t, cfg(srv.URL))
		if !ok {
			t.Fatalf("doctor failed: %+v", lastStep(steps))
		}
		if last := lastStep(steps); !strings.Contains(last.Detail, "not an echoloop server") ||
			!strings.Contains(last.Detail, "200 OK over HTTP/2.0") {
			t.Errorf("last step = %+v, want a GET answered 200 over HTTP/2", last)
		}
	})

	t.Run("refused/net/http without client authentication", func(t *testing.T) {
		t.Parallel()
		srv := start(tls.NoClientCert)
		steps, ok := runDoctor(t, cfg(srv.URL))
		if ok {
			t.Fatal("doctor passed a server that does not ask for client certificates")
		}
		if last := lastStep(steps); last.Check != "server asks for a client certificate" {
			t.Errorf("last step = %+v, want it to stop where the server does not ask", last)
		}
	})
}
