// Package e2e holds handoff's end-to-end tests: real handoff binaries,
// real worker processes (examples/hello, testdata/testapp and the
// framework examples), signals and load on 127.0.0.1, and a real
// systemd in a namespace where the machine allows it. It has no code
// outside its tests.
//
// One harness (harness_test.go) builds the binaries once in TestMain,
// from the module's root, which is also the tests' working directory;
// starts masters (startMaster, startMasterWith) and waits on their
// status and logs, never on a bare sleep; and lists the tests that
// skipped, and why, at the end of the run.
//
// go test ./... runs them (about 7 minutes on 2 cores); with -short they
// are skipped, and the in-process tests of the other packages, the
// supervisor's simulator among them, give fast feedback.
package e2e
