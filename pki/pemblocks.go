package pki

import (
	"bytes"
	"encoding/pem"
	"fmt"
)

// pemBlock is one block of a PEM file. Block is nil when the block's
// BEGIN line is there but the block does not decode.
type pemBlock struct {
	*pem.Block
	// beginType is the type its BEGIN line names, as far as the line goes.
	beginType string
	// line is the line of the file the block starts at, from 1.
	line int
	// complete says whether an END line follows the BEGIN line; a block
	// without one was most likely cut short.
	complete bool
}

var (
	pemBegin = []byte("-----BEGIN")
	pemEnd   = []byte("-----END")
)

// pemBlocks splits data into its PEM blocks, in file order. pem.Decode on
// its own skips a block it cannot decode and goes on to the next, so a
// truncated or garbled file would read as one without PEM at all, or as
// one block short. Cutting the data at each BEGIN line first means every
// such line is accounted for.
func pemBlocks(data []byte) []pemBlock {
	var starts []int
	for i := 0; i < len(data); {
		at := bytes.Index(data[i:], pemBegin)
		if at < 0 {
			break
		}
		at += i
		// pem.Decode reads a BEGIN only at the start of a line.
		if at == 0 || data[at-1] == '\n' {
			starts = append(starts, at)
		}
		i = at + len(pemBegin)
	}

	blocks := make([]pemBlock, 0, len(starts))
	for n, start := range starts {
		end := len(data)
		if n+1 < len(starts) {
			end = starts[n+1]
		}
		chunk := data[start:end]
		block, _ := pem.Decode(chunk)
		blocks = append(blocks, pemBlock{
			Block:     block,
			beginType: beginType(chunk),
			line:      bytes.Count(data[:start], []byte("\n")) + 1,
			complete:  bytes.Contains(chunk, pemEnd),
		})
	}
	return blocks
}

// beginType reads the type from the BEGIN line that opens chunk, without
// the dashes; it is empty when the line itself is cut short.
func beginType(chunk []byte) string {
	line, _, _ := bytes.Cut(chunk, []byte("\n"))
	line = bytes.TrimPrefix(bytes.TrimSpace(line), pemBegin)
	typ, closed := bytes.CutSuffix(line, []byte("-----"))
	if !closed {
		return ""
	}
	return string(bytes.TrimSpace(typ))
}

// damaged describes a block that does not decode, for name's error message.
func (b pemBlock) damaged(name string) error {
	what := "PEM"
	if b.beginType != "" {
		what = printableType(b.beginType)
	}
	if !b.complete {
		return fmt.Errorf("pki: %q holds an incomplete %s block, starting at line %d: no "+
			"-----END line follows (was the file cut short?)", name, what, b.line)
	}
	return fmt.Errorf("pki: %q holds a damaged %s block, starting at line %d: it does not decode "+
		"(broken base64, a stray header line, or an END line of another type)", name, what, b.line)
}

// printableType keeps a type read from arbitrary bytes fit for a message.
func printableType(t string) string {
	const most = 40
	out := make([]rune, 0, len(t))
	for _, r := range t {
		if r < ' ' || r == 0x7f || r == 0xfffd {
			r = '?'
		}
		out = append(out, r)
		if len(out) == most {
			return string(out) + "..."
		}
	}
	return string(out)
}
