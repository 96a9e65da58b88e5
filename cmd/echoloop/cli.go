package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
	"github.com/echoloop/echoloop/server"
)

// commandLine is every command and flag of echoloop.
type commandLine struct {
	Serve  serveCmd  `cmd:"" help:"Serve Echo over mTLS on one port (Connect, gRPC, gRPC-Web, POST /v1/echo)."`
	Call   callCmd   `cmd:"" help:"Make one Echo call and print what the server verified."`
	Demo   demoCmd   `cmd:"" help:"Run the whole tour: temporary PKI, server, every protocol, side by side."`
	Health healthCmd `cmd:"" help:"Ask a server's grpc.health.v1 service whether it is serving."`
	Doctor doctorCmd `cmd:"" help:"Check an mTLS client setup step by step against any server, and say what to fix."`
	Audit  auditCmd  `cmd:"" help:"Try every kind of client certificate on any mTLS server, on every protocol, and report which it wrongly accepts."`
	Bench  benchCmd  `cmd:"" help:"Load a server with Echo calls over one protocol or all, and report calls/s, latency and errors."`
	PKI    pkiCmd    `cmd:"" name:"pki" help:"Make development certificates."`
}

// commandVars are the values the help text interpolates.
func commandVars() kong.Vars {
	vars := kong.Vars{
		"default_url":            client.DefaultURL,
		"side":                   "server or client",
		"default_ca_valid_for":   pki.DefaultCAValidity.String(),
		"default_leaf_valid_for": pki.DefaultLeafValidity.String(),
		"reasons":                strings.Join(pki.ReasonNames(), ", "),
		"default_procedure":      client.DefaultAuditProcedure,
		"default_path":           client.PlainHTTPPath,
		"max_delay":              server.MaxDelay.String(),
		"max_stream_count":       fmt.Sprint(server.MaxStreamCount),
		"max_stream_interval":    server.MaxStreamInterval.String(),
	}
	for k, v := range serveVars() {
		vars[k] = v
	}
	return vars
}

// certFiles are the flags that locate one side's certificates.
type certFiles struct {
	Certs  string `default:"certs" help:"Directory of ca.crt and this side's certificate and key."`
	CACert string `name:"cacert" placeholder:"FILE" help:"CA bundle to verify the other side (default DIR/ca.crt)."`
	Cert   string `placeholder:"FILE" help:"This side's certificate chain, PEM (default DIR/${side}.crt)."`
	Key    string `placeholder:"FILE" help:"This side's private key, PEM, unencrypted (default DIR/${side}.key)."`
}

// paths resolves the three files for one side ("server" or "client").
func (f certFiles) paths(side string) (caFile, certFile, keyFile string) {
	caFile, certFile, keyFile = f.CACert, f.Cert, f.Key
	if caFile == "" {
		caFile = filepath.Join(f.Certs, pki.CACertFile)
	}
	if certFile == "" {
		certFile = filepath.Join(f.Certs, side+".crt")
	}
	if keyFile == "" {
		keyFile = filepath.Join(f.Certs, side+".key")
	}
	return caFile, certFile, keyFile
}

// withInitHint adds the command that makes missing files, when a file that
// is missing is a default one in --certs rather than a path the user named:
// for a mistyped path of one's own, pki init is no answer.
func (f certFiles) withInitHint(err error, side string) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	caFile, certFile, keyFile := f.paths(side)
	for _, file := range []struct{ flag, path string }{{f.CACert, caFile}, {f.Cert, certFile}, {f.Key, keyFile}} {
		if _, statErr := os.Stat(file.path); file.flag == "" && errors.Is(statErr, fs.ErrNotExist) {
			return fmt.Errorf("%w (create development certificates with `echoloop pki init --certs %s`, "+
				"or point --cacert, --cert and --key at yours)", err, f.Certs)
		}
	}
	return err
}

// clientFlags are the flags of every command that calls a server.
type clientFlags struct {
	certFiles  `embed:"" set:"side=client"`
	URL        string        `default:"${default_url}" help:"Server to call."`
	ServerName string        `placeholder:"NAME" help:"Name the server certificate must cover, when the URL's host is not it."`
	HTTP1      bool          `name:"http1.1" help:"Offer only HTTP/1.1 (most gRPC servers then refuse: gRPC is defined over HTTP/2)."`
	Timeout    time.Duration `default:"10s" help:"Deadline of each call."`
}

// validate checks what kong's types cannot, and what the server would
// only refuse once called.
func (f clientFlags) validate(kctx *kong.Context) error {
	if f.Timeout <= 0 {
		return fmt.Errorf("%s must be positive, got %s", flagSource(kctx, "timeout"), f.Timeout)
	}
	if err := client.CheckURL(f.URL); err != nil {
		return fmt.Errorf("%s %w", flagSource(kctx, "url"), err)
	}
	return nil
}

// given reports whether a flag was set, on the command line or by its
// environment variable, rather than left at its default. Kong fills both
// in alike, so a value that equals the zero value says nothing by itself.
func given(kctx *kong.Context, name string) bool {
	return onCommandLine(kctx, name) || fromEnvironment(kctx, name) != ""
}

// flagSource names where a flag's value came from, for messages: the flag
// as typed, or the environment variable that stood in for it, so that a
// mistake in ECHOLOOP_TIMEOUT is not blamed on a --timeout never typed.
func flagSource(kctx *kong.Context, name string) string {
	if !onCommandLine(kctx, name) {
		if env := fromEnvironment(kctx, name); env != "" {
			return env
		}
	}
	return "--" + name
}

func onCommandLine(kctx *kong.Context, name string) bool {
	if kctx == nil {
		return false
	}
	for _, p := range kctx.Path {
		if p.Flag != nil && p.Flag.Name == name {
			return true
		}
	}
	return false
}

// fromEnvironment is the environment variable set for a flag, if any.
func fromEnvironment(kctx *kong.Context, name string) string {
	if kctx == nil {
		return ""
	}
	for _, f := range kctx.Flags() {
		if f.Name != name {
			continue
		}
		for _, env := range f.Envs {
			if _, ok := os.LookupEnv(env); ok {
				return env
			}
		}
	}
	return ""
}

// newClient builds the client the flags describe.
func (f clientFlags) newClient() (*client.Client, error) {
	caFile, certFile, keyFile := f.paths("client")
	opts := []client.Option{
		client.WithCAFile(caFile),
		client.WithCertificateFiles(certFile, keyFile),
		// pki revoke's list, to say "revoked" when the server refuses a
		// certificate it names.
		client.WithRevocationListFile(filepath.Join(f.Certs, pki.CRLFile)),
	}
	if f.ServerName != "" {
		opts = append(opts, client.WithServerName(f.ServerName))
	}
	if f.HTTP1 {
		opts = append(opts, client.WithHTTP1())
	}
	c, err := client.New(f.URL, opts...)
	if err != nil {
		return nil, f.withInitHint(err, "client")
	}
	return c, nil
}
