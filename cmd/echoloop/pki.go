package main

import (
	"fmt"
	"os"
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
	Force   bool     `help:"Replace existing files."`
}

func (c *pkiInitCmd) Run(out *output) error {
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
	server := result.Server.Certificate
	names := append([]string{}, server.DNSNames...)
	for _, ip := range server.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range server.URIs {
		names = append(names, u.String())
	}
	names = append(names, server.EmailAddresses...)
	fmt.Fprintf(out.out, "\nserver certificate covers: %s\n", strings.Join(names, ", "))
	fmt.Fprintf(out.out, "client certificate: CN=%s, sha256 %s\n",
		result.Client.Certificate.Subject.CommonName, pki.Fingerprint(result.Client.Certificate))
	fmt.Fprintf(out.out, "the CA key %s/%s signs new certificates: keep it private\n", c.Certs, pki.CAKeyFile)
	fmt.Fprintf(out.out, "\nnext: echoloop serve --certs %s   and   echoloop call --certs %s --protocol all\n",
		c.Certs, c.Certs)
	return nil
}
