package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/echoloop/echoloop/pki"
)

type pkiCmd struct {
	Init pkiInitCmd `cmd:"" help:"Write a development CA, a server and a client certificate into --certs."`
}

type pkiInitCmd struct {
	Certs   string   `default:"certs" help:"Directory to write ca.crt, ca.key, server.*, client.* into."`
	SAN     []string `name:"san" placeholder:"NAME" help:"Extra subject alternative name for the server certificate (DNS name or IP); repeatable."`
	Name    string   `default:"client" help:"Common name of the client certificate."`
	KeyType string   `default:"ecdsa-p256" enum:"ecdsa-p256,ecdsa-p384,ed25519,rsa-2048,rsa-3072,rsa-4096" help:"Key type of every key made: ${enum}."`
	Force   bool     `xor:"existing" help:"Replace existing files."`
	// KeepExisting lets a container run init on every start: a shell-less
	// image has no `test -f` to guard the command with.
	KeepExisting bool `xor:"existing" help:"When --certs already holds every file, keep them, write nothing and succeed; a partial set is still refused."`
}

func (c *pkiInitCmd) Run(out *output) error {
	if c.KeepExisting {
		kept, err := c.keep(out)
		if err != nil || kept {
			return err
		}
	}

	result, err := pki.Init(pki.InitConfig{
		Dir:        c.Certs,
		ServerSANs: c.SAN,
		ClientName: c.Name,
		KeyType:    pki.KeyType(c.KeyType),
		Force:      c.Force,
	})
	if err != nil {
		return err
	}

	for _, path := range result.Files {
		mode := "?"
		if info, err := os.Stat(path); err == nil {
			mode = fmt.Sprintf("%04o", info.Mode().Perm())
		}
		fmt.Fprintf(out.out, "wrote %s (%s)\n", path, mode)
	}
	fmt.Fprintf(out.out, "\nserver certificate covers: %s\n", strings.Join(coveredNames(result.Server.Certificate), ", "))
	fmt.Fprintf(out.out, "client certificate: CN=%s, sha256 %s\n",
		result.Client.Certificate.Subject.CommonName, pki.Fingerprint(result.Client.Certificate))
	fmt.Fprintf(out.out, "the CA key %s/%s signs new certificates: keep it private\n", c.Certs, pki.CAKeyFile)
	fmt.Fprintf(out.out, "\nnext: echoloop serve --certs %s   and   echoloop call --certs %s --protocol all\n",
		c.Certs, c.Certs)
	return nil
}

// keep reports whether --certs already holds the whole set, so that there
// is nothing to write. A set whose server certificate lacks a name asked
// for with --san is an error rather than kept: a server that clients
// cannot verify under that name would fail later and less clearly.
func (c *pkiInitCmd) keep(out *output) (bool, error) {
	for _, name := range []string{
		pki.CACertFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile, pki.ClientCertFile, pki.ClientKeyFile,
	} {
		info, err := os.Stat(filepath.Join(c.Certs, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, nil // pki.Init makes the set, or names what is in the way
		case err != nil:
			return false, fmt.Errorf("checking %q: %w", filepath.Join(c.Certs, name), err)
		case !info.Mode().IsRegular():
			return false, nil
		}
	}

	serverFile := filepath.Join(c.Certs, pki.ServerCertFile)
	certs, err := pki.LoadCertificates(serverFile)
	if err != nil {
		return false, err
	}
	server := certs[0]
	for _, name := range c.SAN {
		if server.VerifyHostname(name) != nil {
			return false, fmt.Errorf("keeping %q: it does not cover %q, asked for with --san (it covers: %s); "+
				"pass --force instead of --keep-existing to replace the set", serverFile, name,
				strings.Join(coveredNames(server), ", "))
		}
	}
	fmt.Fprintf(out.out, "kept the certificates already in %s: nothing written\n", c.Certs)
	fmt.Fprintf(out.out, "server certificate covers: %s\n", strings.Join(coveredNames(server), ", "))
	return true, nil
}

// coveredNames lists the names a server certificate is valid for.
func coveredNames(cert *x509.Certificate) []string {
	names := append([]string{}, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	return append(names, cert.EmailAddresses...)
}
