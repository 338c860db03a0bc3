package master

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/handoff-dev/handoff/internal/config"
)

// switchWriter fails while broken is set.
type switchWriter struct {
	broken bool
	out    bytes.Buffer
}

func (w *switchWriter) Write(p []byte) (int, error) {
	if w.broken {
		return 0, syscall.EPIPE
	}
	return w.out.Write(p)
}

// TestLogSinkNotice: the master's log says how many lines it dropped in
// its own format: one JSON object under --log-format json.
func TestLogSinkNotice(t *testing.T) {
	w := &switchWriter{broken: true}
	log := newLogger(&config.Options{LogFormat: "json", LogLevel: "info"}, w, &sync.Mutex{})
	for i := 0; i < 5; i++ {
		log.Info("lost", "i", i)
	}
	w.broken = false
	log.Info("back")
	lines := strings.Split(strings.TrimSuffix(w.out.String(), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d lines, want the notice, 5 kept and 1:\n%s", len(lines), w.out.String())
	}
	var notice map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &notice); err != nil {
		t.Fatalf("notice %q: %v", lines[0], err)
	}
	if notice["@level"] != "warn" || notice["dropped"] != float64(5) || notice["error"] != "broken pipe" {
		t.Errorf("notice %v, want a warning with dropped=5 and the error", notice)
	}
	if !strings.Contains(lines[5], `"i":4`) || !strings.Contains(lines[6], `"back"`) {
		t.Errorf("the kept lines and the new one out of order:\n%s", w.out.String())
	}
}
