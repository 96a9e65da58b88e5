package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kong"

	"github.com/echoloop/echoloop/pki"
)

type pkiCmd struct {
	Init    pkiInitCmd    `cmd:"" help:"Write a development CA, a server and a client certificate into --certs."`
	Issue   pkiIssueCmd   `cmd:"" help:"Issue a server or client certificate from the CA in --certs."`
	Revoke  pkiRevokeCmd  `cmd:"" help:"Revoke a certificate: add it to the CA's revocation list (ca.crl)."`
	Inspect pkiInspectCmd `cmd:"" help:"Show what certificates and revocation lists hold, and whether they chain to the CA."`
	// Fixtures writes what `echoloop audit --fixtures` reads.
	Fixtures pkiFixturesCmd `cmd:"" help:"Write every client certificate case a server must get right, with manifest.json, for echoloop audit."`
}

// keyTypeFlag is the --key-type flag shared by init and issue.
type keyTypeFlag struct {
	KeyType string `default:"ecdsa-p256" enum:"ecdsa-p256,ecdsa-p384,ed25519,rsa-2048,rsa-3072,rsa-4096" help:"Key type: ${enum}."`
}

type pkiInitCmd struct {
	keyTypeFlag `embed:""`

	Certs        string        `default:"certs" help:"Directory to write ca.crt, ca.key, server.*, client.* into."`
	SAN          []string      `name:"san" placeholder:"NAME" help:"Extra subject alternative name for the server certificate; repeatable."`
	Name         string        `default:"client" help:"Common name of the client certificate."`
	Intermediate bool          `help:"Sign the leaves with an intermediate CA (intermediate.crt, .key) under the root."`
	RootKeyOut   string        `placeholder:"FILE" help:"Write the root CA's key here instead of DIR/ca.key (keep it offline)."`
	CAValidFor   time.Duration `name:"ca-valid-for" default:"${default_ca_valid_for}" help:"Validity of the CA certificates."`
	ValidFor     time.Duration `default:"${default_leaf_valid_for}" help:"Validity of the server and client certificates."`
	CANotBefore  string        `name:"ca-not-before" placeholder:"TIME" help:"Start of the CA certificates' validity: RFC 3339 time, or a duration from now such as -48h (default: 5 minutes ago)."`
	NotBefore    string        `placeholder:"TIME" help:"Start of the server and client certificates' validity, in the same forms (default: 5 minutes ago)."`
	Force        bool          `xor:"existing" help:"Replace existing files."`
	// KeepExisting lets a container run init on every start: a shell-less
	// image has no `test -f` to guard the command with.
	KeepExisting bool `xor:"existing" help:"When --certs already holds every file, keep them, write nothing and succeed; a partial set is still refused."`
}

// Validate refuses validity periods that are not positive, an empty
// client name and an empty --san. pki.Init reads a zero as "the default",
// which would quietly turn --ca-valid-for 0s into ten years, and --name ""
// into "client".
func (c *pkiInitCmd) Validate(kctx *kong.Context) error {
	if strings.TrimSpace(c.Name) == "" {
		return fmt.Errorf("%s %q names no one: give the client certificate's common name, or leave "+
			"it out for \"client\"", flagSource(kctx, "name"), c.Name)
	}
	if err := checkSANs(kctx, c.SAN); err != nil {
		return err
	}
	var problems []string
	for _, v := range []struct {
		name  string
		value time.Duration
	}{{"ca-valid-for", c.CAValidFor}, {"valid-for", c.ValidFor}} {
		if v.value <= 0 {
			problems = append(problems, fmt.Sprintf("%s must be positive, got %s",
				flagSource(kctx, v.name), v.value))
		}
	}
	for name, value := range map[string]string{"ca-not-before": c.CANotBefore, "not-before": c.NotBefore} {
		if _, err := parseWhen(flagSource(kctx, name), value, time.Now()); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New(strings.Join(problems, "; ") +
			" (for an expired certificate, set --not-before in the past)")
	}
	return nil
}

// checkSANs refuses an empty --san. Kong reads --san "" as no value at all,
// so the flag would be dropped without a word, and the certificate would
// lack the name the user meant to give, most likely from an unset variable.
func checkSANs(kctx *kong.Context, sans []string) error {
	if given(kctx, "san") && (len(sans) == 0 || slices.Contains(trimItems(sans), "")) {
		return fmt.Errorf("%s has an empty value: give a name, or leave it out",
			flagSource(kctx, "san"))
	}
	return nil
}

func (c *pkiInitCmd) Run(kctx *kong.Context, out *output) error {
	if c.KeepExisting {
		kept, err := c.keep(kctx, out)
		if err != nil || kept {
			return err
		}
	}

	now := time.Now()
	config := pki.InitConfig{
		Dir:          c.Certs,
		ServerSANs:   c.SAN,
		ClientName:   c.Name,
		KeyType:      pki.KeyType(c.KeyType),
		Intermediate: c.Intermediate,
		RootKeyPath:  c.RootKeyOut,
		CAValidFor:   c.CAValidFor,
		LeafValidFor: c.ValidFor,
		// Both checked in Validate; an empty value is the zero time.
		CANotBefore:   must(parseWhen("--ca-not-before", c.CANotBefore, now)),
		LeafNotBefore: must(parseWhen("--not-before", c.NotBefore, now)),
		Force:         c.Force,
	}
	result, err := pki.Init(config)
	var outlives *pki.OutlivesCAError
	if errors.As(err, &outlives) && !given(kctx, "valid-for") {
		// The default leaf validity is no choice the user made: a short-lived
		// CA gets leaves that end with it, rather than a refusal. The CA is
		// made again, a moment later, so a second is left as margin.
		start := outlives.NotAfter.Add(-c.ValidFor)
		if fit := outlives.CA.NotAfter.Sub(start).Truncate(time.Second) - time.Second; fit > 0 {
			config.LeafValidFor = fit
			result, err = pki.Init(config)
			if err == nil {
				fmt.Fprintf(out.out, "the leaves are valid for %s, until the CA ends "+
					"(the default --valid-for, %s, would outlive it)\n", fit, c.ValidFor)
			}
		}
	}
	if errors.As(err, &outlives) {
		return outlivesHint(outlives, c.NotBefore, now, "or give a longer --ca-valid-for",
			"the CA ends before the leaves would start: give --not-before before its end, "+
				"or a later --ca-not-before or a longer --ca-valid-for")
	}
	if err != nil {
		return err
	}

	printWritten(out.out, result.Files)
	fmt.Fprintf(out.out, "\nserver certificate covers: %s\n", strings.Join(pki.SANs(result.Server.Certificate), ", "))
	fmt.Fprintf(out.out, "client certificate: CN=%s, sha256 %s\n",
		result.Client.Certificate.Subject.CommonName, pki.Fingerprint(result.Client.Certificate))
	rootKey := c.RootKeyOut
	if rootKey == "" {
		rootKey = filepath.Join(c.Certs, pki.CAKeyFile)
	}
	if c.Intermediate {
		fmt.Fprintf(out.out, "the intermediate's key %s signs new certificates; the root key %s "+
			"is needed only for a new intermediate: keep both private\n",
			filepath.Join(c.Certs, pki.IntermediateKeyFile), rootKey)
	} else {
		fmt.Fprintf(out.out, "the CA key %s signs new certificates: keep it private\n", rootKey)
	}
	fmt.Fprintf(out.out, "\nnext: echoloop serve --certs %s   and   echoloop call --certs %s --protocol all\n",
		c.Certs, c.Certs)
	return nil
}

// keep reports whether --certs already holds the whole set, so that there
// is nothing to write. A set that differs from what the flags ask for (a
// server certificate without a --san name, a client certificate for
// another --name, keys of another --key-type) is an error rather than
// kept: a certificate other than the one asked for would fail later and
// less clearly. --name and --key-type are compared only when given: their
// defaults say nothing of what the user wants, and a set made with other
// values is still kept by a command that names none.
func (c *pkiInitCmd) keep(kctx *kong.Context, out *output) (bool, error) {
	var present, missing []string
	for _, name := range []string{
		pki.CACertFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile, pki.ClientCertFile, pki.ClientKeyFile,
	} {
		info, err := os.Stat(filepath.Join(c.Certs, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			return false, fmt.Errorf("checking %q: %w", filepath.Join(c.Certs, name), err)
		case !info.Mode().IsRegular():
			return false, nil // pki.Init names what is in the way
		default:
			present = append(present, name)
		}
	}
	switch {
	case len(present) == 0:
		return false, nil // nothing to keep: pki.Init makes the set
	case len(missing) > 0:
		return false, fmt.Errorf("keeping the certificates in %s: the set is partial, missing %s "+
			"(present: %s); restore what is missing, or pass --force instead of --keep-existing to "+
			"replace the set", c.Certs, strings.Join(missing, ", "), strings.Join(present, ", "))
	}

	const replace = "pass --force instead of --keep-existing to replace the set"
	kept := map[string]*x509.Certificate{}
	for _, name := range []string{pki.CACertFile, pki.ServerCertFile, pki.ClientCertFile} {
		certs, err := pki.LoadCertificates(filepath.Join(c.Certs, name))
		if err != nil {
			return false, err
		}
		kept[name] = certs[0]
	}

	serverFile := filepath.Join(c.Certs, pki.ServerCertFile)
	server := kept[pki.ServerCertFile]
	for _, name := range c.SAN {
		if server.VerifyHostname(name) != nil {
			return false, fmt.Errorf("keeping %q: it does not cover %q, asked for with %s "+
				"(it covers: %s); %s", serverFile, name, flagSource(kctx, "san"),
				strings.Join(pki.SANs(server), ", "), replace)
		}
	}
	clientFile := filepath.Join(c.Certs, pki.ClientCertFile)
	if cn := kept[pki.ClientCertFile].Subject.CommonName; given(kctx, "name") && cn != c.Name {
		return false, fmt.Errorf("keeping %q: it is for CN=%s, not CN=%s asked for with %s; %s",
			clientFile, cn, c.Name, flagSource(kctx, "name"), replace)
	}
	if given(kctx, "key-type") {
		for _, name := range []string{pki.CACertFile, pki.ServerCertFile, pki.ClientCertFile} {
			if kt := string(pki.KeyTypeOf(kept[name])); kt != c.KeyType {
				return false, fmt.Errorf("keeping %q: its key is %s, not %s asked for with %s; %s",
					filepath.Join(c.Certs, name), pki.DescribeKey(kept[name].PublicKey), c.KeyType,
					flagSource(kctx, "key-type"), replace)
			}
		}
	}
	fmt.Fprintf(out.out, "kept the certificates already in %s: nothing written\n", c.Certs)
	fmt.Fprintf(out.out, "server certificate covers: %s\n", strings.Join(pki.SANs(server), ", "))
	return true, nil
}

func printWritten(w io.Writer, paths []string) {
	for _, path := range paths {
		mode := "?"
		if info, err := os.Stat(path); err == nil {
			mode = fmt.Sprintf("%04o", info.Mode().Perm())
		}
		fmt.Fprintf(w, "wrote %s (%s)\n", path, mode)
	}
}

type pkiIssueCmd struct {
	keyTypeFlag `embed:""`

	Kind      string        `arg:"" enum:"server,client" help:"What the certificate is for: server or client."`
	Name      string        `arg:"" help:"File name (NAME.crt, NAME.key); also the client's common name, or the server's DNS name when no --san is given."`
	Certs     string        `default:"certs" help:"Directory of the CA, and where the files go."`
	CAKey     string        `name:"ca-key" placeholder:"FILE" help:"The root CA's key, when it is not DIR/ca.key (ignored with an intermediate)."`
	SAN       []string      `name:"san" placeholder:"VALUE" help:"Subject alternative name: DNS name, IP, URI or e-mail, read from its form; repeatable."`
	SpiffeID  string        `name:"spiffe-id" placeholder:"URI" help:"SPIFFE ID to carry as the only URI SAN (spiffe://trust-domain/path)."`
	ValidFor  time.Duration `default:"${default_leaf_valid_for}" help:"Validity, counted from --not-before."`
	NotBefore string        `placeholder:"TIME" help:"Start of validity: RFC 3339 time, or a duration from now such as -48h (default: 5 minutes ago)."`
	Force     bool          `help:"Replace existing files."`
}

func (c *pkiIssueCmd) Validate(kctx *kong.Context) error {
	if c.SpiffeID != "" {
		if err := pki.CheckSPIFFEID(c.SpiffeID); err != nil {
			return fmt.Errorf("%s: %w", flagSource(kctx, "spiffe-id"), err)
		}
		// A second URI would make the certificate no SVID at all: a
		// server following the X.509-SVID rules sees no SPIFFE ID in it.
		for _, san := range c.SAN {
			if pki.IsURISAN(san) {
				return fmt.Errorf("%s %q with the URI --san %q: an X.509-SVID holds "+
					"exactly one URI SAN, give the other URI in a certificate of its own",
					flagSource(kctx, "spiffe-id"), c.SpiffeID, san)
			}
		}
	}
	if err := checkSANs(kctx, c.SAN); err != nil {
		return err
	}
	if c.ValidFor <= 0 {
		return fmt.Errorf("%s must be positive, got %s", flagSource(kctx, "valid-for"), c.ValidFor)
	}
	_, err := parseWhen(flagSource(kctx, "not-before"), c.NotBefore, time.Now())
	return err
}

// parseWhen reads the value of flag, a moment, as RFC 3339 or as a
// duration from now; empty is the zero time.
func parseWhen(flag, value string, now time.Time) (time.Time, error) {
	if value == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, value); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(value); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q is neither an RFC 3339 time (2026-01-02T15:04:05Z) "+
		"nor a duration from now (-48h)", flag, value)
}

// must drops the error of a value already checked in Validate.
func must[T any](v T, _ error) T { return v }

func (c *pkiIssueCmd) Run(out *output) error {
	opts := []pki.Option{pki.WithKeyType(pki.KeyType(c.KeyType))}
	if c.NotBefore != "" {
		start, _ := parseWhen("--not-before", c.NotBefore, time.Now()) // checked in Validate
		opts = append(opts, pki.WithValidity(start, start.Add(c.ValidFor)))
	} else {
		opts = append(opts, pki.WithValidFor(c.ValidFor))
	}
	sans := append([]string{}, c.SAN...)
	if c.SpiffeID != "" {
		sans = append(sans, c.SpiffeID)
	}

	issued, paths, err := pki.IssueFiles(c.Certs, c.CAKey, pki.Usage(c.Kind), c.Name, sans, c.Force, opts...)
	var outlives *pki.OutlivesCAError
	if errors.As(err, &outlives) {
		return outlivesHint(outlives, c.NotBefore, time.Now(), "or make a longer-lived CA "+
			"(echoloop pki init --force --ca-valid-for D, which replaces the CA and every certificate)",
			"the CA itself has expired: make a new PKI with echoloop pki init --force "+
				"(it replaces the CA and every certificate)")
	}
	if err != nil {
		return err
	}
	printWritten(out.out, paths)
	cert := issued.Certificate
	fmt.Fprintf(out.out, "\n%s certificate %s, serial %s, sha256 %s\n", c.Kind, cert.Subject,
		pki.SerialHex(cert), pki.Fingerprint(cert))
	if names := pki.SANs(cert); len(names) > 0 {
		fmt.Fprintf(out.out, "covers: %s\n", strings.Join(names, ", "))
	}
	fmt.Fprintf(out.out, "valid %s to %s\n", cert.NotBefore.UTC().Format(time.RFC3339),
		cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// outlivesHint adds to a refused leaf validity what fits: the longest
// --valid-for the CA allows from the leaf's start (--not-before, or now),
// then longerCA, the other way out. --not-before is named only when it was
// given; when it was not and the CA has already ended, no --valid-for helps,
// and caEnded says what does.
func outlivesHint(
	err *pki.OutlivesCAError,
	notBefore string,
	now time.Time,
	longerCA, caEnded string,
) error {
	start := now
	if notBefore != "" {
		start, _ = parseWhen("--not-before", notBefore, now) // checked in Validate
	}
	if longest := fittingValidFor(err.CA.NotAfter.Sub(start)); longest != "" {
		return fmt.Errorf("%w; give --valid-for %s or less, %s", err, longest, longerCA)
	}
	if notBefore != "" {
		return fmt.Errorf("%w; move --not-before before the CA's end, %s", err, longerCA)
	}
	return fmt.Errorf("%w; %s", err, caEnded)
}

// fittingValidFor spells d as a --valid-for value no longer than d, in the
// largest unit that does not round it down to nothing: 87599h, 59m, 42s.
// It is empty when not even a second fits.
func fittingValidFor(d time.Duration) string {
	for _, unit := range []struct {
		size time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if d >= unit.size {
			return fmt.Sprintf("%d%s", d/unit.size, unit.name)
		}
	}
	return ""
}

type pkiRevokeCmd struct {
	Target string `arg:"" help:"Certificate file to revoke, or its serial number in hex."`
	Certs  string `default:"certs" help:"Directory of the CA and its revocation list."`
	CAKey  string `name:"ca-key" placeholder:"FILE" help:"The root CA's key, when it is not DIR/ca.key (ignored with an intermediate)."`
	Reason string `default:"unspecified" help:"Why: ${reasons}."`
}

func (c *pkiRevokeCmd) Run(out *output) error {
	if err := checkZeroSerial(c.Target); err != nil {
		return usageError{err: err, command: "pki revoke "}
	}
	serial, crlPath, err := pki.Revoke(c.Certs, c.CAKey, c.Target, c.Reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(out.out, "revoked serial %s (%s); %s is re-signed\n", serial.Text(16), c.Reason, crlPath)
	fmt.Fprintf(out.out, "a server started with --crl %s refuses it from now on, without a restart\n", crlPath)
	return nil
}

// checkZeroSerial refuses a target that is no file but reads as the serial
// number zero (00, 0:0): it is hex, but no certificate carries it, as RFC
// 5280 (section 4.1.2.2) makes serial numbers positive.
func checkZeroSerial(target string) error {
	_, err := os.Stat(target)
	if !errors.Is(err, fs.ErrNotExist) || strings.ContainsAny(target, "/.") {
		return nil // a file, or a path for pki.Revoke to explain
	}
	serial, ok := new(big.Int).SetString(strings.ReplaceAll(target, ":", ""), 16)
	if !ok || serial.Sign() != 0 {
		return nil
	}
	return fmt.Errorf("%q is the serial number 0, which no certificate has: serial numbers are "+
		"positive (RFC 5280), and pki init and pki issue draw theirs at random; give the certificate "+
		"file, or its serial as `echoloop pki inspect FILE` shows it", target)
}

type pkiInspectCmd struct {
	Files []string `arg:"" help:"Certificate or revocation list files (PEM)."`
	Certs string   `default:"certs" help:"Directory whose ca.crt (and intermediate.crt) certificates are checked against."`
	JSON  bool     `name:"json" help:"Print one JSON object per certificate or list, one per line."`
}

func (c *pkiInspectCmd) Run(out *output) error {
	roots, caFile, intermediates := c.trustAnchors()
	var rootPool *x509.CertPool
	if roots != nil {
		rootPool = x509.NewCertPool()
		for _, root := range roots {
			rootPool.AddCert(root)
		}
	}
	now := time.Now()
	var problems []string
	for _, file := range c.Files {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading %s: %w", file, err)
		}

		// A list file may carry certificates after its lists (an
		// intermediate's, as pki revoke writes it): both are shown.
		var certs []*x509.Certificate
		if strings.Contains(string(data), "-----BEGIN X509 CRL-----") {
			var crls []*x509.RevocationList
			if crls, certs, err = pki.ParseCRLFile(file, data); err != nil {
				return err
			}
			for i, crl := range crls {
				in := pki.InspectCRL(crl, now)
				in.File, in.Index = file, i+1
				if roots != nil {
					in.CheckSignature(crl, append(append([]*x509.Certificate{}, certs...), intermediates...),
						roots, caFile)
				}
				if in.Stale {
					problems = append(problems, fmt.Sprintf("%s: revocation list %d from %s (%s)",
						file, in.Index, in.Issuer, in.TimeLeft))
				}
				c.printCRL(out.out, in)
			}
		} else if certs, err = pki.ParseCertificates(file, data); err != nil {
			return err
		}

		for i, cert := range certs {
			in := pki.Inspect(cert, now)
			in.File, in.Index = file, i+1
			if roots != nil {
				in.CheckChain(cert, append(append([]*x509.Certificate{}, certs[i+1:]...), intermediates...),
					rootPool, caFile)
			}
			if in.Expired || in.NotYetValid {
				problems = append(problems, fmt.Sprintf("%s: %s (%s)", file, in.Subject, in.TimeLeft))
			}
			c.printCertificate(out.out, in)
		}
	}
	if len(problems) > 0 {
		return errors.New("outside its validity: " + strings.Join(problems, "; "))
	}
	return nil
}

// trustAnchors reads DIR/ca.crt, when there is one, to check chains
// against, and DIR/intermediate.crt when there is one of those too.
func (c *pkiInspectCmd) trustAnchors() ([]*x509.Certificate, string, []*x509.Certificate) {
	caFile := filepath.Join(c.Certs, pki.CACertFile)
	roots, err := pki.LoadCertificates(caFile)
	if err != nil {
		return nil, "", nil
	}
	intermediates, _ := pki.LoadCertificates(filepath.Join(c.Certs, pki.IntermediateCertFile))
	return roots, caFile, intermediates
}

func (c *pkiInspectCmd) printCRL(w io.Writer, in pki.CRLInspection) {
	if c.JSON {
		line, _ := json.Marshal(in)
		fmt.Fprintln(w, string(line))
		return
	}
	next := "none given"
	if !in.NextUpdate.IsZero() {
		next = fmt.Sprintf("%s (%s)", in.NextUpdate.Format(time.RFC3339), in.TimeLeft)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\trevocation list %d\n", in.File, in.Index)
	rows := [][2]string{
		{"issuer", in.Issuer},
		{"number", in.Number},
		{"this update", in.ThisUpdate.Format(time.RFC3339)},
		{"next update", next},
		{"revoked serials", strings.Join(in.Revoked, ", ")},
	}
	if in.ChainsTo != "" {
		verdict := "yes, signed by " + in.SignedBy
		if !in.Chains {
			verdict = "no: " + in.ChainError
		}
		rows = append(rows, [2]string{"chains to " + in.ChainsTo, verdict})
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], printable(row[1]))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func (c *pkiInspectCmd) printCertificate(w io.Writer, in pki.Inspection) {
	if c.JSON {
		line, _ := json.Marshal(in)
		fmt.Fprintln(w, string(line))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tcertificate %d\n", in.File, in.Index)
	rows := [][2]string{
		{"subject", in.Subject},
		{"issuer", in.Issuer},
		{"serial number", in.SerialNumber},
		{"sha256 fingerprint", in.SHA256},
		{"validity", fmt.Sprintf("%s to %s (%s)", in.NotBefore.Format(time.RFC3339),
			in.NotAfter.Format(time.RFC3339), in.TimeLeft)},
		{"key", in.Key},
		{"CA", fmt.Sprint(in.IsCA)},
		{"key usage", strings.Join(in.KeyUsage, ", ")},
		{"extended key usage", strings.Join(in.ExtKeyUsage, ", ")},
		{"dns names", strings.Join(in.DNSNames, ", ")},
		{"ip addresses", strings.Join(in.IPAddresses, ", ")},
		{"uris", strings.Join(in.URIs, ", ")},
		{"email addresses", strings.Join(in.EmailAddresses, ", ")},
	}
	if in.ChainsTo != "" {
		verdict := "yes"
		if !in.Chains {
			verdict = "no: " + in.ChainError
		}
		rows = append(rows, [2]string{"chains to " + in.ChainsTo, verdict})
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], printable(row[1]))
	}
	tw.Flush()
	fmt.Fprintln(w)
}
