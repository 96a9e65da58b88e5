package pki_test

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/echoloop/echoloop/pki"
)

func TestCheckSPIFFEID(t *testing.T) {
	t.Parallel()
	cases := []struct {
		id      string
		wantErr string // empty for a valid ID
	}{
		{"spiffe://example.org/ns/prod/sa/web", ""},
		{"spiffe://example.org", ""},
		{"spiffe://my_domain-1.example.org/A.b-c_D", ""},
		{"spiffe://", "has no trust domain"},
		{"spiffe:///x", "has no trust domain"},
		{"spiffe://example.org/", "empty path segment"},
		{"spiffe://example.org//x", "empty path segment"},
		{"spiffe://example.org/x/", "empty path segment"},
		{"spiffe://example.org/./x", `"." path segment`},
		{"spiffe://example.org/x/..", `".." path segment`},
		{"spiffe://EXAMPLE.org/x", "lower-case letters"},
		{"spiffe://example.org:8443/x", "lower-case letters"},
		{"spiffe://user@example.org/x", "lower-case letters"},
		{"spiffe://example.org/x?q=1", "a path segment may hold only"},
		{"spiffe://example.org/x#f", "a path segment may hold only"},
		{"spiffe://example.org/a%20b", "a path segment may hold only"},
		{"SPIFFE://example.org/x", "must start with spiffe://"},
		{"https://example.org/x", "must start with spiffe://"},
		{"spiffe://" + strings.Repeat("a", 256) + "/x", "trust domain longer than 255"},
		{"spiffe://example.org/" + strings.Repeat("a", 2048), "longer than 2048 bytes"},
	}
	for _, tc := range cases {
		err := pki.CheckSPIFFEID(tc.id)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckSPIFFEID(%q) = %v, want valid", tc.id, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckSPIFFEID(%q) = %v, want an error with %q", tc.id, err, tc.wantErr)
		}
	}
}

func TestSPIFFEIDNeedsExactlyOneURISAN(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewAuthority("spiffe test CA")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		sans    []string
		want    string
		wantErr error // the error wrapped, when one is
		anyErr  bool  // an error is wanted, whichever
	}{
		{"ok/one SPIFFE ID", []string{"spiffe://example.org/y"}, "spiffe://example.org/y", nil, false},
		{"ok/no URI at all", []string{"client.example.org"}, "", nil, false},
		{"ok/other URIs only", []string{"https://a.example.org/", "urn:x:y"}, "", nil, false},
		{"none/two URI SANs", []string{"spiffe://evil.com/x", "spiffe://example.org/y"}, "",
			pki.ErrSeveralURISANs, true},
		{"none/a SPIFFE ID beside an https URI",
			[]string{"https://a.example.org/", "spiffe://example.org/y"}, "", pki.ErrSeveralURISANs, true},
		{"none/an invalid SPIFFE ID", []string{"spiffe://EXAMPLE.org/y"}, "", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			issued, err := ca.IssueClient("c", pki.WithSANs(tc.sans...))
			if err != nil {
				t.Fatal(err)
			}
			got, err := pki.SPIFFEID(issued.Certificate)
			if got != tc.want {
				t.Errorf("SPIFFEID = %q, want %q", got, tc.want)
			}
			switch {
			case !tc.anyErr && err != nil:
				t.Errorf("error = %v, want none", err)
			case tc.anyErr && err == nil:
				t.Error("no error, want one saying why the URI is no SPIFFE ID")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("error = %v, want %v", err, tc.wantErr)
			}
		})
	}

	// A URI that parses but was never a SAN of a real certificate still
	// gets the same rule.
	leaf := &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/x/"}}}
	if id, err := pki.SPIFFEID(leaf); id != "" || err == nil {
		t.Errorf("SPIFFEID with a trailing slash = %q, %v; want none and an error", id, err)
	}
}
