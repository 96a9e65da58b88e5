package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestCallExpectRefusal(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
		t.Fatal(errOut)
	}
	url := startServe(t, certs, "--certs", certs)

	// A whole set from another `pki init`: its client certificate comes
	// from a CA the server does not trust.
	foreign := t.TempDir()
	if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", foreign, "--name", "intruder"); code != exitOK {
		t.Fatal(errOut)
	}
	intruder := func(args ...string) []string {
		return append([]string{"call", "--url", url, "--certs", foreign,
			"--cacert", filepath.Join(certs, "ca.crt"), "--expect-refusal"}, args...)
	}

	cases := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    []string
		wantStderr string
	}{
		{
			name:     "ok/refused on every protocol",
			args:     intruder("--protocol", "all"),
			wantCode: exitOK,
			wantOut: []string{
				"grpc-web: unavailable: the server does not trust the CA that issued",
				"refused by the server on all 4 protocols, as expected",
			},
		},
		{
			name:     "ok/refused on one protocol",
			args:     intruder("--protocol", "grpc"),
			wantCode: exitOK,
			wantOut: []string{
				"grpc: unavailable: the server does not trust the CA that issued",
				"refused by the server on the one protocol called, as expected",
			},
		},
		{
			name:     "ok/as JSON",
			args:     intruder("--protocol", "all", "--json"),
			wantCode: exitOK,
			wantOut:  []string{`{"error":{"code":"unavailable"`},
		},
		{
			name:       "fails/a trusted client is accepted",
			args:       []string{"call", "--url", url, "--certs", certs, "--protocol", "all", "--expect-refusal"},
			wantCode:   exitFail,
			wantOut:    []string{"identical on all 4 protocols"},
			wantStderr: "the server accepted this client over connect, grpc, grpc-web, http, but it was expected to refuse it",
		},
		{
			name:       "fails/nothing listening",
			args:       []string{"call", "--url", "https://" + freeLoopbackAddr(t), "--certs", foreign, "--expect-refusal"},
			wantCode:   exitFail,
			wantOut:    []string{"connect: unavailable: nothing is listening"},
			wantStderr: "but connect failed for another reason",
		},
		{
			name:       "fails/the server's certificate is not trusted",
			args:       []string{"call", "--url", url, "--certs", foreign, "--protocol", "all", "--expect-refusal"},
			wantCode:   exitFail,
			wantOut:    []string{"this client does not trust the server's certificate"},
			wantStderr: "but connect, grpc, grpc-web, http failed for another reason",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCommand(t.Context(), tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, out, errOut)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(errOut, tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tc.wantStderr)
			}
		})
	}
}
