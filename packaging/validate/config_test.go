package validate

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// handoffConfig is what the examples' handoff config files say, as far
// as the checks here need it.
type handoffConfig struct {
	listen       map[string]string // name -> address
	admin        string
	drainTimeout time.Duration
	command      []string
}

// configSchema is the handoff config file as the examples write it: the
// flags of 'handoff run', with underscores. It is strict (an unknown
// attribute or block is an error), so a typo in an example fails here.
// It is this module's copy of the format: keep it in step with the
// parser of --config.
var configSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "admin"},
		{Name: "workers"},
		{Name: "ready"},
		{Name: "ready_timeout"},
		{Name: "min_uptime"},
		{Name: "drain_timeout"},
		{Name: "stop_signal"},
		{Name: "reload_strategy"},
		{Name: "retire_parallel"},
		{Name: "control"},
		{Name: "pid_file"},
		{Name: "log_format"},
		{Name: "log_level"},
		{Name: "command", Required: true},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "listen", LabelNames: []string{"name"}}},
}

var listenSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "address", Required: true}}}

// parseConfig parses a handoff config file and checks its attributes'
// types and values.
func parseConfig(filename string, src []byte) (*handoffConfig, error) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	content, diags := f.Body.Content(configSchema)
	if diags.HasErrors() {
		return nil, diags
	}
	c := &handoffConfig{listen: map[string]string{}}
	for _, b := range content.Blocks {
		lc, diags := b.Body.Content(listenSchema)
		if diags.HasErrors() {
			return nil, diags
		}
		addr, err := stringAttr(lc.Attributes["address"])
		if err != nil {
			return nil, err
		}
		if !strings.Contains(addr, "://") {
			return nil, fmt.Errorf("%s: listen %q: address %q is not a URL (tcp://HOST:PORT, unix:///PATH, ...)", b.DefRange, b.Labels[0], addr)
		}
		if _, dup := c.listen[b.Labels[0]]; dup {
			return nil, fmt.Errorf("%s: listen %q twice", b.DefRange, b.Labels[0])
		}
		c.listen[b.Labels[0]] = addr
	}
	if len(c.listen) == 0 {
		return nil, fmt.Errorf("%s: no listen block", filename)
	}
	for name, attr := range content.Attributes {
		switch name {
		case "command":
			v, diags := attr.Expr.Value(nil)
			if diags.HasErrors() {
				return nil, diags
			}
			if !v.Type().IsTupleType() && !v.Type().IsListType() {
				return nil, fmt.Errorf("%s: command must be a list of strings", attr.Range)
			}
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				if e.Type() != cty.String {
					return nil, fmt.Errorf("%s: command must be a list of strings", attr.Range)
				}
				c.command = append(c.command, e.AsString())
			}
			if len(c.command) == 0 {
				return nil, fmt.Errorf("%s: command is empty", attr.Range)
			}
		case "ready_timeout", "min_uptime", "drain_timeout":
			s, err := stringAttr(attr)
			if err != nil {
				return nil, err
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s: %s = %q: want a positive duration such as \"30s\"", attr.Range, name, s)
			}
			if name == "drain_timeout" {
				c.drainTimeout = d
			}
		case "workers":
			s, err := stringAttr(attr)
			if err != nil {
				return nil, err
			}
			if n, err := strconv.Atoi(s); s != "auto" && (err != nil || n < 1) {
				return nil, fmt.Errorf("%s: workers = %q: want \"auto\" or a number above 0", attr.Range, s)
			}
		default:
			s, err := stringAttr(attr)
			if err != nil {
				return nil, err
			}
			if name == "admin" {
				c.admin = s
			}
		}
	}
	return c, nil
}

// stringAttr evaluates a constant string attribute.
func stringAttr(attr *hcl.Attribute) (string, error) {
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		return "", diags
	}
	if v.Type() != cty.String || v.IsNull() {
		return "", fmt.Errorf("%s: %s must be a string", attr.Range, attr.Name)
	}
	return v.AsString(), nil
}

// appDrain returns the value of the app's -drain flag in command.
func appDrain(command []string) (time.Duration, error) {
	for i, a := range command {
		if a == "-drain" && i+1 < len(command) {
			d, err := time.ParseDuration(command[i+1])
			if err != nil {
				return 0, fmt.Errorf("command %q: -drain %q: %w", command, command[i+1], err)
			}
			return d, nil
		}
	}
	return 0, fmt.Errorf("command %q has no -drain: hello's default (25s) would not fit drain_timeout", command)
}

// TestConfigRejects shows parseConfig failing on broken config files.
func TestConfigRejects(t *testing.T) {
	good := `listen "http" { address = "tcp://0.0.0.0:8080" }
drain_timeout = "25s"
command = ["/usr/local/bin/hello"]
`
	if _, err := parseConfig("good.hcl", []byte(good)); err != nil {
		t.Fatalf("the good config: %v", err)
	}
	for name, src := range map[string]string{
		"syntax":            strings.Replace(good, "}", "", 1),
		"unknown attribute": good + `drain_timout = "5s"` + "\n",
		"unknown block":     good + `admin "x" {}` + "\n",
		"bad duration":      strings.Replace(good, `"25s"`, `"25"`, 1),
		"number duration":   strings.Replace(good, `"25s"`, `25`, 1),
		"command string":    strings.Replace(good, `["/usr/local/bin/hello"]`, `"/usr/local/bin/hello"`, 1),
		"no command":        strings.Replace(good, `command = ["/usr/local/bin/hello"]`, ``, 1),
		"no listen":         strings.Replace(good, `listen "http" { address = "tcp://0.0.0.0:8080" }`, ``, 1),
		"listen not a URL":  strings.Replace(good, `tcp://0.0.0.0:8080`, `0.0.0.0:8080`, 1),
		"workers zero":      good + `workers = "0"` + "\n",
		"variable":          good + `admin = var.admin` + "\n",
	} {
		if _, err := parseConfig(name+".hcl", []byte(src)); err == nil {
			t.Errorf("%s: accepted:\n%s", name, src)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}
