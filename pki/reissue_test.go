package pki_test

import (
	"path/filepath"
	"testing"

	"github.com/echoloop/echoloop/pki"
)

func TestReissueCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	res, err := pki.Init(pki.InitConfig{Dir: dir, ServerSANs: []string{"api.internal"}, ClientName: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	rsa, _, err := pki.IssueFiles(dir, "", pki.ClientUsage, "bob", []string{"spiffe://example.org/bob"}, false,
		pki.WithKeyType(pki.KeyRSA2048))
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name string
		file string
		got  string
		want string
	}{
		{
			name: "ok/the server certificate of init keeps its file and every name",
			got:  pki.ReissueCommand(filepath.Join(dir, pki.ServerCertFile), res.Server.Certificate),
			want: "echoloop pki issue server server --certs " + dir +
				" --san localhost --san api.internal --san 127.0.0.1 --san ::1 --force",
		},
		{
			name: "ok/a client certificate whose name is not its file's says where it writes",
			got:  pki.ReissueCommand(filepath.Join(dir, pki.ClientCertFile), res.Client.Certificate),
			want: "echoloop pki issue client alice --certs " + dir + " --force (it writes " +
				filepath.Join(dir, "alice.crt") + " and " + filepath.Join(dir, "alice.key") + ")",
		},
		{
			name: "ok/an issued client certificate keeps its SANs and key type",
			got:  pki.ReissueCommand(filepath.Join(dir, "bob.crt"), rsa.Certificate),
			want: "echoloop pki issue client bob --certs " + dir +
				" --san spiffe://example.org/bob --key-type rsa-2048 --force",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.got != tc.want {
				t.Errorf("ReissueCommand =\n  %s\nwant\n  %s", tc.got, tc.want)
			}
		})
	}
}
