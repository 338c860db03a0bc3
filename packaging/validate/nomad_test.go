package validate

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

const nomadJob = "../../examples/nomad/hello.nomad.hcl"

// There is no offline Nomad validator: the nomad binary is not in
// Debian, and Nomad is under the BUSL from 1.7 on, so neither its
// binary nor its jobspec parser is used here. Instead the job is parsed
// as HCL (hclparse, the parser Nomad's jobspec2 builds on), the blocks
// it uses are checked against schemas written from Nomad's job
// specification (strict where the block is small: an unknown attribute
// is an error), and the template is rendered and parsed as a handoff
// config. Nomad's own run-time variables are given the values the docker
// driver gives them.

// Schemas for the blocks the job uses. Partial ones (job, group, task,
// service, network) list only what is checked; strict ones list every
// attribute Nomad's job specification documents for that block.
var (
	jobSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "type"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "group", LabelNames: []string{"name"}}, {Type: "update"}},
	}
	groupSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{{Type: "task", LabelNames: []string{"name"}}, {Type: "network"}, {Type: "service"}, {Type: "update"}},
	}
	taskSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "driver", Required: true}, {Name: "kill_timeout"}, {Name: "kill_signal"}, {Name: "shutdown_delay"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "config"}, {Type: "template"}, {Type: "resources"}, {Type: "service"}},
	}
	dockerConfigSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "image", Required: true}, {Name: "args"}, {Name: "ports"}},
	}
	networkSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{{Type: "port", LabelNames: []string{"label"}}},
	}
	portSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "static"}, {Name: "to"}, {Name: "host_network"}, {Name: "ignore_collision"}},
	}
	serviceSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "name"}, {Name: "port"}, {Name: "provider"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "check"}},
	}
	checkSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "address_mode"}, {Name: "args"}, {Name: "command"}, {Name: "grpc_service"}, {Name: "grpc_use_tls"},
			{Name: "initial_status"}, {Name: "success_before_passing"}, {Name: "failures_before_critical"},
			{Name: "failures_before_warning"}, {Name: "interval", Required: true}, {Name: "method"}, {Name: "body"},
			{Name: "name"}, {Name: "notes"}, {Name: "path"}, {Name: "expose"}, {Name: "port"}, {Name: "protocol"},
			{Name: "task"}, {Name: "timeout", Required: true}, {Name: "type", Required: true}, {Name: "tls_server_name"},
			{Name: "tls_skip_verify"}, {Name: "on_update"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "check_restart"}, {Type: "header"}},
	}
	templateSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "change_mode"}, {Name: "change_signal"}, {Name: "data"}, {Name: "destination", Required: true},
			{Name: "env"}, {Name: "error_on_missing_key"}, {Name: "left_delimiter"}, {Name: "perms"},
			{Name: "right_delimiter"}, {Name: "source"}, {Name: "splay"}, {Name: "uid"}, {Name: "gid"},
			{Name: "vault_grace"}, {Name: "once"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "change_script"}, {Type: "wait"}},
	}
	updateSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "max_parallel"}, {Name: "health_check"}, {Name: "min_healthy_time"}, {Name: "healthy_deadline"},
			{Name: "progress_deadline"}, {Name: "auto_revert"}, {Name: "auto_promote"}, {Name: "canary"}, {Name: "stagger"},
		},
	}
	resourcesSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "cpu"}, {Name: "cores"}, {Name: "memory"}, {Name: "memory_max"}, {Name: "secrets"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "device", LabelNames: []string{"name"}}, {Type: "numa"}},
	}
)

// nomadEval is what Nomad interpolates in a docker task's job file.
var nomadEval = &hcl.EvalContext{Variables: map[string]cty.Value{
	"NOMAD_TASK_DIR":  cty.StringVal("/local"),
	"NOMAD_ALLOC_DIR": cty.StringVal("/alloc"),
}}

// TestNomadJob checks examples/nomad/hello.nomad.hcl.
func TestNomadJob(t *testing.T) {
	src, err := os.ReadFile(nomadJob)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range checkNomad(src) {
		t.Error(err)
	}
}

// checkNomad parses a Nomad job and checks that it fits handoff: the
// template renders a valid handoff config whose change signals a
// reload, kill_timeout covers drain_timeout, the service check probes
// /readyz on the admin port.
func checkNomad(src []byte) problems {
	var p problems
	f, diags := hclparse.NewParser().ParseHCL(src, path.Base(nomadJob))
	if diags.HasErrors() {
		p.add("%v", diags)
		return p
	}
	top, diags := f.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "job", LabelNames: []string{"name"}}}})
	if diags.HasErrors() || len(top.Blocks) != 1 {
		p.add("want one job block: %v", diags)
		return p
	}
	job := partial(&p, top.Blocks[0].Body, jobSchema)
	if job == nil {
		return p
	}
	for _, u := range job.Blocks.OfType("update") {
		strict(&p, u.Body, updateSchema)
	}
	groups := job.Blocks.OfType("group")
	if len(groups) != 1 {
		p.add("want one group, got %d", len(groups))
		return p
	}
	group := partial(&p, groups[0].Body, groupSchema)
	if group == nil {
		return p
	}

	// Ports: label -> port in the container.
	ports := map[string]int64{}
	for _, n := range group.Blocks.OfType("network") {
		nc := partial(&p, n.Body, networkSchema)
		if nc == nil {
			continue
		}
		for _, pb := range nc.Blocks.OfType("port") {
			pc := strict(&p, pb.Body, portSchema)
			if pc == nil {
				continue
			}
			if a := pc.Attributes["to"]; a != nil {
				v, diags := a.Expr.Value(nil)
				if diags.HasErrors() || v.Type() != cty.Number {
					p.add("%s: port %q: to must be a number", a.Range, pb.Labels[0])
					continue
				}
				n, _ := v.AsBigFloat().Int64()
				ports[pb.Labels[0]] = n
			}
		}
	}

	// The service and its check on /readyz.
	services := group.Blocks.OfType("service")
	if len(services) != 1 {
		p.add("want one service block in the group, got %d", len(services))
	}
	for _, s := range services {
		sc := partial(&p, s.Body, serviceSchema)
		if sc == nil {
			continue
		}
		if port := str(&p, sc.Attributes["port"], nil); ports[port] == 0 {
			p.add("service port %q is not a network port (%v)", port, ports)
		}
		checks := sc.Blocks.OfType("check")
		if len(checks) == 0 {
			p.add("the service has no check: Nomad would count an allocation healthy before its generation serves")
		}
		for _, c := range checks {
			cc := strict(&p, c.Body, checkSchema)
			if cc == nil {
				continue
			}
			typ, cpath, cport := str(&p, cc.Attributes["type"], nil), str(&p, cc.Attributes["path"], nil), str(&p, cc.Attributes["port"], nil)
			if typ != "http" || cpath != "/readyz" || cport != "admin" {
				p.add("check: type %q path %q port %q; want an http check of /readyz on port admin", typ, cpath, cport)
			}
			dur(&p, cc.Attributes["interval"])
			dur(&p, cc.Attributes["timeout"])
		}
	}

	tasks := group.Blocks.OfType("task")
	if len(tasks) != 1 {
		p.add("want one task, got %d", len(tasks))
		return p
	}
	task := partial(&p, tasks[0].Body, taskSchema)
	if task == nil {
		return p
	}
	if d := str(&p, task.Attributes["driver"], nil); d != "docker" {
		p.add("driver %q: these checks know the docker driver's paths", d)
	}
	if s := str(&p, task.Attributes["kill_signal"], nil); s != "SIGTERM" {
		p.add("kill_signal %q: want SIGTERM, the image's STOPSIGNAL, on which handoff drains", s)
	}
	killTimeout := dur(&p, task.Attributes["kill_timeout"])
	if dur(&p, task.Attributes["shutdown_delay"]) <= 0 {
		p.add("want a shutdown_delay: the time between deregistering the service and SIGTERM")
	}
	if killTimeout > 30*time.Second {
		p.add("kill_timeout %v is above Nomad's default max_kill_timeout (30s), which caps it", killTimeout)
	}
	var args []string
	for _, cfg := range task.Blocks.OfType("config") {
		cc := strict(&p, cfg.Body, dockerConfigSchema)
		if cc == nil {
			continue
		}
		args = strs(&p, cc.Attributes["args"], nomadEval)
		for _, label := range strs(&p, cc.Attributes["ports"], nil) {
			if ports[label] == 0 {
				p.add("docker ports: %q is not a network port", label)
			}
		}
	}
	for _, r := range task.Blocks.OfType("resources") {
		strict(&p, r.Body, resourcesSchema)
	}
	i := slices.Index(args, "--config")
	if i < 0 || i+1 >= len(args) {
		p.add("docker args %q: want --config FILE", args)
		return p
	}
	templates := task.Blocks.OfType("template")
	var tmpl *hcl.BodyContent
	for _, tb := range templates {
		tc := strict(&p, tb.Body, templateSchema)
		if tc == nil {
			continue
		}
		// The docker driver mounts the task's local/ at /local.
		if "/"+str(&p, tc.Attributes["destination"], nil) == args[i+1] {
			tmpl = tc
		}
	}
	if tmpl == nil {
		p.add("no template renders --config %s (destination local/... is /local/... in the container)", args[i+1])
		return p
	}
	if m, s := str(&p, tmpl.Attributes["change_mode"], nil), str(&p, tmpl.Attributes["change_signal"], nil); m != "signal" || s != "SIGHUP" {
		p.add("template change_mode %q, change_signal %q: want signal SIGHUP, so that a change reloads in place instead of restarting the task", m, s)
	}
	data := str(&p, tmpl.Attributes["data"], nil)
	for _, vars := range []map[string]map[string]string{
		{},
		{"nomad/jobs/hello": {}},
		{"nomad/jobs/hello": {"workers": "4"}},
	} {
		out, err := renderTemplate(data, vars)
		if err != nil {
			p.add("template with variables %v: %v", vars, err)
			continue
		}
		cfg, err := parseConfig("rendered handoff.hcl", out)
		if err != nil {
			p.add("template with variables %v renders a bad handoff config: %v\n%s", vars, err, out)
			continue
		}
		const margin = 5 * time.Second
		if cfg.drainTimeout+margin > killTimeout {
			p.add("kill_timeout %v < drain_timeout %v + margin %v", killTimeout, cfg.drainTimeout, margin)
		}
		if d, err := appDrain(cfg.command); err != nil {
			p.add("%v", err)
		} else if d >= cfg.drainTimeout {
			p.add("hello -drain %v is not below drain_timeout %v", d, cfg.drainTimeout)
		}
		if want := fmt.Sprintf("0.0.0.0:%d", ports["admin"]); cfg.admin != want {
			p.add("config admin = %q, want %q (the admin port's to)", cfg.admin, want)
		}
		if want := fmt.Sprintf("tcp://0.0.0.0:%d", ports["http"]); cfg.listen["http"] != want {
			p.add("config listen http = %q, want %q (the http port's to)", cfg.listen["http"], want)
		}
		if w := vars["nomad/jobs/hello"]["workers"]; w != "" && !bytes.Contains(out, []byte(`workers       = "`+w+`"`)) {
			p.add("variable workers=%s does not reach the config:\n%s", w, out)
		}
	}
	return p
}

// renderTemplate renders a Nomad template with the consul-template
// functions it uses: nomadVarExists and nomadVar, on vars.
func renderTemplate(data string, vars map[string]map[string]string) ([]byte, error) {
	tm, err := template.New("handoff.hcl").Option("missingkey=zero").Funcs(template.FuncMap{
		"nomadVarExists": func(p string) bool { _, ok := vars[p]; return ok },
		"nomadVar": func(p string) (map[string]string, error) {
			v, ok := vars[p]
			if !ok {
				return nil, fmt.Errorf("nomadVar %q: no such variable (Nomad would block here)", p)
			}
			return v, nil
		},
	}).Parse(data)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tm.Execute(&b, nil); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func partial(p *problems, body hcl.Body, s *hcl.BodySchema) *hcl.BodyContent {
	c, _, diags := body.PartialContent(s)
	if diags.HasErrors() {
		p.add("%v", diags)
		return nil
	}
	return c
}

func strict(p *problems, body hcl.Body, s *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(s)
	if diags.HasErrors() {
		p.add("%v", diags)
		return nil
	}
	return c
}

// str evaluates a string attribute; a missing one is "".
func str(p *problems, a *hcl.Attribute, ctx *hcl.EvalContext) string {
	if a == nil {
		return ""
	}
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() || v.Type() != cty.String || v.IsNull() {
		p.add("%s: %s must be a string: %v", a.Range, a.Name, diags)
		return ""
	}
	return v.AsString()
}

// strs evaluates a list of strings.
func strs(p *problems, a *hcl.Attribute, ctx *hcl.EvalContext) []string {
	if a == nil {
		return nil
	}
	v, diags := a.Expr.Value(ctx)
	if diags.HasErrors() || !(v.Type().IsTupleType() || v.Type().IsListType()) {
		p.add("%s: %s must be a list of strings: %v", a.Range, a.Name, diags)
		return nil
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.Type() != cty.String {
			p.add("%s: %s must be a list of strings", a.Range, a.Name)
			return nil
		}
		out = append(out, e.AsString())
	}
	return out
}

// dur evaluates a duration attribute; a missing one is 0.
func dur(p *problems, a *hcl.Attribute) time.Duration {
	if a == nil {
		return 0
	}
	s := str(p, a, nil)
	d, err := time.ParseDuration(s)
	if err != nil {
		p.add("%s: %s = %q is not a duration", a.Range, a.Name, s)
	}
	return d
}

// TestNomadRejects shows checkNomad finding what it looks for, on broken
// copies of the real job.
func TestNomadRejects(t *testing.T) {
	src, err := os.ReadFile(nomadJob)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"HCL syntax", `job "hello" {`, `job "hello" {{`, "Argument or block definition required"},
		{"typo in template", "change_signal = ", "change_sigal  = ", `"change_sigal" is not expected`},
		{"typo in check", `path     = "/readyz"`, `pth      = "/readyz"`, `"pth" is not expected`},
		{"restart on change", `change_mode   = "signal"`, `change_mode   = "restart"`, "want signal SIGHUP"},
		{"wrong reload signal", `change_signal = "SIGHUP"`, `change_signal = "SIGUSR2"`, "want signal SIGHUP"},
		{"kill_timeout too short", `kill_timeout   = "30s"`, `kill_timeout   = "20s"`, "kill_timeout 20s < drain_timeout 25s"},
		{"kill_timeout not a duration", `kill_timeout   = "30s"`, `kill_timeout   = 30`, "must be a string"},
		{"check on healthz", `path     = "/readyz"`, `path     = "/healthz"`, "want an http check of /readyz"},
		{"config elsewhere", `"${NOMAD_TASK_DIR}/handoff.hcl"`, `"${NOMAD_ALLOC_DIR}/handoff.hcl"`, "no template renders --config /alloc/handoff.hcl"},
		{"unknown interpolation", `"${NOMAD_TASK_DIR}/handoff.hcl"`, `"${NOMAD_TASKDIR}/handoff.hcl"`, "NOMAD_TASKDIR"},
		{"broken go template", `{{- $workers := "auto" }}`, `{{- $workers := "auto" }`, "template with variables"},
		{"typo in the rendered config", `min_uptime    = "1s"`, `min_uptim     = "1s"`, `"min_uptim" is not expected`},
		{"admin port mismatch", "to = 9100", "to = 9200", `want "0.0.0.0:9200"`},
		{"no shutdown delay", `shutdown_delay = "5s"`, ``, "want a shutdown_delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(src, []byte(tc.old)) {
				t.Fatalf("the job no longer contains %q: update the test", tc.old)
			}
			errs := checkNomad(bytes.Replace(src, []byte(tc.old), []byte(tc.new), 1))
			found := false
			for _, err := range errs {
				found = found || strings.Contains(err.Error(), tc.want)
			}
			if !found {
				t.Errorf("problems %q; want one mentioning %q", errs, tc.want)
			}
		})
	}
}
