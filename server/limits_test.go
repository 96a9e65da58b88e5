package server_test

// The limits and protocol settings of the port as a client meets them on
// the wire: the TLS floor, the handshake and idle timeouts, the HTTP/2
// settings that carry the stream and header limits, the HTTP/1.1 header
// limit, and both versions of server reflection.

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// clientTLS is the TLS configuration of a client holding cert.
func clientTLS(srv *servertest.Server, cert *pki.Issued, nextProtos ...string) *tls.Config {
	return &tls.Config{
		RootCAs:      srv.CA.Pool(),
		ServerName:   "localhost",
		Certificates: []tls.Certificate{cert.TLSCertificate()},
		NextProtos:   nextProtos,
	}
}

func TestTLSVersionFloor(t *testing.T) {
	t.Parallel()
	tls12Only := func(srv *servertest.Server) *http.Client {
		config := clientTLS(srv, srv.Client)
		config.MaxVersion = tls.VersionTLS12
		transport := &http.Transport{TLSClientConfig: config}
		if _, err := http2.ConfigureTransports(transport); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(transport.CloseIdleConnections)
		return &http.Client{Transport: transport}
	}
	post := func(hc *http.Client, srv *servertest.Server) (*http.Response, error) {
		return hc.Post(srv.URL+server.PlainHTTPPath, "application/json", strings.NewReader(`{"message":"v"}`))
	}

	t.Run("refused/TLS 1.2 by default", func(t *testing.T) {
		t.Parallel()
		srv := servertest.Start(t)
		resp, err := post(tls12Only(srv), srv)
		if err == nil {
			resp.Body.Close()
			t.Fatal("a TLS 1.2 client was served by a server with the default floor")
		}
		if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("error = %v, want the server's protocol version alert", err)
		}
		srv.WaitForRefusals(t, server.ReasonVersion, 1)
	})

	t.Run("ok/TLS 1.2 when allowed", func(t *testing.T) {
		t.Parallel()
		srv := servertest.Start(t, server.WithMinVersion(tls.VersionTLS12))
		resp, err := post(tls12Only(srv), srv)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tlsVersion":"TLS 1.2"`) ||
			!strings.Contains(string(body), pki.Fingerprint(srv.Client.Certificate)) {
			t.Errorf("answer %d %s, want the client's identity over TLS 1.2", resp.StatusCode, body)
		}
	})

	t.Run("refused/TLS 1.1 as a floor", func(t *testing.T) {
		t.Parallel()
		_, err := server.New(server.WithMinVersion(tls.VersionTLS11))
		if err == nil || !strings.Contains(err.Error(), "use TLS 1.2 or 1.3") {
			t.Errorf("New: %v, want the floor refused", err)
		}
	})
}

func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithHandshakeTimeout(200*time.Millisecond))

	// A client that connects and never says a word.
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	if err == nil || isTimeout(err) || time.Since(start) > 3*time.Second {
		t.Errorf("read returned %v after %s, want the server to hang up after about 200ms",
			err, time.Since(start))
	}
	line := srv.WaitForRefusals(t, server.ReasonTimeout, 1)[0]
	if remote, _ := line[server.KeyRemote].(string); remote != conn.LocalAddr().String() {
		t.Errorf("refusal logged for %q, want %q", remote, conn.LocalAddr())
	}
}

// isTimeout reports whether err is this side's own read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serverSettings makes an HTTP/2 connection and returns the settings the
// server announces in its first frame.
func serverSettings(t *testing.T, srv *servertest.Server) (map[http2.SettingID]uint32, *tls.Conn) {
	t.Helper()
	conn, err := tls.Dial("tcp", srv.Addr, clientTLS(srv, srv.Client, http2.NextProtoTLS))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	framer := http2.NewFramer(conn, conn)
	if err := framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	frame, err := framer.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := frame.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame is %T, want SETTINGS", frame)
	}
	values := map[http2.SettingID]uint32{}
	_ = settings.ForeachSetting(func(s http2.Setting) error {
		values[s.ID] = s.Val
		return nil
	})
	return values, conn
}

func TestHTTP2SettingsCarryTheLimits(t *testing.T) {
	t.Parallel()
	const headerLimit = 4 << 10
	srv := servertest.Start(t, server.WithMaxConcurrentStreams(3), server.WithMaxHeaderBytes(headerLimit))
	settings, _ := serverSettings(t, srv)

	if got := settings[http2.SettingMaxConcurrentStreams]; got != 3 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 3", got)
	}
	// x/net/http2 pads the HTTP/1.1 figure for its per-field overhead.
	if got := settings[http2.SettingMaxHeaderListSize]; got < headerLimit || got > headerLimit+1<<10 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE = %d, want about %d", got, headerLimit)
	}
}

func TestHeaderLimitOverHTTP1(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithMaxHeaderBytes(4<<10))
	conn, err := tls.Dial("tcp", srv.Addr, clientTLS(srv, srv.Client, "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))

	// net/http reads a little past the limit before it gives up, so the
	// header is well over it.
	big := strings.Repeat("x", 16<<10)
	request := "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nX-Big: " + big +
		"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status = %d, want 431", resp.StatusCode)
	}
}

func TestIdleTimeoutClosesQuietConnections(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithIdleTimeout(300*time.Millisecond))
	_, conn := serverSettings(t, srv)

	// The server says goodbye with GOAWAY and closes; read until it does.
	start := time.Now()
	framer := http2.NewFramer(io.Discard, conn)
	var err error
	goaway := false
	for err == nil {
		var frame http2.Frame
		frame, err = framer.ReadFrame()
		if _, ok := frame.(*http2.GoAwayFrame); ok {
			goaway = true
		}
	}
	if isTimeout(err) || !goaway || time.Since(start) > 3*time.Second {
		t.Errorf("connection ended with %v (GOAWAY %v) after %s, want GOAWAY and a close after about 300ms",
			err, goaway, time.Since(start))
	}
}

func TestReflectionV1AndV1Alpha(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	conn, err := grpc.NewClient(srv.Addr,
		grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(srv, srv.Client))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	want := []string{"echo.v1.EchoService", "grpc.health.v1.Health"}

	t.Run("ok/v1", func(t *testing.T) {
		t.Parallel()
		stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(callContext(t))
		if err != nil {
			t.Fatal(err)
		}
		req := &reflectionv1.ServerReflectionRequest{
			MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !slices.Equal(names, want) {
			t.Errorf("services = %q, want %q", names, want)
		}
	})

	//nolint:staticcheck // v1alpha is deprecated, and older clients still ask for it: the port answers both
	t.Run("ok/v1alpha", func(t *testing.T) {
		t.Parallel()
		stream, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(callContext(t))
		if err != nil {
			t.Fatal(err)
		}
		req := &reflectionv1alpha.ServerReflectionRequest{
			MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{
				FileContainingSymbol: "echo.v1.EchoService"}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
			t.Errorf("no file descriptor for echo.v1.EchoService: %v", resp)
		}
	})
}

// reflectionCode is the gRPC code a reflection stream ends with for the
// holder of cert.
func reflectionCode(t *testing.T, srv *servertest.Server, cert *pki.Issued) codes.Code {
	t.Helper()
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(srv, cert))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(callContext(t))
	if err != nil {
		return status.Code(err)
	}
	err = stream.Send(&reflectionv1.ServerReflectionRequest{
		MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}})
	if err == nil {
		_, err = stream.Recv()
	}
	return status.Code(err)
}
