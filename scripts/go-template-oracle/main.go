// Command go-template-oracle renders an Ollama-style Go chat template with Go's own
// text/template, so wick's Rust engine can be compared against it byte for byte.
//
// Usage: go-template-oracle TEMPLATE_FILE INPUT_JSON
//
// The input is wick's golden-test conversation format:
//
//	{"messages": [...], "tools": [...], "think": true|false|"high"|null,
//	 "generate": {"system": "...", "prompt": "...", "suffix": "..."}}
//
// With "generate" set, the input describes an /api/generate request instead of a
// chat. The data the template sees follows Ollama's documented behaviour (field
// names, JSON shapes, legacy per-turn rendering); the code is wick's own.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

// orderedProps is a JSON object of tool properties that keeps its key order.
type orderedProps struct {
	keys []string
	vals map[string]property
}

func (o *orderedProps) UnmarshalJSON(b []byte) error {
	o.vals = map[string]property{}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string)
		var p property
		if err := dec.Decode(&p); err != nil {
			return err
		}
		if _, seen := o.vals[key]; !seen {
			o.keys = append(o.keys, key)
		}
		o.vals[key] = p
	}
	return nil
}

func (o orderedProps) MarshalJSON() ([]byte, error) {
	if o.vals == nil {
		return []byte("null"), nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(o.vals[k])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// typeList is a JSON Schema "type": a string or a list of strings.
type typeList []string

func (t *typeList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*t = typeList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*t = many
	return nil
}

func (t typeList) MarshalJSON() ([]byte, error) {
	if len(t) == 1 {
		return json.Marshal(t[0])
	}
	return json.Marshal([]string(t))
}

func (t typeList) String() string {
	switch len(t) {
	case 0:
		return ""
	case 1:
		return t[0]
	}
	return fmt.Sprintf("%v", []string(t))
}

type property struct {
	AnyOf       []property    `json:"anyOf,omitempty"`
	Type        typeList      `json:"type,omitempty"`
	Items       any           `json:"items,omitempty"`
	Description string        `json:"description,omitempty"`
	Enum        []any         `json:"enum,omitempty"`
	Properties  *orderedProps `json:"properties,omitempty"`
	Required    []string      `json:"required,omitempty"`
}

func tsName(t string) string {
	switch t {
	case "string":
		return "string"
	case "number", "integer":
		return "number"
	case "boolean":
		return "boolean"
	case "array":
		return "any[]"
	case "object":
		return "Record<string, any>"
	case "null":
		return "null"
	}
	return "any"
}

func (p property) typeScript() string {
	var parts []string
	if len(p.AnyOf) > 0 {
		for _, a := range p.AnyOf {
			parts = append(parts, a.typeScript())
		}
		return strings.Join(parts, " | ")
	}
	if len(p.Type) == 0 {
		return "any"
	}
	for _, t := range p.Type {
		parts = append(parts, tsName(t))
	}
	return strings.Join(parts, " | ")
}

// Input shapes (Ollama's wire JSON).
type inTool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		Parameters  struct {
			Type       string       `json:"type"`
			Defs       any          `json:"$defs,omitempty"`
			Items      any          `json:"items,omitempty"`
			Required   []string     `json:"required,omitempty"`
			Properties orderedProps `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

type inMessage struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	Thinking  string `json:"thinking"`
	ToolCalls []struct {
		ID       string `json:"id"`
		Function struct {
			Index     int            `json:"index"`
			Name      string         `json:"name"`
			Arguments map[string]any `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
	ToolName   string `json:"tool_name"`
	ToolCallID string `json:"tool_call_id"`
}

type input struct {
	Messages []inMessage      `json:"messages"`
	Tools    []inTool         `json:"tools"`
	Think    any              `json:"think"`
	Generate *struct {
		System string `json:"system"`
		Prompt string `json:"prompt"`
		Suffix string `json:"suffix"`
	} `json:"generate"`
}

// What templates see: Go field names, JSON through the json tags.
type props map[string]property

func (p props) String() string {
	if p == nil {
		return "{}"
	}
	b, _ := json.Marshal(map[string]property(p))
	return string(b)
}

type args map[string]any

func (a args) String() string {
	if a == nil {
		return "{}"
	}
	b, _ := json.Marshal(map[string]any(a))
	return string(b)
}

type tParams struct {
	Type       string   `json:"type"`
	Defs       any      `json:"$defs,omitempty"`
	Items      any      `json:"items,omitempty"`
	Required   []string `json:"required,omitempty"`
	Properties props    `json:"properties"`
}

type tFunction struct {
	Name        string  `json:"name"`
	Description string  `json:"description"`
	Parameters  tParams `json:"parameters"`
}

type tTool struct {
	Type     string    `json:"type"`
	Items    any       `json:"items,omitempty"`
	Function tFunction `json:"function"`
}

func (t tTool) String() string { b, _ := json.Marshal(t); return string(b) }

type tTools []tTool

func (t tTools) String() string { b, _ := json.Marshal(t); return string(b) }

type tCallFunction struct {
	Index     int
	Name      string
	Arguments args
}

type tCall struct {
	ID       string
	Function tCallFunction
}

type tMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []tCall
	ToolName   string
	ToolCallID string
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate": func(...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(...string) string {
		return time.Now().AddDate(0, 0, -1).Format("2006-01-02")
	},
	"toTypeScriptType": func(v any) string {
		switch p := v.(type) {
		case property:
			return p.typeScript()
		case *property:
			if p != nil {
				return p.typeScript()
			}
		}
		return "any"
	},
}

// identifiers lists every field and variable name a node mentions.
func identifiers(n parse.Node, out map[string]bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			identifiers(c, out)
		}
	case *parse.ActionNode:
		identifiers(n.Pipe, out)
	case *parse.TemplateNode:
		if n.Pipe != nil {
			identifiers(n.Pipe, out)
		}
	case *parse.IfNode:
		identifiers(&n.BranchNode, out)
	case *parse.RangeNode:
		identifiers(&n.BranchNode, out)
	case *parse.WithNode:
		identifiers(&n.BranchNode, out)
	case *parse.BranchNode:
		identifiers(n.Pipe, out)
		identifiers(n.List, out)
		if n.ElseList != nil {
			identifiers(n.ElseList, out)
		}
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				identifiers(a, out)
			}
		}
	case *parse.FieldNode:
		for _, i := range n.Ident {
			out[strings.ToLower(i)] = true
		}
	case *parse.VariableNode:
		for _, i := range n.Ident {
			out[strings.ToLower(i)] = true
		}
	}
}

// cutAfterResponse drops everything from the first {{ .Response }} on (the node
// itself included), walking into branches; it reports whether it has cut.
func cutAfterResponse(n parse.Node, cut *bool) parse.Node {
	if *cut {
		return nil
	}
	if f, ok := n.(*parse.FieldNode); ok {
		// The {{ .Response }} field itself stays (a prefilled answer renders);
		// everything after it goes.
		for _, i := range f.Ident {
			if i == "Response" {
				*cut = true
			}
		}
		return n
	}
	switch t := n.(type) {
	case *parse.ListNode:
		var kept []parse.Node
		for _, c := range t.Nodes {
			if k := cutAfterResponse(c, cut); k != nil {
				kept = append(kept, k)
			}
		}
		t.Nodes = kept
	case *parse.IfNode:
		cutBranch(&t.BranchNode, cut)
	case *parse.WithNode:
		cutBranch(&t.BranchNode, cut)
	case *parse.RangeNode:
		cutBranch(&t.BranchNode, cut)
	case *parse.ActionNode:
		p := cutAfterResponse(t.Pipe, cut)
		if p == nil {
			return nil
		}
		t.Pipe = p.(*parse.PipeNode)
	case *parse.PipeNode:
		var cmds []*parse.CommandNode
		for _, c := range t.Cmds {
			var as []parse.Node
			for _, a := range c.Args {
				if k := cutAfterResponse(a, cut); k != nil {
					as = append(as, k)
				}
			}
			if len(as) == 0 {
				return nil
			}
			c.Args = as
			cmds = append(cmds, c)
		}
		if len(cmds) == 0 {
			return nil
		}
		t.Cmds = cmds
	}
	return n
}

func cutBranch(b *parse.BranchNode, cut *bool) {
	// The pipeline is not visited: a cut inside a condition keeps the branch.
	b.List = cutList(b.List, cut)
	if b.ElseList != nil {
		b.ElseList = cutList(b.ElseList, cut)
	}
}

// cutList cuts inside a branch's list; a list that is cut as a whole stays, empty.
func cutList(l *parse.ListNode, cut *bool) *parse.ListNode {
	if k, ok := cutAfterResponse(l, cut).(*parse.ListNode); ok && k != nil {
		return k
	}
	l.Nodes = nil
	return l
}

func die(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		die(fmt.Errorf("usage: go-template-oracle TEMPLATE INPUT_JSON"))
	}
	src, err := os.ReadFile(os.Args[1])
	if err != nil {
		die(err)
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		die(err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		die(err)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(strings.ReplaceAll(string(src), "\r\n", "\n"))
	if err != nil {
		die(err)
	}
	vars := map[string]bool{}
	for _, t := range tmpl.Templates() {
		identifiers(t.Root, vars)
	}
	if !vars["messages"] && !vars["response"] {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, &parse.ActionNode{
			NodeType: parse.NodeAction,
			Pipe: &parse.PipeNode{NodeType: parse.NodePipe, Cmds: []*parse.CommandNode{{
				NodeType: parse.NodeCommand,
				Args:     []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}},
			}}},
		})
	}

	think, level, thinkSet := false, "", in.Think != nil
	switch v := in.Think.(type) {
	case bool:
		think = v
		if v {
			level = "medium"
		}
	case string:
		level = v
		think = v == "high" || v == "medium" || v == "low" || v == "max"
	}

	msgs := in.Messages
	var out bytes.Buffer
	if g := in.Generate; g != nil {
		if g.Suffix != "" {
			err := tmpl.Execute(&out, map[string]any{
				"Prompt": g.Prompt, "Suffix": g.Suffix, "Response": "",
				"Think": think, "ThinkLevel": level, "IsThinkSet": thinkSet,
			})
			if err != nil {
				die(err)
			}
			os.Stdout.Write(out.Bytes())
			return
		}
		msgs = nil
		if g.System != "" {
			msgs = append(msgs, inMessage{Role: "system", Content: g.System})
		}
		msgs = append(msgs, inMessage{Role: "user", Content: g.Prompt})
	}

	// Merge runs of one role (tool results stay apart); gather the system text.
	var systems []string
	var merged []inMessage
	for _, m := range msgs {
		if m.Role == "system" {
			systems = append(systems, m.Content)
		}
		if n := len(merged); n > 0 && merged[n-1].Role == m.Role && m.Role != "tool" {
			merged[n-1].Content += "\n\n" + m.Content
		} else {
			merged = append(merged, m)
		}
	}
	system := strings.Join(systems, "\n\n")

	if vars["messages"] {
		var tools tTools
		if in.Tools != nil {
			tools = tTools{}
			for _, t := range in.Tools {
				p := t.Function.Parameters
				var ps props
				if p.Properties.vals != nil {
					ps = props(p.Properties.vals)
				}
				tools = append(tools, tTool{Type: t.Type, Items: t.Items, Function: tFunction{
					Name: t.Function.Name, Description: t.Function.Description,
					Parameters: tParams{Type: p.Type, Defs: p.Defs, Items: p.Items, Required: p.Required, Properties: ps},
				}})
			}
		}
		var tms []*tMessage
		for _, m := range merged {
			var calls []tCall
			for _, c := range m.ToolCalls {
				calls = append(calls, tCall{ID: c.ID, Function: tCallFunction{
					Index: c.Function.Index, Name: c.Function.Name, Arguments: args(c.Function.Arguments),
				}})
			}
			tms = append(tms, &tMessage{Role: m.Role, Content: m.Content, Thinking: m.Thinking,
				ToolCalls: calls, ToolName: m.ToolName, ToolCallID: m.ToolCallID})
		}
		err := tmpl.Execute(&out, map[string]any{
			"System": system, "Messages": tms, "Tools": tools, "Response": "",
			"Think": think, "ThinkLevel": level, "IsThinkSet": thinkSet,
		})
		if err != nil {
			die(err)
		}
		os.Stdout.Write(out.Bytes())
		return
	}

	// Legacy: one execution per user/assistant pair, the last cut at .Response.
	data := func(system, prompt, response string) map[string]any {
		return map[string]any{
			"System": system, "Prompt": prompt, "Response": response,
			"Think": think, "ThinkLevel": level, "IsThinkSet": thinkSet,
		}
	}
	system = ""
	var prompt, response string
	flush := func() {
		if err := tmpl.Execute(&out, data(system, prompt, response)); err != nil {
			die(err)
		}
		system, prompt, response = "", "", ""
	}
	for _, m := range merged {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				flush()
			}
			system = m.Content
		case "user":
			if response != "" {
				flush()
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	cut := false
	root := cutAfterResponse(tmpl.Tree.Root.Copy(), &cut).(*parse.ListNode)
	last, err := template.New("").Funcs(funcs).AddParseTree("", &parse.Tree{Root: root})
	if err != nil {
		die(err)
	}
	if err := last.Execute(&out, data(system, prompt, response)); err != nil {
		die(err)
	}
	os.Stdout.Write(out.Bytes())
}
