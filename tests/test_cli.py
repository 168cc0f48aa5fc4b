import json
import os
import subprocess
import sys

import pytest

from runtime import KNOWN_MODELS, ModelNotFound, resolve_model
from tools.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_text(capsys, smollm2_path):
    code, out, err = run(capsys, "inspect", "smollm2-135m-instruct")
    assert code == 0 and err == ""
    assert "architecture llama" in out
    assert "tokenizer.ggml.tokens" in out and "(49152 items)" in out
    assert "tensors (272)" in out
    assert "token_embd.weight" in out and "49152 x 576" in out
    assert "total: 272 tensors (210 Q4_1, 61 F32, 1 Q8_0)" in out


def test_inspect_json(capsys, gemma3_path):
    code, out, _ = run(capsys, "inspect", str(gemma3_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["architecture"] == "gemma3" and info["n_tensors"] == 236
    tokens = info["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["type"] == "[STRING]" and tokens["value"]["length"] == 262144
    assert info["metadata"]["gemma3.attention.sliding_window"] == {"type": "UINT32", "value": 512}
    embd = next(t for t in info["tensors"] if t["name"] == "token_embd.weight")
    assert embd == {"name": "token_embd.weight", "type": "Q8_0", "shape": [262144, 640],
                    "bytes": 178257920, "offset": embd["offset"]}
    assert info["tensor_bytes"] == sum(t["bytes"] for t in info["tensors"])


def test_pull_prints_the_local_path(capsys, real_model_path):
    name = next(n for n in KNOWN_MODELS if resolve_model(n) == real_model_path)
    code, out, _ = run(capsys, "pull", name)
    assert code == 0 and out.strip() == str(real_model_path) and os.path.isfile(out.strip())


def test_pull_lists_models(capsys):
    code, out, _ = run(capsys, "pull", "--list")
    assert code == 0 and "smollm2-135m-instruct" in out and "gemma3-270m" in out


def test_unknown_model_is_one_clear_line(capsys):
    code, out, err = run(capsys, "inspect", "no-such-model")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "no such model file or known model: 'no-such-model'" in err and "smollm2-135m-instruct" in err


def test_resolve_model_accepts_paths_and_names(smollm2_path):
    assert resolve_model(str(smollm2_path)) == smollm2_path
    assert resolve_model("SmolLM2-135M-Instruct") == smollm2_path
    with pytest.raises(ModelNotFound):
        resolve_model("/no/such/file.gguf")


def test_inspect_system_names_the_kernel_path(capsys):
    from cpu_kernels import isa
    code, out, _ = run(capsys, "inspect", "--system", "--json")
    info = json.loads(out)
    assert code == 0 and info["kernel_path"] == isa.KERNEL_PATH.name and isa.KERNEL_PATH.name in info["paths_this_cpu_runs"]
    code, out, _ = run(capsys, "inspect", "--system")
    assert code == 0 and f"kernel instructions  {isa.KERNEL_PATH.describe}" in out


def _a_path_this_cpu_cannot_run():
    from cpu_kernels import isa
    return next(name for name, path in isa.PATHS.items() if not isa.runs_here(path))


@pytest.mark.parametrize("value, message", [
    ("bogus", "NIBBLE_KERNELS='bogus' is not a kernel path; choose one of"),
    (_a_path_this_cpu_cannot_run(), f"NIBBLE_KERNELS={_a_path_this_cpu_cannot_run()}: this CPU cannot run")])
def test_bad_kernel_path_is_one_line(value, message):
    result = subprocess.run([sys.executable, "-m", "tools.cli", "inspect", "--system"], capture_output=True, text=True,
                            env={**os.environ, "NIBBLE_KERNELS": value})
    assert result.returncode == 1 and result.stderr.startswith(f"nibble: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "inspect" in result.stdout and "pull" in result.stdout


def test_run_prints_the_greedy_continuation(capsys, smollm2_path):
    code, out, err = run(capsys, "run", "-p", "The capital of France is", "-n", "3", "--temp", "0")
    assert code == 0 and out == " Paris.\n\n"


def test_run_under_a_grammar_or_schema(capsys, tmp_path, smollm2_path):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    code, out, err = run(capsys, "run", "--chat", "-p", "Describe a cat.", "-j", json.dumps(schema), "--temp", "0")
    assert code == 0 and set(json.loads(out)) == {"name", "age"}
    (tmp_path / "yn.gbnf").write_text('root ::= "yes" | "no"')
    code, out, err = run(capsys, "run", "-p", "Is the sky blue? Answer:", "--grammar-file", str(tmp_path / "yn.gbnf"))
    assert code == 0 and out in ("yes\n", "no\n")
    code, out, err = run(capsys, "run", "-p", "x", "--grammar", "root ::= [")
    assert code == 1 and err.count("\n") == 1 and "GBNF" in err
    code, out, err = run(capsys, "run", "-p", "x", "--json-schema-file", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read --json-schema-file" in err


def test_chat_keeps_the_conversation_and_resets(capsys, monkeypatch, smollm2_path):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("What is the capital of France?\n/reset\n"
                                                 "What is the capital of France?\n/exit\nnever read\n"))
    code, out, err = run(capsys, "chat", "--temp", "0", "-c", "512")
    assert code == 0
    answers = [line for line in out.splitlines() if line]
    assert answers == ["The capital of France is Paris.", "(conversation cleared)", "The capital of France is Paris."]


def test_chat_ctrl_c_stops_the_reply_not_the_program(capsys, monkeypatch, smollm2_path):
    import io
    from runtime import Llama
    real = Llama.create_chat_completion
    calls = []

    def interrupted(self, messages, **kwargs):
        calls.append(len(messages))
        chunks = real(self, messages, **kwargs)
        if len(calls) == 1:
            yield next(chunks)
            yield next(chunks)
            raise KeyboardInterrupt
        yield from chunks

    monkeypatch.setattr(Llama, "create_chat_completion", interrupted)
    monkeypatch.setattr("sys.stdin", io.StringIO("Tell me a long story.\nWhat is the capital of France?\n"))
    code, out, _ = run(capsys, "chat", "--temp", "0")
    assert code == 0 and "[stopped]" in out
    assert calls == [1, 3]       # the interrupted reply stays in the conversation


def test_chat_context_full_is_a_message(capsys, monkeypatch, smollm2_path):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("word " * 60 + "\n/exit\n"))
    code, out, _ = run(capsys, "chat", "-c", "32")
    assert code == 0 and "no longer fits the 32-token context" in out


def test_bench_reports_pp_and_tg(capsys, smollm2_path):
    code, out, err = run(capsys, "bench", "-p", "16", "-n", "4", "-r", "2", "--json")
    assert code == 0
    results = {r["test"]: r for r in json.loads(out)["results"]}
    assert set(results) == {"pp16", "tg4"}
    assert all(r["engine"] == "nibble" and r["tokens_per_second"] > 0 and len(r["runs"]) == 2
               for r in results.values())


def test_bench_warns_about_more_threads_than_cores(capsys, smollm2_path):
    too_many = (os.cpu_count() or 1) + 1
    code, out, err = run(capsys, "bench", "-p", "0", "-n", "2", "-r", "1", "-t", str(too_many))
    assert code == 0 and "more than the" in err and "tg2" in out   # warned, then ran on the cores there are


def test_bench_profile_accounts_for_the_forward_time(capsys, smollm2_path):
    code, out, err = run(capsys, "bench", "-p", "16", "-n", "4", "--profile")
    assert code == 0 and "## pp16" in out and "## tg4" in out
    tg = out.split("## tg4")[1]
    rows = {line.split("|")[1].strip(): line.split("|") for line in tg.splitlines() if line.startswith("| ")}
    assert {"matvec q+k+v", "matvec gate+up", "matvec down", "attention", "python (between kernels)", "total"} <= set(rows)
    assert rows["matvec q+k+v"][2].strip() == "30"                   # once per layer per token
    shares = [float(r[4].strip().rstrip("%")) for name, r in rows.items() if name not in ("op", "total")
              and r[4].strip().endswith("%")]
    assert abs(sum(shares) - 100) < 1.0                               # the ops and the Python between them add up
    assert "% of bandwidth" in tg and "ms/token by layer: 0:" in tg


def test_profile_restores_the_model(smollm2_path):
    from runtime.model import Model
    from runtime.profile import Profile
    import runtime.model as model_module
    model = Model(smollm2_path)
    project = model_module._project
    with Profile(model).active():
        model.forward([1, 2], model.new_cache(8))
    assert model_module._project is project and "forward" not in vars(model) and "matvec" not in vars(model.output)
