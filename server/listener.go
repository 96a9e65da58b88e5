package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/echoloop/echoloop/pki"
)

// handshakeListener completes the TLS handshake of each accepted connection
// in its own goroutine and hands only finished, verified connections to the
// HTTP server.
//
// net/http can terminate TLS by itself, but it reports a failed handshake
// as one unstructured line without the certificate that was refused. Doing
// the handshake here gives one structured log line per refusal with the
// presented certificate's subject and fingerprint, and a handshake timeout
// that a client which never finishes its handshake cannot stretch.
type handshakeListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics

	ready chan net.Conn
	done  chan struct{}

	closeOnce sync.Once
	mu        sync.Mutex
	err       error // why accepting stopped
}

func newHandshakeListener(
	inner net.Listener,
	config *tls.Config,
	timeout time.Duration,
	log *slog.Logger,
	metrics *metrics,
) *handshakeListener {
	l := &handshakeListener{
		inner:   inner,
		config:  config,
		timeout: timeout,
		log:     log,
		metrics: metrics,
		ready:   make(chan net.Conn),
		done:    make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose handshake succeeded.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

// Close stops accepting. Handshakes under way finish and are then closed.
func (l *handshakeListener) Close() error {
	err := l.inner.Close()
	l.stop(net.ErrClosed)
	return err
}

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }

func (l *handshakeListener) stop(err error) {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		close(l.done)
	})
}

func (l *handshakeListener) acceptLoop() {
	var backoff time.Duration
	for {
		conn, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.stop(net.ErrClosed)
				return
			}
			// Running out of file descriptors is passing: wait and go on,
			// as net/http does, rather than taking the whole server down.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed, retrying", KeyError, err.Error(), "retry_in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.stop(err)
			return
		}
		backoff = 0
		l.metrics.connections.Inc()
		go l.handshake(&countedConn{Conn: conn, open: l.metrics.connections})
	}
}

func isTemporary(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

func (l *handshakeListener) handshake(raw net.Conn) {
	// A deadline on the socket bounds the handshake. A context would do
	// the same at the price of a timer and of a goroutine that crypto/tls
	// starts to watch it, for every connection.
	conn := tls.Server(raw, l.config)
	start := time.Now()
	_ = raw.SetDeadline(start.Add(l.timeout))
	err := conn.Handshake() //nolint:noctx // the socket deadline above bounds it
	if err == nil {
		err = raw.SetDeadline(time.Time{})
	}
	if err != nil {
		l.refuse(raw, err)
		return
	}
	l.metrics.handshakeTime.Observe(time.Since(start).Seconds())

	select {
	case l.ready <- conn:
	case <-l.done:
		conn.Close()
	}
}

// refuse logs a failed handshake and closes the connection.
func (l *handshakeListener) refuse(raw net.Conn, err error) {
	defer lingeringClose(raw)

	// A plain-HTTP request on the TLS port gets an answer it can read,
	// rather than a connection closed on it without a word.
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader[:]) {
		_ = raw.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(raw, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"+
			"Connection: close\r\n\r\nThis port speaks HTTPS with client certificates: "+
			"use an https:// URL and present a certificate.\n")
	}

	reason := HandshakeReason(err)
	l.metrics.refused.WithLabelValues(reason).Inc()
	attrs := []any{KeyRemote, raw.RemoteAddr().String(), KeyReason, reason, KeyError, err.Error()}
	var verr *tls.CertificateVerificationError
	var refusal *refusalError
	switch {
	case errors.As(err, &verr) && len(verr.UnverifiedCertificates) > 0:
		attrs = append(attrs, presentedAttrs(verr.UnverifiedCertificates[0])...)
	case errors.As(err, &refusal) && refusal.cert != nil:
		attrs = append(attrs, presentedAttrs(refusal.cert)...)
	}

	// A client that connects and leaves is routine (port scanners, load
	// balancer probes); a refused certificate is what operators look for.
	level := slog.LevelWarn
	if reason == ReasonClientClosed {
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, "tls handshake refused", attrs...)
}

// countedConn keeps the open-connections gauge right however a connection
// ends: refused, closed by the HTTP server, or closed by the client.
type countedConn struct {
	net.Conn
	open   prometheus.Gauge
	closed sync.Once
}

func (c *countedConn) Close() error {
	c.closed.Do(c.open.Dec)
	return c.Conn.Close()
}

// CloseWrite half-closes when the connection beneath can, which
// lingeringClose relies on.
func (c *countedConn) CloseWrite() error {
	if half, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return half.CloseWrite()
	}
	return nil
}

// rstAvoidance bounds how long a refused connection is drained before it
// is closed.
const rstAvoidance = 500 * time.Millisecond

// lingeringClose closes a refused connection without losing the alert that
// says why. Under TLS 1.3 the client has usually sent its Finished message
// and its first request by the time the server refuses its certificate;
// closing with those bytes unread makes the kernel answer with a reset,
// which can reach the client before the alert and leave it with nothing but
// "connection reset". Half-closing, then reading what is in flight for a
// short while, lets the alert arrive first.
func lingeringClose(raw net.Conn) {
	if half, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = half.CloseWrite()
		_ = raw.SetReadDeadline(time.Now().Add(rstAvoidance))
		_, _ = io.Copy(io.Discard, io.LimitReader(raw, 256<<10))
	}
	_ = raw.Close()
}

func presentedAttrs(cert *x509.Certificate) []any {
	return []any{
		KeyPeerSubject, cert.Subject.String(),
		KeyPeerIssuer, cert.Issuer.String(),
		KeyPeerSerial, pki.SerialHex(cert),
		KeyPeerNotAfter, cert.NotAfter.UTC().Format(time.RFC3339),
		KeyPeerSHA256, pki.Fingerprint(cert),
	}
}

func looksLikeHTTP(header []byte) bool {
	switch string(header) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "PRI *":
		return true
	}
	return false
}

// The reasons a handshake is refused, as logged under [KeyReason].
const (
	ReasonNoCertificate    = "no_certificate"
	ReasonUnknownAuthority = "unknown_authority"
	ReasonExpired          = "expired"
	ReasonNotYetValid      = "not_yet_valid"
	ReasonWrongKeyUsage    = "wrong_key_usage"
	ReasonBadCertificate   = "bad_certificate"
	ReasonCAAsLeaf         = "ca_as_leaf"
	ReasonRevoked          = "revoked"
	ReasonNotTLS           = "not_tls"
	ReasonTimeout          = "timeout"
	ReasonClientClosed     = "client_closed"
	ReasonClientAlert      = "client_alert"
	ReasonVersion          = "tls_version"
	ReasonHandshake        = "handshake_failed"
)

// HandshakeReason sorts a server-side handshake error into one of the
// Reason constants, so that logs and metrics count refusals by cause.
func HandshakeReason(err error) string {
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return verificationReason(verr)
	}
	var refusal *refusalError
	if errors.As(err, &refusal) {
		return refusal.reason
	}

	var rh tls.RecordHeaderError
	var ne net.Error
	msg := err.Error()
	switch {
	case errors.As(err, &rh):
		return ReasonNotTLS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ReasonClientClosed
	case strings.Contains(msg, "didn't provide a certificate"):
		return ReasonNoCertificate
	case strings.Contains(msg, "remote error"):
		return ReasonClientAlert
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return ReasonVersion
	}
	return ReasonHandshake
}

func verificationReason(verr *tls.CertificateVerificationError) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(verr.Err, &unknown):
		return ReasonUnknownAuthority
	case errors.As(verr.Err, &invalid):
		switch invalid.Reason {
		case x509.Expired:
			// x509 uses one reason for both ends of the window.
			if len(verr.UnverifiedCertificates) > 0 &&
				time.Now().Before(verr.UnverifiedCertificates[0].NotBefore) {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonWrongKeyUsage
		}
	}
	return ReasonBadCertificate
}
