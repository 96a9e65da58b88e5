package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

func fixturesFrom(t *testing.T, signer *pki.Authority) *pki.Fixtures {
	t.Helper()
	set, err := pki.MakeFixtures(signer)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// audit runs an audit bounded in time and fails the test if it cannot run.
func audit(t *testing.T, url string, roots *x509.CertPool, set *pki.Fixtures) *client.AuditReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	report, err := client.Audit(ctx, client.AuditConfig{
		URL:     url,
		Timeout: 10 * time.Second,
		Options: []client.Option{client.WithRootCAs(roots)},
	}, set.List)
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	if len(report.Results) != len(set.List) {
		t.Fatalf("report has %d results for %d fixtures", len(report.Results), len(set.List))
	}
	return report
}

// withVerdict names the fixtures with the verdict, in report order.
func withVerdict(report *client.AuditReport, v client.AuditVerdict) []string {
	var names []string
	for _, r := range report.Results {
		if r.Verdict == v {
			names = append(names, r.Fixture)
		}
	}
	return names
}

func result(t *testing.T, report *client.AuditReport, name string) client.AuditResult {
	t.Helper()
	for _, r := range report.Results {
		if r.Fixture == name {
			return r
		}
	}
	t.Fatalf("no result for %s", name)
	return client.AuditResult{}
}

func TestAuditOfEcholoopIsAllRight(t *testing.T) {
	t.Parallel()
	// The fixtures, and the list that revokes one of them, come from the
	// CA the server trusts for clients.
	ca, err := pki.NewAuthority("audited CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	set := fixturesFrom(t, ca)
	crlFile := filepath.Join(t.TempDir(), pki.RevokedCRLFile)
	if err := pki.WriteFile(crlFile, set.CRL, pki.CertFileMode); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, server.WithCertificate(serverCert.TLSCertificate()),
		server.WithClientCAs(ca.Certificate), server.WithCRLFile(crlFile))

	report := audit(t, srv.URL, ca.Pool(), set)
	if !report.Passed() || report.Summary.Right != len(set.List) {
		t.Errorf("summary %+v, want all %d right: %+v", report.Summary, len(set.List), report.Results)
	}
	for _, r := range report.Results {
		for _, o := range r.Observed {
			want := client.OutcomeAccepted
			if r.Expect == pki.ExpectRefuse {
				want = client.OutcomeRefused
			}
			if o.Outcome != want || (want == client.OutcomeRefused && !strings.HasPrefix(o.Detail, "TLS alert: ")) {
				t.Errorf("%s on %s: %s (%s), want %s at the TLS layer", r.Fixture, o.Protocol, o.Outcome, o.Detail, want)
			}
		}
	}
	// Without a procedure to call, gRPC goes through server reflection:
	// echoloop lists Echo and health.
	want := "reflection lists echo.v1.EchoService, grpc.health.v1.Health"
	if got := grpcDetail(t, result(t, report, "good")); got != want {
		t.Errorf("good on grpc: %q, want %q", got, want)
	}
}

// grpcDetail is what the audit observed on gRPC for one fixture.
func grpcDetail(t *testing.T, r client.AuditResult) string {
	t.Helper()
	for _, o := range r.Observed {
		if o.Protocol == client.GRPC {
			return o.Detail
		}
	}
	t.Fatalf("%s was not tried on grpc", r.Fixture)
	return ""
}

func TestAuditCountsAPolicyDenialAsLetIn(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.WithPolicy(server.Policy{CommonNames: []string{"nobody"}}))
	set := fixturesFrom(t, srv.CA)
	report := audit(t, srv.URL, srv.CA.Pool(), set)

	good := result(t, report, "good")
	for _, o := range good.Observed {
		if o.Outcome != client.OutcomeDenied {
			t.Errorf("good on %s: %s, want denied by policy", o.Protocol, o.Outcome)
		}
	}
	if good.Verdict != client.VerdictRight || !strings.Contains(good.Note, "policy") {
		t.Errorf("good: verdict %q, note %q", good.Verdict, good.Note)
	}
	// The CRL is not loaded here, so the revoked fixture gets through TLS,
	// and the policy then denies it: denied is not wrongly accepted.
	revoked := result(t, report, "revoked")
	for _, o := range revoked.Observed {
		if o.Outcome != client.OutcomeDenied {
			t.Errorf("revoked on %s: %s, want denied by policy", o.Protocol, o.Outcome)
		}
	}
	if revoked.Verdict != client.VerdictRight || !report.Passed() {
		t.Errorf("revoked: verdict %q; summary %+v, want every verdict right", revoked.Verdict, report.Summary)
	}
}

// target is a deliberately misconfigured server and the CA of the
// fixtures the audit tries on it.
type target struct {
	url string
	ca  *pki.Authority
	set *pki.Fixtures
}

// newTarget makes a CA, its fixtures, and a server certificate for
// loopback from that CA.
func newTarget(t *testing.T) (*target, tls.Certificate) {
	t.Helper()
	ca, err := pki.NewAuthority("audited CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer(pki.DefaultServerNames)
	if err != nil {
		t.Fatal(err)
	}
	return &target{ca: ca, set: fixturesFrom(t, ca)}, serverCert.TLSCertificate()
}

// startHTTPS serves handler over HTTP/2 and TLS with the given client
// certificate checks.
func startHTTPS(t *testing.T, config *tls.Config, handler http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	// Every refused handshake would print a line; the report is the result.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = config
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

var answerOK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{}`)
})

// nginxLike finishes every handshake and refuses a bad certificate in
// HTTP, as nginx does with ssl_verify_client on.
func nginxLike(roots *x509.CertPool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		certs := r.TLS.PeerCertificates
		if len(certs) == 0 {
			http.Error(w, "400 Bad Request: No required SSL certificate was sent", http.StatusBadRequest)
			return
		}
		intermediates := x509.NewCertPool()
		for _, c := range certs[1:] {
			intermediates.AddCert(c)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil || certs[0].IsCA {
			http.Error(w, "400 Bad Request: The SSL certificate error", http.StatusBadRequest)
			return
		}
		answerOK(w, r)
	})
}

func TestAuditFindsThePlantedHoles(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		start func(t *testing.T) *target
		// holes are the fixtures a correct server refuses and this one lets
		// in, and a phrase each one's misconfiguration must contain.
		holes map[string]string
		// reflection is what the gRPC probe of the good fixture must
		// report, when the target serves reflection.
		reflection string
	}{
		{
			name: "found/net/http with RequireAnyClientCert",
			start: func(t *testing.T) *target {
				tg, cert := newTarget(t)
				tg.url = startHTTPS(t, &tls.Config{Certificates: []tls.Certificate{cert},
					ClientAuth: tls.RequireAnyClientCert}, answerOK)
				return tg
			},
			holes: map[string]string{
				"self-signed":              "RequireAnyClientCert",
				"foreign-ca":               "should not trust",
				"expired":                  "validity dates",
				"not-yet-valid":            "validity dates",
				"server-auth-only":         "extended key usage",
				"ca-as-leaf":               "is a leaf",
				"without-intermediate":     "skips verification",
				"intermediate-server-only": "extended key usage",
				"revoked":                  "revoked.crl",
			},
		},
		{
			name: "found/grpc-go with VerifyClientCertIfGiven",
			start: func(t *testing.T) *target {
				tg, cert := newTarget(t)
				grpcServer := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
					Certificates: []tls.Certificate{cert},
					ClientCAs:    tg.ca.Pool(),
					ClientAuth:   tls.VerifyClientCertIfGiven,
				})))
				reflection.Register(grpcServer)
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				go func() { _ = grpcServer.Serve(ln) }()
				t.Cleanup(grpcServer.Stop)
				tg.url = "https://" + ln.Addr().String()
				return tg
			},
			holes: map[string]string{
				"no-certificate": "VerifyClientCertIfGiven",
				"ca-as-leaf":     "is a leaf",
				"revoked":        "revoked.crl",
			},
			reflection: "reflection lists grpc.reflection.v1.ServerReflection, " +
				"grpc.reflection.v1alpha.ServerReflection",
		},
		{
			name: "found/net/http trusting a bundle that holds the foreign CA",
			start: func(t *testing.T) *target {
				tg, cert := newTarget(t)
				bundle := tg.ca.Pool()
				bundle.AddCert(tg.set.Foreign)
				tg.url = startHTTPS(t, &tls.Config{Certificates: []tls.Certificate{cert},
					ClientCAs: bundle, ClientAuth: tls.RequireAndVerifyClientCert}, answerOK)
				return tg
			},
			holes: map[string]string{
				"foreign-ca": "client CA bundle holds more than your CA",
				"ca-as-leaf": "is a leaf",
				"revoked":    "revoked.crl",
			},
		},
		{
			name: "found/nginx-like refusals in HTTP after every handshake",
			start: func(t *testing.T) *target {
				tg, cert := newTarget(t)
				tg.url = startHTTPS(t, &tls.Config{Certificates: []tls.Certificate{cert},
					ClientAuth: tls.RequestClientCert}, nginxLike(tg.ca.Pool()))
				return tg
			},
			holes: map[string]string{"revoked": "revoked.crl"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := tc.start(t)
			report := audit(t, tg.url, tg.ca.Pool(), tg.set)

			var want []string
			for _, f := range tg.set.List {
				if _, ok := tc.holes[f.Name]; ok {
					want = append(want, f.Name)
				}
			}
			if tc.reflection != "" {
				if got := grpcDetail(t, result(t, report, "good")); got != tc.reflection {
					t.Errorf("good on grpc: %q, want %q", got, tc.reflection)
				}
			}
			if got := withVerdict(report, client.VerdictWronglyAccepted); !slices.Equal(got, want) {
				t.Errorf("wrongly accepted %q, want %q", got, want)
			}
			if report.Summary.WronglyAccepted != len(want) || report.Summary.Right != len(tg.set.List)-len(want) ||
				report.Passed() {
				t.Errorf("summary %+v, want %d wrongly accepted and the rest right", report.Summary, len(want))
			}
			for i, r := range report.Results {
				phrase, hole := tc.holes[r.Fixture]
				if !hole {
					continue
				}
				if i >= len(want) {
					t.Errorf("%s is listed at %d, after fixtures that were right", r.Fixture, i)
				}
				if !strings.Contains(r.Misconfiguration, phrase) {
					t.Errorf("%s: misconfiguration %q, want it to say %q", r.Fixture, r.Misconfiguration, phrase)
				}
			}
			for _, r := range report.Results {
				if r.Verdict == client.VerdictRight && r.Expect == pki.ExpectRefuse {
					for _, o := range r.Observed {
						if o.Outcome != client.OutcomeRefused {
							t.Errorf("%s on %s: %s (%s), want refused", r.Fixture, o.Protocol, o.Outcome, o.Detail)
						}
					}
				}
			}
		})
	}
}

func TestAuditCannotTellWhenTheServerIsNotThere(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	ln.Close()

	ca, err := pki.NewAuthority("absent CA")
	if err != nil {
		t.Fatal(err)
	}
	set := fixturesFrom(t, ca)
	report := audit(t, url, ca.Pool(), set)
	if report.Summary.Unknown != len(set.List) || report.Passed() {
		t.Errorf("summary %+v, want every fixture untold and the audit failed", report.Summary)
	}
	if o := report.Results[0].Observed[0]; o.Outcome != client.OutcomeNoAnswer ||
		!strings.Contains(o.Detail, "nothing is listening") {
		t.Errorf("observation %+v, want no answer because nothing listens", o)
	}
}

func TestAuditRefusesABadConfiguration(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  client.AuditConfig
		want string
	}{
		{"refused/procedure without service", client.AuditConfig{URL: "https://localhost:1", Procedure: "/Echo"},
			"/package.Service/Method"},
		{"refused/path without slash", client.AuditConfig{URL: "https://localhost:1", Path: "v1/echo"},
			"does not start with /"},
		{"refused/plain http", client.AuditConfig{URL: "http://localhost:1"}, "mutual TLS needs TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := client.Audit(t.Context(), tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Audit: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
