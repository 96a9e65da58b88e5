package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newTestClient is an echoloop client that trusts srv's CA and presents
// cert (none when nil), closed when the test ends.
func newTestClient(
	t *testing.T,
	srv *servertest.Server,
	cert *pki.Issued,
	opts ...client.Option,
) *client.Client {
	t.Helper()
	all := []client.Option{client.WithRootCAs(srv.CA.Pool())}
	if cert != nil {
		all = append(all, client.WithCertificate(cert.TLSCertificate()))
	}
	c, err := client.New(srv.URL, append(all, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// mtlsHTTPClient is a bare net/http client with the test client certificate,
// for requests no RPC client would send.
func mtlsHTTPClient(t *testing.T, srv *servertest.Server) *http.Client {
	t.Helper()
	transport := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      srv.CA.Pool(),
		Certificates: []tls.Certificate{srv.Client.TLSCertificate()},
		MinVersion:   tls.VersionTLS12,
	}}
	if _, err := http2.ConfigureTransports(transport); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(transport.CloseIdleConnections)
	return &http.Client{Transport: transport}
}

func TestMalformedJSONIsInvalidArgument(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	hc := mtlsHTTPClient(t, srv)

	for _, path := range []string{"/echo.v1.EchoService/Echo", server.PlainHTTPPath} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(callContext(t), http.MethodPost, srv.URL+path,
				strings.NewReader(`{"message": "unterminated`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)

			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status = %d, want 400; body %s", resp.StatusCode, body)
			}
			var answer struct {
				Code    any    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(body, &answer); err != nil {
				t.Fatalf("error body is not JSON: %s", body)
			}
			// Connect names the code, the plain route's google.rpc.Status numbers it.
			if answer.Code != "invalid_argument" && answer.Code != float64(connect.CodeInvalidArgument) {
				t.Errorf("code = %v, want invalid_argument; body %s", answer.Code, body)
			}
			if answer.Message == "" {
				t.Errorf("error has no message; body %s", body)
			}
		})
	}
}

func TestOversizeMessageIsRefusedAndServerKeepsServing(t *testing.T) {
	t.Parallel()
	const limit = 4 << 10
	srv := servertest.Start(t, server.WithMaxMessageBytes(limit))
	c := newTestClient(t, srv, srv.Client)

	big := strings.Repeat("x", 2*limit)
	for _, p := range client.Protocols() {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			_, err := c.Echo(callContext(t), p, big)
			if got := connect.CodeOf(err); got != connect.CodeResourceExhausted {
				t.Errorf("code = %v (%v), want resource_exhausted", got, err)
			}
			// The same sentence on every protocol, naming the limit and the
			// flag that sets it.
			const want = "request message over this server's limit of 4 KiB (echoloop serve --max-message-bytes)"
			if msg := connectMessage(err); msg != want {
				t.Errorf("message = %q, want %q", msg, want)
			}
			resp, err := c.Echo(callContext(t), p, "small")
			if err != nil {
				t.Fatalf("a normal call after the oversize one failed: %v", err)
			}
			if resp.GetMessage() != "small" {
				t.Errorf("message = %q, want small", resp.GetMessage())
			}
		})
	}
}

// connectMessage is the message of a connect error as the server sent it.
func connectMessage(err error) string {
	if connectErr, ok := errors.AsType[*connect.Error](err); ok {
		return connectErr.Message()
	}
	return ""
}

func TestPlainHTTPOnTheTLSPortGetsAReadableAnswer(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)

	conn, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"); err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(conn)
	if !bytes.HasPrefix(answer, []byte("HTTP/1.0 400")) || !bytes.Contains(answer, []byte("https://")) {
		t.Errorf("answer = %q, want a 400 that says to use https://", answer)
	}
	assertLogged(t, srv, server.ReasonNotTLS)
}

func TestRefusedHandshakeLogLine(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	foreignCA, err := pki.NewAuthority("foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := foreignCA.IssueClient("intruder")
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, srv, intruder)
	if _, err := c.Echo(callContext(t), client.GRPC, "hi"); err == nil {
		t.Fatal("a certificate from a foreign CA was accepted")
	}

	line := assertLogged(t, srv, server.ReasonUnknownAuthority)
	want := map[string]string{
		server.KeyPeerSubject:  "CN=intruder,O=echoloop development",
		server.KeyPeerIssuer:   "CN=foreign CA,O=echoloop development",
		server.KeyPeerSerial:   pki.SerialHex(intruder.Certificate),
		server.KeyPeerSHA256:   pki.Fingerprint(intruder.Certificate),
		server.KeyPeerNotAfter: intruder.Certificate.NotAfter.UTC().Format(time.RFC3339),
	}
	for key, value := range want {
		if line[key] != value {
			t.Errorf("log %s = %v, want %q", key, line[key], value)
		}
	}
	if remote, _ := line[server.KeyRemote].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
		t.Errorf("log remote = %q, want the client's loopback address", remote)
	}
}

// assertLogged waits for a refused-handshake line with the reason and
// returns it.
func assertLogged(t *testing.T, srv *servertest.Server, reason string) map[string]any {
	t.Helper()
	return srv.WaitForRefusals(t, reason, 1)[0]
}

func TestAccessLogNamesTheCaller(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	c := newTestClient(t, srv, srv.Client)
	if _, err := c.Echo(callContext(t), client.HTTP, "logged"); err != nil {
		t.Fatal(err)
	}

	for _, line := range srv.Logs() {
		if line["msg"] != "call" {
			continue
		}
		if line[server.KeyProtocol] != "http" || line[server.KeyCode] != "ok" ||
			line[server.KeyPeerCN] != "client" || line[server.KeyPeerSHA256] != pki.Fingerprint(srv.Client.Certificate) ||
			line[server.KeyProcedure] != "/echo.v1.EchoService/Echo" {
			t.Errorf("access log line = %v", line)
		}
		if strings.Contains(fmtLine(line), "logged") {
			t.Errorf("access log carries the message body: %v", line)
		}
		return
	}
	t.Fatalf("no access log line; logs: %v", srv.Logs())
}

func fmtLine(line map[string]any) string {
	data, _ := json.Marshal(line)
	return string(data)
}

func TestNewRefusesIncompleteConfiguration(t *testing.T) {
	t.Parallel()
	_, err := server.New()
	if err == nil {
		t.Fatal("a server without certificate or client CA was built")
	}
	for _, want := range []string{"no server certificate", "no client CA"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestPlainRouteRefusesWhatIsNotAJSONPost(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	hc := mtlsHTTPClient(t, srv)

	cases := []struct {
		name, method, contentType string
		wantStatus                int
		wantMessage               string
	}{
		{"refused/GET", http.MethodGet, "", http.StatusMethodNotAllowed, "takes POST"},
		{"refused/text body", http.MethodPost, "text/plain", http.StatusUnsupportedMediaType,
			"send Content-Type: application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(callContext(t), tc.method, srv.URL+server.PlainHTTPPath,
				strings.NewReader(`{"message":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
				t.Fatalf("error body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.wantStatus || !strings.Contains(status.Message, tc.wantMessage) {
				t.Errorf("answer %d %+v, want %d with a message containing %q",
					resp.StatusCode, status, tc.wantStatus, tc.wantMessage)
			}
		})
	}
}

func TestAccessLogRecordsTheCodeTheClientGot(t *testing.T) {
	t.Parallel()
	const limit = 1 << 10
	srv := servertest.Start(t, server.WithMaxMessageBytes(limit))
	c := newTestClient(t, srv, srv.Client)

	// Each protocol fails once on a body over the limit, which is refused
	// before any RPC code runs, and once on an answer over the limit, which
	// fails after the handler has returned.
	tooBig := strings.Repeat("x", 2*limit)
	// Random text fits in the request but not, with the peer added, in the
	// answer, even compressed.
	noise := make([]byte, limit)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	almost := base64.RawStdEncoding.EncodeToString(noise)[:limit-32]
	for _, p := range client.Protocols() {
		for _, message := range []string{tooBig, almost} {
			if _, err := c.Echo(callContext(t), p, message); connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Fatalf("%s with %d bytes: %v, want resource_exhausted", p, len(message), err)
			}
		}
	}

	counts := map[string]int{}
	for _, line := range srv.Logs() {
		if line["msg"] == "call" {
			counts[line[server.KeyProtocol].(string)+" "+line[server.KeyCode].(string)]++
		}
	}
	for _, p := range client.Protocols() {
		if got := counts[string(p)+" resource_exhausted"]; got != 2 {
			t.Errorf("%s: %d calls logged as resource_exhausted, want 2 (all: %v)", p, got, counts)
		}
	}
}

func TestEchoJSONIsStrictAndComplete(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	hc := mtlsHTTPClient(t, srv)

	for _, path := range []string{"/echo.v1.EchoService/Echo", server.PlainHTTPPath} {
		t.Run("ok/every field shown/"+path, func(t *testing.T) {
			t.Parallel()
			resp, err := hc.Post(srv.URL+path, "application/json", strings.NewReader(`{"message":"hi"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var answer map[string]map[string]any
			body, _ := io.ReadAll(resp.Body)
			_ = json.Unmarshal(body, &answer)
			if _, ok := answer["connection"]["resumed"]; !ok {
				t.Errorf("answer lacks connection.resumed: %s", body)
			}
			if _, ok := answer["peer"]["spiffeId"]; !ok {
				t.Errorf("answer lacks peer.spiffeId: %s", body)
			}
		})
		t.Run("refused/misspelt field/"+path, func(t *testing.T) {
			t.Parallel()
			resp, err := hc.Post(srv.URL+path, "application/json", strings.NewReader(`{"mesage":"hi"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "mesage") {
				t.Errorf("answer %d %s, want 400 naming the unknown field", resp.StatusCode, body)
			}
		})
	}
}
