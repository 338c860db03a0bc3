package upgrade

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The first message of a hand-over comes from another process, perhaps
// another version of handoff: a bad one is an error, never a panic.
func TestDecodeHandover(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{`, "malformed message"},
		{`[]`, "malformed message"},
		{`{"generation":-1,"names":[],"fds":0}`, "generation -1"},
		{`{"generation":1,"banks":[0,2],"names":[],"fds":0}`, "slot 1 uses bank 2"},
		{`{"generation":1,"names":["a"],"fds":-1}`, "-1 descriptors"},
		{`{"generation":1,"names":["a","a"],"fds":2}`, `listener "a" twice`},
		{`{"generation":1,"names":["a:b"],"fds":1}`, `listener name "a:b"`},
		{`{"generation":1,"names":[],"groups":[{"name":"g","state":{},"fds":-1},{"name":"h","state":{},"fds":1}],"fds":0}`, `group "g" has -1 descriptors`},
		{`{"generation":1,"names":[],"groups":[{"name":"g","state":{},"fds":1},{"name":"g","state":{},"fds":1}],"fds":2}`, `group "g" twice`},
		{`{"generation":1,"names":[],"groups":[{"name":"g","state":{},"fds":65536},{"name":"h","state":{},"fds":65536}],"fds":65536}`, "131072 descriptors"},
		{`{"generation":1,"names":[],"fds":0,"state":"` + strings.Repeat("x", MaxStateSize) + `"}`, "a state of 65538 bytes"},
	} {
		_, err := decodeHandover([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("decodeHandover(%s) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
	h, err := decodeHandover([]byte(`{"generation":3,"banks":[1,0],"names":["http","dns"],"groups":[{"name":"g","state":{"x":1},"fds":2}],"fds":4,"state":{"v":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(h.State) != `{"v":1}` {
		t.Errorf("state %s, want the one sent", h.State)
	}
	lfds, groups, err := h.assign([]int{10, 11, 12, 13})
	if err != nil || lfds["http"] != 10 || lfds["dns"] != 11 || !reflect.DeepEqual(groups["g"].Fds, []int{12, 13}) || string(groups["g"].State) != `{"x":1}` {
		t.Errorf("assign: %v %+v %v", lfds, groups, err)
	}
	if _, _, err := h.assign([]int{10, 11, 12}); err == nil || !strings.Contains(err.Error(), "described 4 descriptors and sent 3") {
		t.Errorf("assign of too few: %v", err)
	}
}

func FuzzDecodeHandover(f *testing.F) {
	for _, s := range []string{
		`{"generation":3,"banks":[1,0],"names":["http","dns"],"groups":[{"name":"g","state":{"x":1},"fds":2}],"fds":4}`,
		`{"generation":1,"names":["http"],"fds":1}`,
		`{"generation":2,"names":["http"],"fds":1,"state":{"v":1,"last_reload":{"generation":2,"ok":true},"entries":[]}}`,
		`{"generation":2,"names":[],"fds":0,"state":null}`,
		`{"generation":7,"names":null,"fds":0}`,
		`{"generation":1,"names":["a"]}`,
		`{"generation":1,"names":[],"groups":[{"name":"g","state":null,"fds":0}],"fds":0}`,
		`{"generation":1,"names":["a"],"groups":[{"name":"g","state":[1,2],"fds":-1}],"fds":0}`,
		`{"generation":-5}`,
		`null`,
		`{`,
		"",
	} {
		f.Add([]byte(s), 4)
	}
	f.Fuzz(func(t *testing.T, b []byte, sent int) {
		h, err := decodeHandover(b)
		if err != nil {
			if !reflect.DeepEqual(h, handover{}) {
				t.Fatalf("decodeHandover(%q) = %+v with error %v", b, h, err)
			}
			return
		}
		// Whatever the count received, assigning never panics, and on
		// success every descriptor goes to exactly one listener or group.
		sent = max(0, min(sent%(maxHandoverFds+2), maxHandoverFds+1))
		fds := make([]int, sent)
		for i := range fds {
			fds[i] = 1000 + i
		}
		if h.Fds == 0 && len(h.Groups) == 0 {
			h.Fds = len(fds) // as receive does for an older master
		}
		lfds, groups, err := h.assign(fds)
		if err == nil {
			seen := map[int]bool{}
			for _, fd := range lfds {
				seen[fd] = true
			}
			for _, g := range groups {
				for _, fd := range g.Fds {
					seen[fd] = true
				}
			}
			if len(seen) != len(fds) || len(lfds) != len(h.Names) || len(groups) != len(h.Groups) {
				t.Fatalf("assign(%d fds) of %+v: %d listeners, %d groups, %d descriptors placed", len(fds), h, len(lfds), len(groups), len(seen))
			}
		}
		// Round trip: what decodes encodes back to an equal message.
		h, _ = decodeHandover(b)
		enc, err := h.encode()
		if err != nil {
			t.Fatalf("encode %+v: %v", h, err)
		}
		again, err := decodeHandover(enc)
		if err != nil {
			t.Fatalf("%s decodes, but its encoding %s does not: %v", b, enc, err)
		}
		if !equalHandover(h, again) {
			t.Fatalf("%s decodes to %+v, its encoding %s to %+v", b, h, enc, again)
		}
	})
}

// equalHandover compares hand-overs, their groups' states as JSON values
// (encoding compacts them).
func equalHandover(a, b handover) bool {
	if a.Generation != b.Generation || a.Fds != b.Fds || len(a.Banks) != len(b.Banks) || len(a.Names) != len(b.Names) || len(a.Groups) != len(b.Groups) || !sameJSON(a.State, b.State) {
		return false
	}
	for i := range a.Banks {
		if a.Banks[i] != b.Banks[i] {
			return false
		}
	}
	for i := range a.Names {
		if a.Names[i] != b.Names[i] {
			return false
		}
	}
	for i := range a.Groups {
		ga, gb := a.Groups[i], b.Groups[i]
		if ga.Name != gb.Name || ga.Fds != gb.Fds || !sameJSON(ga.State, gb.State) {
			return false
		}
	}
	return true
}

func sameJSON(a, b json.RawMessage) bool {
	// An absent state encodes as null.
	if len(a) == 0 {
		a = json.RawMessage("null")
	}
	if len(b) == 0 {
		b = json.RawMessage("null")
	}
	var va, vb any
	ea, eb := json.Unmarshal(a, &va), json.Unmarshal(b, &vb)
	if ea != nil || eb != nil {
		return string(a) == string(b)
	}
	return reflect.DeepEqual(va, vb)
}

// A hand-over built by a master encodes and decodes to itself.
func TestHandoverRoundTrip(t *testing.T) {
	h := handover{Generation: 9, Banks: []int{0, 1, 1}, Names: []string{"http", "api"},
		Groups: []group{{Name: "steer:http", State: json.RawMessage(`{"slots":3}`), Fds: 6}}, Fds: 8,
		State: json.RawMessage(`{"v":1,"entries":[]}`)}
	b, err := h.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeHandover(b)
	if err != nil || !equalHandover(got, h) {
		t.Errorf("%s decodes to %+v, %v", b, got, err)
	}
}
