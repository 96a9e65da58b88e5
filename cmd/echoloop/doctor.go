package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/alecthomas/kong"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
)

type doctorCmd struct {
	clientFlags `embed:""`
}

// Validate is kong's hook for checks its types cannot make.
func (c *doctorCmd) Validate(kctx *kong.Context) error { return c.validate(kctx) }

// Run prints the checklist as it goes, so a slow or hanging step shows
// where it is, and fails when a step fails.
func (c *doctorCmd) Run(ctx context.Context, out *output) error {
	caFile, certFile, keyFile := c.paths("client")
	fmt.Fprintf(out.out, "checking %s with %s\n\n", c.URL, certFile)

	ok := client.Doctor(ctx, client.DoctorConfig{
		URL:        c.URL,
		CAFile:     caFile,
		CertFile:   certFile,
		KeyFile:    keyFile,
		ServerName: c.ServerName,
		HTTP1:      c.HTTP1,
		Timeout:    c.Timeout,
		CRLFile:    filepath.Join(c.Certs, pki.CRLFile),
	}, func(s client.Step) {
		mark := map[client.Verdict]string{client.Pass: "[ok]  ", client.Warn: "[warn]", client.Fail: "[FAIL]"}[s.Verdict]
		fmt.Fprintf(out.out, "%s %s: %s\n", mark, s.Check, s.Detail)
		if s.Fix != "" {
			fmt.Fprintf(out.out, "       fix: %s\n", s.Fix)
		}
	})
	if !ok {
		return silentError{}
	}
	fmt.Fprintf(out.out, "\nall checks passed\n")
	return nil
}
