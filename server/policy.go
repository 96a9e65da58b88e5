package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/echoloop/echoloop/pki"
)

// Policy narrows which verified clients may call. A client is allowed when
// its certificate matches any one entry of any list; an empty Policy allows
// every certificate that chains to the client CA.
//
// Matching is on the verified leaf only:
//   - CommonNames: the subject common name, exactly;
//   - DNSNames: a DNS SAN, exactly, or "*.example.org" for any single
//     concrete label below example.org: a SAN that is itself a wildcard
//     ("*.example.org") names no one host and matches no pattern;
//   - URIs: a URI SAN, exactly, or "scheme://host/*" for any path under that
//     host. A pattern in the spiffe scheme, exact or a trust domain
//     ("spiffe://example.org/*"), matches only the leaf's SPIFFE ID as
//     [pki.SPIFFEID] defines it — the one URI SAN of a certificate that has
//     exactly one, and a valid SPIFFE ID — so that the ID the server
//     reports is always the one that was judged;
//   - OrganizationalUnits: any subject organisational unit, exactly.
type Policy struct {
	CommonNames         []string
	DNSNames            []string
	URIs                []string
	OrganizationalUnits []string
}

// Empty reports whether the policy allows every verified client.
func (p Policy) Empty() bool {
	return len(p.CommonNames)+len(p.DNSNames)+len(p.URIs)+len(p.OrganizationalUnits) == 0
}

// logAttrs describe the policy in force for the log line at start: the
// lists that narrow it, or that every client of the CA may call.
func (p Policy) logAttrs() []any {
	if p.Empty() {
		return []any{KeyAllow, "any client of the CA"}
	}
	var attrs []any
	for _, list := range []struct {
		key    string
		values []string
	}{
		{KeyAllow + ".cn", p.CommonNames},
		{KeyAllow + ".dns", p.DNSNames},
		{KeyAllow + ".uri", p.URIs},
		{KeyAllow + ".ou", p.OrganizationalUnits},
	} {
		if len(list.values) > 0 {
			attrs = append(attrs, slog.Any(list.key, list.values))
		}
	}
	return attrs
}

// Validate checks the patterns. A URI pattern must parse and may end in
// "/*" only, and in the spiffe scheme must be a valid SPIFFE ID before that
// "/*"; a DNS pattern may start with "*." only.
func (p Policy) Validate() error {
	var problems []error
	for _, pattern := range p.URIs {
		u, err := url.Parse(strings.TrimSuffix(pattern, "*"))
		switch {
		case err != nil:
			problems = append(problems, fmt.Errorf("allowed URI %q does not parse: %w", pattern, err))
		case u.Scheme == "" || u.Host == "":
			problems = append(problems, fmt.Errorf("allowed URI %q needs a scheme and a host, "+
				"for example spiffe://example.org/service or spiffe://example.org/*", pattern))
		case strings.Contains(strings.TrimSuffix(pattern, "/*"), "*"):
			problems = append(problems, fmt.Errorf("allowed URI %q: a wildcard may only end the "+
				"pattern, as /*", pattern))
		case u.Scheme == "spiffe":
			// A pattern no SPIFFE ID can match is a typo (an upper-case
			// trust domain, a trailing slash) that would deny silently.
			if err := pki.CheckSPIFFEID(strings.TrimSuffix(pattern, "/*")); err != nil {
				problems = append(problems, fmt.Errorf("allowed URI %q: %w", pattern, err))
			}
		}
	}
	for _, pattern := range p.DNSNames {
		if strings.Contains(strings.TrimPrefix(pattern, "*."), "*") {
			problems = append(problems, fmt.Errorf("allowed DNS name %q: a wildcard may only start "+
				"the pattern, as in *.example.org", pattern))
		}
	}
	return errors.Join(problems...)
}

// Allows reports whether the verified leaf certificate may call.
func (p Policy) Allows(leaf *x509.Certificate) bool {
	if p.Empty() {
		return true
	}
	if slices.Contains(p.CommonNames, leaf.Subject.CommonName) && leaf.Subject.CommonName != "" {
		return true
	}
	for _, ou := range leaf.Subject.OrganizationalUnit {
		if slices.Contains(p.OrganizationalUnits, ou) {
			return true
		}
	}
	for _, name := range leaf.DNSNames {
		for _, pattern := range p.DNSNames {
			if matchDNS(pattern, name) {
				return true
			}
		}
	}
	var spiffeID *url.URL
	if id, err := pki.SPIFFEID(leaf); err == nil && id != "" {
		spiffeID, _ = url.Parse(id) // a valid SPIFFE ID parses
	}
	for _, pattern := range p.URIs {
		if isSPIFFEPattern(pattern) {
			if spiffeID != nil && matchURI(pattern, spiffeID) {
				return true
			}
			continue
		}
		for _, u := range leaf.URIs {
			if matchURI(pattern, u) {
				return true
			}
		}
	}
	return false
}

// isSPIFFEPattern reports whether a URI pattern is in the spiffe scheme,
// which URI schemes spell in any case.
func isSPIFFEPattern(pattern string) bool {
	scheme, _, found := strings.Cut(pattern, "://")
	return found && strings.EqualFold(scheme, "spiffe")
}

func matchDNS(pattern, name string) bool {
	pattern, name = strings.ToLower(pattern), strings.ToLower(strings.TrimSuffix(name, "."))
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		// A wildcard admits a host, and a SAN with a '*' in its first
		// label stands for many hosts, not one below the domain.
		label, rest, found := strings.Cut(name, ".")
		return found && label != "" && !strings.Contains(label, "*") && rest == suffix
	}
	return pattern == name
}

func matchURI(pattern string, u *url.URL) bool {
	prefix, wildcard := strings.CutSuffix(pattern, "/*")
	if !wildcard {
		return pattern == u.String()
	}
	base, err := url.Parse(prefix)
	if err != nil {
		return false
	}
	// Scheme and host compare case-insensitively (RFC 3986 section 6.2.2.1);
	// the path must continue under the prefix at a segment boundary, so
	// spiffe://example.org/* does not admit spiffe://example.org.evil/.
	return strings.EqualFold(base.Scheme, u.Scheme) && strings.EqualFold(base.Host, u.Host) &&
		u.User == nil && strings.HasPrefix(u.Path, base.Path+"/")
}

// Reasons in the line of a call denied by policy, when the leaf has a
// spiffe URI SAN that is not its SPIFFE ID.
const (
	// ReasonSeveralURISANs: the leaf has several URI SANs, so no SPIFFE ID.
	ReasonSeveralURISANs = "several_uri_sans"
	// ReasonInvalidSPIFFEID: the leaf's one URI SAN is not a valid SPIFFE ID.
	ReasonInvalidSPIFFEID = "invalid_spiffe_id"
)

// errDenied is the one message a denied client sees, whatever protocol it
// used. It names the certificate so the caller knows which one was judged.
func errDenied(peerCN, fingerprint string) error {
	return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
		"client certificate %q (sha256 %s) is valid but not allowed by this server's policy",
		peerCN, fingerprint))
}

// authorize enforces the policy on every RPC, unary or streaming, so that
// Echo, health and reflection all answer to the same rule. The decision is
// made once per connection; this only reads it.
func authorize(log *slog.Logger) connect.Interceptor {
	return &authorizer{log: log}
}

type authorizer struct{ log *slog.Logger }

func (a *authorizer) check(ctx context.Context, procedure string) error {
	conn := connInfoFrom(ctx)
	if conn == nil || conn.peer == nil {
		return connect.NewError(connect.CodeUnauthenticated,
			errors.New("no verified client certificate on this connection"))
	}
	if conn.allowed {
		return nil
	}
	attrs := []any{
		KeyProcedure, procedure,
		KeyPeerCN, conn.peer.GetCommonName(),
		KeyPeerSubject, conn.subject,
		KeyPeerSHA256, conn.peer.GetSha256Fingerprint(),
	}
	// A spiffe URI that did not count is the likely reason, and the client
	// is not told it: say it here, where the operator looks.
	if conn.noSPIFFEID != nil {
		reason := ReasonInvalidSPIFFEID
		if errors.Is(conn.noSPIFFEID, pki.ErrSeveralURISANs) {
			reason = ReasonSeveralURISANs
		}
		attrs = append(attrs, KeyReason, reason, KeyError, conn.noSPIFFEID.Error())
	}
	a.log.WarnContext(ctx, "call denied by policy", attrs...)
	return errDenied(conn.peer.GetCommonName(), conn.peer.GetSha256Fingerprint())
}

func (a *authorizer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := a.check(ctx, req.Spec().Procedure); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (a *authorizer) WrapStreamingClient(
	next connect.StreamingClientFunc,
) connect.StreamingClientFunc {
	return next
}

func (a *authorizer) WrapStreamingHandler(
	next connect.StreamingHandlerFunc,
) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := a.check(ctx, conn.Spec().Procedure); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// refuseCAAsLeaf is the TLS VerifyConnection hook. Go's verifier accepts a
// CA certificate presented as a client's own when that CA is itself trusted
// (a chain of one), which would let anyone holding a CA key pose as a
// client without ever issuing a client certificate.
func refuseCAAsLeaf(leaf *x509.Certificate) error {
	if leaf.IsCA {
		return &refusalError{reason: ReasonCAAsLeaf, cert: leaf,
			err: errors.New("client presented a CA certificate as its own")}
	}
	return nil
}

// refusalError is a handshake refused by echoloop's own checks after the
// standard verification passed.
type refusalError struct {
	reason string
	cert   *x509.Certificate
	err    error
}

func (e *refusalError) Error() string { return "tls: " + e.err.Error() }

func (e *refusalError) Unwrap() error { return e.err }
