// Package server is echoloop's mTLS listener: one TCP port, TLS with a
// required and verified client certificate, HTTP/2 and HTTP/1.1, and one
// Echo handler served as Connect, gRPC, gRPC-Web and a plain JSON POST, with
// gRPC health and server reflection beside it.
//
// The server logs through log/slog: one line per refused handshake and one
// per call. It never logs key material or message bodies.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/grpchealth"
	"golang.org/x/net/http2"

	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
)

// Defaults for the server's limits. Each has an option to change it.
const (
	// DefaultAddr is the address serve listens on.
	DefaultAddr = ":8443"
	// DefaultMaxMessageBytes bounds one message in either direction. It is
	// gRPC's customary default; connect-go's own default is unlimited.
	DefaultMaxMessageBytes = 4 << 20
	// DefaultReadHeaderTimeout bounds how long a client may take to send
	// request headers once its connection is up.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes connections that carry no request for this long.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultHandshakeTimeout bounds the TLS handshake, so a client that
	// connects and stalls holds a goroutine and a descriptor only briefly.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxHeaderBytes bounds request headers on HTTP/1.1 and HTTP/2.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConcurrentStreams bounds the calls in flight on one HTTP/2
	// connection; it is also the value grpc-go and x/net/http2 advertise.
	DefaultMaxConcurrentStreams = 250
	// DefaultDrainTimeout is how long shutdown waits for calls in flight.
	DefaultDrainTimeout = 15 * time.Second
)

// Option configures a [Server].
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	certificate          *tls.Certificate
	clientCAs            *x509.CertPool
	minVersion           uint16
	log                  *slog.Logger
	maxMessageBytes      int
	readHeaderTimeout    time.Duration
	idleTimeout          time.Duration
	handshakeTimeout     time.Duration
	maxHeaderBytes       int
	maxConcurrentStreams uint32
	drainTimeout         time.Duration
	policy               Policy
	crlFile              string
}

// WithCertificate sets the server's certificate chain and key. Required.
func WithCertificate(cert tls.Certificate) Option {
	return optionFunc(func(o *options) { o.certificate = &cert })
}

// WithClientCAs sets the CAs a client certificate must chain to. Required:
// there is no way to run this server without verifying clients.
func WithClientCAs(pool *x509.CertPool) Option {
	return optionFunc(func(o *options) { o.clientCAs = pool })
}

// WithMinVersion sets the lowest TLS version accepted. Default TLS 1.3;
// tls.VersionTLS12 is allowed for older clients. Lower is refused.
func WithMinVersion(version uint16) Option {
	return optionFunc(func(o *options) { o.minVersion = version })
}

// WithLogger sets the logger. Default slog.Default().
func WithLogger(log *slog.Logger) Option {
	return optionFunc(func(o *options) { o.log = log })
}

// WithMaxMessageBytes bounds one message, in either direction, on every
// protocol. Default [DefaultMaxMessageBytes].
func WithMaxMessageBytes(n int) Option {
	return optionFunc(func(o *options) { o.maxMessageBytes = n })
}

// WithReadHeaderTimeout sets the request header timeout. Default [DefaultReadHeaderTimeout].
func WithReadHeaderTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.readHeaderTimeout = d })
}

// WithIdleTimeout sets the idle connection timeout. Default [DefaultIdleTimeout].
func WithIdleTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.idleTimeout = d })
}

// WithHandshakeTimeout sets the TLS handshake timeout. Default [DefaultHandshakeTimeout].
func WithHandshakeTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.handshakeTimeout = d })
}

// WithDrainTimeout sets how long shutdown waits for calls in flight before
// closing their connections. Default [DefaultDrainTimeout].
func WithDrainTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.drainTimeout = d })
}

// WithCRLFile enforces the certificate revocation lists in a PEM file (none
// when path is empty): a
// client whose chain includes a certificate listed there is refused at the
// handshake, on every protocol. The file is re-read when it changes; a new
// version that does not parse is refused and the old lists stay in force.
func WithCRLFile(path string) Option {
	return optionFunc(func(o *options) { o.crlFile = path })
}

// WithPolicy narrows which verified clients may call; see [Policy]. Default:
// every client whose certificate chains to the client CA.
func WithPolicy(p Policy) Option {
	return optionFunc(func(o *options) { o.policy = p })
}

func (o *options) validate() error {
	var problems []error
	if err := o.policy.Validate(); err != nil {
		problems = append(problems, err)
	}
	if o.certificate == nil {
		problems = append(problems, errors.New("no server certificate given"))
	} else if err := checkServerCertificate(o.certificate); err != nil {
		problems = append(problems, err)
	}
	if o.clientCAs == nil {
		problems = append(problems, errors.New("no client CA given: a client certificate must chain to one"))
	}
	if o.minVersion != tls.VersionTLS12 && o.minVersion != tls.VersionTLS13 {
		problems = append(problems, fmt.Errorf("minimum TLS version %s not supported: use TLS 1.2 or 1.3",
			tls.VersionName(o.minVersion)))
	}
	if o.maxMessageBytes <= 0 || o.maxMessageBytes > 1<<30 {
		problems = append(problems, fmt.Errorf("maximum message size %d out of range (1 byte to 1 GiB)",
			o.maxMessageBytes))
	}
	for name, d := range map[string]time.Duration{
		"read header timeout": o.readHeaderTimeout,
		"idle timeout":        o.idleTimeout,
		"handshake timeout":   o.handshakeTimeout,
		"drain timeout":       o.drainTimeout,
	} {
		if d <= 0 {
			problems = append(problems, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// checkServerCertificate refuses a certificate no client would accept from
// a server: a CA's own, or one whose extended key usages leave out
// serverAuth, as a client certificate given by mistake does.
func checkServerCertificate(cert *tls.Certificate) error {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return errors.New("the server certificate is empty")
		}
		parsed, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("the server certificate does not parse: %w", err)
		}
		leaf = parsed
	}
	if leaf.IsCA {
		return fmt.Errorf("the server certificate %q is a CA certificate: give the server a leaf "+
			"certificate that the CA issued", leaf.Subject.String())
	}
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return nil // no list means any purpose (RFC 5280 section 4.2.1.12)
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	return fmt.Errorf("the certificate %q is not for server authentication (it lacks the serverAuth "+
		"extended key usage; is it a client certificate?): give the server its own certificate, "+
		"server.crt from echoloop pki init", leaf.Subject.String())
}

// Server is an echoloop server. Make one with [New], run it with [Server.Serve].
type Server struct {
	opts    options
	crls    *revocations // nil without WithCRLFile
	log     *slog.Logger
	health  *grpchealth.StaticChecker
	tls     *tls.Config
	handler http.Handler
}

// New builds a server from its options; it does not listen yet.
func New(opts ...Option) (*Server, error) {
	o := options{
		minVersion:           tls.VersionTLS13,
		log:                  slog.Default(),
		maxMessageBytes:      DefaultMaxMessageBytes,
		readHeaderTimeout:    DefaultReadHeaderTimeout,
		idleTimeout:          DefaultIdleTimeout,
		handshakeTimeout:     DefaultHandshakeTimeout,
		maxHeaderBytes:       DefaultMaxHeaderBytes,
		maxConcurrentStreams: DefaultMaxConcurrentStreams,
		drainTimeout:         DefaultDrainTimeout,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}

	s := &Server{
		opts:   o,
		log:    o.log,
		health: grpchealth.NewStaticChecker(echov1connect.EchoServiceName),
	}
	if o.crlFile != "" {
		crls, err := loadRevocations(o.crlFile)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		s.crls = crls
	}
	s.tls = s.tlsConfig()
	handler, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = handler
	return s, nil
}

// tlsConfig is the one TLS configuration of the port.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		// TLS 1.3 by default: it encrypts the client certificate, which
		// TLS 1.2 sends in the clear for any on-path observer to read.
		MinVersion:   s.opts.minVersion,
		Certificates: []tls.Certificate{*s.opts.certificate},
		ClientCAs:    s.opts.clientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// h2 first: gRPC needs HTTP/2; HTTP/1.1 stays for curl --http1.1,
		// gRPC-Web from browsers, and plain JSON clients.
		NextProtos: []string{http2.NextProtoTLS, "http/1.1"},
		VerifyConnection: func(state tls.ConnectionState) error {
			if len(state.VerifiedChains) == 0 {
				return errors.New("tls: no verified client certificate chain")
			}
			chain := state.VerifiedChains[0]
			if err := refuseCAAsLeaf(chain[0]); err != nil {
				return err
			}
			if s.crls != nil {
				return s.crls.check(chain)
			}
			return nil
		},
	}
}

// Handler returns the handler behind the port. It expects requests that
// arrived on a connection made by [Server.Serve]; elsewhere Echo answers
// unauthenticated, because there is no verified certificate to report.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts connections on ln until ctx is cancelled, then drains: it
// marks health NOT_SERVING, stops accepting, lets calls in flight finish for
// up to the drain timeout, and returns nil. Any other return is an error.
// ln must be a plain TCP listener; Serve adds TLS.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	httpServer := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tls,
		ReadHeaderTimeout: s.opts.readHeaderTimeout,
		IdleTimeout:       s.opts.idleTimeout,
		MaxHeaderBytes:    s.opts.maxHeaderBytes,
		ConnContext:       s.connContext,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// No WriteTimeout: it would cut long streams. Calls are bounded
		// by their own deadlines and by the idle timeout.
	}
	h2 := &http2.Server{
		MaxConcurrentStreams:         s.opts.maxConcurrentStreams,
		IdleTimeout:                  s.opts.idleTimeout,
		MaxUploadBufferPerConnection: 1 << 20,
		MaxUploadBufferPerStream:     1 << 20,
	}
	if err := http2.ConfigureServer(httpServer, h2); err != nil {
		return fmt.Errorf("server: configuring HTTP/2: %w", err)
	}

	if s.crls != nil {
		s.crls.reload(s.log) // logs what is in force
		err := watchFiles(ctx, s.log, []string{s.crls.path}, func() { s.crls.reload(s.log) })
		if err != nil {
			return fmt.Errorf("server: watching %s: %w", s.crls.path, err)
		}
	}
	tlsListener := newHandshakeListener(ln, httpServer.TLSConfig, s.opts.handshakeTimeout, s.log)
	s.health.SetStatus(echov1connect.EchoServiceName, grpchealth.StatusServing)
	s.health.SetStatus("", grpchealth.StatusServing)
	s.log.Info("serving", KeyAddr, ln.Addr().String(),
		KeyTLSVersion+".min", tls.VersionName(s.opts.minVersion))

	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(tlsListener) }()

	select {
	case err := <-served:
		return fmt.Errorf("server: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	s.log.Info("draining", "timeout", s.opts.drainTimeout)
	s.health.SetStatus(echov1connect.EchoServiceName, grpchealth.StatusNotServing)
	s.health.SetStatus("", grpchealth.StatusNotServing)
	drainCtx, cancel := context.WithTimeout(context.Background(), s.opts.drainTimeout)
	defer cancel()
	if err := httpServer.Shutdown(drainCtx); err != nil {
		httpServer.Close()
		return fmt.Errorf("server: calls still in flight after %s were cut: %w", s.opts.drainTimeout, err)
	}
	s.log.Info("stopped")
	return nil
}
