package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// SPIFFE ID limits from the SPIFFE ID specification, section 2: a trust
// domain of at most 255 bytes and a whole ID of at most 2048, so that
// every SPIFFE implementation can hold what this one accepts.
const (
	maxTrustDomainLen = 255
	maxSPIFFEIDLen    = 2048
)

// spiffePrefix is the scheme and separator every SPIFFE ID starts with.
// The specification fixes the scheme in lower case, so "SPIFFE://" is not
// a SPIFFE ID even though URI schemes are otherwise case-insensitive.
const spiffePrefix = "spiffe://"

// CheckSPIFFEID reports why id is not a valid SPIFFE ID, or nil when it is.
// A SPIFFE ID is "spiffe://" followed by a non-empty trust domain of
// lower-case letters, digits, '.', '-' and '_' (so no port and no user
// information), then an optional path of '/'-separated segments, each
// non-empty, neither '.' nor '..', of letters, digits, '.', '-' and '_'
// (so no query, no fragment, no percent-encoding and no trailing slash).
// A trust domain alone, "spiffe://example.org", is a valid ID. The error
// names the ID and the rule it breaks, for the caller to put in the context
// of its flag or pattern.
func CheckSPIFFEID(id string) error {
	rest, ok := strings.CutPrefix(id, spiffePrefix)
	if !ok {
		return fmt.Errorf("SPIFFE ID %q must start with %s", id, spiffePrefix)
	}
	if len(id) > maxSPIFFEIDLen {
		return fmt.Errorf("SPIFFE ID %.40q... is longer than %d bytes", id, maxSPIFFEIDLen)
	}
	domain, path, hasPath := strings.Cut(rest, "/")
	switch {
	case domain == "":
		return fmt.Errorf("SPIFFE ID %q has no trust domain", id)
	case len(domain) > maxTrustDomainLen:
		return fmt.Errorf("SPIFFE ID %q has a trust domain longer than %d bytes",
			id, maxTrustDomainLen)
	}
	for _, r := range domain {
		if !isTrustDomainChar(r) {
			return fmt.Errorf("SPIFFE ID %q: the trust domain may hold only lower-case letters, "+
				"digits, '.', '-' and '_', not %q", id, r)
		}
	}
	if !hasPath {
		return nil
	}
	for segment := range strings.SplitSeq(path, "/") {
		switch segment {
		case "":
			return fmt.Errorf("SPIFFE ID %q has an empty path segment "+
				"(a doubled or trailing slash)", id)
		case ".", "..":
			return fmt.Errorf("SPIFFE ID %q has a %q path segment", id, segment)
		}
		for _, r := range segment {
			if !isPathChar(r) {
				return fmt.Errorf("SPIFFE ID %q: a path segment may hold only letters, digits, "+
					"'.', '-' and '_', not %q", id, r)
			}
		}
	}
	return nil
}

func isTrustDomainChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
}

func isPathChar(r rune) bool {
	return isTrustDomainChar(r) || r >= 'A' && r <= 'Z'
}

// ErrSeveralURISANs is returned by [SPIFFEID] for a certificate with a
// spiffe URI SAN among several URI SANs: the X.509-SVID specification,
// section 2, allows an SVID exactly one URI SAN, so such a certificate has
// no SPIFFE ID, and picking one of its URIs would let a name the policy
// never judged be reported as the client's identity.
var ErrSeveralURISANs = errors.New("an X.509-SVID holds exactly one URI SAN")

// SPIFFEID returns the SPIFFE ID of cert: its URI SAN when it has exactly
// one and that URI is a valid SPIFFE ID (see [CheckSPIFFEID]). Otherwise
// it returns "", with an error saying why when a URI SAN in the spiffe
// scheme was there but does not count: [ErrSeveralURISANs] wrapped, or
// the reason the ID is invalid. A certificate with no spiffe URI at all
// simply has none, and the error is nil.
func SPIFFEID(cert *x509.Certificate) (string, error) {
	spiffe := 0
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			spiffe++
		}
	}
	switch {
	case spiffe == 0:
		return "", nil
	case len(cert.URIs) > 1:
		return "", fmt.Errorf("certificate has %d URI SANs, %d in the spiffe scheme: %w",
			len(cert.URIs), spiffe, ErrSeveralURISANs)
	}
	id := cert.URIs[0].String()
	if err := CheckSPIFFEID(id); err != nil {
		return "", err
	}
	return id, nil
}
