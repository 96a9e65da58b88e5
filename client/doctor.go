package client

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/echoloop/echoloop/pki"
)

// Verdict is the outcome of one doctor step.
type Verdict int

// The verdicts of a doctor step. A warning does not stop the checklist.
const (
	Pass Verdict = iota
	Warn
	Fail
)

// Step is one line of the doctor's checklist.
type Step struct {
	// Check says what was checked.
	Check string
	// Verdict is how it went.
	Verdict Verdict
	// Detail says what was found.
	Detail string
	// Fix says what to do, for a warning or a failure.
	Fix string
}

// DoctorConfig names what the doctor checks: the files a client would use
// and the server it would call. The server need not be echoloop.
type DoctorConfig struct {
	// URL is the server, https://host:port.
	URL string
	// CAFile is the PEM bundle the server's certificate must chain to.
	CAFile string
	// CertFile and KeyFile are the client certificate chain and its key.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must cover, when
	// the URL's host is not it.
	ServerName string
	// HTTP1 offers only HTTP/1.1 in ALPN, as `--http1.1` clients do.
	HTTP1 bool
	// Timeout bounds each network step. Default 10 seconds.
	Timeout time.Duration
	// CRLFile is a revocation list to look the client certificate up in
	// when the server refuses it (see [WithRevocationListFile]); optional.
	CRLFile string
}

// Doctor checks an mTLS client setup step by step — first the files on
// their own, then the server over the network — and reports each step as it
// completes. It stops at the first failing step and returns whether every
// step passed or only warned.
func Doctor(ctx context.Context, cfg DoctorConfig, report func(Step)) bool {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	d := &doctor{cfg: cfg}
	defer d.close()
	steps := []func(context.Context) Step{
		d.loadCA, d.caValidity, d.loadCertificate, d.loadKey, d.keyMatches, d.validity, d.purpose, d.chainsToCA,
		d.parseURL, d.dial, d.handshake, d.certificateRequested, d.alpn, d.accepted, d.call,
	}
	for _, step := range steps {
		s := step(ctx)
		report(s)
		if s.Verdict == Fail {
			return false
		}
	}
	return true
}

// doctor carries what each step learns to the steps after it.
type doctor struct {
	cfg DoctorConfig

	key     crypto.Signer
	roots   *x509.CertPool
	cas     []*x509.Certificate
	chain   []*x509.Certificate
	pair    tls.Certificate
	addr    string
	host    string
	state   tls.ConnectionState
	request *tls.CertificateRequestInfo
	client  *Client
}

func pass(check, detail string) Step { return Step{Check: check, Verdict: Pass, Detail: detail} }

func fail(check, detail, fix string) Step {
	return Step{Check: check, Verdict: Fail, Detail: detail, Fix: fix}
}

func (d *doctor) loadCA(context.Context) Step {
	check := fmt.Sprintf("CA bundle %s parses", d.cfg.CAFile)
	roots, cas, err := pki.LoadCertPool(d.cfg.CAFile)
	if err != nil {
		return fail(check, err.Error(), "point --cacert at the PEM file of the CA that signed the server's certificate")
	}
	d.roots, d.cas = roots, cas
	names := make([]string, 0, len(cas))
	for _, c := range cas {
		names = append(names, c.Subject.String())
	}
	return pass(check, fmt.Sprintf("%d CA certificate(s): %s", len(cas), strings.Join(names, "; ")))
}

// caValidity checks the CA bundle's own validity windows. Go's verifier,
// like others, checks every certificate of a chain against the clock, the
// CA's included: a CA out of its validity fails every certificate below
// it, however valid they are themselves.
func (d *doctor) caValidity(context.Context) Step {
	check := fmt.Sprintf("CA bundle %s is valid now", d.cfg.CAFile)
	now := time.Now()
	var invalid []string
	for _, ca := range d.cas {
		if state := outOfValidity(ca, now); state != "" {
			invalid = append(invalid, state)
		}
	}
	fix := "make a new CA and reissue the server's and clients' certificates from it (echoloop pki init " +
		"--force for a development PKI, then restart the server with the new files), or renew the CA; " +
		"or correct this machine's clock"
	switch {
	case len(invalid) == 0:
		return pass(check, "every CA in it is within its validity")
	case len(invalid) == len(d.cas):
		return fail(check, strings.Join(invalid, "; ")+": no certificate below it can be verified", fix)
	}
	return Step{Check: check, Verdict: Warn, Detail: strings.Join(invalid, "; "),
		Fix: "certificates issued by that CA will be refused; " + fix}
}

func (d *doctor) loadCertificate(context.Context) Step {
	check := fmt.Sprintf("client certificate %s parses", d.cfg.CertFile)
	chain, err := pki.LoadCertificates(d.cfg.CertFile)
	if err != nil {
		return fail(check, err.Error(), "point --cert at the client certificate's PEM file (leaf first, then intermediates)")
	}
	d.chain = chain
	return pass(check, fmt.Sprintf("%s, issued by %s, %d certificate(s) in the file",
		chain[0].Subject, chain[0].Issuer, len(chain)))
}

func (d *doctor) loadKey(context.Context) Step {
	check := fmt.Sprintf("private key %s parses", d.cfg.KeyFile)
	key, err := pki.LoadKey(d.cfg.KeyFile)
	if err != nil {
		return fail(check, err.Error(), "point --key at the client certificate's unencrypted PEM key")
	}
	d.key = key
	d.pair = tls.Certificate{PrivateKey: key, Leaf: d.chain[0]}
	for _, c := range d.chain {
		d.pair.Certificate = append(d.pair.Certificate, c.Raw)
	}
	return pass(check, pki.DescribeKey(key.Public()))
}

func (d *doctor) keyMatches(context.Context) Step {
	check := "key belongs to the certificate"
	if err := pki.CheckKeyMatches(d.chain[0], d.key); err != nil {
		return fail(check, fmt.Sprintf("%s and %s are not a pair: %v", d.cfg.CertFile, d.cfg.KeyFile, err),
			"use the key that was generated with this certificate")
	}
	return pass(check, "the key's public half is the certificate's")
}

func (d *doctor) validity(context.Context) Step {
	check := "client certificate is valid now"
	leaf := d.chain[0]
	if problem := checkChainValidity(d.chain, d.cfg.CertFile, d.cfg.CertFile, time.Now()); problem != nil {
		return fail(check, problem.Cause, problem.Fix)
	}
	left := time.Until(leaf.NotAfter).Round(time.Hour)
	s := pass(check, fmt.Sprintf("valid until %s (%s left)", stamp(leaf.NotAfter), humanDuration(left)))
	if left < 7*24*time.Hour {
		s.Verdict, s.Fix = Warn, "renew it soon"
	}
	return s
}

func (d *doctor) purpose(context.Context) Step {
	check := "client certificate is for client authentication"
	if problem := checkPurpose(d.chain, d.cfg.CertFile); problem != nil {
		return fail(check, problem.Cause, problem.Fix)
	}
	return pass(check, "extended key usages: "+usageNamesOrAny(d.chain[0].ExtKeyUsage))
}

func (d *doctor) chainsToCA(context.Context) Step {
	check := fmt.Sprintf("client certificate chains to %s", d.cfg.CAFile)
	intermediates := x509.NewCertPool()
	for _, c := range d.chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := d.chain[0].Verify(x509.VerifyOptions{
		Roots:         d.roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	// Not fatal: --cacert is for the server's certificate, and a server
	// may trust another CA for clients. The handshake will tell.
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil {
		// The certificate is from that CA; it is the clock that fails it.
		return Step{Check: check, Verdict: Warn, Detail: outOfValidity(invalid.Cert, time.Now()),
			Fix: "a server that trusts this CA for clients will refuse the certificate until the CA is " +
				"replaced or renewed (see the CA bundle's validity above)"}
	}
	if err != nil {
		return Step{Check: check, Verdict: Warn, Detail: err.Error(),
			Fix: "fine if the server trusts another CA for clients; otherwise issue the client " +
				"certificate from the CA in " + d.cfg.CAFile}
	}
	return pass(check, "verified locally, as the server will")
}

func (d *doctor) parseURL(context.Context) Step {
	check := fmt.Sprintf("URL %s", d.cfg.URL)
	u, err := url.Parse(d.cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fail(check, "not of the form https://host:port", "give --url as https://host:port")
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	d.host = u.Hostname()
	d.addr = net.JoinHostPort(d.host, port)
	return pass(check, "connects to "+d.addr)
}

func (d *doctor) dial(ctx context.Context) Step {
	check := "TCP connection to " + d.addr
	conn, err := (&net.Dialer{Timeout: d.cfg.Timeout}).DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return fail(check, err.Error(), "start the server, or check the host and port in --url")
	}
	conn.Close()
	return pass(check, "connected")
}

// handshake connects with the client certificate and records what the
// server asked for. Whether the server accepts the certificate shows only
// later under TLS 1.3; this step judges the server's side.
func (d *doctor) handshake(ctx context.Context) Step {
	check := "TLS handshake and the server's certificate"
	config := &tls.Config{
		RootCAs:    d.roots,
		ServerName: d.cfg.ServerName,
		MinVersion: tls.VersionTLS12,
		NextProtos: d.nextProtos(),
		GetClientCertificate: func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			d.request = req
			return &d.pair, nil
		},
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: config}).DialContext(ctx, "tcp", d.addr)
	if err != nil {
		cause, fix, _ := d.newClient().diagnoseWithProbe(ctx, err)
		if cause == "" {
			cause, fix = err.Error(), "check that the port speaks TLS"
		}
		return fail(check, cause, fix)
	}
	defer conn.Close()
	d.state = conn.(*tls.Conn).ConnectionState()

	leaf := d.state.PeerCertificates[0]
	return pass(check, fmt.Sprintf("%s, %s; server certificate %s verified, valid until %s",
		tls.VersionName(d.state.Version), tls.CipherSuiteName(d.state.CipherSuite),
		leaf.Subject, stamp(leaf.NotAfter)))
}

func (d *doctor) certificateRequested(context.Context) Step {
	check := "server asks for a client certificate"
	if d.request == nil {
		return fail(check, "the server finished the handshake without asking for one: it does not do mutual TLS on this port",
			"configure the server to require client certificates (Go: tls.RequireAndVerifyClientCert)")
	}
	var names []string
	for _, raw := range d.request.AcceptableCAs {
		if name, ok := distinguishedName(raw); ok {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return pass(check, "it names no CAs, so it may accept any; the next step shows")
	}
	issuer := d.chain[len(d.chain)-1].Issuer.String()
	for _, n := range names {
		if n == issuer {
			return pass(check, "it asks for certificates from: "+strings.Join(names, "; "))
		}
	}
	return Step{Check: check, Verdict: Warn,
		Detail: fmt.Sprintf("it asks for certificates from %s, and this chain ends at %q",
			strings.Join(names, "; "), issuer),
		Fix: "expect a refusal: present a certificate issued by one of those CAs"}
}

// nextProtos are the application protocols the doctor offers.
func (d *doctor) nextProtos() []string {
	if d.cfg.HTTP1 {
		return []string{"http/1.1"}
	}
	return []string{"h2", "http/1.1"}
}

func (d *doctor) alpn(context.Context) Step {
	check := "application protocol (ALPN)"
	switch {
	case d.cfg.HTTP1 && d.state.NegotiatedProtocol == "http/1.1":
		return pass(check, "http/1.1, the only one offered (--http1.1): Connect, gRPC-Web and HTTP "+
			"possible; gRPC only where the server takes it over HTTP/1.1, as echoloop does")
	}
	switch d.state.NegotiatedProtocol {
	case "h2":
		return pass(check, "h2: gRPC, Connect, gRPC-Web and HTTP all possible")
	case "":
		return Step{Check: check, Verdict: Warn, Detail: "none negotiated",
			Fix: "gRPC clients need h2 in ALPN; add it to the server's TLS configuration"}
	}
	return Step{Check: check, Verdict: Warn, Detail: d.state.NegotiatedProtocol + " only",
		Fix: "gRPC needs HTTP/2 (h2); Connect, gRPC-Web and HTTP work over HTTP/1.1"}
}

func (d *doctor) accepted(ctx context.Context) Step {
	check := "server accepts the client certificate"
	c := d.newClient()
	result := c.probe(ctx)
	if result.err == nil {
		return pass(check, "no alert after the handshake")
	}
	cause, fix := c.diagnose(result.err)
	if cause == "" {
		cause, fix = result.err.Error(), "read the server's log for the refused handshake"
	}
	return fail(check, cause, fix)
}

// call makes an Echo call; a server that is not echoloop answers it with
// not-found, and then one plain GET shows that HTTP over mTLS works.
func (d *doctor) call(ctx context.Context) Step {
	check := "a call over mTLS"
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	c := d.newClient()
	resp, err := c.Echo(ctx, Connect, "doctor")
	if err == nil {
		return pass(check, fmt.Sprintf("Echo answered over %s; the server verified %s (sha256 %s)",
			resp.GetConnection().GetHttpVersion(), resp.GetPeer().GetCommonName(),
			resp.GetPeer().GetSha256Fingerprint()))
	}
	// An explained error is a failure of TLS or the transport; anything
	// else is an HTTP answer that was not Echo's, which means the server
	// is not echoloop and a plain GET is the fairer test.
	var explained *Error
	if errors.As(err, &explained) {
		return fail(check, explained.Cause, explained.Fix)
	}
	if connect.CodeOf(err) == connect.CodePermissionDenied {
		return fail(check, err.Error(), "ask the server's operator to allow this certificate")
	}

	hc, err := c.httpClient(HTTP)
	if err != nil {
		return fail(check, err.Error(), "")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.cfg.URL, nil)
	if err != nil {
		return fail(check, err.Error(), "check --url")
	}
	httpResp, err := hc.Do(req)
	if err != nil {
		return fail(check, err.Error(), "read the server's log for this request")
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(httpResp.Body, 1<<20))
	httpResp.Body.Close()
	return pass(check, fmt.Sprintf("not an echoloop server; GET %s answered %s over %s",
		d.cfg.URL, httpResp.Status, httpResp.Proto))
}

func (d *doctor) newClient() *Client {
	if d.client != nil {
		return d.client
	}
	opts := []Option{WithRootCAs(d.roots), WithCertificate(d.pair)}
	if d.cfg.ServerName != "" {
		opts = append(opts, WithServerName(d.cfg.ServerName))
	}
	if d.cfg.HTTP1 {
		opts = append(opts, WithHTTP1())
	}
	// parseURL has already accepted the URL, and New checks nothing else
	// that could fail here.
	if d.cfg.CRLFile != "" {
		opts = append(opts, WithRevocationListFile(d.cfg.CRLFile))
	}
	c, _ := New(d.cfg.URL, opts...)
	c.opts.certFile, c.opts.caFile, c.opts.rootCerts = d.cfg.CertFile, d.cfg.CAFile, d.cas
	d.client = c
	return c
}

// close releases the doctor's connections.
func (d *doctor) close() {
	if d.client != nil {
		d.client.Close()
	}
}

func usageNamesOrAny(usages []x509.ExtKeyUsage) string {
	if len(usages) == 0 {
		return "none listed, which means any purpose"
	}
	return usageNames(usages)
}

func humanDuration(d time.Duration) string {
	days := int(d.Hours() / 24)
	if days >= 2 {
		return fmt.Sprintf("%d days", days)
	}
	return d.String()
}
