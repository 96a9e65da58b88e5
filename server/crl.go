package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
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
}

// crlSet is one loaded CRL file.
type crlSet struct {
	lists  []*x509.RevocationList
	digest [sha256.Size]byte // of the file, to skip reloads of an unchanged one
	// verified caches which issuer certificate each list's signature was
	// checked against, so a handshake pays for a signature check once per
	// list and issuer rather than every time.
	verified sync.Map // key: list index + issuer fingerprint; value: bool
}

func loadRevocations(path string) (*revocations, error) {
	r := &revocations{path: path}
	set, err := readCRLSet(path)
	if err != nil {
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
	lists, err := pki.ParseCRLs(path, data)
	if err != nil {
		return nil, err
	}
	return &crlSet{lists: lists, digest: sha256.Sum256(data)}, nil
}

// reload re-reads the CRL file and reports whether a new list is in force;
// an unchanged file is left alone unless always is set. A file that does
// not parse is refused with a log line and the error, and the lists
// already loaded stay in force.
func (r *revocations) reload(log *slog.Logger, always bool) (bool, error) {
	set, err := readCRLSet(r.path)
	if err != nil {
		log.Error("revocation list not reloaded; the previous one stays in force",
			"file", r.path, KeyError, err.Error())
		return false, err
	}
	if !always && set.digest == r.current.Load().digest {
		return false, nil
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
	return true, nil
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
