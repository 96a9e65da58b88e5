package client_test

import (
	"testing"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
	"github.com/echoloop/echoloop/server/servertest"
)

func TestRefusedByServer(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t)
	strict := servertest.Start(t, server.WithPolicy(server.Policy{CommonNames: []string{"someone-else"}}))

	foreignCA, err := pki.NewAuthority("foreign CA")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := foreignCA.IssueClient("intruder")
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		url  string
		opts []client.Option
		want bool
	}{
		{
			name: "refused/foreign CA",
			url:  srv.URL,
			opts: []client.Option{client.WithRootCAs(srv.CA.Pool()), client.WithCertificate(foreign.TLSCertificate())},
			want: true,
		},
		{
			name: "refused/no certificate",
			url:  srv.URL,
			opts: []client.Option{client.WithRootCAs(srv.CA.Pool())},
			want: true,
		},
		{
			// Denied by policy after a handshake the server accepted.
			name: "not refused/permission denied",
			url:  strict.URL,
			opts: []client.Option{client.WithRootCAs(strict.CA.Pool()), client.WithCertificate(strict.Client.TLSCertificate())},
		},
		{
			// This client turned the server down, not the other way round.
			name: "not refused/server certificate untrusted",
			url:  srv.URL,
			opts: []client.Option{client.WithRootCAs(foreignCA.Pool()), client.WithCertificate(srv.Client.TLSCertificate())},
		},
		{
			name: "not refused/nothing listening",
			url:  "https://127.0.0.1:1",
			opts: []client.Option{client.WithRootCAs(srv.CA.Pool()), client.WithCertificate(srv.Client.TLSCertificate())},
		},
	}
	for _, tc := range cases {
		for _, p := range client.Protocols() {
			t.Run(tc.name+"/"+string(p), func(t *testing.T) {
				t.Parallel()
				c := newClient(t, tc.url, tc.opts...)
				_, err := c.Echo(callContext(t), p, "let me in")
				if err == nil {
					t.Fatal("call succeeded, want it to fail")
				}
				if got := client.RefusedByServer(err); got != tc.want {
					t.Errorf("RefusedByServer = %v, want %v for %v", got, tc.want, err)
				}
			})
		}
	}

	if client.RefusedByServer(nil) {
		t.Error("RefusedByServer(nil) = true, want false")
	}
}
