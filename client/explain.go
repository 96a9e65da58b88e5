package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
)

// Error is a failed call whose cause is known: what went wrong, in one
// sentence, and what to do about it.
type Error struct {
	// Cause says what went wrong, for example "the server does not trust
	// the CA that issued this client certificate".
	Cause string
	// Fix says what to do about it.
	Fix string
	// Alert is the TLS alert with which the server ended the handshake,
	// for example "unknown certificate authority", or "" when the failure
	// came from anywhere else.
	Alert string
	// Err is the error as the TLS stack or transport reported it.
	Err error
}

// Error returns the cause and the fix in one line.
func (e *Error) Error() string { return e.Cause + "; " + e.Fix }

// Unwrap returns the error as the TLS stack or transport reported it.
func (e *Error) Unwrap() error { return e.Err }

// explain turns a transport or TLS failure into an [*Error]. Errors it does
// not recognise, and every error the server itself returned, pass through
// unchanged. The connect.Code of the original is kept, except that a
// connection the server cut is unavailable, not canceled, whatever
// connect-go made of the reset.
func (c *Client) explain(ctx context.Context, err error) error {
	cause, fix, diagnosed := c.diagnoseWithProbe(ctx, err)
	if connect.CodeOf(err) == connect.CodeDeadlineExceeded && connectionUp(ctx) {
		// The handshake worked: the server was reached and took too long
		// to answer, which no firewall or wrong port explains.
		cause = fmt.Sprintf("the call ran out of time: %s was reached, but the call had not ended "+
			"when the deadline passed", c.addr)
		fix = "raise --timeout (it must cover the server's work, and any --delay asked for)"
		diagnosed = err
	}
	if cause == "" {
		return err
	}
	code := connect.CodeOf(err)
	if code == connect.CodeCanceled && ctx.Err() == nil {
		code = connect.CodeUnavailable
	}
	return connect.NewError(code, &Error{Cause: cause, Fix: fix, Alert: remoteAlert(diagnosed), Err: err})
}

// diagnoseWithProbe is [Client.diagnose], with a connection of its own made
// when err says too little: the HTTP/2 transport can lose the TLS alert that
// closed a new connection and report only that the connection failed, and
// a port that does not speak TLS shows what it speaks only to a reader of
// its first bytes. It returns the error the cause was read from.
func (c *Client) diagnoseWithProbe(ctx context.Context, err error) (cause, fix string, diagnosed error) {
	cause, fix = c.diagnose(err)
	saysTooLittle := cause == "" && (lostConnectionError(err) || cutError(err))
	if !saysTooLittle && !notTLSRecord(err) {
		return cause, fix, err
	}
	result := c.probe(ctx)
	switch {
	case result.err == nil:
		return cause, fix, err
	case result.afterHandshake && errors.Is(result.err, io.EOF) && result.alpn != "h2" && c.opts.http1:
		// Go and grpc-go servers let a client that offers only
		// http/1.1 finish the handshake, then hang up on it.
		return "the server closed the connection when this client offered only HTTP/1.1: " +
				"it speaks only HTTP/2, as gRPC servers do",
			"drop --http1.1 (gRPC needs HTTP/2; gRPC-Web is the protocol made for HTTP/1.1)", err
	}
	if probed, probedFix := c.diagnoseProbe(result); probed != "" {
		return probed, probedFix, result.err
	}
	return cause, fix, err
}

// diagnoseProbe explains how a probe connection ended: what a port that
// is not TLS sent, a connection cut during the handshake, or else what
// [Client.diagnose] makes of the error.
func (c *Client) diagnoseProbe(result probeResult) (cause, fix string) {
	if len(result.firstBytes) > 0 {
		return c.diagnoseNotTLS(result.firstBytes)
	}
	if !result.afterHandshake && cutError(result.err) {
		return fmt.Sprintf("the server at %s closed the connection during the TLS handshake without a TLS "+
				"alert: it is not a TLS server, or a proxy or firewall in between cut the connection", c.addr),
			"check that --url names the server's TLS port; if it does, look at what stands in between " +
				"(a proxy, a load balancer that does not pass TLS through, a firewall) and at the server's log"
	}
	return c.diagnose(result.err)
}

// diagnoseNotTLS explains a port whose first bytes were not a TLS record.
func (c *Client) diagnoseNotTLS(first []byte) (cause, fix string) {
	if bytes.HasPrefix(first, []byte("HTTP/")) {
		return fmt.Sprintf("the server at %s answers plain HTTP, not TLS", c.baseURL),
			"point --url at the server's TLS port, or enable TLS on the server"
	}
	shown := printablePrefix(first)
	kind := "a protocol that is neither TLS nor HTTP"
	if strings.HasPrefix(shown, "SSH-") {
		kind = "SSH, neither TLS nor HTTP"
	}
	return fmt.Sprintf("the server at %s speaks %s: its first bytes are %q", c.addr, kind, shown),
		"point --url at the server's TLS port; this port serves something else"
}

// printablePrefix is the start of data up to its first line break or
// unprintable byte, at most 64 bytes: what a banner says of itself.
func printablePrefix(data []byte) string {
	end := 0
	for end < len(data) && end < 64 && data[end] >= 0x20 && data[end] < 0x7f {
		end++
	}
	if end == 0 {
		return string(data[:min(len(data), 16)]) // %q shows what it is
	}
	return string(data[:end])
}

// notTLSRecord reports whether err says that the server's first bytes
// were not a TLS record.
func notTLSRecord(err error) bool {
	var header tls.RecordHeaderError
	return errors.As(err, &header) || strings.Contains(err.Error(), "first record does not look like a TLS handshake")
}

// cutError reports whether err is the connection ending, with no more said.
func cutError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (c *Client) diagnose(err error) (cause, fix string) {
	msg := err.Error()
	if alert := remoteAlert(err); alert != "" {
		return c.diagnoseAlert(alert)
	}

	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return c.diagnoseServerCertificate(verr)
	}
	var hostErr x509.HostnameError
	if errors.As(err, &hostErr) {
		return c.diagnoseHostname(hostErr)
	}

	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing is listening at %s", c.addr),
			"start the server (echoloop serve) or point --url at where it listens"
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from %s before the deadline", c.addr),
			"raise --timeout if the server is slow; if it never answers, check that the port is an " +
				"HTTPS server (a firewall that drops packets looks the same)"
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return c.diagnoseNotTLS([]byte("HTTP/"))
	case notTLSRecord(err):
		var header tls.RecordHeaderError
		if errors.As(err, &header) {
			return c.diagnoseNotTLS(header.RecordHeader[:])
		}
		return fmt.Sprintf("the server at %s does not speak TLS", c.addr),
			"point --url at the server's TLS port"
	case strings.Contains(msg, "no such host"):
		return fmt.Sprintf("the host of %s does not resolve", c.baseURL),
			"check the host name in --url"
	case strings.Contains(msg, "tls: handshake failure") || strings.Contains(msg, "protocol version"):
		return "the TLS handshake failed: the server and this client share no TLS version or cipher suite",
			"check the server's minimum TLS version (echoloop serve --tls-min) against this client's"
	}
	return "", ""
}

// connectionTrace records whether a call got a connection whose TLS
// handshake succeeded, so that a deadline can be told apart: one that
// passes before says nothing about the server, one that passes after says
// it was too slow.
type connectionTrace struct{ up atomic.Bool }

type connectionTraceKey struct{}

// withConnectionTrace watches the connections of the calls made with ctx.
func withConnectionTrace(ctx context.Context) context.Context {
	trace := &connectionTrace{}
	ctx = context.WithValue(ctx, connectionTraceKey{}, trace)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		// Called for new and reused connections alike, on HTTP/1.1 after
		// the handshake and on HTTP/2 by x/net/http2.
		GotConn: func(httptrace.GotConnInfo) { trace.up.Store(true) },
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err == nil {
				trace.up.Store(true)
			}
		},
	})
}

// connectionUp reports whether a call made with ctx got a connection.
func connectionUp(ctx context.Context) bool {
	trace, _ := ctx.Value(connectionTraceKey{}).(*connectionTrace)
	return trace != nil && trace.up.Load()
}

// remoteAlert returns the TLS alert the server sent, as crypto/tls spells
// it, or "" when err holds none. TLS 1.3 lets the client finish its
// handshake before the server has judged the client certificate, so a
// refusal arrives as an alert on the first read, which net/http reports
// inside whatever it was doing: only the text is left to read it from.
func remoteAlert(err error) string {
	msg := err.Error()
	i := strings.Index(msg, "remote error: tls: ")
	if i < 0 {
		return ""
	}
	alert := msg[i+len("remote error: tls: "):]
	if j := strings.IndexAny(alert, "\n;"); j >= 0 {
		alert = alert[:j]
	}
	return strings.TrimSpace(alert)
}

// lostConnectionError reports whether err says only that the connection
// went away, without saying why.
func lostConnectionError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "could not be established") ||
		strings.Contains(msg, "client conn is closed") ||
		strings.Contains(msg, "use of closed network connection") ||
		strings.Contains(msg, "client connection lost") ||
		// net/http's name for a new connection the server closed before
		// answering, when the request could not be retried.
		strings.Contains(msg, "server closed idle connection") ||
		strings.Contains(msg, "unexpected EOF") ||
		strings.HasSuffix(msg, ": EOF") ||
		strings.Contains(msg, "broken pipe") ||
		strings.Contains(msg, "connection reset by peer") ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// probeResult is how a probe connection ended.
type probeResult struct {
	err            error  // nil when the server stayed quiet after the handshake
	afterHandshake bool   // the handshake succeeded and err came from the first read
	alpn           string // the protocol negotiated, when the handshake succeeded
	firstBytes     []byte // what a server that is not TLS sent first, when it sent anything
}

// probe makes one TLS connection to the server with the client's own
// settings, waits briefly for the server's first bytes, and reports how the
// connection ended.
func (c *Client) probe(ctx context.Context) probeResult {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return probeResult{err: err}
	}
	defer raw.Close()
	recorded := &firstBytesConn{Conn: raw}
	config := c.tls.Clone()
	config.NextProtos = []string{"h2", "http/1.1"}
	if c.opts.http1 {
		config.NextProtos = []string{"http/1.1"}
	}
	if config.ServerName == "" {
		config.ServerName = c.host
	}
	conn := tls.Client(recorded, config)
	if err := conn.HandshakeContext(ctx); err != nil {
		var header tls.RecordHeaderError
		if !errors.As(err, &header) {
			return probeResult{err: err}
		}
		return probeResult{err: err, firstBytes: recorded.more(200 * time.Millisecond)}
	}
	alpn := conn.ConnectionState().NegotiatedProtocol

	// Under TLS 1.3 the server's verdict on the client certificate
	// follows the handshake. An HTTP/2 server answers the connection
	// preface with its SETTINGS, so on h2 the first byte read is either
	// that (accepted) or the alert (refused); otherwise a quiet server
	// until the deadline means it accepted.
	readBy := time.Now().Add(2 * time.Second)
	if deadline, ok := ctx.Deadline(); ok && deadline.Before(readBy) {
		readBy = deadline
	}
	_ = conn.SetDeadline(readBy)
	if alpn == http2.NextProtoTLS {
		if _, err := io.WriteString(conn, http2.ClientPreface); err == nil {
			_ = http2.NewFramer(conn, nil).WriteSettings()
		}
	}
	var one [1]byte
	if _, err := conn.Read(one[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return probeResult{afterHandshake: true, alpn: alpn}
		}
		return probeResult{err: err, afterHandshake: true, alpn: alpn}
	}
	return probeResult{afterHandshake: true, alpn: alpn}
}

// firstBytesConn keeps the first bytes read from a connection: crypto/tls
// reads more than the five bytes of a record header at once, and reports
// only those five when they are not TLS.
type firstBytesConn struct {
	net.Conn
	first []byte
}

// firstBytesKept bounds what a firstBytesConn keeps.
const firstBytesKept = 64

func (c *firstBytesConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if room := firstBytesKept - len(c.first); room > 0 {
		c.first = append(c.first, p[:min(n, room)]...)
	}
	return n, err
}

// more reads what else arrives within wait, up to what is kept, and
// returns the first bytes: a banner is sent whole, but may come in pieces.
func (c *firstBytesConn) more(wait time.Duration) []byte {
	if len(c.first) < firstBytesKept && !bytes.ContainsAny(c.first, "\r\n") {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		_, _ = c.Read(make([]byte, firstBytesKept-len(c.first)))
	}
	return c.first
}

func (c *Client) diagnoseAlert(alert string) (cause, fix string) {
	certName := "the client certificate"
	if c.opts.certFile != "" {
		certName = fmt.Sprintf("%q", c.opts.certFile)
	}
	issuer := ""
	if c.opts.cert != nil && c.opts.cert.Leaf != nil {
		issuer = c.opts.cert.Leaf.Issuer.String()
	}
	asked := c.askedFor()

	// A refusal alert names a category; the certificate itself usually
	// shows the precise cause, and the client has it at hand, often with
	// its CA and the revocation list beside it.
	switch alert {
	case "bad certificate", "unknown certificate", "unsupported certificate", "revoked certificate",
		"expired certificate", "unknown certificate authority":
		if c.opts.cert != nil {
			problem := checkClientCertificate(c.opts.cert, certName, c.opts.certFile, time.Now())
			if problem != nil {
				return "the server refused the client certificate: " + problem.Cause, problem.Fix
			}
		}
	}
	switch alert {
	case "expired certificate":
		// The certificate is valid, so the clock failed another one of
		// its chain: the CA's own, when this client has it.
		if ca := c.issuerOutOfValidity(time.Now()); ca != "" {
			return fmt.Sprintf("the server refused %s as expired: it is valid, but the CA that issued it, in %s, %s",
					certName, c.opts.caFile, ca),
				"a CA out of its validity makes every certificate below it fail: make a new CA and reissue " +
					"the certificates from it (echoloop pki init --force for a development PKI), or renew the CA"
		}
	case "bad certificate", "unknown certificate", "revoked certificate":
		// TLS has an alert for revocation, but Go's server, and echoloop's,
		// send "bad certificate" for it; the list at hand can tell.
		if revoked, ok := c.revokedAtHand(); ok {
			return fmt.Sprintf("the server refused %s (alert %q): it is revoked: %s lists %s",
					certName, alert, c.opts.crlFile, revoked.describe()),
				"a revoked certificate stays revoked: issue a new one (echoloop pki issue client NAME) and use it"
		}
	}

	switch alert {
	case "certificate required":
		if c.opts.cert == nil {
			fix := "pass --cert and --key (or --certs DIR holding client.crt and client.key)"
			if asked != "" {
				fix += " with a certificate issued by " + asked
			}
			return "the server requires a client certificate and none was sent", fix
		}
		return fmt.Sprintf("the server refused %s as missing", certName),
			"present a certificate issued by " + orUnknown(asked)
	case "unknown certificate authority":
		if issuer != "" && strings.Contains(asked, fmt.Sprintf("%q", issuer)) {
			return fmt.Sprintf("the server does not trust the CA that issued %s: it trusts a CA named "+
					"%q too, but not that one (another key)", certName, issuer),
				"use a certificate from the same `pki init` (or CA) as the server's --cacert"
		}
		return fmt.Sprintf("the server does not trust the CA that issued %s (issuer %q)", certName, issuer),
			fmt.Sprintf("use a certificate issued by %s, or add its CA to the server's --cacert; "+
				"if %q is an intermediate, append its certificate to the certificate file after the leaf",
				orUnknown(asked), issuer)
	case "expired certificate":
		return fmt.Sprintf("the server refused %s as expired or not yet valid, by its clock "+
				"(this machine's says %s)", certName, stamp(time.Now())),
			"check the server's clock, or issue a new client certificate"
	case "unsupported certificate":
		return fmt.Sprintf("the server refused %s for its key usage: it is not marked for client authentication",
			certName), "issue a client certificate with the clientAuth extended key usage"
	case "bad certificate", "unknown certificate":
		return fmt.Sprintf("the server refused %s (alert %q)", certName, alert),
			"check that it is a client certificate (clientAuth), currently valid, not revoked, and issued by " +
				orUnknown(asked)
	case "protocol version not supported", "handshake failure":
		return "the server and this client share no TLS version or cipher suite",
			"check the server's minimum TLS version"
	case "no application protocol":
		if c.opts.http1 {
			return "the server refused HTTP/1.1: it speaks only HTTP/2, as gRPC servers do",
				"drop --http1.1 (gRPC needs HTTP/2; gRPC-Web is the protocol made for HTTP/1.1)"
		}
		return "the server accepts none of the application protocols offered (h2, http/1.1)",
			"check that the URL points at an HTTPS server"
	}
	return fmt.Sprintf("the server ended the TLS handshake with alert %q", alert),
		"read the server's log for the handshake it refused"
}

// issuerOutOfValidity describes the CA in the CA file that issued the top
// of the client's chain, when that CA is outside its validity; "" when it
// is valid, or not in the file. A server that trusts the same CA for
// clients refuses them all for it.
func (c *Client) issuerOutOfValidity(now time.Time) string {
	if c.opts.cert == nil {
		return ""
	}
	chain, err := parseChain(c.opts.cert)
	if err != nil || len(chain) == 0 {
		return ""
	}
	top := chain[len(chain)-1]
	for _, ca := range c.opts.rootCerts {
		if string(top.RawIssuer) == string(ca.RawSubject) && top.CheckSignatureFrom(ca) == nil {
			return outOfValidity(ca, now)
		}
	}
	return ""
}

// askedFor describes the CAs the server named in its CertificateRequest.
func (c *Client) askedFor() string {
	v, ok := c.lastRequest.Load(c.host)
	if !ok {
		return ""
	}
	req := v.(*tls.CertificateRequestInfo)
	var names []string
	for _, raw := range req.AcceptableCAs {
		if name, ok := distinguishedName(raw); ok {
			names = append(names, fmt.Sprintf("%q", name))
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "the CA the server asked for (" + strings.Join(names, ", ") + ")"
}

// distinguishedName reads a DER-encoded X.509 name as sent in a
// CertificateRequest's certificate_authorities.
func distinguishedName(raw []byte) (string, bool) {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &seq); err != nil || len(rest) > 0 {
		return "", false
	}
	var name pkix.Name
	name.FillFromRDNSequence(&seq)
	return name.String(), true
}

func orUnknown(asked string) string {
	if asked == "" {
		return "a CA the server trusts"
	}
	return asked
}

func (c *Client) diagnoseServerCertificate(
	verr *tls.CertificateVerificationError,
) (cause, fix string) {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostErr x509.HostnameError
	leaf := verr.UnverifiedCertificates[0]
	switch {
	case errors.As(verr.Err, &hostErr):
		return c.diagnoseHostname(hostErr)
	case errors.As(verr.Err, &unknown):
		where := "the system's roots"
		if c.opts.caFile != "" {
			where = fmt.Sprintf("%q", c.opts.caFile)
		}
		for _, root := range c.opts.rootCerts {
			if root.Subject.String() == leaf.Issuer.String() {
				return fmt.Sprintf("this client does not trust the server's certificate: it was issued by "+
						"a CA named %q, and %s holds a CA of that name, but not that one (another key)",
						leaf.Issuer.String(), where),
					"pass the ca.crt from the same `pki init` as the server's certificate with --cacert"
			}
		}
		return fmt.Sprintf("this client does not trust the server's certificate: its issuer %q is not in %s",
				leaf.Issuer.String(), where),
			"pass the server's CA with --cacert (echoloop pki init wrote it as ca.crt)"
	case errors.As(verr.Err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil:
		return c.diagnoseServerValidity(verr.UnverifiedCertificates, invalid.Cert, time.Now())
	}
	return fmt.Sprintf("this client refused the server's certificate: %v", verr.Err),
		"check the server certificate with `echoloop pki inspect` or `openssl x509 -text`"
}

// diagnoseServerValidity names the certificate that is outside its
// validity: Go's verifier checks every certificate of the chain it builds
// against the clock, so it may be the server's own, an intermediate the
// server sent, or the CA this client trusts for it.
func (c *Client) diagnoseServerValidity(
	sent []*x509.Certificate,
	invalid *x509.Certificate,
	now time.Time,
) (cause, fix string) {
	switch {
	case invalid.Equal(sent[0]):
		return "the server's certificate " + outOfValidity(invalid, now),
			"renew the server certificate, or correct this machine's clock"
	case slices.ContainsFunc(sent[1:], invalid.Equal):
		return "the intermediate CA in the server's chain " + outOfValidity(invalid, now),
			"renew the intermediate and reissue the server certificate from it, or correct this machine's clock"
	}
	where := "the system's roots"
	if c.opts.caFile != "" {
		where = c.opts.caFile + " (--cacert)"
	}
	return fmt.Sprintf("the CA in %s that this client trusts for the server %s; the server's own "+
			"certificate is valid until %s", where, outOfValidity(invalid, now), stamp(sent[0].NotAfter)),
		"a CA out of its validity makes every certificate below it fail: make a new CA and reissue the " +
			"server's and clients' certificates from it (echoloop pki init --force for a development PKI), " +
			"or renew the CA; or correct this machine's clock"
}

func (c *Client) diagnoseHostname(hostErr x509.HostnameError) (cause, fix string) {
	names := append([]string{}, hostErr.Certificate.DNSNames...)
	for _, ip := range hostErr.Certificate.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return fmt.Sprintf("the server presents a certificate with no DNS or IP names (%s), so it covers "+
				"no host at all: it is probably not a server certificate", hostErr.Certificate.Subject),
			"give the server a certificate issued for its host names (echoloop pki init writes server.crt)"
	}
	return fmt.Sprintf("the server's certificate does not cover %q (it covers: %s)",
			hostErr.Host, strings.Join(names, ", ")),
		"call one of those names, pass --server-name with one of them, or reissue the server certificate " +
			"with --san " + hostErr.Host
}
