package server_test

// Revocation as an operator meets it: `pki revoke` rewrites the list next to
// the CA, and the running server refuses the certificate from its next
// handshake on, on every protocol, without a restart.

import (
	"crypto/x509"
	"errors"
	"fmt"
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
		// wantErr is what New says when it refuses the file; nil when the
		// server starts and the client is refused as revoked.
		wantErr []string
	}{
		{name: "refused/listed by a CA of the same name", signers: []*pki.Authority{twin},
			wantErr: []string{`signed by "CN=crl issuer`, "none of the client CAs", "could never refuse a client"}},
		{name: "refused/listed by another CA", signers: []*pki.Authority{stranger},
			wantErr: []string{`signed by "CN=stranger CA`, `("CN=crl issuer`, "the CA that issues the client certificates"}},
		{name: "refused/listed by both", signers: []*pki.Authority{twin, stranger},
			wantErr: []string{`"CN=crl issuer,O=echoloop development", "CN=stranger CA`}},
		// The control: the same entry from the client's own CA refuses it,
		// and the list beside it that applies to no one is logged.
		{name: "ok/listed by the client's CA among others", signers: []*pki.Authority{twin, ca}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			crlPath := writeLists(t, filepath.Join(t.TempDir(), "lists.crl"), listing, tc.signers...)
			serverCert, err := ca.IssueServer(pki.DefaultServerNames)
			if err != nil {
				t.Fatal(err)
			}
			opts := []server.Option{server.WithCertificate(serverCert.TLSCertificate()),
				server.WithClientCAs(ca.Certificate), server.WithCRLFile(crlPath)}
			if tc.wantErr != nil {
				_, err := server.New(opts...)
				if err == nil {
					t.Fatal("New accepted a file with no list that applies")
				}
				if lines := strings.Count(err.Error(), "\n"); lines != 0 {
					t.Errorf("error has %d line breaks, want one line: %q", lines, err)
				}
				for _, want := range append([]string{crlPath}, tc.wantErr...) {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				return
			}

			srv := servertest.Start(t, server.WithClientCAs(ca.Certificate), server.WithCRLFile(crlPath))
			for _, p := range client.Protocols() {
				if _, err := echoOnce(t, srv, p, client.WithCertificate(innocent.TLSCertificate())); err == nil {
					t.Errorf("%s: the revoked client was accepted", p)
				}
			}
			for _, line := range srv.WaitForRefusals(t, server.ReasonRevoked, len(client.Protocols())) {
				checkRevokedLine(t, line, innocent.Certificate)
			}
			waitForLog(t, srv, "warning of the twin's list", func(line map[string]any) bool {
				return line["level"] == "WARN" && strings.HasPrefix(line["msg"].(string), "revocation list signed by no client CA") &&
					line["issuer"] == twin.Certificate.Subject.String()
			})
		})
	}
}

// writeLists writes one list per signer, each revoking listing, into path.
func writeLists(t *testing.T, path string, listing []x509.RevocationListEntry, signers ...*pki.Authority) string {
	t.Helper()
	var file []byte
	for _, signer := range signers {
		crl, err := signer.RevocationList(big.NewInt(1), listing)
		if err != nil {
			t.Fatal(err)
		}
		file = append(file, crl...)
	}
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCRLFromAnIntermediate(t *testing.T) {
	t.Parallel()
	root, err := pki.NewAuthority("crl root")
	if err != nil {
		t.Fatal(err)
	}
	intermediate, err := root.NewIntermediate("crl intermediate")
	if err != nil {
		t.Fatal(err)
	}
	lost, err := intermediate.IssueClient("lost")
	if err != nil {
		t.Fatal(err)
	}
	listing := []x509.RevocationListEntry{{
		SerialNumber: lost.Certificate.SerialNumber, RevocationTime: time.Now(), ReasonCode: 1,
	}}
	fromRoot, err := root.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	fromIntermediate, err := intermediate.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	// The intermediate's list as a CA other than pki writes it: the list
	// alone, without the intermediate's certificate beside it.
	bareSigner := &pki.Authority{Certificate: intermediate.Certificate, Key: intermediate.Key}

	cases := []struct {
		name       string
		signer     *pki.Authority
		serverCert *pki.Issued
		refused    bool
	}{
		{"ok/the intermediate carried in the file", intermediate, fromRoot, false},
		{"ok/the intermediate in the server's own chain", bareSigner, fromIntermediate, false},
		{"refused/the intermediate nowhere the server can see", bareSigner, fromRoot, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			crlPath := writeLists(t, filepath.Join(t.TempDir(), "ca.crl"), listing, tc.signer)
			opts := []server.Option{server.WithCertificate(tc.serverCert.TLSCertificate()),
				server.WithClientCAs(root.Certificate), server.WithCRLFile(crlPath)}
			if tc.refused {
				_, err := server.New(opts...)
				if err == nil || !strings.Contains(err.Error(), `signed by "CN=crl intermediate`) ||
					!strings.Contains(err.Error(), "needs the intermediate's certificate in the same file") {
					t.Fatalf("New returned %v, want a refusal that says where the intermediate belongs", err)
				}
				return
			}
			srv := servertest.Start(t, opts...)
			c, err := client.New(srv.URL, client.WithRootCAs(root.Pool()), client.WithCertificate(lost.TLSCertificate()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Echo(callContext(t), client.Connect, "revoked"); err == nil {
				t.Fatal("the client the intermediate revoked was accepted")
			}
			for _, line := range srv.WaitForRefusals(t, server.ReasonRevoked, 1) {
				checkRevokedLine(t, line, lost.Certificate)
			}
		})
	}
}

func TestCRLReloadRefusesAListThatAppliesToNoOne(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := pki.Init(pki.InitConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	crlPath := filepath.Join(dir, pki.CRLFile)
	srv := servertest.Start(t, server.WithClientCAs(res.CA.Certificate), server.WithCRLFile(crlPath))
	if _, _, err := pki.Revoke(dir, "", filepath.Join(dir, pki.ClientCertFile), "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, srv, "loading the list that revokes the client", func(line map[string]any) bool {
		return line["msg"] == "revocation list loaded" && line["revoked"] == 1.0
	})

	// Another PKI's list over the file: refused with a line naming its
	// issuer, and the list in force stays.
	stranger, err := pki.NewAuthority("stranger CA")
	if err != nil {
		t.Fatal(err)
	}
	writeLists(t, crlPath, nil, stranger)
	waitForLog(t, srv, "refusing the stranger's list", func(line map[string]any) bool {
		msg, _ := line[server.KeyError].(string)
		return line["msg"] == "revocation list not reloaded; the previous one stays in force" &&
			strings.Contains(msg, `signed by "CN=stranger CA`) && strings.Contains(msg, "could never refuse a client")
	})
	certFile, keyFile := filepath.Join(dir, pki.ClientCertFile), filepath.Join(dir, pki.ClientKeyFile)
	if _, err := echoOnce(t, srv, client.HTTP, client.WithCertificateFiles(certFile, keyFile)); err == nil {
		t.Error("after the refused reload the revoked client was accepted")
	}
	srv.WaitForRefusals(t, server.ReasonRevoked, 1)
}

// writeList writes signer's list with the given number, revoking listing,
// to path, and returns the bytes written.
func writeList(
	t *testing.T,
	path string,
	signer *pki.Authority,
	number int64,
	listing []x509.RevocationListEntry,
) []byte {
	t.Helper()
	crl, err := signer.RevocationList(big.NewInt(number), listing)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, crl, 0o644); err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestCRLReloadRefusesAnOlderList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := pki.Init(pki.InitConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, pki.ClientCertFile), filepath.Join(dir, pki.ClientKeyFile)
	revoked := []x509.RevocationListEntry{{
		SerialNumber: res.Client.Certificate.SerialNumber, RevocationTime: time.Now(), ReasonCode: 1,
	}}
	crlPath := filepath.Join(dir, pki.CRLFile)
	inForce := writeList(t, crlPath, res.CA, 5, revoked)
	srv := servertest.Start(t, server.WithClientCAs(res.CA.Certificate), server.WithCRLFile(crlPath),
		server.WithMetricsAddr("127.0.0.1:0"))
	refusals := 0
	withClient := client.WithCertificateFiles(certFile, keyFile)
	wantStillRevoked := func(t *testing.T) {
		t.Helper()
		if _, err := echoOnce(t, srv, client.HTTP, withClient); err == nil {
			t.Fatal("the revoked client was accepted: the refused list took effect")
		}
		refusals++
		srv.WaitForRefusals(t, server.ReasonRevoked, refusals)
	}
	wantStillRevoked(t)
	loadedAs := func(number string) int {
		n := 0
		for _, line := range srv.Logs() {
			if line["msg"] == "revocation list loaded" && fmt.Sprint(line["number"]) == number {
				n++
			}
		}
		return n
	}
	failedReloads := `echoloop_reloads_total{result="failed",what="crl"}`

	// Each step runs in order: every one starts from list number 5 in force.
	steps := []struct {
		name    string
		write   func()
		wantErr []string
	}{
		{
			name:    "refused/an older list with fewer entries",
			write:   func() { writeList(t, crlPath, res.CA, 4, nil) },
			wantErr: []string{"has CRL number 4", "lower than number 5 of the list in force"},
		},
		{
			name:  "refused/the same number over other entries",
			write: func() { writeList(t, crlPath, res.CA, 5, nil) },
			wantErr: []string{"has CRL number 5", "the same as the list in force (number 5)",
				"must raise the number"},
		},
	}
	for i, step := range steps {
		step.write()
		waitForLog(t, srv, step.name, func(line map[string]any) bool {
			msg, _ := line[server.KeyError].(string)
			for _, want := range step.wantErr {
				if !strings.Contains(msg, want) {
					return false
				}
			}
			return line["msg"] == "revocation list not reloaded; the previous one stays in force" &&
				line["file"] == crlPath
		})
		waitFor(t, "the refused reload is counted", func() bool {
			return scrapeMetric(t, srv, failedReloads) >= float64(i+1)
		})
		wantStillRevoked(t)
	}

	// The list in force, byte for byte, in a file that differs: loaded.
	before := loadedAs("5")
	if err := os.WriteFile(crlPath, append(inForce, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the same list loaded again", func() bool { return loadedAs("5") > before })
	wantStillRevoked(t)

	// A newer list loads, and un-revokes as its CA meant.
	writeList(t, crlPath, res.CA, 6, nil)
	waitFor(t, "list number 6 loaded", func() bool { return loadedAs("6") > 0 })
	if _, err := echoOnce(t, srv, client.HTTP, withClient); err != nil {
		t.Errorf("after list 6 took it off, the client is refused: %v", err)
	}
	if got := scrapeMetric(t, srv, failedReloads); got != float64(len(steps)) {
		t.Errorf("failed reloads = %v, want %d", got, len(steps))
	}
}

func TestCRLReloadRefusesAFileThatDropsACAsList(t *testing.T) {
	t.Parallel()
	first, err := pki.NewAuthority("first client CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewAuthority("second client CA")
	if err != nil {
		t.Fatal(err)
	}
	lost, err := first.IssueClient("lost")
	if err != nil {
		t.Fatal(err)
	}
	revoked := []x509.RevocationListEntry{{
		SerialNumber: lost.Certificate.SerialNumber, RevocationTime: time.Now(), ReasonCode: 1,
	}}
	crlPath := filepath.Join(t.TempDir(), pki.CRLFile)
	both := func(firstNumber, secondNumber int64, listing []x509.RevocationListEntry) []byte {
		a, err := first.RevocationList(big.NewInt(firstNumber), listing)
		if err != nil {
			t.Fatal(err)
		}
		b, err := other.RevocationList(big.NewInt(secondNumber), nil)
		if err != nil {
			t.Fatal(err)
		}
		return append(a, b...)
	}
	if err := os.WriteFile(crlPath, both(1, 1, revoked), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, server.WithClientCAs(first.Certificate, other.Certificate),
		server.WithCRLFile(crlPath))
	revokedClient := client.WithCertificate(lost.TLSCertificate())
	if _, err := echoOnce(t, srv, client.Connect, revokedClient); err == nil {
		t.Fatal("the revoked client was accepted")
	}

	// The second CA's newer list alone: the first CA's list is gone.
	onlyOther, err := other.RevocationList(big.NewInt(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crlPath, onlyOther, 0o644); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, srv, "refusing the file without the first CA's list", func(line map[string]any) bool {
		msg, _ := line[server.KeyError].(string)
		return line["msg"] == "revocation list not reloaded; the previous one stays in force" &&
			strings.Contains(msg, "leaves out the list of") && strings.Contains(msg, "in force (number 1)")
	})
	if _, err := echoOnce(t, srv, client.Connect, revokedClient); err == nil {
		t.Error("after the refused reload the revoked client was accepted")
	}

	// Both lists again, each newer: loaded.
	if err := os.WriteFile(crlPath, both(2, 3, revoked), 0o644); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, srv, "loading both newer lists", func(line map[string]any) bool {
		return line["msg"] == "revocation list loaded" && line["number"] == 3.0
	})
}
