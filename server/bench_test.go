package server

// Benchmarks of the hot path, with allocations per operation: what a call
// costs in echoloop's own code, without sockets. `go test -bench . -benchmem
// ./server/` runs them; the suite in bench/ measures whole servers.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/proto"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/pki"
)

// benchChain is a verified chain as a handshake leaves it: a client
// certificate with a URI and a DNS SAN, and its CA.
func benchChain(b *testing.B) ([]*x509.Certificate, *pki.Authority) {
	b.Helper()
	ca, err := pki.NewAuthority("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := ca.IssueClient("bench-client", pki.WithSANs("spiffe://example.org/bench", "bench.example.org"))
	if err != nil {
		b.Fatal(err)
	}
	return []*x509.Certificate{leaf.Certificate, ca.Certificate}, ca
}

// BenchmarkPeerFromChain is identity extraction, which runs once per
// connection.
func BenchmarkPeerFromChain(b *testing.B) {
	chain, _ := benchChain(b)
	b.ReportAllocs()
	for b.Loop() {
		if PeerFromChain(chain) == nil {
			b.Fatal("no peer")
		}
	}
}

// BenchmarkPolicyAllows is the policy match, once per connection, against
// a policy that matches on its last pattern.
func BenchmarkPolicyAllows(b *testing.B) {
	chain, _ := benchChain(b)
	policy := Policy{
		CommonNames:         []string{"someone-else", "another"},
		OrganizationalUnits: []string{"payments"},
		DNSNames:            []string{"*.other.example", "api.example.org"},
		URIs:                []string{"spiffe://other.example/*", "spiffe://example.org/*"},
	}
	b.ReportAllocs()
	for b.Loop() {
		if !policy.Allows(chain[0]) {
			b.Fatal("the policy refused the bench client")
		}
	}
}

// BenchmarkHandler is one Echo call through the whole handler — access
// log (JSON, thrown away), metrics, policy, the protocol's handler and
// codec — for each protocol, on a connection whose identity is known.
func BenchmarkHandler(b *testing.B) {
	chain, ca := benchChain(b)
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(WithCertificate(serverCert.TLSCertificate()), WithClientCAs(ca.Certificate),
		WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil)))) //nolint:sloglint // encoding the access log line is part of a call's cost
	if err != nil {
		b.Fatal(err)
	}
	info := &connInfo{peer: PeerFromChain(chain), subject: chain[0].Subject.String(), allowed: true,
		tlsVersion: "TLS 1.3", cipherSuite: "TLS_AES_128_GCM_SHA256", alpn: "h2", serverName: "localhost"}
	ctx := context.WithValue(context.Background(), connInfoKey{}, info)

	message, err := proto.Marshal(&echov1.EchoRequest{Message: string(bytes.Repeat([]byte("x"), 64))})
	if err != nil {
		b.Fatal(err)
	}
	jsonBody := []byte(`{"message":"` + string(bytes.Repeat([]byte("x"), 64)) + `"}`)
	envelope := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(message)))
	envelope = append(envelope, message...)
	cases := []struct {
		protocol, path, contentType string
		body                        []byte
	}{
		{ProtocolConnect, echov1connect.EchoServiceEchoProcedure, "application/proto", message},
		{ProtocolGRPC, echov1connect.EchoServiceEchoProcedure, "application/grpc", envelope},
		{ProtocolGRPCWeb, echov1connect.EchoServiceEchoProcedure, "application/grpc-web+proto", envelope},
		// Connect's own JSON call: the plain route's cost without its route.
		{ProtocolConnect + "-json", echov1connect.EchoServiceEchoProcedure, "application/json", jsonBody},
		{ProtocolHTTP, PlainHTTPPath, "application/json", jsonBody},
	}
	for _, tc := range cases {
		b.Run(tc.protocol, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequestWithContext(ctx, http.MethodPost, tc.path, bytes.NewReader(tc.body))
				req.ProtoMajor, req.ProtoMinor, req.Proto = 2, 0, "HTTP/2.0"
				req.Header.Set("Content-Type", tc.contentType)
				if tc.protocol == ProtocolGRPC {
					req.Header.Set("Te", "trailers")
				}
				rec := httptest.NewRecorder()
				s.handler.ServeHTTP(rec, req)
				if !answeredOK(tc.protocol, rec) {
					b.Fatalf("%s answered %d %v %q", tc.protocol, rec.Code, rec.Result().Trailer, rec.Body.String())
				}
			}
		})
	}
}

// answeredOK reports whether a recorded answer is a successful echo in the
// protocol's own terms, so that no benchmark measures a failing call.
func answeredOK(protocol string, rec *httptest.ResponseRecorder) bool {
	if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte("bench-client")) {
		return false
	}
	switch protocol {
	case ProtocolGRPC:
		return rec.Result().Trailer.Get("Grpc-Status") == "0"
	case ProtocolGRPCWeb:
		return bytes.Contains(rec.Body.Bytes(), []byte("grpc-status: 0"))
	}
	return true
}
