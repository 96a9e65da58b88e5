// Package servertest runs a real echoloop server on a loopback port with a
// throw-away PKI, for tests: real TCP, real TLS with client certificates,
// real HTTP/2. It is to echoloop what net/http/httptest is to net/http.
package servertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
)

// Server is a running echoloop server and the PKI it trusts.
type Server struct {
	// URL is the server's base URL, https://127.0.0.1:PORT.
	URL string
	// Addr is the server's host:port.
	Addr string
	// CA signed the server certificate and is the only CA trusted for clients.
	CA *pki.Authority
	// Client is a valid client certificate from CA, common name "client".
	Client *pki.Issued
	// ServerCert is the certificate the server started with.
	ServerCert *pki.Issued
	// CertDir holds the credential files of a server from [StartWithFiles].
	CertDir string
	// Server is the running server, for Reload.
	Server *server.Server

	logs     *logBuffer
	stop     func() error
	stopOnce sync.Once
	stopErr  error
}

// Start starts a server on 127.0.0.1 with a fresh CA and server
// certificate (localhost, 127.0.0.1, ::1) plus the given options, and stops
// it when the test ends.
func Start(tb testing.TB, opts ...server.Option) *Server {
	tb.Helper()
	s := newPKI(tb)
	base := []server.Option{
		server.WithCertificate(s.ServerCert.TLSCertificate()),
		server.WithClientCAs(s.CA.Certificate),
	}
	s.start(tb, append(base, opts...))
	return s
}

// StartWithFiles is [Start] with the server reading its credentials from
// files in dir — ca.crt, server.crt and server.key, written here — so that
// a test can change them and watch the server reload. CertDir is set.
func StartWithFiles(tb testing.TB, dir string, opts ...server.Option) *Server {
	tb.Helper()
	s := newPKI(tb)
	s.CertDir = dir
	if err := pki.WriteFile(filepath.Join(dir, pki.CACertFile), s.CA.CertificatePEM(), pki.CertFileMode); err != nil {
		tb.Fatal(err)
	}
	s.WriteServerCertificate(tb, s.ServerCert)
	base := []server.Option{server.WithCredentialFiles(
		filepath.Join(dir, pki.ServerCertFile),
		filepath.Join(dir, pki.ServerKeyFile),
		filepath.Join(dir, pki.CACertFile),
	)}
	s.start(tb, append(base, opts...))
	return s
}

// WriteServerCertificate replaces server.crt and server.key in CertDir,
// key first, each file atomically, as a certificate manager would.
func (s *Server) WriteServerCertificate(tb testing.TB, cert *pki.Issued) {
	tb.Helper()
	key, err := cert.KeyPEM()
	if err != nil {
		tb.Fatal(err)
	}
	if err := pki.WriteFile(filepath.Join(s.CertDir, pki.ServerKeyFile), key, pki.KeyFileMode); err != nil {
		tb.Fatal(err)
	}
	if err := pki.WriteFile(filepath.Join(s.CertDir, pki.ServerCertFile), cert.CertificatePEM(), pki.CertFileMode); err != nil {
		tb.Fatal(err)
	}
}

func newPKI(tb testing.TB) *Server {
	tb.Helper()
	ca, err := pki.NewAuthority("servertest CA")
	if err != nil {
		tb.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		tb.Fatal(err)
	}
	clientCert, err := ca.IssueClient("client")
	if err != nil {
		tb.Fatal(err)
	}
	return &Server{CA: ca, Client: clientCert, ServerCert: serverCert, logs: &logBuffer{}}
}

// start runs the server until the test ends.
func (s *Server) start(tb testing.TB, opts []server.Option) {
	tb.Helper()
	logger := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(append([]server.Option{server.WithLogger(logger)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	s.stop = func() error {
		cancel()
		return <-served
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("server stopped with an error: %v", err)
		}
	})
	s.Server = srv
	s.URL = "https://" + ln.Addr().String()
	s.Addr = ln.Addr().String()

	// The port takes connections into its backlog at once, but the file
	// watches are set only once Serve runs; a test that changes a file
	// straight away must find them in place.
	select {
	case <-srv.Serving():
	case err := <-served:
		served <- err // for Stop
		tb.Fatalf("the server stopped before serving: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatal("the server was not serving within 10s")
	}
}

// Stop drains and stops the server before the test ends, and returns what
// Serve returned. Later calls return the same.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

// Logs returns every log line so far, each decoded from JSON.
func (s *Server) Logs() []map[string]any {
	return s.logs.lines()
}

// WriteFiles writes the CA certificate and the client certificate and key
// into dir as ca.crt, client.crt and client.key, for programs that read
// files (curl, buf curl), and returns their paths.
func (s *Server) WriteFiles(tb testing.TB, dir string) (caFile, certFile, keyFile string) {
	tb.Helper()
	keyPEM, err := s.Client.KeyPEM()
	if err != nil {
		tb.Fatal(err)
	}
	caFile = filepath.Join(dir, pki.CACertFile)
	certFile = filepath.Join(dir, pki.ClientCertFile)
	keyFile = filepath.Join(dir, pki.ClientKeyFile)
	for path, data := range map[string][]byte{
		caFile:   s.CA.CertificatePEM(),
		certFile: s.Client.CertificatePEM(),
		keyFile:  keyPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// logBuffer collects JSON log lines from concurrent writers.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() []map[string]any {
	b.mu.Lock()
	data := append([]byte{}, b.buf.Bytes()...)
	b.mu.Unlock()

	var out []map[string]any
	scanner := bufio.NewScanner(bytes.NewReader(data))
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for scanner.Scan() {
		var line map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			line = map[string]any{"unparsed": scanner.Text(), "error": errors.New("not JSON").Error()}
		}
		out = append(out, line)
	}
	return out
}

// WaitForRefusals waits up to five seconds until at least n refused
// handshakes with the given reason are logged, and returns them. A refused
// client can read its alert before the server has written its log line, so
// tests wait rather than look once.
func (s *Server) WaitForRefusals(tb testing.TB, reason string, n int) []map[string]any {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var matching []map[string]any
		for _, line := range s.Logs() {
			if line["msg"] == "tls handshake refused" && line["reason"] == reason {
				matching = append(matching, line)
			}
		}
		if len(matching) >= n {
			return matching
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d refused handshakes logged with reason %q, want %d; logs: %v",
				len(matching), reason, n, s.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Authority makes a CA valid from notBefore to notAfter, for tests of
// material outside its validity.
func Authority(tb testing.TB, name string, notBefore, notAfter time.Time) *pki.Authority {
	tb.Helper()
	ca, err := pki.NewAuthority(name, pki.WithValidity(notBefore, notAfter))
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}
