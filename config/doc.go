// Package config reads the settings of 'handoff run': its command-line
// flags and its HCL config file (--config FILE), which has a key for every
// flag. It is handoff's own code, not a stable library API.
//
// Both sources fill one set of raw settings, each remembering where it
// came from (a flag, a file position, a default); flags given on the
// command line override the file. One validation path then turns the raw
// settings into Options, so a value is judged the same wherever it was
// written, and every problem is reported as one line that names its
// source: `--workers "0": want …` for a flag, `app.hcl:4:11: workers = 0:
// want …` for the file. The file's own syntax errors are HCL's
// diagnostics, with their positions.
//
// Load has no side effects: it reads the file and looks up users, groups
// and the command, and changes nothing. Reload calls it again for a
// running master (SIGHUP, 'handoff reload') with the same command-line
// overrides, and says which changed keys keep their running value until
// handoff restarts (Key.Restart).
package config
