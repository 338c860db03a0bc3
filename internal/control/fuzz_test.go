package control

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseRequest feeds ParseRequest arbitrary lines. It must not panic,
// and what it accepts must be a valid request with each top-level key
// spelt exactly and present once, that survives a round trip through
// Do's encoding unchanged. Seeds: testdata/fuzz/FuzzParseRequest.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"cmd":"status"}` + "\n",
		`{"cmd":"reload","wait":true,"master":true}`,
		`{"cmd":"scale","workers":4}`,
		`{"cmd":"status","cmd":"stop"}`,
		`{"cmd":"scale","workers":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if len(line) > MaxRequest {
			return // the reader never hands over more
		}
		req, err := ParseRequest(line)
		if err != nil {
			if bytes.ContainsRune([]byte(err.Error()), '\n') {
				t.Fatalf("error of several lines: %q", err)
			}
			return
		}
		switch req.Cmd {
		case "status", "reload", "stop":
			if req.Workers != 0 {
				t.Fatalf("accepted %+v", req)
			}
		case "scale":
			if req.Workers < 1 || req.Workers > MaxWorkers {
				t.Fatalf("accepted %+v", req)
			}
		default:
			t.Fatalf("accepted command %q", req.Cmd)
		}
		if !json.Valid(line) {
			t.Fatalf("accepted invalid JSON %q", line)
		}
		// Each top-level key once, spelt as Request's.
		dec := json.NewDecoder(bytes.NewReader(line))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			t.Fatalf("accepted %q, not an object", line)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatalf("accepted %q: %v", line, err)
			}
			key := tok.(string)
			if seen[key] || !requestKeys[key] {
				t.Fatalf("accepted %q with key %q twice or unknown", line, key)
			}
			seen[key] = true
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatalf("accepted %q: %v", line, err)
			}
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseRequest(b)
		if err != nil || again != req {
			t.Fatalf("%q parsed as %+v; its encoding %s as %+v, %v", line, req, b, again, err)
		}
	})
}
