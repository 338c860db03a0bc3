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
// One load reports every problem, not the first: unknown keys and bad
// values together, every cap exceeded (below), and, with a syntax error
// (HCL's parser reports its first and recovers silently), the settings
// on the lines before it. An *Error lists the first MaxProblems (20) and
// counts the rest ("and 7 more problems"), so a file of a thousand
// mistakes costs no more to report than one of twenty.
//
// The master reads the file again on every reload, so no file may crash
// or stall it. Before HCL parses a byte, the file is refused, with a
// problem naming the file and line for each cap exceeded (the nesting
// and operator caps once each), when it is larger than MaxFileSize
// (256 KiB), nests brackets, braces, parentheses, strings or templates
// more than MaxNesting (64) deep, holds more than MaxOperators (64)
// operator tokens (?, !, -, *, %{), or has a numeric literal longer than
// MaxNumberLen (32) characters or with an exponent beyond ±MaxExponent
// (32). Values are constants: strings, numbers, bools, lists and maps of
// them. An operator, conditional, for expression, splat, index or
// template with interpolations is refused rather than evaluated (a
// variable or function call gets HCL's own refusal), so a value costs no
// more to evaluate than its text to read.
//
// Load has no side effects: it reads the file and looks up users, groups
// and the command, and changes nothing. Reload calls it again for a
// running master (SIGHUP, 'handoff reload') with the same command-line
// overrides, and says which changed keys keep their running value until
// handoff restarts: those whose row in the table of Keys says how
// (Key.Restart), the one place that lists them.
package config
