package history

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/workers"
)

// A master hands its last reload and newest entries to its successor,
// which restores them with their times, in order, under its own
// sequence numbers.
func TestHandOverRoundTrip(t *testing.T) {
	old := New(256)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range MaxHandedEntries + 10 {
		old.Add(Entry{Time: t0.Add(time.Duration(i) * time.Second), Kind: KindRestart, Generation: 1, Slot: i % 4, PID: 100 + i, Reason: "exited"})
	}
	old.Add(Entry{Time: t0.Add(time.Hour), Kind: KindReload, Generation: 2, Slot: -1, OK: true, Duration: 1500 * time.Millisecond})
	last := &workers.ReloadResult{Generation: 2, OK: true, Started: t0, Duration: 1500 * time.Millisecond, Serving: time.Second}
	b, err := old.HandOver(last)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeHanded(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.LastReload == nil || r.LastReload.Generation != 2 || r.LastReload.Duration != last.Duration || !r.LastReload.Started.Equal(t0) {
		t.Errorf("last reload %+v, want %+v", r.LastReload, last)
	}
	if len(r.Entries) != MaxHandedEntries {
		t.Fatalf("%d entries handed, want the newest %d", len(r.Entries), MaxHandedEntries)
	}
	fresh := New(16)
	fresh.Restore(r.Entries)
	fresh.Add(Entry{Kind: KindTookOver, Slot: -1})
	es, missed := fresh.Since(0, 0)
	if missed != MaxHandedEntries+1-16 || len(es) != 16 {
		t.Fatalf("%d entries kept, %d missed", len(es), missed)
	}
	if es[0].Seq != uint64(MaxHandedEntries+1-15) || es[14].Kind != KindReload || !es[14].Time.Equal(t0.Add(time.Hour)) || es[14].Duration != 1500*time.Millisecond || es[15].Kind != KindTookOver {
		t.Errorf("restored: %s (first seq %d)", kinds(es), es[0].Seq)
	}
}

// A record of long reasons is trimmed to fit MaxHandedBytes, the newest
// entries kept.
func TestHandOverBounded(t *testing.T) {
	h := New(256)
	for i := range 200 {
		h.Add(Entry{Kind: KindReload, Generation: i + 1, Slot: -1, Reason: strings.Repeat("x", maxReasonLen)})
	}
	b, err := h.HandOver(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := DecodeHanded(b)
	if err != nil || len(b) > MaxHandedBytes || len(r.Entries) == 0 || r.Entries[len(r.Entries)-1].Generation != 200 {
		t.Fatalf("%d bytes, %d entries, %v", len(b), len(r.Entries), err)
	}
}

func TestDecodeHandedRefuses(t *testing.T) {
	long := `"` + strings.Repeat("x", maxReasonLen+1) + `"`
	for _, c := range []struct{ in, want string }{
		{`{`, "malformed history record"},
		{`{"v":2}`, "version 2"},
		{`{}`, "version 0"},
		{`{"v":1,"entries":[{"kind":"kill","slot":0}]}`, "no time"},
		{`{"v":1,"entries":[{"kind":"<script>","slot":-1,"time":"2026-01-02T03:04:05Z"}]}`, `kind "<script>"`},
		{`{"v":1,"entries":[{"kind":"kill","slot":-2,"time":"2026-01-02T03:04:05Z"}]}`, "negative"},
		{`{"v":1,"entries":[{"kind":"reload","slot":-1,"duration_ms":-1,"time":"2026-01-02T03:04:05Z"}]}`, "negative"},
		{`{"v":1,"entries":[{"kind":"reload","slot":-1,"time":"2026-01-02T03:04:05Z","reason":` + long + `}]}`, "reason of 1025 bytes"},
		{`{"v":1,"last_reload":{"generation":-1}}`, "last reload"},
		{`{"v":1,"entries":[` + strings.Repeat(`{"kind":"kill","slot":0},`, MaxHandedEntries) + `{"kind":"kill","slot":0}]}`, "65 entries"},
		{`{"v":1,"entries":[` + strings.Repeat(`{"kind":"kill","slot":0},`, 2000) + `{"kind":"kill","slot":0}]}`, "more than 32768"},
	} {
		if r, err := DecodeHanded([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) || r.LastReload != nil || r.Entries != nil {
			t.Errorf("DecodeHanded(%.60s…) = %+v, %v; want an error containing %q", c.in, r, err, c.want)
		}
	}
}

// Whatever a predecessor sends, decoding returns (an error or a record
// within the bounds), never panics, and what it accepts restores and
// hands over again to the same record.
func FuzzDecodeHanded(f *testing.F) {
	for _, s := range []string{
		`{"v":1}`,
		`{"v":1,"last_reload":{"generation":3,"ok":true,"started":"2026-01-02T03:04:05Z","serving_ms":1000,"duration_ms":1500}}`,
		`{"v":1,"entries":[{"seq":9,"time":"2026-01-02T03:04:05Z","kind":"kill","generation":1,"slot":0,"pid":12,"reason":"killed"}]}`,
		`{"v":1,"entries":[{"kind":"reload","time":"2026-01-02T03:04:05Z","slot":-1,"ok":true,"duration_ms":12.5,"serving_ms":3}]}`,
		`{"v":2,"entries":[]}`,
		`{"v":1,"entries":null,"last_reload":null}`,
		`null`,
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeHanded(b)
		if err != nil {
			if r.LastReload != nil || r.Entries != nil || strings.ContainsAny(err.Error(), "\n") {
				t.Fatalf("DecodeHanded(%q) = %+v with error %q", b, r, err)
			}
			return
		}
		if len(r.Entries) > MaxHandedEntries {
			t.Fatalf("%d entries accepted", len(r.Entries))
		}
		h := New(MaxHandedEntries)
		h.Restore(r.Entries)
		again, err := h.HandOver(r.LastReload)
		if err != nil {
			t.Fatalf("%q restores, but does not hand over again: %v", b, err)
		}
		r2, err := DecodeHanded(again)
		if err != nil || len(r2.Entries) > len(r.Entries) {
			t.Fatalf("%q hands over again as %s: %v", b, again, err)
		}
		for i := range r2.Entries {
			a, b := r.Entries[len(r.Entries)-len(r2.Entries)+i], r2.Entries[i]
			a.Seq, b.Seq = 0, 0
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Fatalf("entry %s hands over again as %s", ja, jb)
			}
		}
	})
}
