package history

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/handoff-dev/handoff/workers"
)

// HandedVersion is the version of the record a master hands its
// successor (Handed.V). A successor takes only a version it knows; any
// other is dropped, and it starts with an empty history.
const HandedVersion = 1

// Bounds of a handed record. The old master trims its record to fit
// (the newest entries kept); the new one refuses a record beyond them.
const (
	// MaxHandedEntries is the most entries handed over.
	MaxHandedEntries = 64
	// MaxHandedBytes is the most bytes a handed record takes, encoded.
	MaxHandedBytes = 32 << 10
	// maxReasonLen bounds an entry's Reason in a handed record (the
	// supervisor's errors are shorter).
	maxReasonLen = 1024
)

// Handed is what a master hands its successor of its recent past, in
// the hand-over message of a master upgrade: its last reload (so the new
// master's status does not say "none") and its last history entries.
type Handed struct {
	V          int                   `json:"v"`
	LastReload *workers.ReloadResult `json:"last_reload,omitempty"`
	Entries    []Entry               `json:"entries,omitempty"`
}

// HandOver encodes the record for a successor: last (the last reload,
// or nil) and the newest history entries, at most MaxHandedEntries and
// MaxHandedBytes in all (the oldest are left out to fit).
func (h *History) HandOver(last *workers.ReloadResult) ([]byte, error) {
	from := uint64(0)
	if l := h.Last(); l > MaxHandedEntries {
		from = l - MaxHandedEntries
	}
	entries, _ := h.Since(from, 0)
	for {
		b, err := json.Marshal(Handed{V: HandedVersion, LastReload: last, Entries: entries})
		if err != nil {
			return nil, fmt.Errorf("encode history: %w", err)
		}
		if len(b) <= MaxHandedBytes {
			return b, nil
		}
		if len(entries) == 0 {
			return nil, fmt.Errorf("history record of %d bytes without entries: more than %d", len(b), MaxHandedBytes)
		}
		entries = entries[(len(entries)+1)/2:]
	}
}

// DecodeHanded reads a record a predecessor handed over. The record
// comes from another process, perhaps another version of handoff: one
// beyond the bounds, of another version, or with an entry no History
// makes (no time, an unknown kind, a negative number, an overlong reason) is an
// error, and nothing of it is taken.
func DecodeHanded(b []byte) (Handed, error) {
	if len(b) > MaxHandedBytes {
		return Handed{}, fmt.Errorf("history record of %d bytes: more than %d", len(b), MaxHandedBytes)
	}
	var r Handed
	if err := json.Unmarshal(b, &r); err != nil {
		return Handed{}, fmt.Errorf("malformed history record: %w", err)
	}
	bad := func(format string, args ...any) (Handed, error) {
		return Handed{}, fmt.Errorf("bad history record: "+format, args...)
	}
	if r.V != HandedVersion {
		return bad("version %d (this handoff reads %d)", r.V, HandedVersion)
	}
	if len(r.Entries) > MaxHandedEntries {
		return bad("%d entries (at most %d)", len(r.Entries), MaxHandedEntries)
	}
	if l := r.LastReload; l != nil {
		if l.Generation < 0 || l.Serving < 0 || l.Duration < 0 || len(l.Error) > maxReasonLen || !utf8.ValidString(l.Error) {
			return bad("last reload %+v", *l)
		}
	}
	for i, e := range r.Entries {
		if e.Time.IsZero() {
			return bad("entry %d: no time", i)
		}
		if !known(e.Kind) {
			return bad("entry %d: kind %q", i, e.Kind)
		}
		if e.Generation < 0 || e.Slot < -1 || e.PID < 0 || e.Duration < 0 || e.Serving < 0 {
			return bad("entry %d: a negative number", i)
		}
		if len(e.Reason) > maxReasonLen || !utf8.ValidString(e.Reason) {
			return bad("entry %d: reason of %d bytes or not UTF-8", i, len(e.Reason))
		}
	}
	return r, nil
}

// known reports whether k is a kind of entry a History makes.
func known(k Kind) bool {
	switch k {
	case KindServing, KindReloading, KindReload, KindUpgrade, KindRestart, KindKill,
		KindRecycle, KindHung, KindAway, KindHandedOver, KindTookOver, KindStopping:
		return true
	}
	return false
}

// Restore adds the entries a predecessor handed over, oldest first, with
// their times; they get this history's next sequence numbers.
func (h *History) Restore(entries []Entry) {
	for _, e := range entries {
		h.Add(e)
	}
}
