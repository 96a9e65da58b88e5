package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKIInitKeepExisting(t *testing.T) {
	t.Parallel()

	t.Run("ok/writes a set where there is none", func(t *testing.T) {
		t.Parallel()
		certs := filepath.Join(t.TempDir(), "certs")
		out, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--san", "server", "--keep-existing")
		if code != exitOK || !strings.Contains(out, "wrote ") {
			t.Fatalf("exit %d, stdout %q, stderr %q; want the set written", code, out, errOut)
		}
	})

	t.Run("ok/keeps a whole set untouched", func(t *testing.T) {
		t.Parallel()
		certs := t.TempDir()
		if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--san", "server"); code != exitOK {
			t.Fatal(errOut)
		}
		before := readAll(t, certs)

		out, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--san", "server", "--keep-existing")
		if code != exitOK {
			t.Fatalf("exit %d: %s%s", code, out, errOut)
		}
		for _, want := range []string{"kept the certificates already in " + certs, "server certificate covers: localhost, server"} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q:\n%s", want, out)
			}
		}
		for name, data := range readAll(t, certs) {
			if !bytes.Equal(data, before[name]) {
				t.Errorf("%s changed", name)
			}
		}
	})

	t.Run("refused/a partial set", func(t *testing.T) {
		t.Parallel()
		certs := t.TempDir()
		if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
			t.Fatal(errOut)
		}
		for _, name := range []string{"server.crt", "client.key"} {
			if err := os.Remove(filepath.Join(certs, name)); err != nil {
				t.Fatal(err)
			}
		}
		_, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--keep-existing")
		want := "the set is partial, missing server.crt, client.key (present: ca.crt, ca.key, server.key, client.crt)"
		if code != exitFail || !strings.Contains(errOut, want) || !strings.Contains(errOut, "--force") {
			t.Errorf("exit %d, stderr %q; want a refusal naming what is missing: %q", code, errOut, want)
		}
		if _, err := os.Stat(filepath.Join(certs, "client.key")); err == nil {
			t.Error("client.key was written into a partial set")
		}
	})

	t.Run("refused/a kept server certificate without the name asked for", func(t *testing.T) {
		t.Parallel()
		certs := t.TempDir()
		if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
			t.Fatal(errOut)
		}
		_, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--san", "server", "--keep-existing")
		if code != exitFail || !strings.Contains(errOut, `does not cover "server", asked for with --san`) ||
			!strings.Contains(errOut, "--force") {
			t.Errorf("exit %d, stderr %q; want the missing name and --force named", code, errOut)
		}
	})

	t.Run("refused/a kept set made for another name or key type", func(t *testing.T) {
		t.Parallel()
		certs := t.TempDir()
		if _, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs); code != exitOK {
			t.Fatal(errOut)
		}
		before := readAll(t, certs)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--name", "bob"}, "it is for CN=client, not CN=bob asked for with --name"},
			{[]string{"--key-type", "rsa-2048"}, "its key is ECDSA P-256, not rsa-2048 asked for with --key-type"},
		} {
			args := append([]string{"pki", "init", "--certs", certs, "--keep-existing"}, tc.args...)
			_, errOut, code := runCommand(t.Context(), args...)
			if code != exitFail || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "--force") {
				t.Errorf("%v: exit %d, stderr %q; want %q and --force named", tc.args, code, errOut, tc.want)
			}
		}
		// Values the kept set matches are no reason to refuse it.
		out, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", certs, "--keep-existing",
			"--name", "client", "--key-type", "ecdsa-p256")
		if code != exitOK || !strings.Contains(out, "kept the certificates") {
			t.Errorf("matching --name and --key-type: exit %d, %s%s", code, out, errOut)
		}
		for name, data := range readAll(t, certs) {
			if !bytes.Equal(data, before[name]) {
				t.Errorf("%s changed", name)
			}
		}
	})

	t.Run("refused/with --force", func(t *testing.T) {
		t.Parallel()
		_, errOut, code := runCommand(t.Context(), "pki", "init", "--certs", t.TempDir(), "--keep-existing", "--force")
		if code != exitUsage || !strings.Contains(errOut, "--force and --keep-existing") {
			t.Errorf("exit %d, stderr %q; want a usage error naming both flags", code, errOut)
		}
	})
}

// readAll returns every file in dir by name.
func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = data
	}
	return files
}
