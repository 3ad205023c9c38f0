#!/usr/bin/env bash
# Fuzzes every parser sd.wasm owns (fuzz/: npy, PNG inputs, `parameters` text, prompt files,
# scheduler and model configs, tokenizer files, prompt syntax) with cargo-fuzz on nightly, growing
# fuzz/corpus/<target>/ (commit what it adds: CI replays it, tests/library/fuzz_corpus.rs).
#   RUNS=10000000 scripts/fuzz.sh [TARGET...]     (MAX_SECONDS=N caps each target's time)
# Prints each target's closing libFuzzer line (executions done) and fails on a crash; a
# crashing input is left in fuzz/artifacts/<target>/: add it to the corpus once fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
runs=${RUNS:-10000000}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <(cargo +nightly fuzz list)
executions() { grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$1" | grep -o '[0-9]*$'; }
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  # -max_len: the corpora hold whole small files (PNGs, configs); keep mutations near that size.
  # Prompts: 1 KB holds 100 "a BREAK"s (past the 32-chunk limit) and several 75-token chunks with
  # their comma rule; longer ones only tokenize more of the same (tokenizers' BPE under coverage
  # instrumentation), at a fraction of the rate.
  # Tokenizer files: 2 KB hold a vocab, merges and special tokens of every shape the loader
  # checks; each input is also tokenized as a prompt, so longer ones only cost time (the rate
  # fell from ~1.2k/s to ~0.7k/s as inputs grew past 4 KB).
  max_len=65536
  [[ $t != prompt_syntax ]] || max_len=1024
  [[ $t != tokenizer ]] || max_len=2048
  if ! cargo +nightly fuzz run --sanitizer none "$t" "corpus/$t" -- -runs="$runs" \
      -max_total_time="${MAX_SECONDS:-0}" -max_len="$max_len" -print_final_stats=1 >"$log" 2>&1; then
    # Stopped by a signal (Ctrl-C, kill): libFuzzer says so and prints its stats; not a crash.
    if grep -q 'libFuzzer: run interrupted' "$log"; then
      echo "fuzz target $t: interrupted after $(executions "$log") executions, no crash"
      exit 130
    fi
    tail -n 40 "$log"
    echo "fuzz target $t: CRASH (see fuzz/artifacts/$t/)"
    exit 1
  fi
  echo "fuzz target $t: $(executions "$log") executions, no crash"
  rm -f "$log"
done
