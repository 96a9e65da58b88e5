package server_test

// Interoperability with programs this project did not write: the curl
// binary, buf curl (pinned in go.mod), and a grpc-go client. Each checks
// that the identity the server reports is the client certificate's.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// echoJSON is the part of an EchoResponse in protojson the tests read.
type echoJSON struct {
	Message string `json:"message"`
	Peer    struct {
		CommonName        string   `json:"commonName"`
		SerialNumber      string   `json:"serialNumber"`
		Sha256Fingerprint string   `json:"sha256Fingerprint"`
		Chain             []string `json:"chain"`
	} `json:"peer"`
	Connection struct {
		Protocol    string `json:"protocol"`
		HTTPVersion string `json:"httpVersion"`
		TLSVersion  string `json:"tlsVersion"`
	} `json:"connection"`
}

func (e echoJSON) check(
	t *testing.T,
	srv *servertest.Server,
	message, protocol,
	httpVersion string,
) {
	t.Helper()
	if e.Message != message {
		t.Errorf("message = %q, want %q", e.Message, message)
	}
	if e.Peer.Sha256Fingerprint != pki.Fingerprint(srv.Client.Certificate) {
		t.Errorf("peer fingerprint = %q, want the client certificate's %q",
			e.Peer.Sha256Fingerprint, pki.Fingerprint(srv.Client.Certificate))
	}
	if e.Peer.SerialNumber != pki.SerialHex(srv.Client.Certificate) || e.Peer.CommonName != "client" {
		t.Errorf("peer serial %q, CN %q; want %q, client",
			e.Peer.SerialNumber, e.Peer.CommonName, pki.SerialHex(srv.Client.Certificate))
	}
	if e.Connection.Protocol != protocol {
		t.Errorf("protocol = %q, want %q", e.Connection.Protocol, protocol)
	}
	if httpVersion != "" && e.Connection.HTTPVersion != httpVersion {
		t.Errorf("http version = %q, want %q", e.Connection.HTTPVersion, httpVersion)
	}
}

func curlPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is not installed; these tests need the real binary (apt-get install curl)")
	}
	return path
}

func TestCurl(t *testing.T) {
	t.Parallel()
	curl := curlPath(t)
	srv := servertest.Start(t)
	caFile, certFile, keyFile := srv.WriteFiles(t, t.TempDir())

	if out, err := exec.Command(curl, "--version").Output(); err == nil {
		t.Logf("using %s", strings.SplitN(string(out), "\n", 2)[0])
	}

	cases := []struct {
		name, path, protocol string
		httpFlag, httpWant   string
	}{
		{"connect route over HTTP/2", "/echo.v1.EchoService/Echo", "connect", "--http2", "HTTP/2.0"},
		{"plain route over HTTP/2", "/v1/echo", "http", "--http2", "HTTP/2.0"},
		{"connect route over HTTP/1.1", "/echo.v1.EchoService/Echo", "connect", "--http1.1", "HTTP/1.1"},
		{"plain route over HTTP/1.1", "/v1/echo", "http", "--http1.1", "HTTP/1.1"},
	}
	for _, tc := range cases {
		t.Run("ok/"+tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(callContext(t), curl, "--silent", "--show-error", "--fail-with-body",
				tc.httpFlag, "--cacert", caFile, "--cert", certFile, "--key", keyFile,
				"-H", "Content-Type: application/json", "-d", `{"message":"from curl"}`,
				srv.URL+tc.path)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, stderrOf(err))
			}
			var got echoJSON
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("answer is not JSON: %v\n%s", err, out)
			}
			got.check(t, srv, "from curl", tc.protocol, tc.httpWant)
		})
	}

	t.Run("ok/plain route without a content type", func(t *testing.T) {
		t.Parallel()
		// curl -d alone sends application/x-www-form-urlencoded.
		cmd := exec.CommandContext(callContext(t), curl, "--silent", "--show-error", "--fail-with-body",
			"--cacert", caFile, "--cert", certFile, "--key", keyFile, "-d", `{"message":"bare"}`,
			srv.URL+"/v1/echo")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl: %v\n%s%s", err, out, stderrOf(err))
		}
		var got echoJSON
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("answer is not JSON: %v\n%s", err, out)
		}
		got.check(t, srv, "bare", "http", "HTTP/2.0")
	})

	t.Run("refused/no client certificate", func(t *testing.T) {
		t.Parallel()
		cmd := exec.CommandContext(callContext(t), curl, "--silent", "--show-error",
			"--cacert", caFile, "-H", "Content-Type: application/json", "-d", `{"message":"x"}`,
			srv.URL+"/v1/echo")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("curl without a certificate got an answer: %s", out)
		}
		if !strings.Contains(string(out), "alert certificate required") {
			t.Errorf("curl's error does not name the TLS alert: %s", out)
		}
	})
}

// TestCurlOversizedBody sends curl's --data-binary of a JSON body over the
// default 4 MiB limit, as a user would, and repeats each case: whether the
// refusal reaches curl used to depend on a race between its upload and the
// server's reset of the stream (HTTP/2) or connection (HTTP/1.1).
func TestCurlOversizedBody(t *testing.T) {
	t.Parallel()
	curl := curlPath(t)
	srv := servertest.Start(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := srv.WriteFiles(t, dir)
	body := filepath.Join(dir, "5MiB.json")
	message := strings.Repeat("x", server.DefaultMaxMessageBytes+1<<20)
	if err := os.WriteFile(body, []byte(`{"message":"`+message+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	const rounds = 10
	cases := []struct {
		name, path string
		flags      []string
		// Whether curl sends the body: over HTTP/1.1 it asks first
		// (Expect: 100-continue), and a server that has refused the
		// declared length never asks for it.
		uploads bool
	}{
		{"connect route over HTTP/2", "/echo.v1.EchoService/Echo", []string{"--http2"}, true},
		{"plain route over HTTP/2", "/v1/echo", []string{"--http2"}, true},
		{"connect route over HTTP/1.1", "/echo.v1.EchoService/Echo", []string{"--http1.1"}, false},
		{"plain route over HTTP/1.1", "/v1/echo", []string{"--http1.1"}, false},
		{"plain route over HTTP/1.1 without Expect", "/v1/echo", []string{"--http1.1", "-H", "Expect:"}, true},
	}
	for _, tc := range cases {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			t.Parallel()
			for round := range rounds {
				args := append([]string{"--silent", "--show-error", "--max-time", "20",
					"--cacert", caFile, "--cert", certFile, "--key", keyFile,
					"-H", "Content-Type: application/json", "--data-binary", "@" + body,
					"--write-out", "\\n%{http_code} %{size_upload}"}, tc.flags...)
				out, err := exec.CommandContext(callContext(t), curl, append(args, srv.URL+tc.path)...).Output()
				if err != nil {
					t.Fatalf("round %d: curl: %v\n%s", round+1, err, stderrOf(err))
				}
				answer, status, _ := strings.Cut(string(out), "\n")
				var code, uploaded int
				if _, err := fmt.Sscan(status, &code, &uploaded); err != nil {
					t.Fatalf("round %d: curl wrote %q", round+1, out)
				}
				if code != http.StatusTooManyRequests ||
					!strings.Contains(answer, "request message over this server's limit of 4 MiB") ||
					!strings.Contains(answer, "--max-message-bytes") {
					t.Fatalf("round %d: HTTP %d %q, want 429 naming the 4 MiB limit", round+1, code, answer)
				}
				if !tc.uploads && uploaded != 0 {
					t.Errorf("round %d: curl sent %d bytes of a body the server had refused by its length",
						round+1, uploaded)
				}
			}
		})
	}
}

func stderrOf(err error) string {
	if exitErr, ok := errors.AsType[*exec.ExitError](err); ok {
		return string(exitErr.Stderr)
	}
	return ""
}

// toolContext bounds a `go tool` run. The first run on a machine compiles
// the tool, which takes far longer than the call itself.
func toolContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// moduleRoot is where go.mod lives, so `go tool buf` finds its pin.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(dir)
}

func TestBufCurl(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	caFile, certFile, keyFile := srv.WriteFiles(t, t.TempDir())
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")

	for _, protocol := range []string{"connect", "grpc", "grpcweb"} {
		t.Run("ok/"+protocol, func(t *testing.T) {
			t.Parallel()
			// No --schema: buf curl asks the server's reflection service.
			cmd := exec.CommandContext(toolContext(t), goBin, "tool", "buf", "curl",
				"--protocol", protocol, "--cacert", caFile, "--cert", certFile, "--key", keyFile,
				"--data", `{"message":"from buf curl"}`,
				srv.URL+"/echo.v1.EchoService/Echo")
			cmd.Dir = moduleRoot(t)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("buf curl: %v\n%s", err, stderrOf(err))
			}
			var got echoJSON
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("answer is not JSON: %v\n%s", err, out)
			}
			want := map[string]string{"connect": "connect", "grpc": "grpc", "grpcweb": "grpc-web"}[protocol]
			got.check(t, srv, "from buf curl", want, "")
		})
	}
}

func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)

	creds := credentials.NewTLS(&tls.Config{
		RootCAs:      srv.CA.Pool(),
		Certificates: []tls.Certificate{srv.Client.TLSCertificate()},
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS13,
	})
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	t.Run("ok/echo", func(t *testing.T) {
		t.Parallel()
		resp := &echov1.EchoResponse{}
		err := conn.Invoke(callContext(t), "/echo.v1.EchoService/Echo",
			&echov1.EchoRequest{Message: "from grpc-go"}, resp)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetPeer().GetSha256Fingerprint() != pki.Fingerprint(srv.Client.Certificate) {
			t.Errorf("peer fingerprint = %q, want the client certificate's", resp.GetPeer().GetSha256Fingerprint())
		}
		if resp.GetConnection().GetProtocol() != "grpc" || resp.GetConnection().GetServerName() != "localhost" {
			t.Errorf("connection = %v, want grpc with SNI localhost", resp.GetConnection())
		}
	})

	t.Run("ok/health", func(t *testing.T) {
		t.Parallel()
		resp, err := healthpb.NewHealthClient(conn).Check(callContext(t),
			&healthpb.HealthCheckRequest{Service: "echo.v1.EchoService"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health = %v, want SERVING", resp.GetStatus())
		}
	})

	t.Run("refused/no client certificate", func(t *testing.T) {
		t.Parallel()
		bare := credentials.NewTLS(&tls.Config{RootCAs: srv.CA.Pool(), ServerName: "localhost"})
		anonymous, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(bare))
		if err != nil {
			t.Fatal(err)
		}
		defer anonymous.Close()
		err = anonymous.Invoke(callContext(t), "/echo.v1.EchoService/Echo",
			&echov1.EchoRequest{Message: "x"}, &echov1.EchoResponse{})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("error = %v, want unavailable naming 'certificate required'", err)
		}
	})
}

func TestGRPCurl(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	caFile, certFile, keyFile := srv.WriteFiles(t, t.TempDir())
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")

	// grpcurl also learns the schema through reflection.
	cmd := exec.CommandContext(toolContext(t), goBin, "tool", "grpcurl",
		"-cacert", caFile, "-cert", certFile, "-key", keyFile,
		"-d", `{"message":"from grpcurl"}`, srv.Addr, "echo.v1.EchoService/Echo")
	cmd.Dir = moduleRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("grpcurl: %v\n%s", err, stderrOf(err))
	}
	var got echoJSON
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("answer is not JSON: %v\n%s", err, out)
	}
	got.check(t, srv, "from grpcurl", "grpc", "HTTP/2.0")
}
