package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
)

func TestAgree(t *testing.T) {
	t.Parallel()
	answer := func(fingerprint string) *echov1.EchoResponse {
		return &echov1.EchoResponse{Peer: &echov1.Peer{CommonName: "client", Sha256Fingerprint: fingerprint}}
	}

	cases := []struct {
		name    string
		results []client.Result
		want    string // empty: agreement
	}{
		{"ok/all the same", []client.Result{
			{Protocol: client.Connect, Response: answer("aa")},
			{Protocol: client.GRPC, Response: answer("aa")},
		}, ""},
		{"refused/one identity differs", []client.Result{
			{Protocol: client.Connect, Response: answer("aa")},
			{Protocol: client.GRPC, Response: answer("aa")},
			{Protocol: client.HTTP, Response: answer("bb")},
		}, "http saw a different identity than connect (fingerprint bb, not aa)"},
		{"refused/one call failed", []client.Result{
			{Protocol: client.Connect, Response: answer("aa")},
			{Protocol: client.GRPCWeb, Err: errors.New("boom")},
		}, "grpc-web failed: boom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := client.Agree(tc.results)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Agree = %v, want agreement", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Agree = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
