package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/handoff-dev/handoff/internal/config"
	"github.com/handoff-dev/handoff/internal/master"
)

const rootLong = `handoff runs a network server as one master process and a generation of
worker processes, and replaces the workers (or itself) without losing a
request. The master binds the listening sockets and hands them to every
worker the way systemd socket activation does (fds 3, 4, ..., LISTEN_FDS,
LISTEN_FDNAMES); workers report readiness with READY=1 on NOTIFY_SOCKET.

'handoff run' starts a master; the other commands talk to a running one
over its control socket.`

// usageTemplate is cobra's, with flag help wrapped at 90 columns.
const usageTemplate = `Usage:{{if .Runnable}}
  {{.UseLine}}{{end}}{{if .HasAvailableSubCommands}}
  {{.CommandPath}} [command]{{end}}{{if .HasExample}}

Examples:
{{.Example}}{{end}}{{if .HasAvailableSubCommands}}

Commands:{{range .Commands}}{{if (or .IsAvailableCommand (eq .Name "help"))}}
  {{rpad .Name .NamePadding }} {{.Short}}{{end}}{{end}}{{end}}{{if .HasAvailableLocalFlags}}

Flags:
{{.LocalFlags.FlagUsagesWrapped 90 | trimTrailingWhitespaces}}{{end}}{{if .HasAvailableInheritedFlags}}

Global Flags:
{{.InheritedFlags.FlagUsagesWrapped 90 | trimTrailingWhitespaces}}{{end}}{{if .HasAvailableSubCommands}}

Use "{{.CommandPath}} help COMMAND" for more about a command.{{end}}
`

// newRootCmd builds the command tree. Output goes to stdout and stderr;
// nothing is kept between calls.
func newRootCmd(version string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "handoff",
		Short:         "run a server as a master and per-core workers, with zero-downtime reloads",
		Long:          rootLong,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// One line for an unknown command (cobra's own message spans
		// several).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q (want %s)", args[0], commandList(cmd))
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg = fmt.Sprintf("unknown command %q (did you mean %q?)", args[0], s[0])
			}
			return usageError{errors.New(msg)}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SetOut(stderr)
			cmd.Help()
			return errSilentUsage
		},
		CompletionOptions:          cobra.CompletionOptions{DisableDefaultCmd: true},
		SuggestionsMinimumDistance: 2,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("handoff {{.Version}}\n")
	root.SetUsageTemplate(usageTemplate)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return flagError(cmd.Flags(), err)
	})
	root.AddCommand(
		newRunCmd(version, stderr),
		newReloadCmd(stdout),
		newStatusCmd(stdout),
		newStopCmd(stdout),
		newScaleCmd(stdout),
		newCheckCmd(stdout, stderr),
		newTopCmd(stdout),
		&cobra.Command{
			Use:   "version",
			Short: "Print handoff's version",
			Args:  noArgs,
			Run: func(cmd *cobra.Command, args []string) {
				fmt.Fprintln(stdout, "handoff", version)
			},
		},
		newCompletionCmd(stdout),
	)
	if man := manCommand(version); man != nil {
		root.AddCommand(man)
	}
	root.SetHelpCommand(newHelpCmd())
	return root
}

// commandList names the available commands: "run, reload, … or version".
func commandList(root *cobra.Command) string {
	var names []string
	for _, c := range root.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// noArgs refuses positional arguments in one line.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", cmd.Name(), args[0])}
	}
	return nil
}

// commandRun marks the errors a command returns as runtime errors (exit
// 1), unless they say otherwise.
func commandRun(f func(cmd *cobra.Command, args []string) error) func(cmd *cobra.Command, args []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var (
			ue usageError
			ce *config.Error
		)
		if err == nil || errors.As(err, &ue) || errors.As(err, &ce) {
			return err
		}
		return runtimeError{err}
	}
}

func newRunCmd(version string, stderr io.Writer) *cobra.Command {
	var rf *runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- COMMAND [ARGS...]",
		Short: "Run COMMAND as workers on the --listen sockets",
		Long: `Run COMMAND as a generation of workers under this process, the master.

Settings come from the flags and from the --config file, which has a key for
every flag (ready_timeout for --ready-timeout); a flag given on the command
line overrides the file. SIGHUP or 'handoff reload' starts a new generation
and re-reads the config file; SIGTERM or 'handoff stop' stops.

Mistakes are reported before anything starts, one line each on stderr: exit
status 2 for usage errors, 1 for runtime ones (port in use, command missing).`,
		Example: `  handoff run --listen http=tcp://127.0.0.1:8080 --workers 4 -- ./server --port-from-fd
  handoff run --config /etc/handoff/app.hcl`,
		Args: cobra.ArbitraryArgs,
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			// The flags are parsed once, by cobra; config.Load merges
			// the ones given over the file into the options.
			o, err := config.Load(rf.config, rf.configFlags(cmd.Flags(), args))
			if err != nil {
				return err
			}
			return master.Run(o, stderr, version)
		}),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveDefault // the command: files
		},
	}
	fs := cmd.Flags()
	fs.SetInterspersed(false) // what follows the command is the command's
	rf = addRunFlags(fs)
	cmd.RegisterFlagCompletionFunc("config", cobra.FixedCompletions([]string{"hcl", "json"}, cobra.ShellCompDirectiveFilterFileExt))
	for _, k := range config.Keys() {
		if len(k.Choices) > 0 {
			cmd.RegisterFlagCompletionFunc(k.Flag, cobra.FixedCompletions(k.Choices, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveNoSpace))
		}
	}
	return cmd
}

// addControlFlag defines --control for a client command.
func addControlFlag(fs *pflag.FlagSet) *string {
	p := new(string)
	fs.Var(&textFlag{p: p, arg: "PATH"}, "control", "the master's control socket (default $RUNTIME_DIRECTORY/handoff.sock, else $XDG_RUNTIME_DIR/handoff.sock, else /run/handoff/handoff.sock for root and $TMPDIR/handoff-UID/handoff.sock for others)")
	return p
}

func newReloadCmd(stdout io.Writer) *cobra.Command {
	var o reloadOptions
	cmd := &cobra.Command{
		Use:                   "reload [--wait [--json]] [--timeout D] [--master] [--control PATH]",
		DisableFlagsInUseLine: true,
		Short:                 "Start a new generation (as SIGHUP does)",
		Long: `Start a new generation of workers from the command as it is on disk now, wait
until every new worker is ready, then retire the old ones. A release that does
not get ready is rolled back. The master re-reads its config file first; a
file with a mistake rejects the reload.`,
		Args: noArgs,
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			o.tty = isTerminal(stdout)
			return cmdReload(o, stdout)
		}),
	}
	fs := cmd.Flags()
	o.control = addControlFlag(fs)
	fs.BoolVar(&o.wait, "wait", false, "wait until the reload is over, reporting its phases; exit 1 if it was rolled back")
	fs.BoolVar(&o.json, "json", false, "with --wait, report each phase and then the result as JSON lines")
	fs.DurationVar(&o.timeout, "timeout", 0, "with --wait, give up after `D` (0: no limit)")
	fs.BoolVar(&o.master, "master", false, "upgrade the master process itself, not only the workers")
	return cmd
}

func newStatusCmd(stdout io.Writer) *cobra.Command {
	var control *string
	var asJSON bool
	cmd := &cobra.Command{
		Use:                   "status [--json] [--control PATH]",
		DisableFlagsInUseLine: true,
		Short:                 "Show the generations and workers",
		Args:                  noArgs,
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			return cmdStatus(*control, asJSON, stdout)
		}),
	}
	control = addControlFlag(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the master's JSON status instead of a table")
	return cmd
}

func newStopCmd(stdout io.Writer) *cobra.Command {
	var o stopOptions
	cmd := &cobra.Command{
		Use:                   "stop [--wait] [--timeout D] [--control PATH]",
		DisableFlagsInUseLine: true,
		Short:                 "Stop the master and its workers (as SIGTERM does)",
		Args:                  noArgs,
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			return cmdStop(o, stdout)
		}),
	}
	fs := cmd.Flags()
	o.control = addControlFlag(fs)
	fs.BoolVar(&o.wait, "wait", false, "wait until the master has exited (for ExecStop=)")
	fs.DurationVar(&o.timeout, "timeout", 0, "with --wait, give up after `D` (0: no limit)")
	return cmd
}

func newScaleCmd(stdout io.Writer) *cobra.Command {
	var control *string
	cmd := &cobra.Command{
		Use:                   "scale N|+N|-N|auto [--control PATH]",
		DisableFlagsInUseLine: true,
		Short:                 "Change the number of workers of the running generation",
		Long: `Change the number of workers of the running generation: to N, by +N or -N
(from the number it runs now), or to auto (the CPUs this machine lets
handoff use, as --workers auto). The next reload keeps the number.`,
		Example: `  handoff scale 4
  handoff scale +1
  handoff scale -1`,
		// -1 is a number here, not a flag: the flags are parsed below.
		DisableFlagParsing: true,
		RunE: commandRun(func(cmd *cobra.Command, raw []string) error {
			args, err := parseSignedArgs(cmd, raw)
			if err != nil || args == nil {
				return err
			}
			if len(args) != 1 {
				return usageError{errors.New("scale: want one argument, the number of workers (handoff scale N), +N, -N or auto")}
			}
			return cmdScale(*control, args[0], stdout)
		}),
	}
	control = addControlFlag(cmd.Flags())
	return cmd
}

// parseSignedArgs parses the flags of cmd, which has DisableFlagParsing
// so that -1 is an argument, and returns its positional arguments; nil
// and no error after printing the help for -h or --help.
func parseSignedArgs(cmd *cobra.Command, raw []string) ([]string, error) {
	var signed, rest []string
	for i, a := range raw {
		if a == "--" {
			rest = append(rest, raw[i:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' && a[1] >= '0' && a[1] <= '9' {
			signed = append(signed, a)
			continue
		}
		rest = append(rest, a)
	}
	fs := cmd.Flags()
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, cmd.Help()
		}
		return nil, flagError(fs, err)
	}
	if help, _ := fs.GetBool("help"); help {
		return nil, cmd.Help()
	}
	args := append(signed, fs.Args()...)
	if args == nil {
		args = []string{}
	}
	return args, nil
}

func newTopCmd(stdout io.Writer) *cobra.Command {
	var o topOptions
	cmd := &cobra.Command{
		Use:                   "top [--interval D] [--count N] [--control PATH]",
		DisableFlagsInUseLine: true,
		Short:                 "Watch the generations, workers and reloads live",
		Long: `Watch the master live: its generations and their phases, every worker (state,
uptime, restarts, CPU, memory, accept queue, held connections), the listeners,
the reload under way with its progress, and the last events. It polls the
status over the control socket every --interval and costs the master nothing
when nobody watches. q or ctrl-c quits.

Without a terminal (or with --count or --plain) it prints a plain snapshot
every interval: --count of them, or until killed.`,
		Args: noArgs,
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			return cmdTop(o, stdout)
		}),
	}
	fs := cmd.Flags()
	o.control = addControlFlag(fs)
	fs.DurationVar(&o.interval, "interval", 500*time.Millisecond, "poll the master's status every `D`")
	fs.IntVar(&o.count, "count", 0, "print `N` plain snapshots and exit (0: until killed)")
	fs.BoolVar(&o.plain, "plain", false, "print plain snapshots even on a terminal")
	return cmd
}

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:                   "check FILE | --config FILE",
		DisableFlagsInUseLine: true,
		Short:                 "Check a config file without starting anything (as nginx -t does)",
		Long: `Check a config file for 'handoff run --config FILE': its syntax, every value,
and what can be checked without starting anything (the command exists and is
executable, users and groups exist, addresses parse). Prints "config FILE ok"
and exits 0, or prints every problem, one line each, and exits 1.`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) > 1:
				return usageError{fmt.Errorf("check: unexpected argument %q (one FILE to check)", args[1])}
			case len(args) == 1 && path != "" && path != args[0]:
				return usageError{fmt.Errorf("check: FILE %q and --config %q: give one", args[0], path)}
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return []string{"hcl", "json"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				path = args[0]
			}
			if path == "" {
				return usageError{errors.New("check: --config FILE is required, or FILE (handoff check FILE)")}
			}
			c, err := config.Load(path, config.Flags{})
			if err != nil {
				var ce *config.Error
				if errors.As(err, &ce) {
					return runtimeError{ce} // exit 1 whatever the problem
				}
				return err
			}
			for _, w := range c.Warnings {
				fmt.Fprintf(stderr, "handoff: warning: %s\n", w)
			}
			fmt.Fprintf(stdout, "config %s ok\n", path)
			return nil
		}),
	}
	cmd.Flags().Var(&textFlag{p: &path, arg: "FILE"}, "config", "the config file to check")
	cmd.RegisterFlagCompletionFunc("config", cobra.FixedCompletions([]string{"hcl", "json"}, cobra.ShellCompDirectiveFilterFileExt))
	return cmd
}

func newCompletionCmd(stdout io.Writer) *cobra.Command {
	shells := []string{"bash", "zsh", "fish"}
	return &cobra.Command{
		Use:                   "completion bash|zsh|fish",
		DisableFlagsInUseLine: true,
		Short:                 "Print a shell completion script",
		Long: `Print the completion script for a shell. To load it:

  bash:  source <(handoff completion bash)
         or: handoff completion bash > /etc/bash_completion.d/handoff
  zsh:   handoff completion zsh > "${fpath[1]}/_handoff"
  fish:  handoff completion fish > ~/.config/fish/completions/handoff.fish`,
		ValidArgs: shells,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || !containsString(shells, args[0]) {
				return usageError{errors.New("completion: want one of bash, zsh or fish")}
			}
			return nil
		},
		RunE: commandRun(func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(stdout, true)
			case "zsh":
				return root.GenZshCompletion(stdout)
			default:
				return root.GenFishCompletion(stdout, true)
			}
		}),
	}
}

// newHelpCmd replaces cobra's help command, which prints an unknown
// topic's complaint and exits 0.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]",
		Short: "Show help for a command",
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := cmd.Root().Find(args)
			if err != nil || len(rest) > 0 || target == nil {
				name := strings.Join(args, " ")
				return usageError{fmt.Errorf("help: unknown command %q (want %s)", name, commandList(cmd.Root()))}
			}
			target.InitDefaultHelpFlag()
			return target.Help()
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			var names []string
			for _, c := range cmd.Root().Commands() {
				if c.IsAvailableCommand() && strings.HasPrefix(c.Name(), toComplete) {
					names = append(names, c.Name()+"\t"+c.Short)
				}
			}
			sort.Strings(names)
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
