package client

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/gen/echo/v1/echov1connect"
	"github.com/echoloop/echoloop/pki"
)

// DefaultAuditProcedure is the RPC an audit calls on Connect and gRPC-Web
// unless told otherwise: echoloop's own Echo. Any procedure of the target
// does as well, even one it does not have: an audit asks only whether the
// server answered at all, and "unimplemented" is an answer that a server
// sends only to a client whose certificate it let in.
const DefaultAuditProcedure = echov1connect.EchoServiceEchoProcedure

// AuditConfig says what [Audit] calls and how.
type AuditConfig struct {
	// URL is the target's base URL, https://host:port.
	URL string
	// Protocols are the protocols to try each fixture on. Default: all.
	Protocols []Protocol
	// Procedure is the RPC path called on Connect, gRPC and gRPC-Web.
	// Default: gRPC asks the target's server reflection service for its
	// services, which any gRPC server with reflection answers whatever it
	// serves; Connect and gRPC-Web call [DefaultAuditProcedure].
	Procedure string
	// Path is where the plain protocol POSTs JSON. Default [PlainHTTPPath].
	Path string
	// Timeout bounds each call. Default 10 seconds.
	Timeout time.Duration
	// Options say how to trust the target ([WithRootCAs], [WithCAFile],
	// [WithServerName], [WithHTTP1]). A client certificate given here is
	// replaced by each fixture's.
	Options []Option
}

// AuditOutcome is what a target did with one fixture on one protocol.
type AuditOutcome string

// The outcomes an audit tells apart.
const (
	// OutcomeAccepted: the server answered, whatever the answer; the TLS
	// layer let the certificate in.
	OutcomeAccepted AuditOutcome = "accepted"
	// OutcomeDenied: the server let the certificate through TLS, then its
	// policy denied the call (permission_denied, HTTP 403).
	OutcomeDenied AuditOutcome = "denied"
	// OutcomeRefused: the server turned the certificate down, with a TLS
	// alert or with an HTTP answer that says so.
	OutcomeRefused AuditOutcome = "refused"
	// OutcomeNoAnswer: the call failed in a way that says nothing about
	// the certificate (nothing listening, a server certificate this
	// client does not trust, a deadline).
	OutcomeNoAnswer AuditOutcome = "no answer"
	// OutcomeSkipped: the fixture was not tried.
	OutcomeSkipped AuditOutcome = "skipped"
)

// AuditVerdict is an audit's judgement of one fixture over every protocol.
type AuditVerdict string

// The verdicts, in the order a report lists them.
const (
	VerdictWronglyAccepted AuditVerdict = "wrongly accepted"
	VerdictWronglyRefused  AuditVerdict = "wrongly refused"
	VerdictUnknown         AuditVerdict = "could not tell"
	VerdictRight           AuditVerdict = "right"
	VerdictSkipped         AuditVerdict = "skipped"
)

// Wrong reports whether the verdict fails an audit: a certificate wrongly
// accepted or refused, or a fixture whose outcome could not be told.
func (v AuditVerdict) Wrong() bool {
	return v == VerdictWronglyAccepted || v == VerdictWronglyRefused || v == VerdictUnknown
}

// Observation is one fixture tried on one protocol.
type Observation struct {
	Protocol Protocol     `json:"protocol"`
	Outcome  AuditOutcome `json:"outcome"`
	// Detail is the answer (a status code), the alert, or why there was
	// no answer.
	Detail string `json:"detail"`
}

// AuditResult is one fixture's line of an [AuditReport].
type AuditResult struct {
	Fixture     string          `json:"fixture"`
	Description string          `json:"description"`
	Expect      pki.Expectation `json:"expect"`
	Observed    []Observation   `json:"observed"`
	Verdict     AuditVerdict    `json:"verdict"`
	// Misconfiguration is the likely fault, for a wrong verdict.
	Misconfiguration string `json:"misconfiguration,omitempty"`
	// Note adds what the reader should know to weigh the verdict.
	Note string `json:"note,omitempty"`
}

// AuditReport is what [Audit] found: one result per fixture, wrongly
// accepted ones first.
type AuditReport struct {
	URL       string        `json:"url"`
	Protocols []Protocol    `json:"protocols"`
	Results   []AuditResult `json:"results"`
	Summary   AuditSummary  `json:"summary"`
}

// AuditSummary counts the verdicts of a report.
type AuditSummary struct {
	Right           int `json:"right"`
	WronglyAccepted int `json:"wronglyAccepted"`
	WronglyRefused  int `json:"wronglyRefused"`
	Unknown         int `json:"couldNotTell"`
	Skipped         int `json:"skipped"`
}

// Passed reports whether every fixture tried got the right verdict.
func (r *AuditReport) Passed() bool {
	s := r.Summary
	return s.WronglyAccepted+s.WronglyRefused+s.Unknown == 0
}

// auditParallelism bounds the handshakes in flight at once, so that an
// audit does not look like a flood to the target's connection limits.
const auditParallelism = 8

// Audit tries each fixture on each protocol against the target and judges
// whether the target did with it what a correctly configured server does.
// It returns an error only for a configuration that cannot work; every
// failed call is part of the report.
func Audit(ctx context.Context, cfg AuditConfig, fixtures []pki.Fixture) (*AuditReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// Check the URL and options once, before any fixture is tried.
	if _, err := New(cfg.URL, cfg.Options...); err != nil {
		return nil, err
	}

	// One client per fixture, each with its own connections, so that
	// every protocol of every fixture makes a handshake of its own.
	clients := make([]*Client, len(fixtures))
	for i, f := range fixtures {
		if f.Skip != "" {
			continue
		}
		if clients[i], err = New(cfg.URL, append(slices.Clone(cfg.Options), presenting(f.Issued))...); err != nil {
			return nil, err
		}
		defer clients[i].Close()
	}

	report := &AuditReport{URL: cfg.URL, Protocols: cfg.Protocols}
	results := make([]AuditResult, len(fixtures))
	var wg sync.WaitGroup
	slots := make(chan struct{}, auditParallelism)
	for i, f := range fixtures {
		results[i] = AuditResult{Fixture: f.Name, Description: f.Description, Expect: f.Expect,
			Observed: make([]Observation, len(cfg.Protocols))}
		for j, p := range cfg.Protocols {
			results[i].Observed[j].Protocol = p
		}
		if f.Skip != "" {
			results[i].Note = f.Skip
			continue
		}
		c := clients[i]
		for j, p := range cfg.Protocols {
			wg.Go(func() {
				slots <- struct{}{}
				defer func() { <-slots }()
				results[i].Observed[j] = c.auditCall(ctx, cfg, p)
			})
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("audit of %s: %w", cfg.URL, err)
	}

	for i, f := range fixtures {
		judge(&results[i], f)
		report.Summary.count(results[i].Verdict)
	}
	order := []AuditVerdict{VerdictWronglyAccepted, VerdictWronglyRefused, VerdictUnknown, VerdictRight, VerdictSkipped}
	slices.SortStableFunc(results, func(a, b AuditResult) int {
		return slices.Index(order, a.Verdict) - slices.Index(order, b.Verdict)
	})
	report.Results = results
	return report, nil
}

func (cfg AuditConfig) withDefaults() (AuditConfig, error) {
	if len(cfg.Protocols) == 0 {
		cfg.Protocols = Protocols()
	}
	if cfg.Path == "" {
		cfg.Path = PlainHTTPPath
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	switch {
	case cfg.Procedure != "" && (!strings.HasPrefix(cfg.Procedure, "/") || strings.Count(cfg.Procedure, "/") != 2):
		return cfg, fmt.Errorf("client: procedure %q is not of the form /package.Service/Method", cfg.Procedure)
	case !strings.HasPrefix(cfg.Path, "/"):
		return cfg, fmt.Errorf("client: path %q does not start with /", cfg.Path)
	case cfg.Timeout < 0:
		return cfg, fmt.Errorf("client: timeout %s is negative", cfg.Timeout)
	}
	return cfg, nil
}

// presenting replaces any client certificate with the fixture's, or with
// none.
func presenting(issued *pki.Issued) Option {
	return optionFunc(func(o *options) {
		o.cert, o.certFile = nil, ""
		if issued != nil {
			cert := issued.TLSCertificate()
			o.cert = &cert
		}
	})
}

func (s *AuditSummary) count(v AuditVerdict) {
	switch v {
	case VerdictRight:
		s.Right++
	case VerdictWronglyAccepted:
		s.WronglyAccepted++
	case VerdictWronglyRefused:
		s.WronglyRefused++
	case VerdictUnknown:
		s.Unknown++
	case VerdictSkipped:
		s.Skipped++
	}
}

// judge sets the verdict of one fixture from its observations. One
// protocol that let a certificate in is enough to call it wrongly
// accepted: a client picks the protocol.
func judge(r *AuditResult, f pki.Fixture) {
	if f.Skip != "" {
		r.Verdict = VerdictSkipped
		for i := range r.Observed {
			r.Observed[i] = Observation{Protocol: r.Observed[i].Protocol, Outcome: OutcomeSkipped}
		}
		return
	}
	var accepted, denied, refused, unknown bool
	for _, o := range r.Observed {
		switch o.Outcome {
		case OutcomeAccepted:
			accepted = true
		case OutcomeDenied:
			denied = true
		case OutcomeRefused:
			refused = true
		default:
			unknown = true
		}
	}
	switch {
	case f.Expect == pki.ExpectRefuse && accepted:
		r.Verdict = VerdictWronglyAccepted
	case f.Expect == pki.ExpectAccept && refused:
		r.Verdict = VerdictWronglyRefused
	case unknown:
		r.Verdict = VerdictUnknown
	default:
		r.Verdict = VerdictRight
	}
	if r.Verdict == VerdictWronglyAccepted || r.Verdict == VerdictWronglyRefused {
		r.Misconfiguration = f.Misconfiguration
	}
	if denied {
		r.Note = "the server's policy denied the call after the TLS handshake had let the certificate in"
	}
}

// auditCall tries the client's certificate on one protocol.
func (c *Client) auditCall(ctx context.Context, cfg AuditConfig, p Protocol) Observation {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	obs := Observation{Protocol: p}
	hc, err := c.httpClient(p)
	if err != nil {
		obs.Outcome, obs.Detail = OutcomeNoAnswer, err.Error()
		return obs
	}
	seen := &answerRecorder{base: hc.Transport}
	hc = &http.Client{Transport: seen}

	var services []string
	switch {
	case p == HTTP:
		err = c.auditPost(ctx, hc, cfg.Path)
	case p == GRPC && cfg.Procedure == "":
		services, err = listServices(ctx, hc, c.baseURL)
	default:
		err = c.auditUnary(ctx, hc, p, cmp.Or(cfg.Procedure, DefaultAuditProcedure))
	}

	answer := seen.get()
	denied := (err != nil && connect.CodeOf(err) == connect.CodePermissionDenied) ||
		answer.status == http.StatusForbidden
	switch {
	case answer.refusal != "":
		obs.Outcome, obs.Detail = OutcomeRefused, answer.refusal
	case answer.status != 0 && denied:
		obs.Outcome, obs.Detail = OutcomeDenied, "permission_denied"
	case answer.status != 0 || err == nil:
		obs.Outcome, obs.Detail = OutcomeAccepted, answerDetail(p, answer.status, err)
		if err == nil && services != nil {
			obs.Detail = "reflection lists " + strings.Join(services, ", ")
		}
	default:
		err = c.explain(ctx, err)
		var explained *Error
		switch {
		case RefusedByServer(err) && errors.As(err, &explained):
			obs.Outcome, obs.Detail = OutcomeRefused, "TLS alert: "+explained.Alert
		case errors.As(err, &explained):
			obs.Outcome, obs.Detail = OutcomeNoAnswer, explained.Cause
		default:
			obs.Outcome, obs.Detail = OutcomeNoAnswer, err.Error()
		}
	}
	return obs
}

// auditUnary calls procedure with an Echo request on a connect-go client
// speaking p. A target that has no such procedure answers unimplemented,
// which tells as much as a reply.
func (c *Client) auditUnary(ctx context.Context, hc *http.Client, p Protocol, procedure string) error {
	rpc := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](hc, c.baseURL+procedure,
		protocolOptions(p)...)
	_, err := rpc.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "echoloop audit"}))
	return err
}

// listServices asks the target's gRPC server reflection for the services
// it serves. The request is closed before the answer is read: a server
// that reads a whole request before answering would otherwise wait for
// the rest of a stream that never comes. A target without reflection
// answers unimplemented, which still shows that the handshake let the
// client in.
func listServices(ctx context.Context, hc *http.Client, baseURL string) ([]string, error) {
	rpc := connect.NewClient[reflectionpb.ServerReflectionRequest, reflectionpb.ServerReflectionResponse](
		hc, baseURL+reflectionProcedure, connect.WithGRPC())
	stream := rpc.CallBidiStream(ctx)
	err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
	})
	if err == nil {
		err = stream.CloseRequest()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	defer func() { _ = stream.CloseResponse() }() // the answer, or its error, is what counts
	answer, err := stream.Receive()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, service := range answer.GetListServicesResponse().GetService() {
		names = append(names, service.GetName())
	}
	return names, nil
}

// reflectionProcedure is gRPC server reflection v1's one method.
const reflectionProcedure = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"

// answerDetail names what the server answered: "ok", an RPC code, or an
// HTTP status.
func answerDetail(p Protocol, status int, err error) string {
	switch {
	case p == HTTP:
		return fmt.Sprintf("HTTP %d", status)
	case err == nil:
		return "ok"
	}
	return connect.CodeOf(err).String()
}

// auditPost is the plain protocol's call: a JSON POST whose answer is not
// read beyond its status.
func (c *Client) auditPost(ctx context.Context, hc *http.Client, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+path,
		strings.NewReader(`{"message":"echoloop audit"}`))
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return connect.NewError(transportCode(ctx), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return nil
}

// answerRecorder notes whether the server sent any HTTP answer, which it
// does only after its TLS layer let the client in.
type answerRecorder struct {
	base http.RoundTripper

	mu     sync.Mutex
	answer recordedAnswer
}

type recordedAnswer struct {
	status  int
	refusal string // set when the answer is itself a certificate refusal
}

func (r *answerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	answer := recordedAnswer{status: resp.StatusCode}
	answer.refusal, resp.Body = refusalAnswer(resp)
	r.mu.Lock()
	r.answer = answer
	r.mu.Unlock()
	return resp, nil
}

func (r *answerRecorder) get() recordedAnswer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answer
}

// refusalAnswer recognises a server that finishes the handshake whatever
// the client certificate, and refuses a bad one in HTTP instead: nginx
// answers 400 with "No required SSL certificate was sent" or "The SSL
// certificate error" (its internal codes 496 and 495, which some proxies
// pass on). It returns the refusal, or "", and a body to read in place of
// the one it peeked at.
func refusalAnswer(resp *http.Response) (string, io.ReadCloser) {
	switch resp.StatusCode {
	case 495, 496:
		return fmt.Sprintf("HTTP %d after the handshake", resp.StatusCode), resp.Body
	case http.StatusBadRequest:
	default:
		return "", resp.Body
	}
	peek, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	body := struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(peek), resp.Body), resp.Body}
	for _, sign := range []string{"No required SSL certificate", "SSL certificate error"} {
		if bytes.Contains(peek, []byte(sign)) {
			return "HTTP 400 after the handshake: " + sign, body
		}
	}
	return "", body
}
