package server

// Fuzz targets for what a client controls: the bytes of a request on every
// route and content type the port serves, the revocation lists the server
// loads, and the names a policy matches. Seeds live in testdata/fuzz; the
// plain `go test` runs them as regular tests, and CI fuzzes each target for
// a bounded time (go test -fuzz).

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
)

// fuzzRoute is one way a request reaches the handler: a path, a content
// type and the headers that go with it.
type fuzzRoute struct {
	path        string
	contentType string
	header      map[string]string
	http2       bool
	protocol    string // what the answer must report in connection.protocol
	reply       func() proto.Message
}

func echoReply() proto.Message   { return &echov1.EchoResponse{} }
func streamReply() proto.Message { return &echov1.EchoStreamResponse{} }
func chatReply() proto.Message   { return &echov1.EchoChatResponse{} }

const (
	echoPath   = "/echo.v1.EchoService/Echo"
	streamPath = "/echo.v1.EchoService/EchoStream"
	chatPath   = "/echo.v1.EchoService/EchoChat"
)

// fuzzRoutes are indexed by the first fuzz argument; the seed files name
// the route they exercise.
var fuzzRoutes = []fuzzRoute{
	{path: echoPath, contentType: "application/proto", protocol: ProtocolConnect, reply: echoReply},
	{path: echoPath, contentType: "application/json", protocol: ProtocolConnect, reply: echoReply},
	{path: streamPath, contentType: "application/connect+proto", protocol: ProtocolConnect, reply: streamReply},
	{path: streamPath, contentType: "application/connect+json", protocol: ProtocolConnect, reply: streamReply},
	{path: echoPath, contentType: "application/grpc", http2: true, protocol: ProtocolGRPC, reply: echoReply},
	{path: echoPath, contentType: "application/grpc+proto", http2: true, protocol: ProtocolGRPC, reply: echoReply},
	{path: echoPath, contentType: "application/grpc-web", protocol: ProtocolGRPCWeb, reply: echoReply},
	{path: echoPath, contentType: "application/grpc-web+proto", protocol: ProtocolGRPCWeb, reply: echoReply},
	{path: PlainHTTPPath, contentType: "application/json", protocol: ProtocolHTTP, reply: echoReply},
	{path: chatPath, contentType: "application/grpc", http2: true, protocol: ProtocolGRPC, reply: chatReply},
	{path: echoPath, contentType: "application/proto", header: map[string]string{"Content-Encoding": "gzip"},
		protocol: ProtocolConnect, reply: echoReply},
	{path: echoPath, contentType: "application/grpc", header: map[string]string{"Grpc-Encoding": "gzip"},
		http2: true, protocol: ProtocolGRPC, reply: echoReply},
	{path: streamPath, contentType: "application/grpc-web+json", protocol: ProtocolGRPCWeb, reply: streamReply},
}

// fuzzIdentity is a server and the verified identity of one connection,
// which every answer must report and nothing else.
type fuzzIdentity struct {
	server *Server
	conn   *connInfo
}

func newFuzzIdentity(tb testing.TB) *fuzzIdentity {
	tb.Helper()
	ca, err := pki.NewAuthority("fuzz CA")
	if err != nil {
		tb.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		tb.Fatal(err)
	}
	client, err := ca.IssueClient("fuzz client")
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(
		WithCertificate(serverCert.TLSCertificate()),
		WithClientCAs(ca.Certificate),
		WithLogger(slog.New(slog.DiscardHandler)),
		// Small enough that a decompression bomb reaches the limit in a
		// few milliseconds rather than slowing every run.
		WithMaxMessageBytes(64<<10),
	)
	if err != nil {
		tb.Fatal(err)
	}
	chain := []*x509.Certificate{client.Certificate, ca.Certificate}
	return &fuzzIdentity{server: s, conn: &connInfo{
		peer:        PeerFromChain(chain),
		subject:     client.Certificate.Subject.String(),
		allowed:     true,
		tlsVersion:  "TLS 1.3",
		cipherSuite: "TLS_AES_128_GCM_SHA256",
		alpn:        "h2",
		serverName:  "localhost",
	}}
}

// FuzzHandler sends arbitrary bytes as the body of a request on each route
// the port serves. The handler must not panic, must answer with a status,
// and every message it answers with must carry the connection's own
// identity and the protocol the request came in with.
func FuzzHandler(f *testing.F) {
	id := newFuzzIdentity(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		// A short deadline bounds the delays and streams a body may ask for.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		ctx = context.WithValue(ctx, connInfoKey{}, id.conn)

		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "https://localhost"+r.path, bytes.NewReader(body))
		req.Header.Set("Content-Type", r.contentType)
		for k, v := range r.header {
			req.Header.Set(k, v)
		}
		if r.http2 {
			req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
			req.Header.Set("Te", "trailers")
		}
		rec := httptest.NewRecorder()
		id.server.Handler().ServeHTTP(rec, req)

		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("%s %s: status %d", r.path, r.contentType, rec.Code)
		}
		if rec.Code != http.StatusOK {
			return
		}
		for _, msg := range answers(t, r, rec.Header().Get("Content-Type"), rec.Body.Bytes()) {
			id.check(t, r, msg)
		}
	})
}

// answers decodes the messages of a successful response: one for a unary
// Connect or plain answer, each data frame of an enveloped one.
func answers(t *testing.T, r fuzzRoute, contentType string, body []byte) []proto.Message {
	t.Helper()
	jsonCodec := strings.HasSuffix(contentType, "json")
	decode := func(data []byte) proto.Message {
		msg := r.reply()
		var err error
		if jsonCodec {
			err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, msg)
		} else {
			err = proto.Unmarshal(data, msg)
		}
		if err != nil {
			t.Fatalf("%s %s: the server's answer does not decode as %T: %v (%q)",
				r.path, r.contentType, msg, err, data)
		}
		return msg
	}
	if contentType == "application/json" || contentType == "application/proto" {
		return []proto.Message{decode(body)}
	}

	var msgs []proto.Message
	for len(body) >= 5 {
		flags, size := body[0], binary.BigEndian.Uint32(body[1:5])
		if uint64(size) > uint64(len(body)-5) {
			t.Fatalf("%s %s: answer frame of %d bytes with %d left", r.path, r.contentType, size, len(body)-5)
		}
		frame := body[5 : 5+size]
		body = body[5+size:]
		// Data frames only: not compressed (0x01), not gRPC-Web trailers
		// (0x80), not a Connect end of stream (0x02).
		if flags == 0 {
			msgs = append(msgs, decode(frame))
		}
	}
	return msgs
}

func (id *fuzzIdentity) check(t *testing.T, r fuzzRoute, msg proto.Message) {
	t.Helper()
	var echo *echov1.EchoResponse
	switch m := msg.(type) {
	case *echov1.EchoResponse:
		echo = m
	case *echov1.EchoStreamResponse:
		echo = m.GetEcho()
	case *echov1.EchoChatResponse:
		echo = m.GetEcho()
	}
	if got, want := echo.GetPeer().GetSha256Fingerprint(), id.conn.peer.GetSha256Fingerprint(); got != want {
		t.Fatalf("%s %s: answered with the identity %q, want the connection's %q", r.path, r.contentType, got, want)
	}
	if got := echo.GetConnection().GetProtocol(); got != r.protocol {
		t.Fatalf("%s %s: answer reports protocol %q, want %q", r.path, r.contentType, got, r.protocol)
	}
}

// FuzzCRLCheck loads arbitrary bytes as a revocation list file and checks a
// verified chain against it. Loading must fail with a message that names
// the file, or succeed; checking must not panic, and only a list signed by
// the chain's CA may revoke anything.
//
// The CA and client are fixed, in testdata/fuzzpki, so that seed lists
// signed by that CA (its key was thrown away once they were made) reach the
// path that revokes.
func FuzzCRLCheck(f *testing.F) {
	cas, err := pki.LoadCertificates("testdata/fuzzpki/ca.crt")
	if err != nil {
		f.Fatal(err)
	}
	clients, err := pki.LoadCertificates("testdata/fuzzpki/client.crt")
	if err != nil {
		f.Fatal(err)
	}
	ca := cas[0]
	chain := []*x509.Certificate{clients[0], ca}

	f.Fuzz(func(t *testing.T, data []byte) {
		lists, err := pki.ParseCRLs("fuzz.crl", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "pki: ") || !strings.Contains(err.Error(), `"fuzz.crl"`) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		r := &revocations{path: "fuzz.crl"}
		r.current.Store(&crlSet{lists: lists})
		if err := r.check(chain); err != nil {
			signed := false
			for _, crl := range lists {
				signed = signed || crl.CheckSignatureFrom(ca) == nil
			}
			if !signed {
				t.Fatalf("a list the CA did not sign revoked the client: %v", err)
			}
		}
	})
}

// FuzzPolicy matches arbitrary names against arbitrary patterns. A policy
// allows a certificate exactly when one of its lists alone would, and each
// kind of pattern admits only what its rule says: the same common name,
// the same DNS name or one concrete label below a wildcard, a URI under the
// pattern's own scheme and host (for a spiffe pattern, the certificate's
// one and valid SPIFFE ID), the same organisational unit. The certificate
// carries up to two URI SANs.
func FuzzPolicy(f *testing.F) {
	f.Fuzz(func(t *testing.T, cnPattern, dnsPattern, uriPattern, ouPattern, cn, dnsName, rawURI, ou,
		otherURI string) {
		leaf := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		if ou != "" {
			leaf.Subject.OrganizationalUnit = []string{ou}
		}
		if dnsName != "" {
			leaf.DNSNames = []string{dnsName}
		}
		for _, raw := range []string{rawURI, otherURI} {
			if u, err := url.Parse(raw); err == nil && raw != "" {
				leaf.URIs = append(leaf.URIs, u)
			}
		}

		one := func(p Policy) bool {
			if p.Validate() != nil {
				return false
			}
			return p.Allows(leaf)
		}
		byCN := cnPattern != "" && one(Policy{CommonNames: []string{cnPattern}})
		byDNS := dnsPattern != "" && one(Policy{DNSNames: []string{dnsPattern}})
		byURI := uriPattern != "" && one(Policy{URIs: []string{uriPattern}})
		byOU := ouPattern != "" && one(Policy{OrganizationalUnits: []string{ouPattern}})

		var all Policy
		for list, pattern := range map[*[]string]string{
			&all.CommonNames: cnPattern, &all.DNSNames: dnsPattern,
			&all.URIs: uriPattern, &all.OrganizationalUnits: ouPattern,
		} {
			if pattern != "" {
				*list = []string{pattern}
			}
		}
		if all.Validate() == nil {
			if got, want := all.Allows(leaf), all.Empty() || byCN || byDNS || byURI || byOU; got != want {
				t.Fatalf("policy %+v allows %v, but its lists one by one say %v", all, got, want)
			}
		}

		if byCN && cn != cnPattern {
			t.Fatalf("common name pattern %q admitted %q", cnPattern, cn)
		}
		if byOU && ou != ouPattern {
			t.Fatalf("unit pattern %q admitted %q", ouPattern, ou)
		}
		if byDNS && !dnsAdmits(dnsPattern, dnsName) {
			t.Fatalf("DNS pattern %q admitted %q", dnsPattern, dnsName)
		}
		if byURI && !uriAdmits(uriPattern, leaf.URIs) {
			t.Fatalf("URI pattern %q admitted %q", uriPattern, leaf.URIs)
		}
	})
}

// dnsAdmits restates the DNS rule from the name's side: the name is the
// pattern, or a single non-empty label without '*' followed by the
// wildcard's suffix.
func dnsAdmits(pattern, name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	pattern = strings.ToLower(pattern)
	suffix, wildcard := strings.CutPrefix(pattern, "*.")
	if !wildcard {
		return name == pattern
	}
	label, found := strings.CutSuffix(name, "."+suffix)
	return found && label != "" && !strings.ContainsAny(label, ".*")
}

// uriAdmits restates the URI rule: one of uris is the pattern, or has the
// pattern's scheme and host, no user information, and a path that continues
// the pattern's path below a slash. A pattern in the spiffe scheme judges
// only a lone URI SAN that is a valid SPIFFE ID.
func uriAdmits(pattern string, uris []*url.URL) bool {
	if strings.HasPrefix(strings.ToLower(pattern), "spiffe:") {
		return len(uris) == 1 && pki.CheckSPIFFEID(uris[0].String()) == nil &&
			uriAdmitsOne(pattern, uris[0])
	}
	return slices.ContainsFunc(uris, func(u *url.URL) bool { return uriAdmitsOne(pattern, u) })
}

func uriAdmitsOne(pattern string, u *url.URL) bool {
	prefix, wildcard := strings.CutSuffix(pattern, "/*")
	if !wildcard {
		return pattern == u.String()
	}
	base, err := url.Parse(prefix)
	if err != nil {
		return false
	}
	if !strings.EqualFold(u.Scheme, base.Scheme) || !strings.EqualFold(u.Host, base.Host) || u.User != nil {
		return false
	}
	rest, under := strings.CutPrefix(u.Path, base.Path)
	return under && strings.HasPrefix(rest, "/")
}
