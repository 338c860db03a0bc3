package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The config file is read by the master on every reload, so a file that
// could crash or stall the parser would take the service down. These caps
// are checked on the raw bytes before HCL parses them: HCL's parsers
// recurse once per nesting level (100,000 nested '[' overflow the stack,
// a fatal error that no recover catches), and cty turns a numeric
// literal into a big.Float at parse time (1e300000000 takes a minute and
// 600 MB). Legitimate config files are far inside every cap.
const (
	// MaxFileSize is the largest config file read, in bytes. HCL lexes a
	// file into tokens of some 200 bytes each before parsing it, so this
	// bounds the memory a load takes (to some 60 MB for a file of
	// one-byte tokens).
	MaxFileSize = 256 << 10
	// MaxNesting is how deep brackets, braces, parentheses, strings and
	// template interpolations may nest in the config file.
	MaxNesting = 64
	// MaxOperators is how many operator tokens (?, !, -, *, and template
	// directives %{…}) the file may hold: the parser recurses on each of
	// them without any bracket to count (a splat, [*] or .*, recurses
	// into the traversals after it), and the file's values are constants
	// that need none.
	MaxOperators = 64
	// MaxNumberLen is the longest numeric literal accepted, in bytes.
	MaxNumberLen = 32
	// MaxExponent is the largest exponent (e±N) a numeric literal may
	// have.
	MaxExponent = 32
)

// readCapped reads at most MaxFileSize bytes of path, and fails for a
// longer file (or a device that never ends).
func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(src) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes (256 KiB)", path, MaxFileSize)
	}
	return src, nil
}

// checkHCL scans the tokens of an HCL native syntax file (HCL's lexer
// does not recurse), adds a problem, with its position, for each cap
// exceeded (the nesting and operator caps once each, every number out of
// bounds), and reports whether the file is within them all.
func checkHCL(src []byte, filename string, p *problems) bool {
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	// open is the stack of unclosed openers. Only the closer that
	// matches the innermost one closes it: one that does not is a syntax
	// error, and counting it would let a file nest deeper than counted.
	// Once the nesting cap is exceeded, nesting is no longer tracked
	// (the stack stays bounded); so with the operator count.
	var open []hclsyntax.TokenType
	ops := 0
	ok, deep, many := true, false, false
	for _, t := range tokens {
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen,
			hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp,
			hclsyntax.TokenTemplateControl:
			if t.Type == hclsyntax.TokenTemplateControl {
				ops++
			}
			if deep {
				break
			}
			open = append(open, t.Type)
			if len(open) > MaxNesting {
				p.addProblem(posProblem(t.Range, "nested more than %d deep (brackets, braces, parentheses, strings or templates)", MaxNesting))
				ok, deep, open = false, true, nil
			}
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
			hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			if len(open) > 0 && closes(t.Type, open[len(open)-1]) {
				open = open[:len(open)-1]
			}
		case hclsyntax.TokenQuestion, hclsyntax.TokenBang, hclsyntax.TokenMinus, hclsyntax.TokenStar:
			ops++
		case hclsyntax.TokenNumberLit:
			if err := checkNumber(t.Bytes); err != nil {
				p.addProblem(posProblem(t.Range, "%v", err))
				ok = false
			}
		}
		if ops > MaxOperators && !many {
			p.addProblem(posProblem(t.Range, "more than %d operators (?, !, -, *, %%{): the config file holds constant values", MaxOperators))
			ok, many = false, true
		}
	}
	return ok
}

// closes reports whether the closing token c closes the opening token o.
func closes(c, o hclsyntax.TokenType) bool {
	switch c {
	case hclsyntax.TokenCBrace:
		return o == hclsyntax.TokenOBrace
	case hclsyntax.TokenCBrack:
		return o == hclsyntax.TokenOBrack
	case hclsyntax.TokenCParen:
		return o == hclsyntax.TokenOParen
	case hclsyntax.TokenCQuote:
		return o == hclsyntax.TokenOQuote
	case hclsyntax.TokenCHeredoc:
		return o == hclsyntax.TokenOHeredoc
	case hclsyntax.TokenTemplateSeqEnd:
		return o == hclsyntax.TokenTemplateInterp || o == hclsyntax.TokenTemplateControl
	}
	return false
}

// checkJSON scans a JSON config file: its nesting outside strings and its
// numbers. (HCL returns JSON strings verbatim when evaluated without a
// context, as Load does, so their text is never parsed as a template.)
// It adds a problem for each cap exceeded (the nesting cap once) and
// reports whether the file is within them all.
func checkJSON(src []byte, filename string, p *problems) bool {
	pos := func(i int) hcl.Range {
		line := 1 + bytes.Count(src[:i], []byte{'\n'})
		col := i - bytes.LastIndexByte(src[:i], '\n')
		p := hcl.Pos{Line: line, Column: col, Byte: i}
		return hcl.Range{Filename: filename, Start: p, End: p}
	}
	var open []byte // unclosed '[' and '{', innermost last
	ok, deep := true, false
	for i := 0; i < len(src); i++ {
		switch c := src[i]; {
		case c == '"':
			for i++; i < len(src) && src[i] != '"'; i++ {
				if src[i] == '\\' {
					i++
				}
			}
		case c == '[' || c == '{':
			if deep {
				break
			}
			open = append(open, c)
			if len(open) > MaxNesting {
				p.addLazy(func() Problem { return posProblem(pos(i), "nested more than %d deep (brackets or braces)", MaxNesting) })
				ok, deep, open = false, true, nil
			}
		case c == ']' || c == '}':
			if n := len(open); n > 0 && open[n-1] == c-2 { // '['+2 == ']', '{'+2 == '}'
				open = open[:n-1]
			}
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(src) && bytes.IndexByte([]byte("0123456789.eE+-"), src[j]) >= 0 {
				j++
			}
			if err := checkNumber(src[i:j]); err != nil {
				p.addLazy(func() Problem { return posProblem(pos(i), "%v", err) })
				ok = false
			}
			i = j - 1
		}
	}
	return ok
}

// checkNumber bounds a numeric literal's length and exponent, which is
// what makes its conversion to a big.Float, and its printing, costly.
func checkNumber(b []byte) error {
	if len(b) > MaxNumberLen {
		return fmt.Errorf("number %s… is longer than %d characters", b[:12], MaxNumberLen)
	}
	i := bytes.IndexAny(b, "eE")
	if i < 0 {
		return nil
	}
	exp, err := strconv.Atoi(string(b[i+1:]))
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return fmt.Errorf("number %s: its exponent is out of range (at most e%d)", b, MaxExponent)
		}
		return nil // not a number: the parser says so
	}
	if exp > MaxExponent || exp < -MaxExponent {
		return fmt.Errorf("number %s: its exponent is out of range (at most e%d)", b, MaxExponent)
	}
	return nil
}

func posProblem(rng hcl.Range, format string, args ...any) Problem {
	return Problem{
		Pos: fmt.Sprintf("%s:%d:%d", rng.Filename, rng.Start.Line, rng.Start.Column),
		Msg: fmt.Sprintf(format, args...),
	}
}

// nonConstant returns the first part of e that is an expression to
// compute rather than a constant (an operator, a conditional, a for
// expression, a splat, an index, a template with interpolations or
// directives), or nil. Evaluating those could take any time and memory
// ([for a in [1,…,9]: [for b in …]] multiplies), and no key needs them.
// Variables and function calls pass: HCL's evaluation without a context
// refuses them with its own message, evaluating nothing.
func nonConstant(e hcl.Expression) hcl.Expression {
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr, *hclsyntax.ScopeTraversalExpr, *hclsyntax.FunctionCallExpr:
		return nil
	case *hclsyntax.TemplateExpr:
		if e.IsStringLiteral() {
			return nil
		}
	case *hclsyntax.TupleConsExpr:
		for _, x := range e.Exprs {
			if bad := nonConstant(x); bad != nil {
				return bad
			}
		}
		return nil
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			if bad := nonConstant(item.KeyExpr); bad != nil {
				return bad
			}
			if bad := nonConstant(item.ValueExpr); bad != nil {
				return bad
			}
		}
		return nil
	case *hclsyntax.ObjectConsKeyExpr:
		return nonConstant(e.Wrapped)
	case *hclsyntax.ParenthesesExpr:
		return nonConstant(e.Expression)
	case *hclsyntax.UnaryOpExpr:
		if _, ok := e.Val.(*hclsyntax.LiteralValueExpr); ok && e.Op == hclsyntax.OpNegate {
			return nil // -1
		}
	case hclsyntax.Expression:
	default:
		return nil // JSON: its values are constants
	}
	return e
}

// constValue evaluates an attribute that must be a constant.
func constValue(attr *hcl.Attribute, p *problems) (v cty.Value, ok bool) {
	if bad := nonConstant(attr.Expr); bad != nil {
		rng := bad.Range()
		p.add(origin{pos: &rng}, false, "%s: want a constant: the config file evaluates no operators, conditionals, for expressions or templates", attr.Name)
		return v, false
	}
	v, diags := attr.Expr.Value(nil)
	if diagProblems(diags, p) {
		return v, false
	}
	return v, true
}
