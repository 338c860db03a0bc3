package workers

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// OutputMode is what happens to workers' stdout and stderr.
type OutputMode string

const (
	// OutputInherit gives workers the master's stdout and stderr: under
	// journald, whose _PID field already says which worker wrote.
	OutputInherit OutputMode = "inherit"
	// OutputPrefix forwards each line with "[slot S gen G] " before it.
	OutputPrefix OutputMode = "prefix"
	// OutputJSON forwards each line as a JSON object with the slot,
	// generation, pid and stream, like the master's own JSON log lines.
	OutputJSON OutputMode = "json"
)

// maxLine bounds a forwarded line; a longer one is cut into several,
// each marked as continued but the last.
const maxLine = 16 << 10

// output forwards workers' output to the master's stderr. Each stream
// of each worker is a pipe read by one goroutine, which writes whole
// lines under the lock the master's logger uses too, so lines never
// interleave. It writes synchronously: a worker that writes faster than
// the master's stderr takes it blocks on its pipe, rather than the master
// losing lines or buffering them without limit.
type output struct {
	mode OutputMode
	w    io.Writer
	mu   sync.Locker
}

// workerLine is one forwarded line in JSON mode; the @ fields are those
// of hclog's JSON lines.
type workerLine struct {
	Time       string `json:"@timestamp"`
	Level      string `json:"@level"`
	Message    string `json:"@message"`
	Module     string `json:"@module"`
	Slot       int    `json:"slot"`
	Generation int    `json:"generation"`
	PID        int    `json:"pid"`
	Stream     string `json:"stream"`
	Continued  bool   `json:"continued,omitempty"`
}

// forward copies r, line by line, until EOF, then closes it. If t is
// set, it keeps the last lines there too (the first piece of a line cut
// into several).
func (o *output) forward(r *os.File, stream string, slot, gen, pid int, t *tail) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	prefix := fmt.Sprintf("[slot %d gen %d] ", slot, gen)
	var buf []byte
	midLine := false // the last piece was cut: this one continues its line
	for {
		line, err := br.ReadSlice('\n')
		continued := errors.Is(err, bufio.ErrBufferFull)
		if len(line) > 0 {
			text := line
			if !continued && text[len(text)-1] == '\n' {
				text = text[:len(text)-1]
			}
			if t != nil && !midLine {
				t.add(text)
			}
			midLine = continued
			buf = buf[:0]
			switch o.mode {
			case OutputJSON:
				lvl := "info"
				if stream == "stderr" {
					lvl = "warn"
				}
				b, _ := json.Marshal(workerLine{
					Time: time.Now().Format("2006-01-02T15:04:05.000000Z07:00"), Level: lvl,
					Message: string(text), Module: "handoff.worker",
					Slot: slot, Generation: gen, PID: pid, Stream: stream, Continued: continued,
				})
				buf = append(append(buf, b...), '\n')
			default:
				buf = append(append(append(buf, prefix...), text...), '\n')
			}
			o.mu.Lock()
			o.w.Write(buf)
			o.mu.Unlock()
		}
		if err != nil && !continued {
			return
		}
	}
}
