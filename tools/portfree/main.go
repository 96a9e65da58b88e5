// Command portfree exits 0 when it can listen on a TCP address, and 1 when
// it cannot, saying why on standard error. The Taskfile asks it before
// compose publishes the server's port, so that a busy port stops `task up`
// with one line before any container, network or volume exists. It is Go
// rather than a shell probe (bash's /dev/tcp, ss, nc) because Go is the one
// tool every machine that runs the tasks has.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run ./tools/portfree HOST:PORT")
		os.Exit(2)
	}
	// Listening, not connecting: it is what the engine will try, and it
	// fails for a port that is bound but not yet listening too.
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "portfree: %v\n", err)
		os.Exit(1)
	}
	if err := ln.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "portfree: %v\n", err)
		os.Exit(1)
	}
}
