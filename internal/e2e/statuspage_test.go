//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/handoff-dev/handoff/workers"
)

const chromiumPath = "/usr/bin/chromium"

// TestStatusPageInBrowser opens the admin endpoint's status page in a
// real headless Chromium and watches it follow a reload and a worker
// killed from outside, live, without a reload of the page.
func TestStatusPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		skipf(t, "chromium not installed: apt-get install -y chromium (%v)", err)
	}
	skipWithoutAdmin(t)
	addr := freePort(t)
	m := startMaster(t, []string{"--admin", addr, "--workers", "2"}, bin.hello1)
	m.waitServing(1, 2)

	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)

	// Console errors and uncaught exceptions (the browser's own log
	// entries of level error too: a resource that failed, a blocked
	// script).
	var (
		mu     sync.Mutex
		errs   []string
		consDn = make(chan struct{})
	)
	console := chromedp.Console(ctx)
	go func() {
		defer close(consDn)
		for msg, err := range console {
			if err != nil {
				return
			}
			if msg.Type == chromedp.ConsoleError || msg.IsException() {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s (%s:%d)", msg, msg.URL, msg.Line))
				mu.Unlock()
			}
		}
	}()
	checkConsole := func(when string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("console errors %s: %q", when, errs)
		}
	}

	poll := func(what, expr string) {
		t.Helper()
		pctx, pcancel := context.WithTimeout(ctx, 90*time.Second)
		defer pcancel()
		if _, err := chromedp.Run(pctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(85*time.Second))); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerHTML"))
			t.Fatalf("page never showed %s: %v\npage:\n%s", what, err, html)
		}
	}

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/")); err != nil {
		t.Fatalf("open the status page: %v", err)
	}
	// A mark on this document: it must survive to the end, so what the
	// page shows later came without a reload.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("window.sameDocument = true")); err != nil {
		t.Fatal(err)
	}
	poll("generation 1, live", `document.getElementById("gen").textContent === "1" &&
		document.getElementById("live").textContent.startsWith("live") &&
		document.querySelector('#history tr[data-kind="serving"][data-gen="1"]') !== null`)
	checkConsole("on load")
	if st, err := m.status(); err == nil && len(st.Listeners) > 0 && st.Listeners[0].Balance != "shared" {
		// A steered listener: a chart of its queue per slot.
		poll("the queue charts", `document.querySelectorAll("#queues svg polyline").length === 2`)
	}

	if _, stderr, code := m.cli("reload", "--wait"); code != 0 {
		t.Fatalf("reload --wait: exit %d: %s", code, stderr)
	}
	poll("generation 2 and its reload", `window.sameDocument === true &&
		document.getElementById("gen").textContent === "2" &&
		document.querySelector('#history tr[data-kind="reload"][data-gen="2"]') !== null &&
		document.querySelectorAll('#workers tr').length > 0`)

	st := m.waitServing(2, 2)
	victim := st.Workers[0].PID
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(fmt.Sprintf("the restart of worker %d", victim), fmt.Sprintf(`window.sameDocument === true &&
		document.querySelector('#history tr[data-kind="kill"][data-pid="%d"]') !== null &&
		document.querySelector('#workers tr[data-pid="%d"]') === null`, victim, victim))
	m.waitStatus(60*time.Second, "the killed worker replaced", func(st workers.Status) bool {
		return st.Counters.Restarts["killed"] == 1 && countState(st, 2, workers.Ready) == 2
	})
	checkConsole("while following the master")

	// Close the browser before the master stops (its stream would end
	// with a network error in the log).
	cancel()
	<-consDn
}
