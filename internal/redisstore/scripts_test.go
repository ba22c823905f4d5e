package redisstore

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScriptsDeclareTheirWrites holds every file of lua/ to the rule of
// scripts.go: a script is loaded, its shebang says whether it writes, and
// a script that writes either has its writes confirmed in the strict mode
// or says why they need no confirmation. A helper is no script, and is
// needed by one.
func TestScriptsDeclareTheirWrites(t *testing.T) {
	files, err := fs.Glob(luaFiles, "lua/*.lua")
	if err != nil || len(files) == 0 {
		t.Fatalf("lua/*.lua: %v, %d files", err, len(files))
	}
	needed := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".lua")
		shebang, needs, body := luaFile(name)
		for _, n := range needs {
			needed[n] = true
		}
		if strings.TrimSpace(body) == "" {
			t.Errorf("%s has no code after its header", f)
		}
		sc, loaded := scripts[name]
		if shebang == "" {
			if loaded {
				t.Errorf("%s is loaded as a script but has no shebang", f)
			}
			continue
		}
		if !loaded {
			t.Errorf("%s is a script (it has a shebang) that scripts.go does not load: load it, with what its writes need", f)
			continue
		}
		if !sc.writes && sc.unconfirmed != "" {
			t.Errorf("%s writes nothing, yet gives a reason its writes need no confirmation", f)
		}
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".lua")
		if sb, _, _ := luaFile(name); sb == "" && !needed[name] {
			t.Errorf("%s is a helper that no script needs", f)
		}
	}
	for name := range scripts {
		if _, err := luaFiles.ReadFile("lua/" + name + ".lua"); err != nil {
			t.Errorf("script %s: %v", name, err)
		}
	}
}

// TestScriptsRunOnlyHere: the package's code loads scripts only in
// scripts.go and runs them (the script's lua, or EVAL of any Lua) only
// through run.go, whose functions confirm the writes of every script that
// is confirmed (see run.go). A call that went around them would let a write
// a caller is answered for go without its replica.
func TestScriptsRunOnlyHere(t *testing.T) {
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pos := fset.Position(sel.Pos())
			switch name := sel.Sel.Name; {
			case name == "NewScript" && path != "scripts.go":
				t.Errorf("%s: redis.NewScript outside scripts.go: put the Lua in lua/ and load it there", pos)
			case path == "run.go":
			case name == "lua":
				t.Errorf("%s: a script's lua used outside run.go: run it with run, runKeys, durablePipe.eval or queue", pos)
			case name == "Eval" || name == "EvalSha" || name == "EvalRO" || name == "EvalShaRO" || name == "ScriptLoad" || name == "FCall":
				t.Errorf("%s: %s outside run.go: Lua runs only through run.go", pos, name)
			}
			return true
		})
	}
}
