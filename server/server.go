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
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/grpchealth"
	"golang.org/x/net/http2"
	"golang.org/x/net/netutil"

	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/pki"
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
	// DefaultMaxConnections caps open connections well below common file
	// descriptor limits, so a flood of connections cannot starve the rest
	// of the process of descriptors.
	DefaultMaxConnections = 10000
)

// Option configures a [Server].
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	certificate          *tls.Certificate
	clientCAs            []*x509.Certificate
	files                *credentialFiles
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
	maxConnections       int
	metricsAddr          string
}

// WithCertificate sets the server's certificate chain and key. Required.
func WithCertificate(cert tls.Certificate) Option {
	return optionFunc(func(o *options) { o.certificate = &cert })
}

// WithClientCAs sets the CAs a client certificate must chain to. This, or
// [WithCredentialFiles], is required: there is no way to run this server
// without verifying clients.
func WithClientCAs(cas ...*x509.Certificate) Option {
	return optionFunc(func(o *options) { o.clientCAs = cas })
}

// WithCredentialFiles reads the server's certificate chain, its key and the
// client CA bundle from PEM files, and reads them again whenever they
// change on disk (a rewrite in place, a file renamed over, a symlinked
// directory swapped as Kubernetes does) and on [Server.Reload]. New
// handshakes use new material at once; connections already made keep
// theirs. A new set that does not load — a file that does not parse, a key
// that does not match, a server certificate outside its validity, a bundle
// in which no CA is valid now — is refused with a log line and the set in
// use stays. It replaces [WithCertificate] and [WithClientCAs].
func WithCredentialFiles(certFile, keyFile, caFile string) Option {
	return optionFunc(func(o *options) { o.files = &credentialFiles{cert: certFile, key: keyFile, ca: caFile} })
}

// WithMaxHeaderBytes bounds the request headers of one request, on
// HTTP/1.1 and HTTP/2. Default [DefaultMaxHeaderBytes].
func WithMaxHeaderBytes(n int) Option {
	return optionFunc(func(o *options) { o.maxHeaderBytes = n })
}

// WithMaxConcurrentStreams bounds the calls in flight on one HTTP/2
// connection. Default [DefaultMaxConcurrentStreams].
func WithMaxConcurrentStreams(n uint32) Option {
	return optionFunc(func(o *options) { o.maxConcurrentStreams = n })
}

// WithMaxConnections caps the TCP connections open at once, handshaking or
// established; further clients wait in the kernel's accept queue. Default
// [DefaultMaxConnections].
func WithMaxConnections(n int) Option {
	return optionFunc(func(o *options) { o.maxConnections = n })
}

// WithMetricsAddr also serves /metrics and /healthz in plain HTTP on addr,
// for scrapers and container health checks that hold no client
// certificate. A host left empty (":9464") means 127.0.0.1: exposing the
// address beyond the machine takes an explicit host such as 0.0.0.0.
// Default: off; /metrics is always served on the mTLS port.
func WithMetricsAddr(addr string) Option {
	return optionFunc(func(o *options) { o.metricsAddr = addr })
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
// when path is empty): a client whose chain includes a certificate listed
// there is refused at the handshake, on every protocol. A list counts only
// when a client CA signed it, or an intermediate below one of them that
// the server holds: in the same file (as `echoloop pki revoke` writes it)
// or in the server's own chain. A file with no such list is refused. The
// file is re-read when it changes; a new version that does not parse, or
// that holds no such list, is refused and the old lists stay in force.
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
	if o.files == nil && o.certificate == nil {
		problems = append(problems, errors.New("no server certificate given"))
	}
	if o.files == nil && len(o.clientCAs) == 0 {
		problems = append(problems, errors.New("no client CA given: a client certificate must chain to one"))
	}
	if o.maxHeaderBytes < 1<<10 {
		problems = append(problems, fmt.Errorf("maximum header bytes %d is below 1 KiB", o.maxHeaderBytes))
	}
	if o.maxConcurrentStreams == 0 {
		problems = append(problems, errors.New("maximum concurrent streams must be positive"))
	}
	if o.maxConnections <= 0 {
		problems = append(problems, fmt.Errorf("maximum connections must be positive, got %d", o.maxConnections))
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
	opts        options
	crls        *revocations // nil without WithCRLFile
	log         *slog.Logger
	health      *grpchealth.StaticChecker
	metrics     *metrics
	base        *tls.Config // settings every material shares
	tls         *tls.Config // what the listener is given: base, choosing the current material
	material    atomic.Pointer[material]
	reloadMu    sync.Mutex   // one reload at a time
	inFlight    atomic.Int64 // calls being answered; the calls-in-flight gauge reads it
	metricsAddr atomic.Value // string: where the plain metrics listener is bound
	handler     http.Handler
	serving     chan struct{} // closed once Serve is ready; see Serving
	servingOnce sync.Once
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
		maxConnections:       DefaultMaxConnections,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}

	s := &Server{
		opts:    o,
		log:     o.log,
		health:  grpchealth.NewStaticChecker(echov1connect.EchoServiceName),
		serving: make(chan struct{}),
	}
	s.metrics = newMetrics(s)
	s.base = s.baseTLSConfig()
	if err := s.loadMaterial(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if o.crlFile != "" {
		crls, err := loadRevocations(o.crlFile, s.material.Load)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		s.crls = crls
	}
	s.tls = s.base.Clone()
	s.tls.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return s.material.Load().config, nil
	}
	// The listener's own config is never used for a handshake, but
	// net/http and x/net/http2 inspect it; give them the real thing.
	first := s.material.Load().config
	s.tls.Certificates, s.tls.ClientCAs = first.Certificates, first.ClientCAs

	handler, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = handler
	return s, nil
}

// loadMaterial builds the first material, from files or from memory, and
// logs what in it will stop some clients.
func (s *Server) loadMaterial() error {
	var m *material
	var notices []notice
	if f := s.opts.files; f != nil {
		cert, cas, digest, err := f.read()
		if err != nil {
			return err
		}
		m, notices, err = newMaterial(s.base, cert, cas, f.ca, f.cert, time.Now())
		if err != nil {
			return err
		}
		m.digest = digest
	} else {
		var err error
		m, notices, err = newMaterial(s.base, *s.opts.certificate, s.opts.clientCAs, "given to the server", "", time.Now())
		if err != nil {
			return err
		}
	}
	s.material.Store(m)
	s.logNotices(notices)
	return nil
}

func (s *Server) logNotices(notices []notice) {
	for _, n := range notices {
		s.log.Warn(n.msg, n.args...)
	}
}

// Reload reads the credential files and the revocation list again, as a
// change on disk would make it do; `echoloop serve` calls it on SIGHUP. It
// logs one line with the outcome for the certificates: reloaded, unchanged,
// or not reloaded (a set that does not load is refused, what is in use
// stays, and the error says why). Without files it does nothing.
func (s *Server) Reload() error {
	err := s.reloadCredentials(true)
	if s.crls != nil {
		s.refreshCRL(true)
	}
	return err
}

// reloadCredentials reads the credential files and swaps in what they
// hold when it changed. asked is a reload someone requested, which is
// answered with a line even when nothing changed; a watch event for a
// neighbour in the directory is not.
func (s *Server) reloadCredentials(asked bool) error {
	if s.opts.files == nil {
		return nil
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()

	cert, cas, digest, err := s.opts.files.read()
	if current := s.material.Load(); err == nil && digest == current.digest {
		if asked {
			s.log.Info("certificates unchanged", "server.serial", pki.SerialHex(current.leaf),
				"server.not_after", current.leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	}
	var m *material
	var notices []notice
	if err == nil {
		m, notices, err = newMaterial(s.base, cert, cas, s.opts.files.ca, s.opts.files.cert, time.Now())
	}
	if err != nil {
		s.metrics.reloads.WithLabelValues("certificates", "failed").Inc()
		s.log.Error("certificates not reloaded; the ones in use stay", KeyError, err.Error())
		return fmt.Errorf("server: reloading certificates: %w", err)
	}
	m.digest = digest
	s.material.Store(m)
	s.metrics.reloads.WithLabelValues("certificates", "ok").Inc()
	s.log.Info("certificates reloaded",
		"server.serial", pki.SerialHex(m.leaf),
		"server.not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339),
		"client_cas", len(m.cas))
	s.logNotices(notices)
	if s.crls != nil {
		s.crls.warnInapplicable(s.log, m)
	}
	return nil
}

func (s *Server) reloadCRL() { s.refreshCRL(false) }

// refreshCRL reloads the revocation list; always logs what is in force even
// when the file has not changed.
func (s *Server) refreshCRL(always bool) {
	loaded, err := s.crls.reload(s.log, always)
	switch {
	case err != nil:
		s.metrics.reloads.WithLabelValues("crl", "failed").Inc()
	case loaded:
		s.metrics.reloads.WithLabelValues("crl", "ok").Inc()
	}
}

// tls12CipherSuites are the suites offered when TLS 1.2 is allowed, for
// ECDSA and RSA server keys alike.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// baseTLSConfig holds every TLS setting of the port that does not depend
// on the certificates in use; each material is built from a clone of it.
func (s *Server) baseTLSConfig() *tls.Config {
	return &tls.Config{
		// TLS 1.3 by default: it encrypts the client certificate, which
		// TLS 1.2 sends in the clear for any on-path observer to read.
		MinVersion: s.opts.minVersion,
		// Under TLS 1.2, only forward-secret AEAD suites. Go's default list
		// also holds ECDHE with AES-CBC and SHA-1, which TLS scanners flag
		// (CBC padding oracles such as Lucky13) and no current client
		// needs. TLS 1.3's suites are fixed by Go and all AEAD.
		CipherSuites: tls12CipherSuites,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// h2 first: gRPC needs HTTP/2; HTTP/1.1 stays for curl --http1.1,
		// gRPC-Web from browsers, and plain JSON clients.
		NextProtos:       []string{http2.NextProtoTLS, "http/1.1"},
		VerifyConnection: s.verifyConnection,
	}
}

// verifyConnection runs after the standard chain verification, on full
// handshakes and resumptions alike, with the checks Go does not make.
func (s *Server) verifyConnection(state tls.ConnectionState) error {
	if len(state.VerifiedChains) == 0 {
		return errors.New("tls: no verified client certificate chain")
	}
	chain := state.VerifiedChains[0]
	if err := refuseCAAsLeaf(chain[0]); err != nil {
		return err
	}
	if !s.material.Load().stillTrusted(chain) {
		return &refusalError{reason: ReasonUnknownAuthority, cert: chain[0],
			err: errors.New("client chain ends at a CA that is no longer trusted")}
	}
	if s.crls != nil {
		return s.crls.check(chain)
	}
	return nil
}

// watch re-reads credential files and the revocation list when they change.
func (s *Server) watch(ctx context.Context) error {
	if s.crls != nil {
		if err := watchFiles(ctx, s.log, []string{s.crls.path}, s.reloadCRL); err != nil {
			return fmt.Errorf("server: watching %s: %w", s.crls.path, err)
		}
		// Read after the watch is set, so that a list written in between
		// is either read here or raises an event.
		s.refreshCRL(true) // logs what is in force
	}
	if f := s.opts.files; f != nil {
		reload := func() { _ = s.reloadCredentials(false) } // logged inside
		if err := watchFiles(ctx, s.log, []string{f.cert, f.key, f.ca}, reload); err != nil {
			return fmt.Errorf("server: watching the certificate files: %w", err)
		}
		// Files replaced between New and now raised no event anyone saw.
		reload()
	}
	return nil
}

// Serving returns a channel that is closed once Serve has read the
// revocation list, set its file watches and turned health to SERVING: a
// file changed after that is seen. Connections made before then wait in
// the listener's backlog.
func (s *Server) Serving() <-chan struct{} { return s.serving }

// Handler returns the handler behind the port. It expects requests that
// arrived on a connection made by [Server.Serve]; elsewhere Echo answers
// unauthenticated, because there is no verified certificate to report.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve accepts connections on ln until ctx is cancelled, then drains: it
// marks health NOT_SERVING, stops accepting, lets calls in flight finish for
// up to the drain timeout, and returns nil. When calls are still running at
// the end of the drain timeout it cuts them and returns a [*DrainError].
// Any other return is an error.
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
	httpServer.TLSNextProto[http2.NextProtoTLS] = serveHTTP2(h2)

	if err := s.watch(ctx); err != nil {
		return err
	}
	if s.opts.metricsAddr != "" {
		stopMetrics, err := s.serveMetrics(ctx)
		if err != nil {
			return err
		}
		// Open until the drain is over, so that health checks see 503
		// and scrapers the last figures while calls finish.
		defer stopMetrics()
	}
	limited := netutil.LimitListener(ln, s.opts.maxConnections)
	tlsListener := newHandshakeListener(limited, httpServer.TLSConfig, s.opts.handshakeTimeout, s.log, s.metrics)
	s.health.SetStatus(echov1connect.EchoServiceName, grpchealth.StatusServing)
	s.health.SetStatus("", grpchealth.StatusServing)
	s.log.Info("policy", s.opts.policy.logAttrs()...)
	s.log.Info("serving", KeyAddr, ln.Addr().String(),
		KeyTLSVersion+".min", tls.VersionName(s.opts.minVersion))
	s.servingOnce.Do(func() { close(s.serving) })

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
		// Counted before Close, which ends the calls and their count.
		cut := s.inFlight.Load()
		httpServer.Close()
		s.log.Warn("drain timed out; calls still in flight were cut", "timeout", s.opts.drainTimeout,
			"calls_cut", cut)
		return &DrainError{Timeout: s.opts.drainTimeout, Cut: cut}
	}
	s.log.Info("stopped")
	return nil
}

// DrainError is what [Server.Serve] returns when calls were still in
// flight at the end of the drain timeout and had to be cut.
type DrainError struct {
	// Timeout is the drain timeout that ran out.
	Timeout time.Duration
	// Cut is how many calls were in flight when it did.
	Cut int64
}

func (e *DrainError) Error() string {
	calls := "calls were"
	if e.Cut == 1 {
		calls = "call was"
	}
	return fmt.Sprintf("server: the drain timed out after %s: %d %s still in flight and cut",
		e.Timeout, e.Cut, calls)
}
