package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode"

	"connectrpc.com/connect"
	"github.com/alecthomas/kong"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/echoloop/echoloop/client"
	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
	"github.com/echoloop/echoloop/server"
)

type callCmd struct {
	clientFlags `embed:""`

	Protocol string        `default:"connect" enum:"connect,grpc,grpc-web,http,all" help:"Protocol to call with: connect, grpc, grpc-web, http, or all side by side."`
	Message  string        `default:"hello" help:"Message to echo."`
	JSON     bool          `name:"json" help:"Print each answer as protojson, one object per line."`
	Delay    time.Duration `help:"Ask the server to wait this long before answering (at most ${max_delay}), to watch deadlines and drains."`
	Stream   int           `placeholder:"N" help:"Call EchoStream instead: N echoes (1 to ${max_stream_count}), --interval apart, printed as they come."`
	Interval time.Duration `default:"1s" help:"Pause between streamed echoes (at most ${max_stream_interval})."`
	Chat     bool          `help:"Call EchoChat instead: send each line of standard input as it is read, print each echo as it comes, until input ends; --timeout bounds each echo."`
	// ExpectRefusal turns the command into a check that a certificate is
	// kept out, as the compose stack's intruder does: without a shell in
	// the image, the exit code is the only verdict a container can give.
	ExpectRefusal bool `help:"Succeed only when the server refuses this client's certificate in the TLS handshake, on every protocol called."`
}

// Validate is kong's hook for checks its types cannot make. It also
// checks the server's bounds on delays and streams, so that a mistake names
// its flag instead of coming back from the server as invalid_argument.
func (c *callCmd) Validate(kctx *kong.Context) error {
	flag := func(name string) string { return flagSource(kctx, name) }
	stream := given(kctx, "stream")
	streaming := stream || c.Chat
	// The streaming call in use, for messages about it.
	call := flag("stream")
	if c.Chat {
		call = flag("chat")
	}
	switch {
	case stream && c.Chat:
		return fmt.Errorf("%s and %s are different calls: choose one", flag("stream"), flag("chat"))
	case streaming && (c.Protocol == "all" || c.Protocol == "http"):
		return fmt.Errorf("%s takes one RPC protocol (connect, grpc or grpc-web), not %s %s",
			call, flag("protocol"), c.Protocol)
	case streaming && c.ExpectRefusal:
		return fmt.Errorf("%s checks unary calls only, not %s", flag("expect-refusal"), call)
	case streaming && c.Delay != 0:
		return fmt.Errorf("%s applies to unary calls, not to %s: leave it out, "+
			"or use --interval to pace a stream", flag("delay"), call)
	case stream && (c.Stream < 1 || c.Stream > server.MaxStreamCount):
		return fmt.Errorf("%s must be between 1 and %d (the server's limit), got %d; leave it out "+
			"for a unary call", flag("stream"), server.MaxStreamCount, c.Stream)
	case stream && (c.Interval < 0 || c.Interval > server.MaxStreamInterval):
		return fmt.Errorf("%s must be between 0s and %s (the server's limit), got %s",
			flag("interval"), server.MaxStreamInterval, c.Interval)
	case c.Delay < 0:
		return fmt.Errorf("%s must not be negative, got %s", flag("delay"), c.Delay)
	case c.Delay > server.MaxDelay:
		return fmt.Errorf("%s %s is over the server's limit of %s", flag("delay"), c.Delay,
			server.MaxDelay)
	}
	return c.validate(kctx)
}

func (c *callCmd) Run(ctx context.Context, out *output) error {
	cl, err := c.newClient()
	if err != nil {
		return err
	}
	defer cl.Close()

	if c.Chat {
		return c.chat(ctx, cl, out)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	if c.Stream > 0 {
		return c.stream(ctx, cl, out)
	}

	req := &echov1.EchoRequest{Message: c.Message}
	if c.Delay > 0 {
		req.Delay = durationpb.New(c.Delay)
	}
	var results []client.Result
	if c.Protocol == "all" {
		results = cl.EchoAll(ctx, req)
	} else {
		p, err := client.ParseProtocol(c.Protocol)
		if err != nil {
			return usageError{err: err, command: "call "}
		}
		resp, err := cl.Call(ctx, p, req)
		results = []client.Result{{Protocol: p, Response: resp, Err: err}}
	}

	if c.JSON {
		if err := printJSON(out.out, results); err != nil {
			return err
		}
	} else {
		printResults(out.out, results)
		if c.ExpectRefusal && len(results) == 1 && results[0].Err != nil {
			// printResults leaves a single call's error to main, which
			// here reports the check instead.
			fmt.Fprintf(out.out, "%s: %v\n", results[0].Protocol, results[0].Err)
		}
	}
	if !c.ExpectRefusal {
		return verdict(results)
	}

	if err := refusalVerdict(results); err != nil {
		return err
	}
	if !c.JSON {
		fmt.Fprintf(out.out, "\nrefused by the server on %s, as expected\n", protocolCount(len(results)))
	}
	return nil
}

// refusalVerdict is the outcome of --expect-refusal: nil only when the
// server refused the client certificate on every protocol called. A call
// that failed for another reason (no server, an untrusted server
// certificate, a policy denial) proves nothing about the certificate and
// fails the check too.
func refusalVerdict(results []client.Result) error {
	var accepted, otherwise []string
	for _, r := range results {
		switch {
		case r.Err == nil:
			accepted = append(accepted, string(r.Protocol))
		case !client.RefusedByServer(r.Err):
			otherwise = append(otherwise, string(r.Protocol))
		}
	}
	switch {
	case len(accepted) > 0:
		return fmt.Errorf("the server accepted this client over %s, but it was expected to refuse it",
			strings.Join(accepted, ", "))
	case len(otherwise) > 0:
		return fmt.Errorf("expected the server to refuse this client's certificate, but %s failed "+
			"for another reason, as shown above", strings.Join(otherwise, ", "))
	}
	return nil
}

func protocolCount(n int) string {
	if n == 1 {
		return "the one protocol called"
	}
	return fmt.Sprintf("all %d protocols", n)
}

// stream prints each echo of an EchoStream as it arrives.
func (c *callCmd) stream(ctx context.Context, cl *client.Client, out *output) error {
	p, err := client.ParseProtocol(c.Protocol)
	if err != nil {
		return usageError{err: err, command: "call "}
	}
	req := &echov1.EchoStreamRequest{
		Message:  c.Message,
		Count:    uint32(c.Stream), //nolint:gosec // G115: Validate keeps it within 1 to MaxStreamCount
		Interval: durationpb.New(c.Interval),
	}
	return cl.EchoStream(ctx, p, req, func(msg *echov1.EchoStreamResponse) error {
		return c.printEcho(out.out, msg.GetIndex(), msg.GetEcho())
	})
}

// chat sends each line of standard input as it is read and prints each
// echo as it arrives. --timeout bounds the wait for each echo rather than
// the session, which lasts until standard input ends: a person typing
// takes longer than any call should.
func (c *callCmd) chat(ctx context.Context, cl *client.Client, out *output) error {
	p, err := client.ParseProtocol(c.Protocol)
	if err != nil {
		return usageError{err: err, command: "call "}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watch := &echoWatch{timeout: c.Timeout, cancel: cancel}
	defer watch.stop()

	// Standard input is read apart from the stream: a read blocked on a
	// terminal cannot be interrupted, but the call must still end at once
	// on a signal or a failed stream, leaving the reader behind.
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		scanner := bufio.NewScanner(out.in)
		// Room for the line ending too: a line of maxChatLine bytes fits.
		scanner.Buffer(make([]byte, 0, 64<<10), maxChatLine+len("\r\n"))
		for scanner.Scan() {
			if len(scanner.Bytes()) > maxChatLine {
				readErr <- bufio.ErrTooLong
				return
			}
			select {
			case lines <- scanner.Text():
			case <-ctx.Done():
				return
			}
		}
		readErr <- scanner.Err()
	}()
	messages := func(yield func(string) bool) {
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					return
				}
				watch.sent()
				if !yield(line) {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}

	err = cl.EchoChat(ctx, p, messages, func(msg *echov1.EchoChatResponse) error {
		watch.echoed()
		return c.printEcho(out.out, msg.GetIndex(), msg.GetEcho())
	})
	if cause := context.Cause(ctx); errors.Is(cause, errNoEcho) {
		return connect.NewError(connect.CodeDeadlineExceeded, cause)
	}
	if err != nil {
		return err
	}
	// The stream ended cleanly, so the reader has finished and said how.
	select {
	case err := <-readErr:
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("a line of standard input is longer than %d bytes (%d MiB), the "+
				"largest message the server takes by default (--max-message-bytes): split it into "+
				"shorter lines", maxChatLine, maxChatLine>>20)
		}
		if err != nil {
			return fmt.Errorf("reading standard input: %w", err)
		}
	default:
	}
	return nil
}

// maxChatLine is the longest line --chat reads: a longer one is more than a
// server with the default --max-message-bytes takes in one message.
const maxChatLine = server.DefaultMaxMessageBytes

// errNoEcho ends a chat whose server left a message unanswered for longer
// than --timeout.
var errNoEcho = errors.New("a line sent got no echo within --timeout: raise --timeout if the server is slow")

// echoWatch cancels a chat when an echo is overdue: each line sent must be
// echoed within timeout of the line before it being echoed.
type echoWatch struct {
	timeout time.Duration
	cancel  context.CancelCauseFunc

	mu      sync.Mutex
	pending int
	timer   *time.Timer
}

func (w *echoWatch) sent() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending++
	if w.pending == 1 {
		w.timer = time.AfterFunc(w.timeout, func() { w.cancel(errNoEcho) })
	}
}

func (w *echoWatch) echoed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = max(w.pending-1, 0)
	if w.timer == nil {
		return
	}
	if w.pending == 0 {
		w.timer.Stop()
		return
	}
	w.timer.Reset(w.timeout)
}

func (w *echoWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}

// printEcho prints one echo of a stream: protojson with --json, else a line
// naming the identity the server verified for it.
func (c *callCmd) printEcho(w io.Writer, index uint32, echo *echov1.EchoResponse) error {
	if c.JSON {
		line, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(echo)
		if err != nil {
			return fmt.Errorf("encoding echo %d: %w", index, err)
		}
		fmt.Fprintln(w, string(line))
		return nil
	}
	fmt.Fprintf(w, "%d  %s  %s over %s  peer CN=%s sha256 %s\n", index, strconv.Quote(echo.GetMessage()),
		echo.GetConnection().GetProtocol(), echo.GetConnection().GetHttpVersion(),
		printable(echo.GetPeer().GetCommonName()), echo.GetPeer().GetSha256Fingerprint())
	return nil
}

// verdict turns the results into the command's outcome: the error of a
// single call as is, or whether all protocols agreed.
func verdict(results []client.Result) error {
	if len(results) == 1 {
		return results[0].Err
	}
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
		}
	}
	switch {
	case failed > 0:
		return fmt.Errorf("%d of %d protocols failed, as shown above", failed, len(results))
	case client.Agree(results) != nil:
		return errors.New("the server saw different identities on different protocols, as shown above")
	}
	return nil
}

// printJSON writes one protojson object per result, or an error object
// {"protocol", "error": {"code", "message"}} for a failed call.
func printJSON(w io.Writer, results []client.Result) error {
	for _, r := range results {
		if r.Err != nil {
			line, err := json.Marshal(map[string]any{
				"protocol": r.Protocol,
				"error":    map[string]string{"code": connect.CodeOf(r.Err).String(), "message": r.Err.Error()},
			})
			if err != nil {
				return fmt.Errorf("encoding error: %w", err)
			}
			fmt.Fprintln(w, string(line))
			continue
		}
		// Every field, as the server itself writes them, so scripts can
		// rely on the shape.
		line, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(r.Response)
		if err != nil {
			return fmt.Errorf("encoding %s answer: %w", r.Protocol, err)
		}
		fmt.Fprintln(w, string(line))
	}
	return nil
}

// printResults shows the answers side by side: the connection facts per
// protocol, then each identity field once when every protocol agrees on it.
func printResults(w io.Writer, results []client.Result) {
	// A single call's error is the command's own and is printed once, by
	// main; side by side, each failure is shown here.
	var ok []client.Result
	for _, r := range results {
		if r.Err != nil {
			if len(results) > 1 {
				fmt.Fprintf(w, "%s: %v\n", r.Protocol, r.Err)
			}
			continue
		}
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		return
	}
	if len(ok) < len(results) {
		fmt.Fprintln(w)
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := []string{""}
	for _, r := range ok {
		header = append(header, string(r.Protocol))
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	connectionRows := []struct {
		name  string
		value func(*echov1.EchoResponse) string
	}{
		{"message", func(r *echov1.EchoResponse) string { return strconv.Quote(r.GetMessage()) }},
		{"protocol (server)", func(r *echov1.EchoResponse) string { return r.GetConnection().GetProtocol() }},
		{"http version", func(r *echov1.EchoResponse) string { return r.GetConnection().GetHttpVersion() }},
		{"tls version", func(r *echov1.EchoResponse) string { return r.GetConnection().GetTlsVersion() }},
		{"cipher suite", func(r *echov1.EchoResponse) string { return r.GetConnection().GetCipherSuite() }},
		{"alpn", func(r *echov1.EchoResponse) string { return r.GetConnection().GetAlpn() }},
		{"server name", func(r *echov1.EchoResponse) string { return r.GetConnection().GetServerName() }},
		{"resumed", func(r *echov1.EchoResponse) string { return fmt.Sprint(r.GetConnection().GetResumed()) }},
	}
	for _, row := range connectionRows {
		cells := []string{row.name}
		for _, r := range ok {
			cells = append(cells, printable(row.value(r.Response)))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()

	fmt.Fprintln(w)
	if len(ok) > 1 {
		fmt.Fprintf(w, "client identity, as the server verified it (%s):\n", protocolList(ok))
	} else {
		fmt.Fprintln(w, "client identity, as the server verified it:")
	}
	printIdentity(w, ok)
}

func printIdentity(w io.Writer, ok []client.Result) {
	rows := []struct {
		name  string
		value func(*echov1.Peer) string
	}{
		{"common name", func(p *echov1.Peer) string { return p.GetCommonName() }},
		{"sha256 fingerprint", func(p *echov1.Peer) string { return p.GetSha256Fingerprint() }},
		{"serial number", func(p *echov1.Peer) string { return p.GetSerialNumber() }},
		{"issuer", func(p *echov1.Peer) string { return p.GetIssuer() }},
		{"dns names", func(p *echov1.Peer) string { return strings.Join(p.GetDnsNames(), ", ") }},
		{"uris", func(p *echov1.Peer) string { return strings.Join(p.GetUris(), ", ") }},
		{"email addresses", func(p *echov1.Peer) string { return strings.Join(p.GetEmailAddresses(), ", ") }},
		{"ip addresses", func(p *echov1.Peer) string { return strings.Join(p.GetIpAddresses(), ", ") }},
		{"spiffe id", func(p *echov1.Peer) string { return p.GetSpiffeId() }},
		{"not before", func(p *echov1.Peer) string { return formatTime(p.GetNotBefore().AsTime()) }},
		{"not after", func(p *echov1.Peer) string { return formatTime(p.GetNotAfter().AsTime()) }},
		{"chain", func(p *echov1.Peer) string { return strings.Join(p.GetChain(), " <- ") }},
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range rows {
		first := row.value(ok[0].Response.GetPeer())
		same := true
		for _, r := range ok[1:] {
			same = same && row.value(r.Response.GetPeer()) == first
		}
		if same {
			fmt.Fprintf(tw, "  %s\t%s\n", row.name, printable(first))
			continue
		}
		for _, r := range ok {
			fmt.Fprintf(tw, "  %s (%s)\t%s\tDIFFERS\n", row.name, r.Protocol,
				printable(row.value(r.Response.GetPeer())))
		}
	}
	tw.Flush()

	if len(ok) > 1 {
		if err := client.Agree(ok); err == nil {
			fmt.Fprintf(w, "\nidentical on all %d protocols\n", len(ok))
		} else {
			fmt.Fprintf(w, "\nidentity DIFFERS between protocols: %v\n", err)
		}
	}
}

func protocolList(results []client.Result) string {
	names := make([]string, 0, len(results))
	for _, r := range results {
		names = append(names, string(r.Protocol))
	}
	return strings.Join(names, ", ")
}

func formatTime(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// printable makes a value safe for one table cell: "-" for nothing, and
// quoted when it holds a tab, a newline or a terminal escape, which would
// break the columns or the terminal.
func printable(s string) string {
	switch {
	case s == "":
		return "-"
	case strings.ContainsFunc(s, unicode.IsControl):
		return strconv.Quote(s)
	}
	return s
}
