package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/echoloop/echoloop/client"
	"github.com/echoloop/echoloop/pki"
)

// signerFlags locate the CA that mints fixtures: the signing CA of --certs,
// or a CA certificate and key named outright.
type signerFlags struct {
	Certs  string `default:"certs" help:"Directory whose signing CA (intermediate.crt, else ca.crt) mints the fixtures."`
	CACert string `name:"ca-cert" placeholder:"FILE" help:"CA certificate that mints the fixtures, instead of the one in --certs (needs --ca-key)."`
	CAKey  string `name:"ca-key" placeholder:"FILE" help:"The key of --ca-cert; without --ca-cert, the root CA's key when it is not DIR/ca.key."`
}

func (f signerFlags) validate(kctx *kong.Context) error {
	if f.CACert != "" && f.CAKey == "" {
		return fmt.Errorf("%s needs --ca-key: minting fixtures takes the CA's key",
			flagSource(kctx, "ca-cert"))
	}
	return nil
}

func (f signerFlags) signer() (*pki.Authority, error) {
	if f.CACert != "" {
		return pki.LoadAuthority(f.CACert, f.CAKey)
	}
	return pki.SigningAuthority(f.Certs, f.CAKey)
}

type pkiFixturesCmd struct {
	signerFlags `embed:""`

	Out   string `required:"" placeholder:"DIR" help:"Directory to write the fixtures, revoked.crl and manifest.json into."`
	Force bool   `help:"Replace existing files."`
}

// Validate is kong's hook for checks its types cannot make.
func (c *pkiFixturesCmd) Validate(kctx *kong.Context) error { return c.signerFlags.validate(kctx) }

func (c *pkiFixturesCmd) Run(out *output) error {
	signer, err := c.signer()
	if err != nil {
		return err
	}
	set, err := pki.MakeFixtures(signer)
	if err != nil {
		return err
	}
	if _, err := set.Write(c.Out, c.Force); err != nil {
		return err
	}

	// The skipped ones are counted apart and their reasons said once each
	// below the table: they share one, and it is a long sentence.
	var skipped []string
	reasons := map[string][]string{}
	tw := tabwriter.NewWriter(out.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "FIXTURE\tEXPECT\tWHAT IT IS\n")
	for _, f := range set.List {
		what := f.Description
		if f.Skip != "" {
			what = "SKIPPED, not written (see below)"
			if _, seen := reasons[f.Skip]; !seen {
				skipped = append(skipped, f.Skip)
			}
			reasons[f.Skip] = append(reasons[f.Skip], f.Name)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, f.Expect, what)
	}
	tw.Flush()

	written := len(set.List)
	for _, names := range reasons {
		written -= len(names)
	}
	count := fmt.Sprintf("%d of %d", written, len(set.List))
	if written == len(set.List) {
		count = fmt.Sprint(written)
	}
	fmt.Fprintf(out.out, "\nwrote %s fixtures signed by %s into %s, with %s (keys 0600)\n",
		count, set.Signer, c.Out, pki.ManifestFile)
	for _, reason := range skipped {
		fmt.Fprintf(out.out, "skipped %s: %s\n", strings.Join(reasons[reason], ", "), reason)
	}
	fmt.Fprintf(out.out, "the server under test must load %s to refuse the revoked fixture "+
		"(echoloop serve --crl %s)\n", filepath.Join(c.Out, pki.RevokedCRLFile), filepath.Join(c.Out, pki.RevokedCRLFile))
	fmt.Fprintf(out.out, "\nnext: echoloop audit --url URL --fixtures %s\n", c.Out)
	return nil
}

type auditCmd struct {
	signerFlags `embed:""`

	URL        string        `default:"${default_url}" help:"Server to audit."`
	CABundle   string        `name:"cacert" placeholder:"FILE" help:"CA bundle to verify the audited server's certificate (default DIR/ca.crt when it exists, else the system roots)."`
	ServerName string        `placeholder:"NAME" help:"Name the server certificate must cover, when the URL's host is not it."`
	HTTP1      bool          `name:"http1.1" help:"Offer only HTTP/1.1."`
	Timeout    time.Duration `default:"10s" help:"Deadline of each call."`
	Fixtures   string        `placeholder:"DIR" help:"Try the fixtures in DIR (from echoloop pki fixtures) instead of minting them with a CA key."`
	Protocol   []string      `default:"all" placeholder:"NAME" help:"Protocols to try: connect, grpc, grpc-web, http, or all; comma-separated or repeated (default ${default})."`
	Call       string        `placeholder:"PATH" help:"RPC tried on connect, grpc and grpc-web; any method of the server will do, only whether it answers counts (default: grpc lists services through server reflection, connect and grpc-web call ${default_procedure})."`
	Path       string        `default:"${default_path}" placeholder:"PATH" help:"Path the http protocol POSTs JSON to; any path will do (default ${default})."`
	JSON       bool          `name:"json" help:"Print the report as one JSON object."`
}

// Validate is kong's hook for checks its types cannot make.
func (c *auditCmd) Validate(kctx *kong.Context) error {
	flag := func(name string) string { return flagSource(kctx, name) }
	if err := c.signerFlags.validate(kctx); err != nil {
		return err
	}
	if c.Fixtures != "" && c.CACert != "" {
		return fmt.Errorf("%s and %s exclude each other: either try fixtures made elsewhere, "+
			"or mint them with a CA", flag("fixtures"), flag("ca-cert"))
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("%s must be positive, got %s", flag("timeout"), c.Timeout)
	}
	if _, err := c.protocols(); err != nil {
		return fmt.Errorf("%s: %w", flag("protocol"), err)
	}
	if c.Call != "" && (!strings.HasPrefix(c.Call, "/") || strings.Count(c.Call, "/") != 2) {
		return fmt.Errorf("%s %q is not of the form /package.Service/Method", flag("call"), c.Call)
	}
	if !strings.HasPrefix(c.Path, "/") {
		return fmt.Errorf("%s %q does not start with /", flag("path"), c.Path)
	}
	if err := client.CheckURL(c.URL); err != nil {
		return fmt.Errorf("%s %w", flag("url"), err)
	}
	return nil
}

// protocols reads --protocol into the protocols to try, in echoloop's order.
func (c *auditCmd) protocols() ([]client.Protocol, error) {
	var chosen []client.Protocol
	for _, value := range c.Protocol {
		for name := range strings.SplitSeq(value, ",") {
			name = strings.TrimSpace(name)
			if name == "all" {
				return client.Protocols(), nil
			}
			p, err := client.ParseProtocol(name)
			if err != nil {
				return nil, err
			}
			chosen = append(chosen, p)
		}
	}
	var ordered []client.Protocol
	for _, p := range client.Protocols() {
		if slices.Contains(chosen, p) {
			ordered = append(ordered, p)
		}
	}
	return ordered, nil
}

// mintedCRLNote is why a freshly minted revoked fixture is not tried: the
// target cannot hold a list made a moment ago.
const mintedCRLNote = "the server cannot hold the revocation list this run made: write fixtures with " +
	"`echoloop pki fixtures`, load their revoked.crl on the server, and audit with --fixtures"

func (c *auditCmd) Run(ctx context.Context, kctx *kong.Context, out *output) error {
	fixtures, err := c.fixtures(kctx)
	if err != nil {
		return err
	}
	protocols, _ := c.protocols() // checked in Validate
	opts, err := c.trust()
	if err != nil {
		return err
	}

	report, err := client.Audit(ctx, client.AuditConfig{
		URL:       c.URL,
		Protocols: protocols,
		Procedure: c.Call,
		Path:      c.Path,
		Timeout:   c.Timeout,
		Options:   opts,
	}, fixtures.List)
	if err != nil {
		return err
	}

	if c.JSON {
		data, err := json.Marshal(report)
		if err != nil {
			return fmt.Errorf("encoding the report: %w", err)
		}
		fmt.Fprintln(out.out, string(data))
	} else {
		printReport(out.out, report)
	}
	if !report.Passed() {
		return silentError{}
	}
	return nil
}

// fixtures reads --fixtures, or mints a set with the CA.
func (c *auditCmd) fixtures(kctx *kong.Context) (*pki.Fixtures, error) {
	if c.Fixtures != "" {
		set, err := pki.LoadFixtures(c.Fixtures)
		if err != nil {
			// A directory that holds no readable set is a mistake in the
			// command line, not a verdict on the server: exit 2, not 1.
			err = fmt.Errorf("%s %s holds no fixtures audit can read: %w; write a set with "+
				"`echoloop pki fixtures --out %s`", flagSource(kctx, "fixtures"), c.Fixtures, err, c.Fixtures)
			return nil, usageError{err: err, command: "audit "}
		}
		return set, nil
	}
	signer, err := c.signer()
	if err != nil {
		return nil, err
	}
	set, err := pki.MakeFixtures(signer)
	if err != nil {
		return nil, err
	}
	for i := range set.List {
		if set.List[i].NeedsCRL && set.List[i].Skip == "" {
			set.List[i].Skip = mintedCRLNote
		}
	}
	return set, nil
}

// trust is how the audit verifies the server it calls.
func (c *auditCmd) trust() ([]client.Option, error) {
	var opts []client.Option
	bundle := c.CABundle
	if bundle == "" {
		inCerts := filepath.Join(c.Certs, pki.CACertFile)
		if _, err := os.Stat(inCerts); err == nil {
			bundle = inCerts
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checking %q: %w", inCerts, err)
		}
	}
	if bundle != "" {
		opts = append(opts, client.WithCAFile(bundle))
	}
	if c.ServerName != "" {
		opts = append(opts, client.WithServerName(c.ServerName))
	}
	if c.HTTP1 {
		opts = append(opts, client.WithHTTP1())
	}
	return opts, nil
}

// verdictLabels are the verdicts as the report card shows them: the wrong
// ones in capitals, to be seen first.
var verdictLabels = map[client.AuditVerdict]string{
	client.VerdictWronglyAccepted: "WRONGLY ACCEPTED",
	client.VerdictWronglyRefused:  "WRONGLY REFUSED",
	client.VerdictUnknown:         "COULD NOT TELL",
	client.VerdictRight:           "right",
	client.VerdictSkipped:         "skipped",
}

// printReport writes the report card: one line per fixture, wrong ones
// first, then what each wrong one probably means, then the notes.
func printReport(w io.Writer, r *client.AuditReport) {
	names := make([]string, 0, len(r.Protocols))
	for _, p := range r.Protocols {
		names = append(names, string(p))
	}
	fmt.Fprintf(w, "audit of %s on %s\n\n", r.URL, strings.Join(names, ", "))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "VERDICT\tFIXTURE\tEXPECT\t%s\n", strings.ToUpper(strings.Join(names, "\t")))
	var wrong, notes []string
	for _, res := range r.Results {
		cells := make([]string, 0, len(res.Observed))
		for _, o := range res.Observed {
			cell := string(o.Outcome)
			switch o.Outcome {
			case client.OutcomeSkipped:
				cell = "-"
			case client.OutcomeDenied:
				cell = "denied by policy"
			case client.OutcomeNoAnswer:
				notes = append(notes, fmt.Sprintf("%s on %s: no answer: %s", res.Fixture, o.Protocol, o.Detail))
			}
			cells = append(cells, cell)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", verdictLabels[res.Verdict], res.Fixture, res.Expect,
			strings.Join(cells, "\t"))
		if res.Misconfiguration != "" {
			wrong = append(wrong, fmt.Sprintf("%s: %s", res.Fixture, res.Misconfiguration))
		}
		if res.Note != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", res.Fixture, res.Note))
		}
	}
	tw.Flush()

	if len(wrong) > 0 {
		fmt.Fprintf(w, "\nwhat the server probably has wrong:\n")
		for _, line := range wrong {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n")
		for _, line := range notes {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
	s := r.Summary
	fmt.Fprintf(w, "\n%d right, %d wrongly accepted, %d wrongly refused, %d could not tell, %d skipped\n",
		s.Right, s.WronglyAccepted, s.WronglyRefused, s.Unknown, s.Skipped)
}
