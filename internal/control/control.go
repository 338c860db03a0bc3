package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/handoff-dev/handoff/internal/connlimit"
	"github.com/handoff-dev/handoff/internal/lograte"
	"github.com/handoff-dev/handoff/upgrade"
	"github.com/handoff-dev/handoff/workers"
)

// MaxRequest is the largest request accepted, newline included.
const MaxRequest = 64 << 10

// readTimeout bounds how long a client may take to send its request.
const readTimeout = 5 * time.Second

// MaxConns is how many connections the server holds at once. At the
// cap, a new connection takes the place of the oldest idle one (one that
// has not sent a complete request yet), which gets an error reply; if
// none is idle, the new one gets a "busy" reply at once.
const MaxConns = 64

// MaxReply is the longest reply Do reads, newline included: a status
// with MaxWorkers workers is well under it.
const MaxReply = 4 << 20

// MaxWorkers bounds a scale request's Workers: the supervisor's own
// bound, defined once.
const MaxWorkers = workers.MaxWorkers

// Request is one line of JSON sent by a client.
type Request struct {
	// Cmd is "status", "reload", "stop" or "scale".
	Cmd string `json:"cmd"`
	// Wait, for reload, asks for the reply only once the reload is over.
	Wait bool `json:"wait,omitempty"`
	// Master, for reload, asks for the master itself to be upgraded.
	Master bool `json:"master,omitempty"`
	// Workers, for scale (and only there), is the number of workers
	// wanted, 1 to MaxWorkers.
	Workers int `json:"workers,omitempty"`
}

// Response is one line of JSON sent back.
type Response struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Handler answers a well-formed request. ctx is cancelled when the master
// stops serving the control socket.
type Handler func(ctx context.Context, req Request) Response

// Options are a server's settings beyond its handler.
type Options struct {
	// Refuse, if set, is called with the pid of each peer (from
	// SO_PEERCRED) whose uid may control the master. A non-nil error
	// refuses the connection: the reply is "permission denied: " and the
	// error's text, and the request is not read. It lets the master turn
	// away its own workers when they run with its uid.
	Refuse func(pid int32) error
}

// Server serves the control socket.
type Server struct {
	ln      *net.UnixListener
	handle  Handler
	log     hclog.Logger
	lim     *lograte.Limiter
	wg      sync.WaitGroup
	allowed func(uid uint32) bool
	refuse  func(pid int32) error
	// slots holds a token per connection goroutine: 2*MaxConns, room
	// for MaxConns connections held and as many evicted ones winding
	// down (each writes one short reply and closes).
	slots chan struct{}

	// conns counts connections against MaxConns; an idle one is one
	// without a complete request. Evicting one makes its read fail at
	// once.
	conns *connlimit.Limiter[*net.UnixConn]
	stop  atomic.Bool // Serve's context is done
}

// conn is one accepted connection.
type conn struct {
	c  *net.UnixConn
	lc *connlimit.Conn[*net.UnixConn] // nil: accepted at the cap with none idle, refused
}

// ListenUnix creates the control socket at path with mode 0600 from the
// start (see upgrade.BindUnix), replacing a stale socket left by a dead
// master. A parent directory every user may write without the sticky
// bit is refused. A live one is an error. Closing
// the listener does not remove the path (a new master may serve on it).
//
// The directories it creates for path (mode 0700) are removed again if it
// fails. When path is in the default directory under $TMPDIR
// ($TMPDIR/handoff-EUID), which another user could have made first, that
// directory must pass CheckDir, whoever made it.
func ListenUnix(path string) (ln *net.UnixListener, err error) {
	if err := CheckPath(path); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	created, err := mkdirAll(filepath.Dir(path), 0o700)
	defer func() {
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				os.Remove(created[i])
			}
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := checkTmpDir(path); err != nil {
		return nil, err
	}
	return listenUnix(path, upgrade.UnixOptions{Mode: 0o600, HasMode: true, UID: -1, GID: -1})
}

// listenUnix creates the socket with upgrade.BindUnix: mode 0600 from
// the start (bound in a private directory and renamed into place), so
// nobody can connect before the mode is set, nor make the chmod follow
// a symlink.
func listenUnix(path string, opts upgrade.UnixOptions) (*net.UnixListener, error) {
	fd, err := upgrade.BindUnix(path, opts)
	if errors.Is(err, upgrade.ErrSocketInUse) {
		return nil, fmt.Errorf("control socket %s is in use by another running handoff (use --control to pick another path)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln := l.(*net.UnixListener)
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// mkdirAll is os.MkdirAll that returns the directories it created,
// outermost first.
func mkdirAll(dir string, perm os.FileMode) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], perm); err != nil && !errors.Is(err, os.ErrExist) {
			return created, err
		} else if err == nil {
			created = append(created, missing[i])
		}
	}
	return created, nil
}

// MaxPath is the longest unix socket path: sun_path holds 108 bytes,
// the terminating NUL included.
const MaxPath = 107

// CheckPath says why path cannot be a unix socket's, in the words
// upgrade.ParseSpec uses for a unix listener.
func CheckPath(path string) error {
	switch {
	case path == "":
		return errors.New("empty unix socket path")
	case strings.IndexByte(path, 0) >= 0:
		return errors.New("unix socket path contains a NUL byte")
	case len(path) > MaxPath:
		return fmt.Errorf("unix socket path is %d bytes, the limit is %d", len(path), MaxPath)
	}
	return nil
}

// DefaultPath is the control socket's path when none is given: in
// systemd's RuntimeDirectory= if the unit has one, else in
// $XDG_RUNTIME_DIR, else /run/handoff/handoff.sock for root (systemd's
// RuntimeDirectory=handoff, so that 'handoff status' needs no flag
// either way) and $TMPDIR/handoff-UID/handoff.sock for other users.
func DefaultPath(getenv func(string) string, euid int, tmpdir string) string {
	if d := getenv("RUNTIME_DIRECTORY"); d != "" {
		d, _, _ = strings.Cut(d, ":")
		return filepath.Join(d, "handoff.sock")
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "handoff.sock")
	}
	if euid == 0 {
		return "/run/handoff/handoff.sock"
	}
	return filepath.Join(tmpdir, fmt.Sprintf("handoff-%d", euid), "handoff.sock")
}

// FromListener makes a server for ln (from ListenUnix, or handed over by
// a previous master) with no Options.
func FromListener(ln *net.UnixListener, h Handler, log hclog.Logger) *Server {
	return NewServer(ln, h, log, Options{})
}

// NewServer makes a server for ln (from ListenUnix, or handed over by a
// previous master) with opts. A nil log discards its lines.
func NewServer(ln *net.UnixListener, h Handler, log hclog.Logger, opts Options) *Server {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	own := uint32(os.Getuid())
	return &Server{
		ln:      ln,
		handle:  h,
		log:     log,
		lim:     lograte.Every(time.Second),
		allowed: func(uid uint32) bool { return uid == 0 || uid == own },
		refuse:  opts.Refuse,
		slots:   make(chan struct{}, 2*MaxConns),
		conns:   connlimit.New(MaxConns, func(c *net.UnixConn) { c.SetReadDeadline(time.Now()) }),
	}
}

// Serve accepts clients until ctx is done. Each connection carries one
// request and one response. The server holds at most MaxConns
// connections: at the cap, a new one evicts the oldest idle connection
// (the oldest that has not sent a complete request), so that clients
// that connect and send nothing cannot lock the owner out; with none
// idle, the new one is answered "busy". Goroutines and buffers stay
// bounded either way. Serve returns once the requests in hand are
// answered; idle clients are answered at once.
func (s *Server) Serve(ctx context.Context) {
	go func() {
		<-ctx.Done()
		s.ln.SetDeadline(time.Now())
		s.stop.Store(true)
		s.conns.EachIdle(func(c *net.UnixConn) { c.SetReadDeadline(time.Now()) })
	}()
	for ctx.Err() == nil {
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		c, err := s.ln.AcceptUnix()
		if err != nil {
			<-s.slots
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				// It will not accept again: do not spin.
				s.log.Error("control socket closed while serving", "error", err)
				break
			}
			s.lim.Log(s.log, hclog.Error, "control socket accept failed", "error", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		cn := s.admit(c)
		s.wg.Add(1)
		go func() {
			defer func() {
				s.release(cn)
				<-s.slots
				s.wg.Done()
			}()
			s.serveConn(ctx, cn)
		}()
	}
	s.wg.Wait()
}

// admit counts a new connection against MaxConns, evicting the oldest
// idle one at the cap.
func (s *Server) admit(c *net.UnixConn) *conn {
	// The deadline is set before the connection can be evicted, so that
	// it cannot overwrite the eviction's.
	c.SetReadDeadline(time.Now().Add(readTimeout))
	lc, evicted := s.conns.Admit(c)
	if evicted {
		s.lim.Log(s.log, hclog.Warn, "control socket: at its connection cap: closed the oldest idle one", "cap", MaxConns)
	}
	if lc != nil && s.stop.Load() {
		// Serve's stop may have passed the idle connections before this
		// one was among them.
		c.SetReadDeadline(time.Now())
	}
	return &conn{c: c, lc: lc}
}

// release forgets cn once its goroutine is done.
func (s *Server) release(cn *conn) {
	if cn.lc != nil {
		cn.lc.Release()
	}
}

func (s *Server) serveConn(ctx context.Context, cn *conn) {
	c := cn.c
	defer c.Close()
	if cn.lc == nil {
		s.lim.Log(s.log, hclog.Warn, "control socket: busy: every connection has a request in hand", "cap", MaxConns)
		writeResponse(c, Response{Error: fmt.Sprintf("control socket busy: %d requests in hand; try again", MaxConns)})
		return
	}
	uid, pid, err := peerCred(c)
	if err != nil || !s.allowed(uid) {
		s.lim.Log(s.log, hclog.Warn, "control socket: refused peer", "uid", uid, "error", err)
		writeResponse(c, Response{Error: "permission denied: only root or the master's user may control it"})
		return
	}
	if s.refuse != nil {
		if err := s.refuse(pid); err != nil {
			s.lim.Log(s.log, hclog.Warn, "control socket: refused peer", "uid", uid, "pid", pid, "error", err)
			writeResponse(c, Response{Error: "permission denied: " + err.Error()})
			return
		}
	}
	req, err := readRequest(c)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			switch {
			case cn.lc.Evicted():
				writeResponse(c, Response{Error: fmt.Sprintf("control socket busy: %d connections open; this one had sent no request and was closed for a newer one", MaxConns)})
				return
			case s.stop.Load():
				writeResponse(c, Response{Error: "master stopping: no complete request before it stopped serving"})
				return
			}
			err = fmt.Errorf("no complete request within %s", readTimeout)
		}
		s.lim.Log(s.log, hclog.Warn, "control socket: bad request", "error", err)
		writeResponse(c, Response{Error: err.Error()})
		return
	}
	// If it was evicted just before, its request is served all the
	// same: it is complete, and the slots bound the goroutines.
	cn.lc.Busy()
	// Cancel the handler if the client goes away.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go watchPeer(hctx, c, cancel)
	writeResponse(c, s.handle(hctx, req))
}

// watchPeer calls gone once the client has closed its end. A client that
// only shut down its sending side (shutdown(SHUT_WR), as nc -N does) still
// waits for the reply: end of input alone does not count, POLLHUP (both
// directions shut) does.
func watchPeer(ctx context.Context, c *net.UnixConn, gone context.CancelFunc) {
	var b [1]byte
	c.SetReadDeadline(time.Time{})
	if _, err := c.Read(b[:]); err == nil || !errors.Is(err, io.EOF) {
		if err != nil && ctx.Err() == nil {
			gone()
		}
		return
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		var hup bool
		if err := rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd)}}
			if n, _ := unix.Poll(fds, 200); n > 0 {
				hup = fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
			}
		}); err != nil {
			return
		}
		if hup {
			gone()
			return
		}
	}
}

// readRequest reads and parses one request line. The read deadline is
// the caller's; an expired one is returned as os.ErrDeadlineExceeded.
func readRequest(c *net.UnixConn) (Request, error) {
	// A small buffer that grows with the request: an idle client costs
	// little.
	line, err := bufio.NewReaderSize(io.LimitReader(c, MaxRequest), 512).ReadBytes('\n')
	if err != nil {
		switch {
		case errors.Is(err, io.EOF) && len(line) >= MaxRequest:
			return Request{}, fmt.Errorf("request larger than %d bytes", MaxRequest)
		case errors.Is(err, io.EOF):
			return Request{}, errors.New("truncated request: no newline before end of input")
		case errors.Is(err, os.ErrDeadlineExceeded):
			return Request{}, os.ErrDeadlineExceeded
		}
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	return ParseRequest(line)
}

func writeResponse(c net.Conn, r Response) {
	b, err := json.Marshal(r)
	if err != nil {
		b = []byte(`{"ok":false,"error":"cannot encode response"}`)
	}
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write(append(b, '\n'))
}

// peerCred is the uid and pid of c's peer.
func peerCred(c *net.UnixConn) (uid uint32, pid int32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) { uid, pid, cerr = socketPeer(int(fd)) }); err != nil {
		return 0, 0, err
	}
	return uid, pid, cerr
}

// Do sends req to the control socket at path and returns the reply. ctx
// bounds the whole exchange. A socket in the default directory under
// $TMPDIR is trusted only if that directory passes CheckDir, and a reply
// longer than MaxReply is an error.
func Do(ctx context.Context, path string, req Request) (Response, error) {
	if err := checkTmpDir(path); err != nil {
		if isNotExist(err) {
			return Response{}, fmt.Errorf("no handoff master at %s (is it running? use --control to name its socket)", path)
		}
		return Response{}, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return Response{}, fmt.Errorf("no handoff master at %s (is it running? use --control to name its socket)", path)
		}
		return Response{}, fmt.Errorf("connect to %s: %w", path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	b, _ := json.Marshal(req)
	_, werr := c.Write(append(b, '\n'))
	// Read the reply even if the write failed: a master that refuses
	// the peer replies and closes without reading.
	line, err := bufio.NewReader(io.LimitReader(c, MaxReply)).ReadBytes('\n')
	if errors.Is(err, io.EOF) && len(line) >= MaxReply {
		return Response{}, fmt.Errorf("reply from %s: more than %d bytes without a newline", path, MaxReply)
	}
	if err != nil && werr != nil {
		return Response{}, fmt.Errorf("send request to %s: %w", path, werr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("no reply from %s: %w", path, ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection's deadline is ctx's; its timer may not
			// have fired yet.
			return Response{}, fmt.Errorf("no reply from %s: %w", path, context.DeadlineExceeded)
		}
		return Response{}, fmt.Errorf("read reply from %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("malformed reply from %s: %w", path, err)
	}
	return resp, nil
}
