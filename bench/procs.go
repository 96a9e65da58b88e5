package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// serverProc is a server under test, running as a process of its own.
type serverProc struct {
	kind  string
	label string // kind, and key type when it is not the default
	addr  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *json.Decoder
	log   *os.File
}

// startServer starts this program again in the server role and waits
// for its address.
func startServer(run *suiteRun, kind string, keys keySet) (*serverProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this program to run its server role: %w", err)
	}
	label := kind
	if keys.keyType != defaultKeyType {
		label += "-" + string(keys.keyType)
	}
	args := []string{"-serve", kind, "-certs", keys.dir}
	if run.cfg.profile != "" {
		args = append(args, "-cpuprofile", filepath.Join(run.cfg.profile, label+".pprof"))
	}
	log, err := os.Create(filepath.Join(run.dir, label+".log"))
	if err != nil {
		return nil, fmt.Errorf("creating the log of %s: %w", label, err)
	}

	cmd := exec.Command(self, args...) //nolint:gosec,noctx // this very program, stopped by closing its input
	cmd.Stderr = log
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s server: %w", label, err)
	}
	p := &serverProc{kind: kind, label: label, cmd: cmd, in: in, out: json.NewDecoder(bufio.NewReader(stdout)),
		log: log}

	var hello struct{ Addr string }
	if err := p.out.Decode(&hello); err != nil {
		p.stop()
		tail, _ := os.ReadFile(log.Name())
		return nil, fmt.Errorf("the %s server did not start: %w\n%s", label, err, lastBytes(tail, 2000))
	}
	p.addr = hello.Addr
	return p, nil
}

// stats asks the server for its counters.
func (p *serverProc) stats() (procStats, error) { return p.ask("stats") }

// memory asks the server for its counters after a garbage collection.
func (p *serverProc) memory() (procStats, error) { return p.ask("gc") }

func (p *serverProc) ask(what string) (procStats, error) {
	var stats procStats
	if _, err := fmt.Fprintln(p.in, what); err != nil {
		return stats, fmt.Errorf("asking the %s server for stats: %w", p.label, err)
	}
	if err := p.out.Decode(&stats); err != nil {
		return stats, fmt.Errorf("reading the %s server's stats: %w", p.label, err)
	}
	return stats, nil
}

// stop closes the server's standard input, which ends it, and waits.
func (p *serverProc) stop() {
	_ = p.in.Close()
	// Wait's error says only how a server told to stop ended; its log
	// has anything worth reading.
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	_ = p.log.Close()
}

func lastBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var errNoCalls = errors.New("no call ended in the measured interval")
