// Command echoloop serves and calls one Echo service over mutual TLS on one
// port, as Connect, gRPC, gRPC-Web and a plain JSON POST, and shows that the
// server verifies the client the same way whichever protocol carries the call.
//
// Every flag also reads an ECHOLOOP_* environment variable: --certs from
// ECHOLOOP_CERTS, --server-name from ECHOLOOP_SERVER_NAME, and so on.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
	// exitInterrupted is the shell's code for a process ended by SIGINT.
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(err, os.Stderr))
}

// usageError is a mistake in the command line rather than a failure of the
// work. command names the subcommand whose help would set it right.
type usageError struct {
	err     error
	command string
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// silentError fails the command after the command already said why.
type silentError struct{}

func (silentError) Error() string { return "failed" }

// report prints err, if any, as one line and returns the exit code.
func report(err error, stderr io.Writer) int {
	var usage usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, new(silentError)):
		return exitFail
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "echoloop: %v (see echoloop %s--help)\n", err, usage.command)
		return exitUsage
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "echoloop: interrupted")
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "echoloop: %v\n", err)
	return exitFail
}

// run parses args and runs the chosen command. It is main without the
// process around it, so tests can drive the whole program.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var cli commandLine
	exited := false
	parser, err := kong.New(&cli,
		kong.Name("echoloop"),
		kong.Description("Mutual TLS on one port for Connect, gRPC, gRPC-Web and plain HTTP, "+
			"with the client's verified identity in every answer."),
		kong.DefaultEnvars("ECHOLOOP"),
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) { exited = true }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		commandVars(),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&output{in: stdin, out: stdout, err: stderr}),
	)
	if err != nil {
		return fmt.Errorf("building the command line: %w", err)
	}

	kctx, err := parser.Parse(negativeValues(args))
	if exited {
		return nil // --help was shown
	}
	if err != nil {
		command := ""
		var parseErr *kong.ParseError
		if errors.As(err, &parseErr) && parseErr.Context != nil {
			err = blameEnvironment(parseErr.Context, err)
			if name := parseErr.Context.Command(); name != "" {
				command = strings.Fields(name)[0] + " "
				if len(strings.Fields(name)) > 1 && !strings.HasPrefix(strings.Fields(name)[1], "<") {
					command = strings.Join(strings.Fields(name)[:2], " ") + " "
				}
			}
		}
		return usageError{err: suggestFlag(strings.TrimSpace(command), args, err), command: command}
	}
	err = kctx.Run()
	// A signal interrupts every command but serve, which it asks to drain:
	// serve's own outcome, a clean stop or calls cut, is the verdict.
	if ctx.Err() != nil && err != nil && kctx.Command() != "serve" {
		return fmt.Errorf("%w", context.Canceled)
	}
	return err
}

// flagStandIns are flags people bring from other tools, by command, with
// the echoloop flag that does their job; %s is the value they gave.
var flagStandIns = map[string]map[string]string{
	"serve": {"port": "--addr :%s", "listen": "--addr %s", "bind": "--addr %s", "host": "--addr %s:8443"},
	"call":  clientStandIns, "health": clientStandIns, "doctor": clientStandIns, "bench": clientStandIns,
}

var clientStandIns = map[string]string{
	"port": "--url https://localhost:%s", "host": "--url https://%s:8443",
	"server": "--url https://%s", "addr": "--url https://%s", "address": "--url https://%s",
}

// suggestFlag replaces kong's guess at an unknown flag, the known flag
// closest in spelling (serve --port: "did you mean --cert?"), with the one
// that does what the unknown flag does elsewhere.
func suggestFlag(command string, args []string, err error) error {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "unknown flag --")
	if !ok {
		return err
	}
	name, _, _ := strings.Cut(rest, ",")
	standIn, ok := flagStandIns[command][name]
	if !ok {
		return err
	}
	value := "VALUE"
	for i, arg := range args {
		if v, found := strings.CutPrefix(arg, "--"+name+"="); found {
			value = v
		} else if arg == "--"+name && i+1 < len(args) {
			value = args[i+1]
		}
	}
	return fmt.Errorf("unknown flag --%s; did you mean %s?", name, fmt.Sprintf(standIn, value))
}

// blameEnvironment names the environment variable in kong's own message
// about a flag's value ("--protocol must be one of ...") when the value came
// from the variable and the flag was never typed. Kong already names it
// when the value does not parse; its check of allowed values does not.
func blameEnvironment(kctx *kong.Context, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "(from envar ") {
		return err
	}
	for _, f := range kctx.Flags() {
		flag := "--" + f.Name
		if !strings.HasPrefix(msg, flag+" ") && !strings.HasPrefix(msg, flag+":") {
			continue
		}
		if source := flagSource(kctx, f.Name); source != flag {
			return errors.New(source + strings.TrimPrefix(msg, flag))
		}
		return err
	}
	return err
}

// negativeValues joins a long flag and a value that starts with a minus
// and a digit (--delay -1s, --not-before -48h) into one argument,
// --delay=-1s, as getopt takes such a value. Kong would read it as a short
// flag, and no echoloop flag is a digit. Anything after "--" is left as it
// is.
func negativeValues(args []string) []string {
	joined := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return append(joined, args[i:]...)
		}
		if strings.HasPrefix(arg, "--") && !strings.Contains(arg, "=") && i+1 < len(args) &&
			negativeNumber(args[i+1]) {
			joined = append(joined, arg+"="+args[i+1])
			i++
			continue
		}
		joined = append(joined, arg)
	}
	return joined
}

func negativeNumber(arg string) bool {
	return len(arg) > 1 && arg[0] == '-' && (arg[1] >= '0' && arg[1] <= '9' || arg[1] == '.')
}

// output is where commands read and write: standard input, and what they
// write for people.
type output struct {
	in  io.Reader
	out io.Writer
	err io.Writer
}
