"""What the benchmarks that compare us with a peer share: the CPU's description, the library
versions, a child process measured for wall time and peak memory, and the update of a section
of BENCHMARKS.md (newest table first, older ones under the section's "### History")."""

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

from absl import app

HISTORY = "### History"


def cpu_info():
    """{"model", "cores", "bf16": [flags of amx_bf16 / avx512_bf16 the CPU has]}."""
    model, cpu_flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not cpu_flags:
                    cpu_flags = set(value.split())
    except OSError:
        pass
    return {"model": model or platform.processor() or "unknown", "cores": os.cpu_count(),
            "bf16": [name for name in ("amx_bf16", "avx512_bf16") if name in cpu_flags]}


def runnable_precisions(script, requested, cpu):
    """(precisions to run, what was skipped and why) of --precisions `requested` on `cpu`
    (cpu_info()): bf16 only where the CPU has AMX or AVX-512-BF16. A precision other than fp32
    and bf16 is a usage error; none left to run ends `script`."""
    precisions, skipped = [], []
    for precision in requested:
        if precision not in ("fp32", "bf16"):
            raise app.UsageError(f"--precisions: {precision!r} is neither fp32 nor bf16")
        if precision == "bf16" and not cpu["bf16"]:
            skipped.append("bf16 (the CPU has neither amx_bf16 nor avx512_bf16)")
            continue
        precisions.append(precision)
    if not precisions:
        sys.exit(f"{script}: nothing to run: skipped {'; '.join(skipped)}")
    return precisions, skipped


def peer_switches(precision, compile_model):
    """The Hugging Face peers' flags for `precision` and torch.compile."""
    return ["--bf16"] * (precision == "bf16") + ["--compile"] * bool(compile_model)


def clis_run_onednn():
    """Whether our CLIs started from this environment run TensorFlow's oneDNN kernels
    (tf_startup.py sets TF_ENABLE_ONEDNN_OPTS=1 where it is unset)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() in ("1", "true")


def versions():
    """"Python x, TensorFlow y (oneDNN kernels on|off), PyTorch z, transformers w" of this
    environment; our CLIs turn oneDNN on unless TF_ENABLE_ONEDNN_OPTS says otherwise
    (tf_startup.py)."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    tensorflow = version("tensorflow")
    if tensorflow == "?":
        tensorflow = version("tensorflow-cpu")
    return (f"Python {platform.python_version()}, TensorFlow {tensorflow} (oneDNN kernels "
            f"{'on' if clis_run_onednn() else 'off'}), PyTorch "
            f"{version('torch')}, transformers {version('transformers')}")


def run_measured(command, output_dir, cwd):
    """Runs `command` in `cwd` with a fresh `output_dir` (stdout and stderr to files there);
    returns (exit code, wall seconds, peak RSS in MiB of the child and its children)."""
    shutil.rmtree(output_dir, ignore_errors=True)
    os.makedirs(output_dir)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(os.path.join(output_dir, "stdout.txt"), "w", encoding="utf-8") as out, \
            open(os.path.join(output_dir, "stderr.txt"), "w", encoding="utf-8") as err:
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
    return process.returncode, seconds, usage.ru_maxrss / 1024  # KiB on Linux


def measure(side, command, output_dir, cwd, read_results):
    """Runs one side's `command` in `cwd` with a fresh `output_dir`: `read_results(output_dir)`
    plus wall_seconds and peak_rss_mib, or {"error": ...} (its stderr's end printed)."""
    print(f"[{datetime.datetime.now():%H:%M:%S}] {side}: {shlex.join(command)}", flush=True)
    code, seconds, rss = run_measured(command, output_dir, cwd)
    if code:
        print(f"{side} failed (exit {code}); log in {output_dir}:\n{stderr_tail(output_dir)}",
              file=sys.stderr)
        return {"error": f"exit {code}, log in {output_dir}"}
    try:
        results = read_results(output_dir)
    except (OSError, KeyError, ValueError, IndexError) as error:
        return {"error": f"no results ({error!r}), log in {output_dir}"}
    results.update(wall_seconds=round(seconds, 1), peak_rss_mib=round(rss, 1))
    return results


def last_json_line(output_dir):
    """The last line of a child's stdout.txt that starts with "{", parsed."""
    with open(os.path.join(output_dir, "stdout.txt"), encoding="utf-8") as f:
        return json.loads([line for line in f if line.startswith("{")][-1])


def stderr_tail(output_dir, characters=3000):
    """The end of a run_measured child's stderr."""
    with open(os.path.join(output_dir, "stderr.txt"), encoding="utf-8") as f:
        return f.read()[-characters:]


def update_benchmarks(text, section, block):
    """`text` (BENCHMARKS.md) with `block` as the newest table of `section` (its "## " heading):
    the section's previous newest table moves to the top of its "### History"; a missing
    section is appended."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == section), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section + "\n\n" + block
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].startswith("# ")), len(lines))
    body = lines[start + 1:end]
    split = next((i for i, line in enumerate(body) if line.rstrip() == HISTORY), len(body))
    latest = "".join(body[:split]).strip("\n")
    history = "".join(body[split + 1:]).strip("\n")
    older = "\n\n".join(part for part in (latest, history) if part)
    updated = section + "\n\n" + block.rstrip("\n") + "\n"
    if older:
        updated += "\n" + HISTORY + "\n\n" + older + "\n"
    after = "".join(lines[end:])
    return "".join(lines[:start]) + updated + ("\n" + after if after else "")


def write_benchmarks(path, section, block):
    """Puts `block` into `section` of the Markdown file `path` (atomically)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(update_benchmarks(text, section, block))
    os.replace(path + ".tmp", path)


def publish(script, block, failed, results_path, benchmarks_file, section, write=True):
    """Prints the run's Markdown `block`; exits naming the `failed` runs (the file left alone),
    or puts the block into `section` of `benchmarks_file` when `write`."""
    print("\n" + block)
    if failed:
        sys.exit(f"{script}: {', '.join(failed)} failed; {benchmarks_file} left alone (results "
                 f"in {results_path})")
    if write:
        write_benchmarks(benchmarks_file, section, block)
        print(f"written to {benchmarks_file} under {section!r}")
