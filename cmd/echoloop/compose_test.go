package main

// The compose stack, end to end on a real Docker engine: the tasks a
// newcomer runs (`task up`, `task certs:export`, `task logs`, `task down`),
// from a clean state, under a project name and host port of the test's own
// so that it never meets a stack someone is running.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/echoloop/echoloop/pki"
)

// composeStack runs the Taskfile's container tasks for one compose project.
type composeStack struct {
	root    string // the module root, where Taskfile.yml and compose.yaml are
	project string
	image   string
	port    int
	env     []string
}

func newComposeStack(t *testing.T) *composeStack {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	// Lower case, digits and dashes: the names both compose
	// implementations keep as they are.
	project := "echoloop-test-" + hex.EncodeToString(suffix)
	s := &composeStack{
		root:    root,
		project: project,
		image:   "echoloop:" + strings.TrimPrefix(project, "echoloop-"),
		port:    freeLoopbackAddrPort(t),
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin")
	s.env = append(os.Environ(),
		"PATH="+goBin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"COMPOSE_PROJECT_NAME="+s.project,
		"ECHOLOOP_IMAGE="+s.image,
		"ECHOLOOP_PORT="+strconv.Itoa(s.port),
	)
	return s
}

// freeLoopbackAddrPort returns a port that was free a moment ago on
// 127.0.0.1, where compose.yaml publishes the server.
func freeLoopbackAddrPort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeLoopbackAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// run runs a program in the module root with the stack's environment and
// returns everything it printed.
func (s *composeStack) run(ctx context.Context, name string, args ...string) (string, error) {
	return s.runWith(ctx, nil, name, args...)
}

// runWith is run with variables added to the stack's environment, or
// changed: the last value of a name is the one used.
func (s *composeStack) runWith(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.root
	cmd.Env = append(slices.Clip(s.env), env...)
	// docker and compose children may hold the output open after a
	// timeout killed task; stop waiting for them.
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// task runs `go tool task args...`.
func (s *composeStack) task(ctx context.Context, args ...string) (string, error) {
	return s.taskWith(ctx, nil, args...)
}

// taskWith is task with variables added to the stack's environment.
func (s *composeStack) taskWith(ctx context.Context, env []string, args ...string) (string, error) {
	return s.runWith(ctx, env, filepath.Join(runtime.GOROOT(), "bin", "go"), append([]string{"tool", "task"}, args...)...)
}

// leftovers lists the project's containers, networks and volumes that
// still exist, by compose's labels and by its name prefix.
func (s *composeStack) leftovers(ctx context.Context) ([]string, error) {
	var found []string
	for _, kind := range []string{"container", "network", "volume"} {
		for _, filter := range []string{"label=com.docker.compose.project=" + s.project, "name=" + s.project + "_"} {
			args := []string{kind, "ls", "--quiet", "--filter", filter}
			if kind == "container" {
				args = append(args, "--all")
			}
			out, err := s.run(ctx, "docker", args...)
			if err != nil {
				return nil, fmt.Errorf("listing %ss: %w: %s", kind, err, out)
			}
			for _, id := range strings.Fields(out) {
				found = append(found, kind+" "+id)
			}
		}
	}
	return found, nil
}

// requireDockerEngine skips the test when no Docker engine answers, and
// fails it instead in CI, where a skipped stack test would pass unseen.
func requireDockerEngine(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err == nil {
		t.Logf("Docker engine %s", strings.TrimSpace(string(out)))
		return
	}
	msg := fmt.Sprintf("NO DOCKER ENGINE ANSWERS `docker info` (%v: %s): the compose stack is NOT tested",
		err, strings.TrimSpace(string(out)))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI must run it")
	}
	t.Skip(msg)
}

func TestComposeStack(t *testing.T) {
	requireDockerEngine(t)
	t.Parallel()
	curl := composeCurlPath(t)
	stack := newComposeStack(t)
	t.Logf("compose project %s, image %s, host port %d", stack.project, stack.image, stack.port)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	// Whatever happens below, leave nothing behind. The test's context is
	// over by the time cleanups run, so this one has its own.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if out, err := stack.task(ctx, "down"); err != nil {
			t.Errorf("task down (cleanup): %v\n%s", err, out)
		}
		if out, err := stack.run(ctx, "docker", "image", "rm", stack.image); err != nil {
			t.Logf("removing image %s: %v\n%s", stack.image, err, out)
		}
	})

	// A clean state: nothing of this project exists yet.
	if found, err := stack.leftovers(ctx); err != nil || len(found) > 0 {
		t.Fatalf("before task up: %v %v", found, err)
	}

	// With the host port taken, up stops before it makes anything, and
	// says which setting moves the server elsewhere.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(stack.port))
	holder, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := stack.task(ctx, "up")
	holder.Close()
	if err == nil || !strings.Contains(busy, addr+", where the server is to be published, is in use") ||
		!strings.Contains(busy, "ECHOLOOP_PORT") {
		t.Errorf("task up with %s taken: %v\n%s", addr, err, busy)
	}
	if found, err := stack.leftovers(ctx); err != nil || len(found) > 0 {
		t.Fatalf("task up with the port taken left %v %v", found, err)
	}

	up, err := stack.task(ctx, "up")
	if err != nil {
		t.Fatalf("task up: %v\n%s", err, up)
	}
	for _, want := range []string{
		"server: healthy",
		"== client (exit 0)",
		"identical on all 4 protocols",
		"== intruder (exit 0)",
		"refused by the server on all 4 protocols, as expected",
	} {
		if !strings.Contains(up, want) {
			t.Errorf("task up printed no %q:\n%s", want, up)
		}
	}
	if strings.Contains(up, "DIFFERS") {
		t.Errorf("the client's protocols saw different identities:\n%s", up)
	}

	// The exported client certificate is the one every protocol saw.
	// Exported with ECHOLOOP_PORT unset, the example still names the port
	// the server publishes.
	exported := t.TempDir()
	export, err := stack.taskWith(ctx, []string{"ECHOLOOP_PORT="}, "certs:export", "EXPORT="+exported)
	if err != nil {
		t.Fatalf("task certs:export: %v\n%s", err, export)
	}
	if want := fmt.Sprintf("https://localhost:%d/v1/echo", stack.port); !strings.Contains(export, want) {
		t.Errorf("task certs:export without ECHOLOOP_PORT names no %s:\n%s", want, export)
	}
	certs, err := pki.LoadCertificates(filepath.Join(exported, pki.ClientCertFile))
	if err != nil {
		t.Fatal(err)
	}
	fingerprint := pki.Fingerprint(certs[0])
	identity := regexp.MustCompile(`(?m)^  common name\s+(\S+)\n  sha256 fingerprint\s+([0-9a-f]{64})$`).
		FindStringSubmatch(up)
	if identity == nil || identity[1] != certs[0].Subject.CommonName || identity[2] != fingerprint {
		t.Errorf("client identity in the table = %q, want CN %q and sha256 %s:\n%s",
			identity, certs[0].Subject.CommonName, fingerprint, up)
	}
	if info, err := os.Stat(filepath.Join(exported, pki.ClientKeyFile)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("exported client key: %v, mode %v; want 0600", err, info)
	}

	// The server logged the intruder's handshake as refused.
	logs, err := stack.task(ctx, "logs", "--", "server")
	if err != nil {
		t.Fatalf("task logs: %v\n%s", err, logs)
	}
	refusal := regexp.MustCompile(`msg="tls handshake refused" .*reason=unknown_authority .*peer.subject="CN=intruder,`)
	if !refusal.MatchString(logs) {
		t.Errorf("the server's log holds no refusal of the intruder:\n%s", logs)
	}

	// From the host, through the published port, with the exported files.
	url := fmt.Sprintf("https://localhost:%d", stack.port)
	tls := []string{
		"--cacert", filepath.Join(exported, pki.CACertFile),
		"--cert", filepath.Join(exported, pki.ClientCertFile),
		"--key", filepath.Join(exported, pki.ClientKeyFile),
	}
	out, err := stack.run(ctx, curl, append([]string{"--silent", "--show-error", "--fail-with-body",
		"--data", `{"message":"from the host"}`, url + "/v1/echo"}, tls...)...)
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	checkHostEcho(t, "curl", out, "from the host", "http", fingerprint)

	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err = stack.run(ctx, goBin, append(append([]string{"tool", "buf", "curl", "--protocol", "grpc",
		"--data", `{"message":"from buf curl"}`}, tls...), url+"/echo.v1.EchoService/Echo")...)
	if err != nil {
		t.Fatalf("buf curl: %v\n%s", err, out)
	}
	checkHostEcho(t, "buf curl", out, "from buf curl", "grpc", fingerprint)

	// task down leaves nothing of the stack behind.
	if out, err := stack.task(ctx, "down"); err != nil {
		t.Fatalf("task down: %v\n%s", err, out)
	}
	found, err := stack.leftovers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Errorf("after task down, still there: %s", strings.Join(found, ", "))
	}
}

// checkHostEcho checks one answer to a call made from the host.
func checkHostEcho(t *testing.T, who, body, message, protocol, fingerprint string) {
	t.Helper()
	var got struct {
		Message string `json:"message"`
		Peer    struct {
			Sha256Fingerprint string `json:"sha256Fingerprint"`
		} `json:"peer"`
		Connection struct {
			Protocol string `json:"protocol"`
		} `json:"connection"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%s answered no JSON (%v):\n%s", who, err, body)
	}
	if got.Message != message || got.Connection.Protocol != protocol || got.Peer.Sha256Fingerprint != fingerprint {
		t.Errorf("%s: message %q over %q as %s; want %q over %q as %s",
			who, got.Message, got.Connection.Protocol, got.Peer.Sha256Fingerprint, message, protocol, fingerprint)
	}
}

func composeCurlPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is not installed; this test calls the stack with the real binary (apt-get install curl)")
	}
	return path
}
