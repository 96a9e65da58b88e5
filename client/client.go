// Package client calls an echoloop server over mutual TLS with the protocol
// of the caller's choice — Connect, gRPC, gRPC-Web or a plain JSON POST — so
// that the answers, and the identity the server verified, can be compared.
//
// Each protocol gets its own connection pool, so each protocol's first call
// makes its own TLS handshake and is verified on its own. Errors from TLS and
// the transport come back as [*Error], which names the cause and the fix.
// The package logs nothing.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/encoding/protojson"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/pki"
)

// Protocol is a way of carrying the Echo call.
type Protocol string

// The protocols an echoloop server speaks on its one port.
const (
	Connect Protocol = "connect"
	GRPC    Protocol = "grpc"
	GRPCWeb Protocol = "grpc-web"
	HTTP    Protocol = "http"
)

// Protocols lists every protocol in the order echoloop shows them.
func Protocols() []Protocol { return []Protocol{Connect, GRPC, GRPCWeb, HTTP} }

// ParseProtocol reads a protocol name as given on the command line.
func ParseProtocol(name string) (Protocol, error) {
	for _, p := range Protocols() {
		if string(p) == name {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown protocol %q: want connect, grpc, grpc-web or http", name)
}

// DefaultURL is the server a client calls unless told otherwise.
const DefaultURL = "https://localhost:8443"

// PlainHTTPPath is the server's plain JSON route.
const PlainHTTPPath = "/v1/echo"

// Option configures a [Client].
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	rootCAs     *x509.CertPool
	rootCerts   []*x509.Certificate // when read from a file, to name them in messages
	caFile      string
	cert        *tls.Certificate
	certFile    string
	serverName  string
	crlFile     string
	http1       bool
	dialTimeout time.Duration
	errs        []error
}

// WithRootCAs sets the CAs the server's certificate must chain to. Without
// this option, or [WithCAFile], the system roots are used.
func WithRootCAs(pool *x509.CertPool) Option {
	return optionFunc(func(o *options) { o.rootCAs = pool })
}

// WithCAFile reads the CAs the server's certificate must chain to from a
// PEM file.
func WithCAFile(path string) Option {
	return optionFunc(func(o *options) {
		pool, certs, err := pki.LoadCertPool(path)
		if err != nil {
			o.errs = append(o.errs, fmt.Errorf("loading CA file: %w", err))
			return
		}
		o.rootCAs, o.rootCerts, o.caFile = pool, certs, path
	})
}

// WithCertificate sets the client certificate and key to present.
func WithCertificate(cert tls.Certificate) Option {
	return optionFunc(func(o *options) { o.cert = &cert })
}

// WithCertificateFiles reads the client certificate chain and key from PEM files.
func WithCertificateFiles(certFile, keyFile string) Option {
	return optionFunc(func(o *options) {
		pair, err := pki.LoadKeyPair(certFile, keyFile)
		if err != nil {
			o.errs = append(o.errs, fmt.Errorf("loading client certificate: %w", err))
			return
		}
		o.cert, o.certFile = &pair, certFile
	})
}

// WithRevocationListFile names a PEM file of certificate revocation lists
// that the client reads only to explain a refusal: when the server refuses
// the client certificate and a list in the file, signed by the
// certificate's issuer, names its serial, the explanation says the
// certificate was revoked rather than listing every possible cause. The
// file is read when a refusal needs it; a missing file is no error.
func WithRevocationListFile(path string) Option {
	return optionFunc(func(o *options) { o.crlFile = path })
}

// WithServerName sets the name the server's certificate must cover, and
// the SNI sent, when it differs from the URL's host (an IP address, a name
// a load balancer rewrites).
func WithServerName(name string) Option {
	return optionFunc(func(o *options) { o.serverName = name })
}

// WithHTTP1 offers only HTTP/1.1 in ALPN. The gRPC protocol is defined over
// HTTP/2: echoloop's server, like connect-go, still answers it over
// HTTP/1.1, but grpc-go and most other gRPC servers refuse the connection.
func WithHTTP1() Option {
	return optionFunc(func(o *options) { o.http1 = true })
}

// optionErrors reports every option that failed, on one line.
type optionErrors []error

func (e optionErrors) Error() string {
	msgs := make([]string, 0, len(e))
	for _, err := range e {
		msgs = append(msgs, err.Error())
	}
	return "client: " + strings.Join(msgs, "; ")
}

func (e optionErrors) Unwrap() []error { return e }

// Client calls one echoloop server. It is safe for concurrent use.
type Client struct {
	baseURL string
	host    string
	addr    string // host:port, with the port https implies when the URL has none
	opts    options
	tls     *tls.Config

	mu    sync.Mutex
	pools map[Protocol]*http.Client

	// lastRequest holds what the server asked for in its most recent
	// CertificateRequest, to explain a refusal.
	lastRequest sync.Map // host -> *tls.CertificateRequestInfo
}

// New makes a client for the server at baseURL, for example
// "https://localhost:8443". It makes no connection yet.
func New(baseURL string, opts ...Option) (*Client, error) {
	o := options{dialTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if len(o.errs) > 0 {
		return nil, optionErrors(o.errs)
	}

	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: URL %w", err)
	}

	port := u.Port()
	if port == "" {
		port = "443"
	}
	c := &Client{
		baseURL: strings.TrimSuffix(u.String(), "/"),
		host:    u.Hostname(),
		addr:    net.JoinHostPort(u.Hostname(), port),
		opts:    o,
		pools:   map[Protocol]*http.Client{},
	}
	c.tls = c.tlsConfig()
	return c, nil
}

// CheckURL checks that baseURL is a server's base URL as [New] takes it,
// https://host:port with nothing after the port, without making a client.
// The error starts with the URL, so that a caller can put the name of the
// setting that held it in front.
func CheckURL(baseURL string) error {
	_, err := parseBaseURL(baseURL)
	return err
}

func parseBaseURL(baseURL string) (*url.URL, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("%q does not parse: %w", baseURL, err)
	}
	// Each protocol adds its own path to the base URL, so anything after
	// the port would be sent with every call or silently dropped.
	base := "https://" + u.Host
	switch {
	case u.Scheme == "http":
		return nil, fmt.Errorf("%q is plain http, but mutual TLS needs TLS: use https://%s", baseURL, u.Host)
	case u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("%q is not of the form https://host:port", baseURL)
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("%q has a query (?%s); give the server's base URL, %s, "+
			"with nothing after the port", baseURL, u.RawQuery, base)
	case u.Fragment != "":
		return nil, fmt.Errorf("%q has a fragment (#%s); give the server's base URL, %s",
			baseURL, u.Fragment, base)
	case strings.Trim(u.Path, "/") != "":
		return nil, fmt.Errorf("%q has a path (%s); give the server's base URL, %s: "+
			"each protocol adds its own path", baseURL, u.Path, base)
	case u.User != nil:
		return nil, fmt.Errorf("%q carries a user name: mutual TLS identifies the client by its "+
			"certificate; give %s", baseURL, base)
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q has port %s, outside 1 to 65535", baseURL, port)
		}
	}
	return u, nil
}

func (c *Client) tlsConfig() *tls.Config {
	config := &tls.Config{
		RootCAs:    c.opts.rootCAs,
		ServerName: c.opts.serverName,
		// TLS 1.2 is the floor of every maintained TLS stack; the server
		// decides whether it accepts anything below 1.3.
		MinVersion: tls.VersionTLS12,
	}
	if c.opts.cert != nil {
		// Present the configured certificate whatever CAs the server names
		// in its request, as curl and OpenSSL do. Go's default would send
		// nothing when the issuer is not in that list, and the server's
		// answer would then be a puzzling "certificate required".
		cert := c.opts.cert
		config.GetClientCertificate = func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c.lastRequest.Store(c.host, req)
			return cert, nil
		}
	} else {
		config.GetClientCertificate = func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c.lastRequest.Store(c.host, req)
			return &tls.Certificate{}, nil
		}
	}
	return config
}

// httpClient returns the connection pool of one protocol, making it on first use.
func (c *Client) httpClient(p Protocol) (*http.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc, ok := c.pools[p]; ok {
		return hc, nil
	}
	hc, err := c.newPool(c.tls.Clone(), true)
	if err != nil {
		return nil, err
	}
	c.pools[p] = hc
	return hc, nil
}

// newPool makes a connection pool of its own with the given TLS settings.
// Without keepAlive every call gets a new connection, closed after it.
func (c *Client) newPool(config *tls.Config, keepAlive bool) (*http.Client, error) {
	transport := &http.Transport{
		TLSClientConfig:     config,
		DialContext:         (&net.Dialer{Timeout: c.opts.dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		DisableKeepAlives:   !keepAlive,
	}
	if c.opts.http1 {
		transport.TLSClientConfig.NextProtos = []string{"http/1.1"}
	} else {
		// A custom TLS config turns net/http's automatic HTTP/2 off;
		// configuring x/net/http2 on the transport turns it back on and
		// lets us set health checks for connections that went silent.
		h2, err := http2.ConfigureTransports(transport)
		if err != nil {
			return nil, fmt.Errorf("client: configuring HTTP/2: %w", err)
		}
		h2.ReadIdleTimeout = 30 * time.Second
		h2.PingTimeout = 15 * time.Second
	}
	return &http.Client{Transport: transport}, nil
}

// TLSConfig returns a copy of the TLS settings of every connection the
// client makes: the roots it trusts, the certificate it presents whatever
// CAs the server names, the server name it checks. It is for programs that
// make their own connections with the same certificate handling, such as a
// grpc-go client (credentials.NewTLS) or a loop of bare handshakes. ALPN is
// left to the caller.
func (c *Client) TLSConfig() *tls.Config { return c.tls.Clone() }

// Close closes idle connections of every protocol.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, hc := range c.pools {
		hc.CloseIdleConnections()
	}
}

// Echo makes one Echo call with the given protocol and returns what the
// server saw. Errors are [*Error] when the cause is known, and carry a
// connect.Code either way ([connect.CodeOf]).
func (c *Client) Echo(
	ctx context.Context,
	p Protocol,
	message string,
) (*echov1.EchoResponse, error) {
	return c.Call(ctx, p, &echov1.EchoRequest{Message: message})
}

// Call makes one Echo call with a full request, for the fields beyond the
// message (a server-side delay).
func (c *Client) Call(
	ctx context.Context,
	p Protocol,
	req *echov1.EchoRequest,
) (*echov1.EchoResponse, error) {
	hc, err := c.httpClient(p)
	if err != nil {
		return nil, err
	}
	return c.callWith(withConnectionTrace(ctx), hc, p, req)
}

// callWith makes one Echo call on the given connection pool.
func (c *Client) callWith(
	ctx context.Context,
	hc *http.Client,
	p Protocol,
	req *echov1.EchoRequest,
) (*echov1.EchoResponse, error) {
	var resp *echov1.EchoResponse
	var err error
	switch p {
	case Connect, GRPC, GRPCWeb:
		var answer *connect.Response[echov1.EchoResponse]
		answer, err = c.rpc(hc, p).Echo(ctx, connect.NewRequest(req))
		if err == nil {
			resp = answer.Msg
		}
	case HTTP:
		resp, err = c.postJSON(ctx, hc, req)
	default:
		return nil, fmt.Errorf("client: unknown protocol %q", p)
	}
	if err != nil {
		return nil, c.explain(ctx, err)
	}
	return resp, nil
}

// rpc is the generated client for one of the RPC protocols.
func (c *Client) rpc(hc *http.Client, p Protocol) echov1connect.EchoServiceClient {
	return echov1connect.NewEchoServiceClient(hc, c.baseURL, protocolOptions(p)...)
}

// protocolOptions are the connect-go client options that speak p; Connect
// is connect-go's default and needs none.
func protocolOptions(p Protocol) []connect.ClientOption {
	switch p {
	case GRPC:
		return []connect.ClientOption{connect.WithGRPC()}
	case GRPCWeb:
		return []connect.ClientOption{connect.WithGRPCWeb()}
	}
	return nil
}

// EchoStream asks for count echoes, interval apart, and hands each to each
// as it arrives. The plain route carries unary calls only.
func (c *Client) EchoStream(
	ctx context.Context,
	p Protocol,
	req *echov1.EchoStreamRequest,
	each func(*echov1.EchoStreamResponse) error,
) error {
	if p == HTTP {
		return errors.New("client: the plain HTTP route carries unary Echo only: stream with connect, grpc or grpc-web")
	}
	hc, err := c.httpClient(p)
	if err != nil {
		return err
	}
	ctx = withConnectionTrace(ctx)
	stream, err := c.rpc(hc, p).EchoStream(ctx, connect.NewRequest(req))
	if err != nil {
		return c.explain(ctx, err)
	}
	defer stream.Close()
	for stream.Receive() {
		if err := each(stream.Msg()); err != nil {
			return err
		}
	}
	if err := stream.Err(); err != nil {
		return c.explain(ctx, err)
	}
	return nil
}

// EchoChat sends each message of messages on one bidirectional stream, as
// the sequence yields it, and hands each echo to each as it arrives, so a
// sequence that reads lines as they are typed makes a live conversation.
// The request is closed when the sequence ends. Bidirectional streaming
// needs HTTP/2 and one of the RPC protocols; asked for anything else it
// fails at once, because over HTTP/1.1 the call would wait for a request
// body that never ends.
//
// EchoChat returns as soon as the stream ends or ctx is done, without
// waiting for messages to yield again: a sequence blocked on its source
// (a terminal, a pipe) keeps its goroutine until it yields or ends, and
// what it yields then is dropped.
func (c *Client) EchoChat(
	ctx context.Context,
	p Protocol,
	messages iter.Seq[string],
	each func(*echov1.EchoChatResponse) error,
) error {
	switch {
	case p == HTTP:
		return errors.New("client: the plain HTTP route carries unary Echo only: chat with connect, grpc or grpc-web")
	case c.opts.http1:
		return errors.New("client: a bidirectional stream needs HTTP/2, and this client offers only " +
			"HTTP/1.1: drop --http1.1")
	}
	hc, err := c.httpClient(p)
	if err != nil {
		return err
	}
	ctx = withConnectionTrace(ctx)
	stream := c.rpc(hc, p).EchoChat(ctx)

	// Send and receive at once: the server answers each message as it
	// comes, and a client that sent everything before reading could fill
	// the flow-control windows both ways and stall.
	sent := make(chan error, 1)
	go func() {
		// The headers go first, so that the connection is made, and a
		// refused certificate reported, before the first message exists.
		if err := stream.Send(nil); err != nil {
			sent <- err
			return
		}
		for m := range messages {
			if err := stream.Send(&echov1.EchoChatRequest{Message: m}); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseRequest()
	}()
	var received error
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			received = err
			break
		}
		if err := each(msg); err != nil {
			received = err
			break
		}
	}
	_ = stream.CloseResponse()
	if received != nil {
		return c.explain(ctx, received)
	}
	var sendErr error
	select {
	case sendErr = <-sent:
	case <-ctx.Done():
		return c.explain(ctx, connect.NewError(transportCode(ctx), ctx.Err()))
	}
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return c.explain(ctx, sendErr)
	}
	return nil
}

// postJSON is the plain HTTP call: what curl does, in Go.
func (c *Client) postJSON(
	ctx context.Context,
	hc *http.Client,
	req *echov1.EchoRequest,
) (*echov1.EchoResponse, error) {
	body, err := protojson.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encoding request: %w", err)
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+PlainHTTPPath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	httpReq.Header.Set("Content-Type", "application/json")
	if deadline, ok := ctx.Deadline(); ok {
		// The RPC protocols carry the deadline in their own headers; the
		// plain route takes it in vanguard's REST header, in seconds.
		seconds := max(time.Until(deadline).Seconds(), 0.001)
		httpReq.Header.Set("X-Server-Timeout", strconv.FormatFloat(seconds, 'f', 3, 64))
	}

	httpResp, err := hc.Do(httpReq)
	if err != nil {
		return nil, connect.NewError(transportCode(ctx), err)
	}
	defer httpResp.Body.Close()
	// The answer is small; the cap keeps a misbehaving server from making
	// the client read without end.
	data, err := io.ReadAll(io.LimitReader(httpResp.Body, 64<<20))
	if err != nil {
		return nil, connect.NewError(transportCode(ctx), fmt.Errorf("reading response: %w", err))
	}
	if httpResp.StatusCode != http.StatusOK {
		return nil, statusError(httpResp, data)
	}

	resp := &echov1.EchoResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, resp); err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("response is not an EchoResponse: %w", err))
	}
	return resp, nil
}

// transportCode is the code of a call that failed below HTTP: the reason
// the context ended, if it did, and unavailable otherwise.
func transportCode(ctx context.Context) connect.Code {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(ctx.Err(), context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeUnavailable
}

// statusError reads an error answer of the plain route, which is a
// google.rpc.Status in JSON, and gives it the same connect.Code an RPC
// protocol would have carried.
func statusError(resp *http.Response, body []byte) error {
	var status struct {
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &status) == nil && status.Code > 0 && status.Code <= 16 {
		return connect.NewError(connect.Code(status.Code), errors.New(status.Message))
	}
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	return connect.NewError(codeFromHTTP(resp.StatusCode), fmt.Errorf("HTTP %s: %s", resp.Status, text))
}

func codeFromHTTP(status int) connect.Code {
	switch status {
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound:
		return connect.CodeUnimplemented
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		return connect.CodeResourceExhausted
	case http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	}
	return connect.CodeUnknown
}

// Health asks the server's grpc.health.v1 service about the Echo service.
func (c *Client) Health(ctx context.Context) (grpchealth.Status, error) {
	hc, err := c.httpClient(GRPC)
	if err != nil {
		return grpchealth.StatusUnknown, err
	}
	health := grpchealth.NewClient(hc, c.baseURL, connect.WithGRPC())
	ctx = withConnectionTrace(ctx)
	resp, err := health.Check(ctx, &grpchealth.CheckRequest{Service: echov1connect.EchoServiceName})
	if err != nil {
		return grpchealth.StatusUnknown, c.explain(ctx, err)
	}
	return resp.Status, nil
}
