// wasi-runner runs a WASI module the way Bacalhau v1.9.3's wasm executor does, without a
// Bacalhau network: wazero v1.12.0 (the version Bacalhau pins) in compiler mode with its
// default core features (SIMD128, no threads, no relaxed-simd, no memory64), WASI preview1
// only, argv[0] = "", the job's memory as a page limit (default 512 MB, at most 4 GiB),
// read-only inputs, outputs mounted at /<name> as Bacalhau mounts them (a missing file is
// created on first open or stat, an existing one reopens read-only, no mkdir/rename/unlink),
// real clocks, wazero's deterministic fake randomness, and the exit code from proc_exit
// (-1 when the module returns without calling it).
//
// Like Bacalhau it sets WithCloseOnContextDone(true), which makes wazero call into Go at every
// loop header; the extra register pressure exposes wazero v1.12.0's amd64 float-select
// miscompile (wazero#2534), so this runner reproduces it too. tools/wasm-ship removes float
// selects from sd.wasm; tests/platforms/wasi_runner.rs keeps a minimal module that shows the bug here.
//
//	wasi-runner [--memory 4GiB] [-i HOST:GUEST]... [-o NAME:HOST]... [--env K=V]... MODULE [--] ARGS...
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

const pageSize = 65536

func main() {
	os.Exit(run(os.Args[1:]))
}

type mount struct{ host, guest string }

func run(args []string) int {
	memory := uint64(512 << 20) // Bacalhau's default job memory
	var inputs, outputs []mount
	var env []string
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "--" {
		flag := args[0]
		if len(args) < 2 {
			return fail("%s needs a value", flag)
		}
		value := args[1]
		args = args[2:]
		switch flag {
		case "--memory":
			m, err := parseBytes(value)
			if err != nil {
				return fail("--memory %q: %v", value, err)
			}
			memory = m
		case "-i", "--input":
			host, guest, ok := strings.Cut(value, ":")
			if !ok {
				return fail("-i wants HOST:GUEST, got %q", value)
			}
			inputs = append(inputs, mount{host, guest})
		case "-o", "--output":
			name, host, ok := strings.Cut(value, ":")
			if !ok {
				return fail("-o wants NAME:HOST, got %q", value)
			}
			outputs = append(outputs, mount{host, "/" + name})
		case "--env":
			env = append(env, value)
		default:
			return fail("unknown option %s", flag)
		}
	}
	if len(args) == 0 {
		return fail("usage: wasi-runner [--memory 4GiB] [-i HOST:GUEST]... [-o NAME:HOST]... [--env K=V]... MODULE [--] ARGS...")
	}
	modulePath, params := args[0], args[1:]
	if len(params) > 0 && params[0] == "--" {
		params = params[1:]
	}
	pages := (memory + pageSize - 1) / pageSize
	if pages > 65536 {
		return fail("--memory %d bytes is more than 4 GiB (65536 pages), which Bacalhau rejects", memory)
	}
	code, err := execute(modulePath, params, uint32(pages), inputs, outputs, env)
	if err != nil {
		return fail("%v", err)
	}
	return code
}

func execute(modulePath string, params []string, pages uint32, inputs, outputs []mount, env []string) (int, error) {
	ctx := context.Background()
	wasm, err := os.ReadFile(modulePath)
	if err != nil {
		return 0, err
	}
	config := wazero.NewRuntimeConfigCompiler().WithMemoryLimitPages(pages).WithCoreFeatures(api.CoreFeaturesV2).
		WithCloseOnContextDone(true) // as Bacalhau's executor
	runtime := wazero.NewRuntimeWithConfig(ctx, config)
	defer runtime.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, runtime)
	compiled, err := runtime.CompileModule(ctx, wasm)
	if err != nil {
		return 0, fmt.Errorf("compiling %s: %w", modulePath, err)
	}
	if !hasNameSection(compiled) {
		return 0, errors.New("Name section not found (Bacalhau's tracing rejects such modules)")
	}
	fsConfig := wazero.NewFSConfig()
	for _, in := range inputs {
		fsConfig = fsConfig.(sysfs.FSConfig).WithSysFSMount(&sysfs.ReadFS{FS: sysfs.DirFS(in.host)}, in.guest)
	}
	for _, out := range outputs {
		fsConfig = fsConfig.WithFSMount(touchFS(out.host), out.guest)
	}
	moduleConfig := wazero.NewModuleConfig().
		WithArgs(append([]string{""}, params...)...).
		WithStdout(os.Stdout).WithStderr(os.Stderr).
		WithFSConfig(fsConfig).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithStartFunctions("_start")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		moduleConfig = moduleConfig.WithEnv(k, v)
	}
	mod, err := runtime.InstantiateModule(ctx, compiled, moduleConfig)
	var exit *sys.ExitError
	switch {
	case err == nil && mod.IsClosed():
		return 0, nil // proc_exit(0): wazero reports success as no error, and closes the module
	case err == nil:
		return -1, nil // returned without proc_exit: Bacalhau reads -1
	case errors.As(err, &exit):
		return int(exit.ExitCode()), nil
	default:
		return 0, err
	}
}

// hasNameSection: wazero keeps the `name` section out of CustomSections and exposes the
// module name it holds; sd.wasm's minimal name section holds exactly that.
func hasNameSection(m wazero.CompiledModule) bool {
	return m.Name() != ""
}

// touchFS is Bacalhau's output mount (its pkg/executor/wasm/util/touchfs, an fs.FS mounted
// through wazero's fs.FS adapter): opening a missing name creates an empty file by that name,
// and since the adapter stats a path by opening it, a stat of a missing name creates it too.
// An existing file opens read-only (write-once); the adapter has no mkdir, rename, link or
// unlink (ENOSYS).
type touchFS string

func (t touchFS) Open(name string) (fs.File, error) {
	f, err := os.DirFS(string(t)).Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return os.Create(filepath.Join(string(t), name))
	}
	return f, err
}

// parseBytes reads Bacalhau-style sizes: 512MB (decimal), 4GiB (binary), or a byte count.
func parseBytes(s string) (uint64, error) {
	units := []struct {
		suffix string
		factor uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			n, err := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
			if err != nil {
				return 0, err
			}
			return uint64(n * float64(u.factor)), nil
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "wasi-runner: "+format+"\n", args...)
	return 125
}
