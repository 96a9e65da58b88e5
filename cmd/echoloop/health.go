package main

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/grpchealth"
	"github.com/alecthomas/kong"
)

type healthCmd struct {
	clientFlags `embed:""`
}

// Validate is kong's hook for checks its types cannot make.
func (c *healthCmd) Validate(kctx *kong.Context) error { return c.validate(kctx) }

func (c *healthCmd) Run(ctx context.Context, out *output) error {
	cl, err := c.newClient()
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	status, err := cl.Health(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(out.out, statusName(status))
	if status != grpchealth.StatusServing {
		return fmt.Errorf("server at %s is %s", c.URL, statusName(status))
	}
	return nil
}

// statusName spells a health status as grpc.health.v1 does: SERVING,
// NOT_SERVING, UNKNOWN.
func statusName(status grpchealth.Status) string {
	return strings.ToUpper(status.String())
}
