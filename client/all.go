package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	echov1 "github.com/echoloop/echoloop/gen/echo/v1"
)

// Result is one protocol's answer to [Client.EchoAll].
type Result struct {
	// Protocol is the protocol the call was made with.
	Protocol Protocol
	// Response is the server's answer; nil when Err is set.
	Response *echov1.EchoResponse
	// Err is why the call failed, an [*Error] when the cause is known.
	Err error
}

// EchoAll makes the same Echo call over every protocol at once, each on its
// own connection, and returns the results in the order of [Protocols].
func (c *Client) EchoAll(ctx context.Context, req *echov1.EchoRequest) []Result {
	protocols := Protocols()
	results := make([]Result, len(protocols))
	var wg sync.WaitGroup
	for i, p := range protocols {
		wg.Go(func() {
			resp, err := c.Call(ctx, p, req)
			results[i] = Result{Protocol: p, Response: resp, Err: err}
		})
	}
	wg.Wait()
	return results
}

// Agree returns nil when every result succeeded and the server reported the
// same peer identity for each. Otherwise it says which protocols failed or
// differed.
func Agree(results []Result) error {
	var problems []string
	var first *Result
	for i := range results {
		r := &results[i]
		if r.Err != nil {
			problems = append(problems, fmt.Sprintf("%s failed: %v", r.Protocol, r.Err))
			continue
		}
		if first == nil {
			first = r
			continue
		}
		if !proto.Equal(first.Response.GetPeer(), r.Response.GetPeer()) {
			problems = append(problems, fmt.Sprintf("%s saw a different identity than %s (fingerprint %s, not %s)",
				r.Protocol, first.Protocol, r.Response.GetPeer().GetSha256Fingerprint(),
				first.Response.GetPeer().GetSha256Fingerprint()))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
