package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// requestKeys are the keys a request may have, spelt exactly so.
// encoding/json alone would also take "CMD" or "Cmd" for "cmd" (it
// matches names without regard to case), so that a request could name
// the same field twice in two spellings.
var requestKeys = map[string]bool{"cmd": true, "wait": true, "master": true, "workers": true}

// ParseRequest parses one request line (its newline optional) and checks
// it: one JSON object with only Request's keys, each spelt exactly and at
// most once, and a command that makes sense with them. Its errors are one
// line, fit for the reply.
func ParseRequest(line []byte) (Request, error) {
	var req Request
	if err := checkKeys(line); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("malformed request: %w", err)
	}
	// Only JSON's whitespace may follow: bytes.TrimSpace would also
	// pass \v, \f, U+0085 and U+00A0.
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.Trim(rest, " \t\r\n")) > 0 {
		return req, errors.New("malformed request: data after the JSON object")
	}
	switch req.Cmd {
	case "status", "reload", "stop":
		if req.Workers != 0 {
			return req, fmt.Errorf(`malformed request: "workers" is for scale, not %s`, req.Cmd)
		}
	case "scale":
		if req.Workers < 1 || req.Workers > MaxWorkers {
			return req, fmt.Errorf(`scale: "workers" must be a number from 1 to %d`, MaxWorkers)
		}
	case "":
		return req, errors.New(`malformed request: missing "cmd"`)
	default:
		return req, fmt.Errorf("unknown command %q (want status, reload, stop or scale)", req.Cmd)
	}
	return req, nil
}

// checkKeys refuses a first JSON value in b that has a key twice in one
// object (at any depth: encoding/json would keep the last one), and a
// top-level object key that is not one of requestKeys. Syntax errors
// are left for the decoder, which words them better. It walks tokens with
// a stack, not recursion, so deep nesting costs memory bounded by the
// request's size and no goroutine stack.
func checkKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers are not checked here: no float parsing
	type frame struct {
		keys      map[string]struct{} // nil for an array
		expectKey bool
	}
	var stack []frame
	// valueDone is called after each complete value: in an object, a key
	// comes next.
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].expectKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // syntax: the decoder says what is wrong
		}
		top := len(stack) - 1
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, frame{keys: map[string]struct{}{}, expectKey: true})
				continue
			case '[':
				stack = append(stack, frame{})
				continue
			default: // '}' or ']'
				stack = stack[:top]
				valueDone()
			}
		case string:
			if top >= 0 && stack[top].keys != nil && stack[top].expectKey {
				if top == 0 && !requestKeys[v] {
					return fmt.Errorf("unknown field %q", v)
				}
				if _, dup := stack[top].keys[v]; dup {
					return fmt.Errorf("duplicate key %q", v)
				}
				stack[top].keys[v] = struct{}{}
				stack[top].expectKey = false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
		if len(stack) == 0 {
			return nil // the first value is complete
		}
	}
}
