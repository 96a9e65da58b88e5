package server_test

// The refusal matrix: every certificate case people hit, on every protocol,
// with the same outcome on all four, the sentence the client shows, and the
// line the server logs. Every fixture is made here, at test time.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

// matrixCase is one client certificate and what a correct server does with it.
type matrixCase struct {
	name string
	// present builds the certificate to present from the server's CA; nil
	// presents none.
	present func(t *testing.T, ca *pki.Authority) *pki.Issued
	// For refusals: the server's logged reason and a part of the client's sentence.
	reason    string
	wantCause string
	// For acceptances: a check of the identity the server reports.
	checkPeer func(t *testing.T, issued *pki.Issued, peer *echov1.Peer)
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func issued(t *testing.T, build func() (*pki.Issued, error)) *pki.Issued {
	t.Helper()
	return must[*pki.Issued](t)(build())
}

func TestRefusalMatrix(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

	cases := []matrixCase{
		{
			name:      "refused/no certificate",
			reason:    server.ReasonNoCertificate,
			wantCause: "requires a client certificate and none was sent",
		},
		{
			name: "refused/self-signed",
			present: func(t *testing.T, _ *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) { return pki.NewSelfSigned("selfie", clientAuth) })
			},
			reason:    server.ReasonUnknownAuthority,
			wantCause: "is self-signed: no CA vouches for it",
		},
		{
			name: "refused/signed by another CA",
			present: func(t *testing.T, _ *pki.Authority) *pki.Issued {
				other := must[*pki.Authority](t)(pki.NewAuthority("another CA"))
				return issued(t, func() (*pki.Issued, error) { return other.IssueClient("stranger") })
			},
			reason:    server.ReasonUnknownAuthority,
			wantCause: `does not trust the CA that issued the client certificate (issuer "CN=another CA`,
		},
		{
			name: "refused/expired",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient("old", pki.WithValidity(now.Add(-48*time.Hour), now.Add(-24*time.Hour)))
				})
			},
			reason:    server.ReasonExpired,
			wantCause: "has expired: valid until",
		},
		{
			name: "refused/not yet valid",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient("early", pki.WithValidity(now.Add(24*time.Hour), now.Add(48*time.Hour)))
				})
			},
			reason:    server.ReasonNotYetValid,
			wantCause: "is not yet valid: valid from",
		},
		{
			// The issuer's clock runs three minutes ahead of the server's; a
			// certificate it issued a minute ago starts, by the server's clock,
			// two minutes from now, were it not backdated.
			name: "ok/issued a minute ago by a clock three minutes ahead",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient("skewed", pki.WithIssuedAt(now.Add(3*time.Minute-time.Minute)))
				})
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				if peer.GetCommonName() != "skewed" {
					t.Errorf("common name = %q, want skewed", peer.GetCommonName())
				}
			},
		},
		{
			name: "refused/server certificate reused as a client one",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) { return ca.IssueServer([]string{"api.example.org"}) })
			},
			reason:    server.ReasonWrongKeyUsage,
			wantCause: "is not for client authentication: its extended key usages are serverAuth",
		},
		{
			name: "refused/CA certificate presented as a leaf",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return ca.AsIssued()
			},
			reason:    server.ReasonCAAsLeaf,
			wantCause: "is a CA certificate",
		},
		{
			name: "refused/intermediate whose key usage excludes clientAuth",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				servers := must[*pki.Authority](t)(ca.NewIntermediate("servers only",
					pki.WithUsage(x509.ExtKeyUsageServerAuth)))
				return issued(t, func() (*pki.Issued, error) { return servers.IssueClient("misplaced") })
			},
			reason:    server.ReasonWrongKeyUsage,
			wantCause: `the intermediate "CN=servers only,O=echoloop development" in the client certificate does not allow client authentication`,
		},
		{
			name: "ok/chain with its intermediate",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				issuing := must[*pki.Authority](t)(ca.NewIntermediate("issuing CA"))
				return issued(t, func() (*pki.Issued, error) { return issuing.IssueClient("chained") })
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				chain := peer.GetChain()
				if len(chain) != 3 || !strings.Contains(chain[1], "issuing CA") || !strings.Contains(chain[2], "servertest CA") {
					t.Errorf("chain = %q, want leaf, issuing CA, servertest CA", chain)
				}
			},
		},
		{
			name: "refused/leaf without its intermediate",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				issuing := must[*pki.Authority](t)(ca.NewIntermediate("issuing CA"))
				return issued(t, func() (*pki.Issued, error) { return issuing.IssueClient("orphan") }).LeafOnly()
			},
			reason:    server.ReasonUnknownAuthority,
			wantCause: `(issuer "CN=issuing CA,O=echoloop development")`,
		},
		{
			name: "ok/SPIFFE ID",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient("workload", pki.WithSANs("spiffe://example.org/ns/prod/sa/api"))
				})
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				if peer.GetSpiffeId() != "spiffe://example.org/ns/prod/sa/api" ||
					len(peer.GetUris()) != 1 || peer.GetUris()[0] != peer.GetSpiffeId() {
					t.Errorf("spiffe id %q, uris %q", peer.GetSpiffeId(), peer.GetUris())
				}
			},
		},
		{
			name: "ok/e-mail SAN",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient("mailer", pki.WithSANs("ops@example.org"))
				})
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				if got := peer.GetEmailAddresses(); len(got) != 1 || got[0] != "ops@example.org" {
					t.Errorf("email addresses = %q", got)
				}
			},
		},
		{
			name: "ok/IP SAN",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient("node", pki.WithSANs("10.1.2.3", "fd00::7"))
				})
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				if got := peer.GetIpAddresses(); len(got) != 2 || got[0] != "10.1.2.3" || got[1] != "fd00::7" {
					t.Errorf("ip addresses = %q", got)
				}
			},
		},
		{
			name: "ok/no SAN at all",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) { return ca.IssueClient("bare") })
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				if len(peer.GetDnsNames())+len(peer.GetUris())+len(peer.GetEmailAddresses())+len(peer.GetIpAddresses()) != 0 ||
					peer.GetSpiffeId() != "" || peer.GetCommonName() != "bare" {
					t.Errorf("peer = %v, want CN bare and no SAN", peer)
				}
			},
		},
	}
	for _, kt := range []pki.KeyType{pki.KeyRSA2048, pki.KeyECDSAP256, pki.KeyECDSAP384, pki.KeyEd25519} {
		cases = append(cases, matrixCase{
			name: "ok/" + string(kt) + " key",
			present: func(t *testing.T, ca *pki.Authority) *pki.Issued {
				return issued(t, func() (*pki.Issued, error) {
					return ca.IssueClient(string(kt), pki.WithKeyType(kt))
				})
			},
			checkPeer: func(t *testing.T, _ *pki.Issued, peer *echov1.Peer) {
				if peer.GetCommonName() != string(kt) {
					t.Errorf("common name = %q, want %s", peer.GetCommonName(), kt)
				}
			},
		})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runMatrixCase(t, tc)
		})
	}
}

func runMatrixCase(t *testing.T, tc matrixCase) {
	srv := servertest.Start(t)
	opts := []client.Option{client.WithRootCAs(srv.CA.Pool())}
	var presented *pki.Issued
	if tc.present != nil {
		presented = tc.present(t, srv.CA)
		opts = append(opts, client.WithCertificate(presented.TLSCertificate()))
	}
	c, err := client.New(srv.URL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	for _, p := range client.Protocols() {
		resp, err := c.Echo(callContext(t), p, "matrix")
		if tc.reason == "" {
			if err != nil {
				t.Fatalf("%s: refused, want accepted: %v", p, err)
			}
			if resp.GetPeer().GetSha256Fingerprint() != pki.Fingerprint(presented.Certificate) {
				t.Errorf("%s: peer fingerprint is not the presented certificate's", p)
			}
			tc.checkPeer(t, presented, resp.GetPeer())
			continue
		}

		var explained *client.Error
		if !errors.As(err, &explained) {
			t.Fatalf("%s: error is not explained: %v", p, err)
		}
		if !strings.Contains(explained.Cause, tc.wantCause) {
			t.Errorf("%s: cause = %q, want it to contain %q", p, explained.Cause, tc.wantCause)
		}
		if explained.Fix == "" {
			t.Errorf("%s: no fix given for %q", p, explained.Cause)
		}
		if code := connect.CodeOf(err); code != connect.CodeUnavailable && code != connect.CodeCanceled {
			t.Errorf("%s: code = %v, want unavailable", p, code)
		}
	}
	if tc.reason != "" {
		assertRefusalsLogged(t, srv, tc.reason, presented, len(client.Protocols()))
	}
}

// assertRefusalsLogged waits for n refused-handshake lines with the reason
// and checks each.
func assertRefusalsLogged(
	t *testing.T,
	srv *servertest.Server,
	reason string,
	presented *pki.Issued,
	n int,
) {
	t.Helper()
	for _, line := range srv.WaitForRefusals(t, reason, n) {
		checkRefusalLine(t, line, presented)
	}
}

func checkRefusalLine(t *testing.T, line map[string]any, presented *pki.Issued) {
	t.Helper()
	if remote, _ := line[server.KeyRemote].(string); !strings.HasPrefix(remote, "127.0.0.1:") {
		t.Errorf("refusal line has remote %q, want the client's address", remote)
	}
	if presented == nil {
		return
	}
	leaf := presented.Certificate
	want := map[string]string{
		server.KeyPeerSubject:  leaf.Subject.String(),
		server.KeyPeerIssuer:   leaf.Issuer.String(),
		server.KeyPeerSerial:   pki.SerialHex(leaf),
		server.KeyPeerNotAfter: leaf.NotAfter.UTC().Format(time.RFC3339),
		server.KeyPeerSHA256:   pki.Fingerprint(leaf),
	}
	for key, value := range want {
		if line[key] != value {
			t.Errorf("refusal line %s = %v, want %q", key, line[key], value)
		}
	}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	policy := server.Policy{
		CommonNames:         []string{"alice"},
		DNSNames:            []string{"*.workers.example.org"},
		URIs:                []string{"spiffe://prod.example.org/*", "https://api.example.org/*"},
		OrganizationalUnits: []string{"payments"},
	}
	srv := servertest.Start(t, server.WithPolicy(policy))
	sans := func(values ...string) []pki.Option { return []pki.Option{pki.WithSANs(values...)} }

	cases := []struct {
		name    string
		opts    []pki.Option
		cn      string
		allowed bool
	}{
		{"ok/common name", nil, "alice", true},
		{"ok/DNS wildcard", []pki.Option{pki.WithSANs("w1.workers.example.org")}, "w1", true},
		{"ok/SPIFFE trust domain", []pki.Option{pki.WithSANs("spiffe://prod.example.org/ns/a/sa/b")}, "svc", true},
		{"ok/organisational unit", []pki.Option{pki.WithOrganizationalUnit("payments")}, "pay", true},
		{"denied/other common name", nil, "mallory", false},
		{"denied/DNS two labels below the wildcard", []pki.Option{pki.WithSANs("a.b.workers.example.org")}, "deep", false},
		{"denied/look-alike trust domain", []pki.Option{pki.WithSANs("spiffe://prod.example.org.evil/x")}, "evil", false},
		{"denied/other organisational unit", []pki.Option{pki.WithOrganizationalUnit("marketing")}, "mkt", false},
		{"ok/other URI pattern on any of several URI SANs",
			sans("spiffe://evil.com/x", "https://api.example.org/v1"), "api", true},
		// An X.509-SVID has exactly one URI SAN: with two, the certificate
		// has no SPIFFE ID for a spiffe pattern to match, whichever is first.
		{"denied/allowed SPIFFE ID second of two URI SANs",
			sans("spiffe://evil.com/x", "spiffe://prod.example.org/y"), "second", false},
		{"denied/allowed SPIFFE ID first of two URI SANs",
			sans("spiffe://prod.example.org/y", "spiffe://evil.com/x"), "first", false},
		{"denied/SPIFFE ID with an upper-case trust domain",
			sans("spiffe://PROD.example.org/x"), "upper", false},
		{"denied/SPIFFE ID with a trailing slash", sans("spiffe://prod.example.org/x/"), "slash", false},
		{"denied/DNS SAN that is itself the wildcard", sans("*.workers.example.org"), "star", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert := issued(t, func() (*pki.Issued, error) { return srv.CA.IssueClient(tc.cn, tc.opts...) })
			c := newTestClient(t, srv, cert)

			var messages []string
			for _, p := range client.Protocols() {
				_, err := c.Echo(callContext(t), p, "policy")
				if tc.allowed {
					if err != nil {
						t.Errorf("%s: %v, want allowed", p, err)
					}
					continue
				}
				if connect.CodeOf(err) != connect.CodePermissionDenied {
					t.Errorf("%s: code %v (%v), want permission_denied", p, connect.CodeOf(err), err)
					continue
				}
				var connectErr *connect.Error
				if errors.As(err, &connectErr) {
					messages = append(messages, connectErr.Message())
				}
			}
			if !tc.allowed {
				if len(messages) != len(client.Protocols()) {
					t.Fatalf("messages = %q", messages)
				}
				for _, m := range messages[1:] {
					if m != messages[0] {
						t.Errorf("denial messages differ across protocols: %q", messages)
					}
				}
				if !strings.Contains(messages[0], pki.Fingerprint(cert.Certificate)) ||
					!strings.Contains(messages[0], "not allowed by this server's policy") {
					t.Errorf("denial message = %q, want it to name the certificate and the policy", messages[0])
				}
			}
		})
	}

	t.Run("denied/health and reflection follow the policy", func(t *testing.T) {
		t.Parallel()
		cert := issued(t, func() (*pki.Issued, error) { return srv.CA.IssueClient("mallory") })
		c := newTestClient(t, srv, cert)
		if _, err := c.Health(callContext(t)); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("health: %v, want permission_denied", err)
		}
		if code := reflectionCode(t, srv, cert); code != codes.PermissionDenied {
			t.Errorf("reflection for mallory: %v, want PermissionDenied", code)
		}
		alice := issued(t, func() (*pki.Issued, error) { return srv.CA.IssueClient("alice") })
		if code := reflectionCode(t, srv, alice); code != codes.OK {
			t.Errorf("reflection for alice: %v, want OK", code)
		}
	})

	// The server names each denied client in its log.
	t.Cleanup(func() {
		waitFor(t, "denials are logged", func() bool {
			for _, line := range srv.Logs() {
				if line["msg"] == "call denied by policy" && line[server.KeyPeerCN] == "mallory" &&
					line[server.KeyPeerSubject] == "CN=mallory,O=echoloop development" &&
					len(fmt.Sprint(line[server.KeyPeerSHA256])) == 64 &&
					line[server.KeyProcedure] == "/echo.v1.EchoService/Echo" {
					return true
				}
			}
			return false
		})
	})
}

// TestSeveralURISANsGiveNoSPIFFEID checks that the identity reported and
// the identity judged agree for a certificate with two spiffe URI SANs:
// neither is its SPIFFE ID, and the denial log says why.
func TestSeveralURISANsGiveNoSPIFFEID(t *testing.T) {
	t.Parallel()
	open := servertest.Start(t)
	narrow := servertest.Start(t,
		server.WithPolicy(server.Policy{URIs: []string{"spiffe://example.org/*"}}))
	uris := []string{"spiffe://evil.com/x", "spiffe://example.org/y"}

	t.Run("ok/reported without a SPIFFE ID", func(t *testing.T) {
		t.Parallel()
		cert := issued(t, func() (*pki.Issued, error) {
			return open.CA.IssueClient("two", pki.WithSANs(uris...))
		})
		c := newTestClient(t, open, cert)
		for _, p := range client.Protocols() {
			resp, err := c.Echo(callContext(t), p, "spiffe")
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if got := resp.GetPeer().GetSpiffeId(); got != "" {
				t.Errorf("%s: spiffeId = %q, want none for a certificate with two URI SANs", p, got)
			}
			if got := resp.GetPeer().GetUris(); !slices.Equal(got, uris) {
				t.Errorf("%s: uris = %q, want %q", p, got, uris)
			}
		}
	})

	t.Run("denied/with the reason logged", func(t *testing.T) {
		t.Parallel()
		cert := issued(t, func() (*pki.Issued, error) {
			return narrow.CA.IssueClient("two", pki.WithSANs(uris...))
		})
		c := newTestClient(t, narrow, cert)
		for _, p := range client.Protocols() {
			_, err := c.Echo(callContext(t), p, "spiffe")
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("%s: %v, want permission_denied", p, err)
			}
		}
		waitFor(t, "the denial names the two URI SANs", func() bool {
			for _, line := range narrow.Logs() {
				msg, _ := line[server.KeyError].(string)
				if line["msg"] == "call denied by policy" &&
					line[server.KeyReason] == server.ReasonSeveralURISANs &&
					strings.Contains(msg, "certificate has 2 URI SANs") &&
					strings.Contains(msg, "exactly one URI SAN") {
					return true
				}
			}
			return false
		})

		// The same SPIFFE ID alone is let in and reported.
		alone := issued(t, func() (*pki.Issued, error) {
			return narrow.CA.IssueClient("one", pki.WithSANs(uris[1]))
		})
		resp, err := newTestClient(t, narrow, alone).Echo(callContext(t), client.GRPC, "spiffe")
		if err != nil {
			t.Fatalf("the lone SPIFFE ID was refused: %v", err)
		}
		if got := resp.GetPeer().GetSpiffeId(); got != uris[1] {
			t.Errorf("spiffeId = %q, want %q", got, uris[1])
		}
	})
}

func TestPlainRouteDeniedIs403(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithPolicy(server.Policy{CommonNames: []string{"someone else"}}))
	hc := mtlsHTTPClient(t, srv)
	resp, err := hc.Post(srv.URL+server.PlainHTTPPath, "application/json", strings.NewReader(`{"message":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("status = %d, want 403", resp.StatusCode)
	}
}

func TestPolicyPatternsAreValidated(t *testing.T) {
	t.Parallel()
	for _, p := range []server.Policy{
		{URIs: []string{"no-scheme"}},
		{URIs: []string{"spiffe://example.org/*/x"}},
		{DNSNames: []string{"a.*.example.org"}},
		{URIs: []string{"spiffe://EXAMPLE.org/*"}},
		{URIs: []string{"spiffe://example.org/x/"}},
	} {
		if _, err := server.New(server.WithPolicy(p)); err == nil || !strings.Contains(err.Error(), "allowed") {
			t.Errorf("policy %+v: error = %v, want it refused", p, err)
		}
	}
}
