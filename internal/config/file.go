package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// fileSchema is the config file's top level: an attribute for every key
// but listen, which is a block labelled with the listener's name.
func fileSchema() *hcl.BodySchema {
	s := &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: KeyCommand}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: KeyListen, LabelNames: []string{"name"}}},
	}
	for _, k := range Keys() {
		if k.Name != KeyListen {
			s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: k.Name})
		}
	}
	return s
}

var listenSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "address", Required: true},
		{Name: "mode"},
		{Name: "owner"},
		{Name: "group"},
	},
}

// readFile parses the config file into r. HCL's native syntax, or JSON
// for a name ending in .json. It reports false when the file has no
// values to check: it could not be read, or exceeds a cap.
func readFile(path string, r *raw, p *problems) bool {
	src, err := readCapped(path)
	if err != nil {
		p.addProblem(Problem{Msg: fmt.Sprintf("config file: %v", err), Runtime: true})
		return false
	}
	return parseBytes(src, path, r, p)
}

// parseBytes parses the config file's contents src, read from path, into
// r, and adds every problem it finds to p (up to MaxProblems). It checks
// the caps of limits.go before HCL parses anything, and reports false,
// having parsed nothing, for a file that exceeds one. A syntax error
// ends HCL's own reports (its parser recovers without reporting
// further), but the settings wholly before it are still read and
// checked; the ones after it are not, since the parser may have
// misread them.
func parseBytes(src []byte, path string, r *raw, p *problems) bool {
	if len(src) > MaxFileSize {
		p.addProblem(Problem{Msg: fmt.Sprintf("config file: %s is larger than %d bytes (256 KiB)", path, MaxFileSize)})
		return false
	}
	json := strings.HasSuffix(path, ".json")
	check := checkHCL
	if json {
		check = checkJSON
	}
	if !check(src, path, p) {
		return false
	}
	parser := hclparse.NewParser()
	var f *hcl.File
	var diags hcl.Diagnostics
	if json {
		f, diags = parser.ParseJSON(src, path)
	} else {
		f, diags = parser.ParseHCL(src, path)
	}
	diagProblems(diags, p)
	if f == nil || f.Body == nil {
		return true
	}
	before, whole := trusted(diags, json)
	if !whole {
		return true
	}
	content, diags := f.Body.Content(fileSchema())
	diagProblemsIf(diags, p, before)
	fl := fileLit(src)
	parseListens(content.Blocks, before, fl, r, p)
	parseSettings(content.Attributes, before, fl, r, p)
	return true
}

// fileLit gives a range of a file's source as one line, for messages.
type fileLit []byte

func (src fileLit) lit(rng hcl.Range) string {
	return strings.Join(strings.Fields(string(rng.SliceBytes(src))), " ")
}

func (src fileLit) from(e hcl.Expression) origin {
	rng := e.Range()
	return origin{pos: &rng, lit: src.lit(rng)}
}

// trusted says which of a parsed file's ranges can be trusted after
// diags: before reports whether a range ends before the line of the
// first syntax error. whole is false when nothing can be (a JSON file
// with an error: the JSON parser gives up at it).
func trusted(diags hcl.Diagnostics, json bool) (before func(hcl.Range) bool, whole bool) {
	before = func(hcl.Range) bool { return true }
	if !diags.HasErrors() {
		return before, true
	}
	if json {
		return nil, false
	}
	// HCL allows one attribute a line: the ones on the lines before
	// the error's are whole. An error without a position trusts
	// nothing.
	stop := 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError && d.Subject != nil && (stop == 0 || d.Subject.Start.Line < stop) {
			stop = d.Subject.Start.Line
		}
	}
	return func(rng hcl.Range) bool { return rng.End.Line < stop }, true
}

// parseListens takes the file's listen blocks, in file order.
func parseListens(blocks hcl.Blocks, before func(hcl.Range) bool, src fileLit, r *raw, p *problems) {
	for _, b := range blocks {
		if !before(b.DefRange) || !before(b.Body.MissingItemRange()) || len(b.Labels) == 0 {
			continue
		}
		nameRng := b.LabelRanges[0]
		lv := listenValue{name: b.Labels[0], from: origin{pos: &nameRng, lit: src.lit(nameRng)}, opts: map[string]value{}}
		bc, diags := b.Body.Content(listenSchema)
		if diagProblems(diags, p) {
			continue
		}
		valid := true // a listener with a bad value is not checked further
		for _, name := range []string{"address", "mode", "owner", "group"} {
			attr, ok := bc.Attributes[name]
			if !ok {
				continue
			}
			s, ok := scalarValue(attr, p)
			if !ok {
				valid = false
				continue
			}
			v := value{raw: s, from: src.from(attr.Expr)}
			if name == "address" {
				lv.address, lv.addrFrom = s, v.from
			} else {
				lv.opts[name] = v
			}
		}
		if valid {
			r.listen = append(r.listen, lv)
		}
	}
}

// parseSettings takes the file's settings, in file order.
func parseSettings(attributes hcl.Attributes, before func(hcl.Range) bool, src fileLit, r *raw, p *problems) {
	attrs := make([]*hcl.Attribute, 0, len(attributes))
	for _, a := range attributes {
		if before(a.Range) {
			attrs = append(attrs, a)
		}
	}
	slices.SortFunc(attrs, func(a, b *hcl.Attribute) int { return a.Range.Start.Byte - b.Range.Start.Byte })
	for _, attr := range attrs {
		switch name := attr.Name; name {
		case KeyCommand:
			r.command, r.commandFrom, r.hasCommand = stringList(attr, p), src.from(attr.Expr), true
		case KeyEnvironment:
			r.env = append(r.env, environment(attr, src.from, p)...)
		default:
			if s, ok := scalarValue(attr, p); ok {
				r.scalars[name] = value{raw: s, from: src.from(attr.Expr)}
			}
		}
	}
}

// diagProblems adds HCL's diagnostics as problems and reports whether
// there was an error among them.
func diagProblems(diags hcl.Diagnostics, p *problems) bool {
	return diagProblemsIf(diags, p, func(hcl.Range) bool { return true })
}

// diagProblemsIf adds HCL's diagnostics as problems, those with a
// position only where keep(position) holds, and reports whether there
// was an error among them.
func diagProblemsIf(diags hcl.Diagnostics, p *problems, keep func(hcl.Range) bool) bool {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Subject != nil && !keep(*d.Subject) {
			continue
		}
		pr := Problem{Msg: d.Summary}
		if d.Detail != "" {
			pr.Msg += ": " + strings.Join(strings.Fields(d.Detail), " ")
		}
		if d.Subject != nil {
			pr.Pos = fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		p.addProblem(pr)
	}
	return diags.HasErrors()
}

// attrProblem reports a problem with an attribute's value as HCL would.
func attrProblem(attr *hcl.Attribute, p *problems, format string, args ...any) {
	rng := attr.Expr.Range()
	p.add(origin{pos: &rng}, false, "%s: %s", attr.Name, fmt.Sprintf(format, args...))
}

// scalarValue evaluates a constant string or number.
func scalarValue(attr *hcl.Attribute, p *problems) (string, bool) {
	v, ok := constValue(attr, p)
	if !ok {
		return "", false
	}
	switch {
	case v.IsNull():
		attrProblem(attr, p, "want a string, not null")
	case !v.IsKnown():
		attrProblem(attr, p, "want a constant")
	case v.Type() == cty.String:
		return v.AsString(), true
	case v.Type() == cty.Number:
		bf := v.AsBigFloat()
		if !bf.IsInt() {
			attrProblem(attr, p, "want a whole number or a string, not %s", bf.Text('g', -1))
			return "", false
		}
		return bf.Text('f', 0), true
	default:
		attrProblem(attr, p, "want a string, not %s", v.Type().FriendlyName())
	}
	return "", false
}

// stringList evaluates a list of strings.
func stringList(attr *hcl.Attribute, p *problems) []string {
	v, ok := constValue(attr, p)
	if !ok {
		return nil
	}
	if v.IsNull() || !(v.Type().IsTupleType() || v.Type().IsListType()) {
		attrProblem(attr, p, `want a list of strings, e.g. ["/usr/bin/app", "--port-from-fd"]`)
		return nil
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() || e.Type() != cty.String {
			attrProblem(attr, p, `want a list of strings, e.g. ["/usr/bin/app", "--port-from-fd"]`)
			return nil
		}
		out = append(out, e.AsString())
	}
	return out
}

// environment evaluates a map of strings, each entry with its own
// position where the syntax gives one.
func environment(attr *hcl.Attribute, fromExpr func(hcl.Expression) origin, p *problems) []envValue {
	v, ok := constValue(attr, p)
	if !ok {
		return nil
	}
	if v.IsNull() || !(v.Type().IsObjectType() || v.Type().IsMapType()) {
		attrProblem(attr, p, `want a map of strings, e.g. { APP_ENV = "production" }`)
		return nil
	}
	// Where each entry is, for messages.
	at := map[string]origin{}
	if oc, ok := attr.Expr.(*hclsyntax.ObjectConsExpr); ok {
		for _, item := range oc.Items {
			if k, diags := item.KeyExpr.Value(nil); !diags.HasErrors() && k.Type() == cty.String {
				at[k.AsString()] = fromExpr(item.KeyExpr)
			}
		}
	}
	var out []envValue
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		from, ok := at[k.AsString()]
		if !ok {
			from = fromExpr(attr.Expr)
		}
		if !e.IsNull() && e.IsKnown() && e.Type().IsPrimitiveType() {
			e, _ = convert.Convert(e, cty.String)
		}
		if e.IsNull() || !e.IsKnown() || e.Type() != cty.String {
			p.add(from, false, "environment %q: want a string value", k.AsString())
			continue
		}
		out = append(out, envValue{key: k.AsString(), val: e.AsString(), from: from})
	}
	return out
}
