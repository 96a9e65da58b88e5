package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// revocations holds the CRLs the server enforces, swapped whole on reload
// so that a handshake sees either the old set or the new, never half.
type revocations struct {
	path    string
	current atomic.Pointer[crlSet]
	// material is the server's material in use, to tell which lists can
	// apply to its clients.
	material func() *material
}

// crlSet is one loaded CRL file.
type crlSet struct {
	lists []*x509.RevocationList
	// certs are the CA certificates the file holds beside its lists: the
	// intermediates that signed them, which `pki revoke` writes there so
	// that a server trusting only the root can tell the list applies.
	certs  []*x509.Certificate
	digest [sha256.Size]byte // of the file, to skip reloads of an unchanged one
	// verified caches which issuer certificate each list's signature was
	// checked against, so a handshake pays for a signature check once per
	// list and issuer rather than every time.
	verified sync.Map // key: list index + issuer fingerprint; value: bool
}

// loadRevocations reads the CRL file and refuses it when none of its lists
// could ever refuse a client of m.
func loadRevocations(path string, material func() *material) (*revocations, error) {
	r := &revocations{path: path, material: material}
	set, err := readCRLSet(path)
	if err != nil {
		return nil, err
	}
	if err := set.checkApplies(path, material()); err != nil {
		return nil, err
	}
	r.current.Store(set)
	return r, nil
}

func readCRLSet(path string) (*crlSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: reading revocation list: %w", err)
	}
	lists, certs, err := pki.ParseCRLFile(path, data)
	if err != nil {
		return nil, err
	}
	set := &crlSet{lists: lists, digest: sha256.Sum256(data)}
	// Only a CA certificate can be the intermediate that signed a list.
	for _, cert := range certs {
		if cert.IsCA {
			set.certs = append(set.certs, cert)
		}
	}
	return set, nil
}

// reload re-reads the CRL file and reports whether a new list is in force;
// an unchanged file is left alone unless always is set. A file that does
// not parse, whose lists none could refuse a client, or that would put an
// older list of an issuer in place of the one in force, is refused with a
// log line and the error, and the lists already loaded stay in force.
func (r *revocations) reload(log *slog.Logger, always bool) (bool, error) {
	set, err := readCRLSet(r.path)
	in := r.current.Load()
	if err == nil && !always && set.digest == in.digest {
		return false, nil
	}
	m := r.material()
	if err == nil {
		err = set.checkApplies(r.path, m)
	}
	if err == nil {
		err = set.checkNotOlder(r.path, in, m)
	}
	if err != nil {
		log.Error("revocation list not reloaded; the previous one stays in force",
			"file", r.path, KeyError, err.Error())
		return false, err
	}
	r.current.Store(set)
	for _, crl := range set.lists {
		log.Info("revocation list loaded", "file", r.path, "issuer", crl.Issuer.String(),
			"number", crl.Number, "revoked", len(crl.RevokedCertificateEntries),
			"next_update", crl.NextUpdate.UTC().Format(time.RFC3339))
		if !crl.NextUpdate.IsZero() && time.Now().After(crl.NextUpdate) {
			log.Warn("revocation list is past its next update; it is still enforced",
				"file", r.path, "issuer", crl.Issuer.String())
		}
	}
	r.warnInapplicable(log, m)
	return true, nil
}

// warnInapplicable logs each list in force that no client of m could be
// refused by, as after a new client CA bundle replaced the CA it was for.
func (r *revocations) warnInapplicable(log *slog.Logger, m *material) {
	for _, crl := range r.current.Load().inapplicable(m) {
		log.Warn("revocation list signed by no client CA nor an intermediate below one; it refuses no one",
			"file", r.path, "issuer", crl.Issuer.String(), KeyBundle, m.bundle)
	}
}

// checkApplies refuses a file in which no list could ever refuse a client
// of m: a list counts only for the CA that signed it, and a CA that is not
// among the client CAs, nor an intermediate below one of them, never
// appears in a chain the server has verified. Such a file is a mistake
// (another PKI's list, a CA of the same name with another key), and
// enforcing it would look like revocation while refusing nobody.
func (s *crlSet) checkApplies(path string, m *material) error {
	inapplicable := s.inapplicable(m)
	if len(inapplicable) < len(s.lists) {
		return nil
	}
	var issuers, cas []string
	for _, crl := range inapplicable {
		issuers = append(issuers, fmt.Sprintf("%q", crl.Issuer.String()))
	}
	for _, ca := range m.cas {
		cas = append(cas, fmt.Sprintf("%q", ca.Subject.String()))
	}
	return fmt.Errorf("revocation list %s is signed by %s, which is none of the client CAs of the "+
		"bundle %s (%s) nor an intermediate below one of them, so it could never refuse a client: "+
		"give the list of the CA that issues the client certificates (an intermediate's list needs "+
		"the intermediate's certificate in the same file, as echoloop pki revoke writes it)",
		path, strings.Join(issuers, ", "), m.bundle, strings.Join(cas, ", "))
}

// checkNotOlder refuses a set that would roll back a list in force. For
// each issuer with a list in both — the same subject and the same key, so
// the same CA — the new list must carry a higher CRL number (RFC 5280,
// section 5.2.3: the number only increases), or be the very same list,
// byte for byte. Without this, anyone able to write the file could put back
// an older list, properly signed, and so un-revoke every certificate
// revoked since; a list that changed under the same number is refused too,
// since a CA that changes its list must raise the number. A list in force
// that the new set leaves out is refused for the same reason.
func (s *crlSet) checkNotOlder(path string, in *crlSet, m *material) error {
	signers := slices.Concat(m.cas, m.chain, s.certs, in.certs)
	var problems []error
	for _, next := range s.lists {
		for _, prev := range in.lists {
			if prev.Number == nil || bytes.Equal(prev.Raw, next.Raw) || !sameIssuer(prev, next, signers) {
				continue
			}
			list := fmt.Sprintf("revocation list %s of %q", path, next.Issuer.String())
			var err error
			switch {
			case next.Number == nil:
				err = fmt.Errorf("%s has no CRL number, while the list in force has number %s",
					list, prev.Number)
			case next.Number.Cmp(prev.Number) < 0:
				err = fmt.Errorf("%s has CRL number %s, lower than number %s of the list in force: "+
					"an older list would un-revoke certificates", list, next.Number, prev.Number)
			case next.Number.Cmp(prev.Number) == 0:
				err = fmt.Errorf("%s has CRL number %s, the same as the list in force (number %s), "+
					"but differs from it: a CA that changes its list must raise the number",
					list, next.Number, prev.Number)
			}
			if err != nil {
				problems = append(problems, err)
			}
		}
	}

	// A list in force that the new file leaves out un-revokes just as an
	// older one would, unless its CA is no longer trusted and it refuses no
	// one anyway.
	stale := in.inapplicable(m)
	for _, prev := range in.lists {
		if slices.Contains(stale, prev) {
			continue
		}
		kept := slices.ContainsFunc(s.lists, func(next *x509.RevocationList) bool {
			return sameIssuer(prev, next, signers)
		})
		if !kept {
			problems = append(problems, fmt.Errorf("revocation list %s leaves out the list of %q "+
				"in force (number %s): without it the certificates it revokes would be let in again; "+
				"keep that CA's list in the file", path, prev.Issuer.String(), prev.Number))
		}
	}
	return errors.Join(problems...)
}

// sameIssuer reports whether one CA signed both lists: the same issuer
// name, and a certificate among signers whose key verifies both. A list no
// known certificate verifies refuses no one, so it needs no ordering.
func sameIssuer(a, b *x509.RevocationList, signers []*x509.Certificate) bool {
	if !bytes.Equal(a.RawIssuer, b.RawIssuer) {
		return false
	}
	return slices.ContainsFunc(signers, func(c *x509.Certificate) bool {
		return listedBy(a, c) && listedBy(b, c)
	})
}

// inapplicable returns the lists signed by no client CA of m and by no
// intermediate the server holds — in the CRL file or in its own chain —
// that chains to one.
func (s *crlSet) inapplicable(m *material) []*x509.RevocationList {
	intermediates := append(append([]*x509.Certificate{}, s.certs...), m.chain...)
	var out []*x509.RevocationList
	for _, crl := range s.lists {
		applies := false
		for _, ca := range m.cas {
			applies = applies || listedBy(crl, ca)
		}
		for _, im := range intermediates {
			applies = applies || (listedBy(crl, im) && chainsTo(im, m.cas, intermediates))
		}
		if !applies {
			out = append(out, crl)
		}
	}
	return out
}

// listedBy reports whether issuer signed crl.
func listedBy(crl *x509.RevocationList, issuer *x509.Certificate) bool {
	return bytes.Equal(crl.RawIssuer, issuer.RawSubject) && crl.CheckSignatureFrom(issuer) == nil
}

// chainsTo reports whether cert is one of cas or is signed by one of them,
// directly or through intermediates. Validity is left to the handshake.
func chainsTo(cert *x509.Certificate, cas, intermediates []*x509.Certificate) bool {
	signed := func(child, parent *x509.Certificate) bool {
		return bytes.Equal(child.RawIssuer, parent.RawSubject) && child.CheckSignatureFrom(parent) == nil
	}
	// A chain is rarely more than a few certificates long; the bound keeps
	// a loop of cross-signed intermediates from going round for ever.
	for range 8 {
		for _, ca := range cas {
			if bytes.Equal(cert.Raw, ca.Raw) || signed(cert, ca) {
				return true
			}
		}
		var parent *x509.Certificate
		for _, im := range intermediates {
			if !bytes.Equal(im.Raw, cert.Raw) && signed(cert, im) {
				parent = im
				break
			}
		}
		if parent == nil {
			return false
		}
		cert = parent
	}
	return false
}

// check refuses a verified chain in which any certificate is listed as
// revoked by a CRL its issuer signed. Issuers without a CRL in the file are
// not checked: the file says which issuers it speaks for.
func (r *revocations) check(chain []*x509.Certificate) error {
	set := r.current.Load()
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		for n, crl := range set.lists {
			if !bytes.Equal(crl.RawIssuer, cert.RawIssuer) || !set.signedBy(n, crl, issuer) {
				continue
			}
			for _, entry := range crl.RevokedCertificateEntries {
				if entry.SerialNumber.Cmp(cert.SerialNumber) == 0 {
					return &refusalError{reason: ReasonRevoked, cert: chain[0], err: fmt.Errorf(
						"client certificate chain includes %s (serial %s), revoked at %s",
						cert.Subject, pki.SerialHex(cert), entry.RevocationTime.UTC().Format(time.RFC3339))}
				}
			}
		}
	}
	return nil
}

func (s *crlSet) signedBy(n int, crl *x509.RevocationList, issuer *x509.Certificate) bool {
	key := fmt.Sprintf("%d/%s", n, pki.Fingerprint(issuer))
	if ok, found := s.verified.Load(key); found {
		return ok.(bool)
	}
	ok := crl.CheckSignatureFrom(issuer) == nil
	s.verified.Store(key, ok)
	return ok
}
