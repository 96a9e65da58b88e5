package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server/servertest"
)

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEchoEveryProtocolSeesTheSameIdentity(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))

	wantFingerprint := pki.Fingerprint(srv.Client.Certificate)
	wantSerial := pki.SerialHex(srv.Client.Certificate)
	for _, p := range client.Protocols() {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			resp, err := c.Echo(callContext(t), p, "hello "+string(p))
			if err != nil {
				t.Fatalf("echo over %s: %v", p, err)
			}
			if got, want := resp.GetMessage(), "hello "+string(p); got != want {
				t.Errorf("message = %q, want %q", got, want)
			}
			peer := resp.GetPeer()
			if peer.GetSha256Fingerprint() != wantFingerprint {
				t.Errorf("fingerprint = %q, want %q", peer.GetSha256Fingerprint(), wantFingerprint)
			}
			if peer.GetSerialNumber() != wantSerial {
				t.Errorf("serial = %q, want %q", peer.GetSerialNumber(), wantSerial)
			}
			if peer.GetCommonName() != "client" {
				t.Errorf("common name = %q, want client", peer.GetCommonName())
			}
			if len(peer.GetChain()) != 2 || !strings.Contains(peer.GetChain()[1], "servertest CA") {
				t.Errorf("chain = %q, want the leaf then servertest CA", peer.GetChain())
			}

			conn := resp.GetConnection()
			if conn.GetProtocol() != string(p) {
				t.Errorf("protocol = %q, want %q", conn.GetProtocol(), p)
			}
			if conn.GetHttpVersion() != "HTTP/2.0" || conn.GetAlpn() != "h2" {
				t.Errorf("http version %q over ALPN %q, want HTTP/2.0 over h2",
					conn.GetHttpVersion(), conn.GetAlpn())
			}
			if conn.GetTlsVersion() != "TLS 1.3" {
				t.Errorf("TLS version = %q, want TLS 1.3", conn.GetTlsVersion())
			}
			if conn.GetCipherSuite() == "" {
				t.Error("cipher suite is empty")
			}
		})
	}
}

func TestEchoOverHTTP1(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()), client.WithHTTP1())

	// gRPC too: echoloop's server, like connect-go, answers it over HTTP/1.1.
	for _, p := range client.Protocols() {
		resp, err := c.Echo(callContext(t), p, "one")
		if err != nil {
			t.Fatalf("echo over %s on HTTP/1.1: %v", p, err)
		}
		if got := resp.GetConnection().GetHttpVersion(); got != "HTTP/1.1" {
			t.Errorf("%s: http version = %q, want HTTP/1.1", p, got)
		}
		if got := resp.GetConnection().GetAlpn(); got != "http/1.1" {
			t.Errorf("%s: ALPN = %q, want http/1.1", p, got)
		}
	}
}

func TestRefusedOnEveryProtocol(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)

	foreignCA, err := pki.NewAuthority("foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := foreignCA.IssueClient("intruder")
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name      string
		opts      []client.Option
		wantCause string
		wantFix   string
		wantLog   string
	}{
		{
			name:      "refused/no certificate",
			opts:      []client.Option{client.WithRootCAs(srv.CA.Pool())},
			wantCause: "requires a client certificate and none was sent",
			wantFix: `--cert and --key (or --certs DIR holding client.crt and client.key) with a ` +
				`certificate issued by the CA the server asked for ("CN=servertest CA`,
			wantLog: "no_certificate",
		},
		{
			name: "refused/foreign CA",
			opts: []client.Option{client.WithRootCAs(srv.CA.Pool()),
				client.WithCertificate(foreign.TLSCertificate())},
			wantCause: `does not trust the CA that issued the client certificate (issuer "CN=foreign CA,O=echoloop development")`,
			wantFix:   `servertest CA`,
			wantLog:   "unknown_authority",
		},
	}
	for _, tc := range cases {
		for _, p := range client.Protocols() {
			t.Run(tc.name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				c := newClient(t, srv.URL, tc.opts...)
				_, err := c.Echo(callContext(t), p, "hi")
				var explained *client.Error
				if !errors.As(err, &explained) {
					t.Fatalf("error is not explained: %v", err)
				}
				if !strings.Contains(explained.Cause, tc.wantCause) {
					t.Errorf("cause = %q, want it to contain %q", explained.Cause, tc.wantCause)
				}
				if !strings.Contains(explained.Fix, tc.wantFix) {
					t.Errorf("fix = %q, want it to contain %q", explained.Fix, tc.wantFix)
				}
			})
		}
	}

	// Every refusal leaves a structured line naming its reason; the check
	// runs once the parallel subtests above have finished.
	t.Cleanup(func() {
		for _, tc := range cases {
			srv.WaitForRefusals(t, tc.wantLog, len(client.Protocols()))
		}
	})
}

func TestHealthServing(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))

	status, err := c.Health(callContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if status != grpchealth.StatusServing {
		t.Errorf("health = %v, want SERVING", status)
	}
}

func TestPlainURLIsRefusedBeforeDialling(t *testing.T) {
	t.Parallel()
	_, err := client.New("http://localhost:8443")
	if err == nil || !strings.Contains(err.Error(), "use https://localhost:8443") {
		t.Fatalf("error = %v, want advice to use https", err)
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		url  string
		want string // "" when the URL is fine
	}{
		{"https://localhost:8443", ""},
		{"https://localhost:8443/", ""},
		{"https://[::1]:8443", ""},
		{"https://echo.example.org", ""},
		{"https://localhost:99999", `"https://localhost:99999" has port 99999, outside 1 to 65535`},
		{"https://localhost:0", "has port 0, outside 1 to 65535"},
		{"https://localhost:8443?x=1", "has a query (?x=1); give the server's base URL, https://localhost:8443"},
		{"https://localhost:8443/v1/echo", "has a path (/v1/echo)"},
		{"https://localhost:8443#top", "has a fragment (#top)"},
		{"https://me@localhost:8443", "carries a user name"},
		{"http://localhost:8443", "use https://localhost:8443"},
		{"localhost:8443", "is not of the form https://host:port"},
	}
	for _, tc := range cases {
		err := client.CheckURL(tc.url)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckURL(%q) = %v, want nil", tc.url, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckURL(%q) = %v, want %q", tc.url, err, tc.want)
		}
	}
}

func TestNothingListening(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	// A port that was just free: bind and release it.
	c := newClient(t, "https://127.0.0.1:1", client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))
	_, err := c.Echo(callContext(t), client.Connect, "x")
	var explained *client.Error
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "nothing is listening") {
		t.Fatalf("error = %v, want 'nothing is listening'", err)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("code = %v, want unavailable", connect.CodeOf(err))
	}
}

func TestHostNameMismatch(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()), client.WithServerName("api.example.org"))
	_, err := c.Echo(callContext(t), client.Connect, "x")
	var explained *client.Error
	if !errors.As(err, &explained) {
		t.Fatalf("error is not explained: %v", err)
	}
	want := `the server's certificate does not cover "api.example.org" (it covers: localhost, 127.0.0.1, ::1)`
	if explained.Cause != want || !strings.Contains(explained.Fix, "--server-name") {
		t.Errorf("got %q / %q, want cause %q and a fix naming --server-name", explained.Cause, explained.Fix, want)
	}
}

func TestServerCertificateFromAnUntrustedCA(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	other, err := pki.NewAuthority("not the server's CA")
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv.URL, client.WithRootCAs(other.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))
	_, err = c.Echo(callContext(t), client.HTTP, "x")
	var explained *client.Error
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, `does not trust the server's certificate: its issuer "CN=servertest CA`) ||
		!strings.Contains(explained.Fix, "--cacert") {
		t.Fatalf("error = %v, want the server's issuer named and --cacert advised", err)
	}
}

func TestTLSAgainstAPlaintextServer(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(plain.Close)
	srv := servertest.Start(t)

	url := strings.Replace(plain.URL, "http://", "https://", 1)
	c := newClient(t, url, client.WithRootCAs(srv.CA.Pool()),
		client.WithCertificate(srv.Client.TLSCertificate()))
	_, err := c.Echo(callContext(t), client.GRPC, "x")
	var explained *client.Error
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "answers plain HTTP, not TLS") {
		t.Fatalf("error = %v, want 'answers plain HTTP, not TLS'", err)
	}
}

func TestGRPCOverHTTP1AgainstAGRPCGoServer(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewAuthority("grpc-go CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := ca.IssueClient("client")
	if err != nil {
		t.Fatal(err)
	}
	grpcServer := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert.TLSCertificate()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = grpcServer.Serve(ln) }()
	t.Cleanup(grpcServer.Stop)

	c := newClient(t, "https://"+ln.Addr().String(), client.WithRootCAs(ca.Pool()),
		client.WithCertificate(clientCert.TLSCertificate()), client.WithHTTP1())
	_, err = c.Echo(callContext(t), client.GRPC, "x")
	var explained *client.Error
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "speaks only HTTP/2") ||
		!strings.Contains(explained.Fix, "drop --http1.1") {
		t.Fatalf("error = %v, want advice to drop --http1.1", err)
	}
}

func TestSameNamedCAsAreToldApart(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	twin, err := pki.NewAuthority("servertest CA") // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	twinClient, err := twin.IssueClient("twin")
	if err != nil {
		t.Fatal(err)
	}

	c := newClient(t, srv.URL, client.WithRootCAs(srv.CA.Pool()), client.WithCertificate(twinClient.TLSCertificate()))
	_, err = c.Echo(callContext(t), client.Connect, "x")
	var explained *client.Error
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "but not that one (another key)") {
		t.Errorf("client side: %v, want the twin CA told apart", err)
	}

	dir := t.TempDir()
	twinCA := filepath.Join(dir, "twin.crt")
	if err := os.WriteFile(twinCA, twin.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	c = newClient(t, srv.URL, client.WithCAFile(twinCA), client.WithCertificate(srv.Client.TLSCertificate()))
	_, err = c.Echo(callContext(t), client.Connect, "x")
	if !errors.As(err, &explained) || !strings.Contains(explained.Cause, "holds a CA of that name, but not that one") {
		t.Errorf("server side: %v, want the twin CA told apart", err)
	}
}
