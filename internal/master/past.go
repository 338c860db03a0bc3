package master

import (
	"fmt"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/handoff-dev/handoff/internal/history"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// statusEvents is how many of the newest history entries a status reply
// carries.
const statusEvents = 32

// statusReply is the answer to the status command: the supervisor's
// status and the master's newest events, oldest first.
type statusReply struct {
	workers.Status
	Events []history.Entry `json:"events"`
}

// past is what the master remembers of its recent past, and hands to
// the master that takes over from it: the event history (which the
// admin page shows too) and the last reload.
type past struct {
	hist *history.History

	mu sync.Mutex
	// last is the supervisor's last reload as its events report it;
	// inherited the one the previous master handed over, which status
	// shows until this master reloads.
	last, inherited *workers.ReloadResult
}

func newPast() *past { return &past{hist: history.New(history.DefaultSize)} }

// inherit takes what the previous master handed over, if this master
// took over from one: a record it cannot read is logged and dropped.
func (p *past) inherit(m *upgrade.Master, log hclog.Logger) {
	if !m.Inherited() {
		return
	}
	if state := m.InheritedState(); len(state) > 0 {
		rec, err := history.DecodeHanded(state)
		if err != nil {
			log.Warn("dropping the previous master's history", "error", err)
		} else {
			p.hist.Restore(rec.Entries)
			p.mu.Lock()
			p.inherited = rec.LastReload
			p.mu.Unlock()
		}
	}
	p.hist.Add(history.Entry{Kind: history.KindTookOver, Slot: -1, Generation: m.FirstGeneration(),
		Reason: fmt.Sprintf("from pid %d", os.Getppid())})
}

// observe records a supervisor event. It runs on the supervisor's
// goroutine.
func (p *past) observe(e workers.Event) {
	p.hist.Observe(e)
	if r := e.Status.LastReload; r != nil {
		c := *r
		p.mu.Lock()
		p.last = &c
		p.mu.Unlock()
	}
}

// lastReload is the last reload this master knows of: its own, else the
// one its predecessor handed over (nil if none).
func (p *past) lastReload() *workers.ReloadResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != nil {
		return p.last
	}
	return p.inherited
}

// status completes the supervisor's status st for the status command.
func (p *past) status(st workers.Status) statusReply {
	if st.LastReload == nil {
		st.LastReload = p.lastReload()
	}
	from := uint64(0)
	if l := p.hist.Last(); l > statusEvents {
		from = l - statusEvents
	}
	events, _ := p.hist.Since(from, 0)
	return statusReply{Status: st, Events: events}
}

// handOver is the record for the next master; nil (and a warning) if it
// cannot be made: the upgrade goes on without it.
func (p *past) handOver(log hclog.Logger) []byte {
	b, err := p.hist.HandOver(p.lastReload())
	if err != nil {
		log.Warn("the new master will not know this one's history", "error", err)
		return nil
	}
	return b
}
