"""Where Model.forward spends its time, per op and per layer (`nibble bench --profile`).

While active, a Profile wraps the kernels the forward pass calls (the matrix products by the
weights they multiply, norms, rope, the KV store, attention, the feed-forward gate) with timers.
What the wrapped calls do not cover is Python: the glue between kernels.
"""
import time
import types
from collections import defaultdict
from contextlib import contextmanager

import cpu_kernels as K

from . import model as model_module

KERNEL_OPS = {"rms_norm": "norm", "add_rms_norm": "add + norm", "apply_rope": "rope", "store_kv": "kv store",
              "attention_seqs": "attention"}   # generation: the kv store and attention in one kernel
WEIGHT_LABELS = {"wq": "q", "wk": "k", "wv": "v", "wo": "attn_output", "gate": "gate", "up": "up", "down": "down"}


class Profile:
    def __init__(self, model):
        self.model = model
        self.weights = {id(model.output): ("output", "output")}     # id(PackedWeight) -> (layer, label)
        for i, layer in enumerate(model.layers):
            for attr, label in WEIGHT_LABELS.items():
                self.weights[id(getattr(layer, attr))] = (i, label)
        self.seconds = defaultdict(float)     # (op, layer) -> seconds
        self.calls = defaultdict(int)
        self.weight_bytes = defaultdict(int)  # (op, layer) -> bytes of weights streamed by matvecs
        self.forward_seconds = 0.0
        self.forward_calls = 0
        self.tokens = 0
        self.layer = "-"

    def _add(self, op, layer, seconds, weight_bytes=0):
        self.seconds[op, layer] += seconds
        self.calls[op, layer] += 1
        self.weight_bytes[op, layer] += weight_bytes

    def _timed(self, op, fn, layer=None, streamed=0):
        """`fn` timed as `op` of `layer` (default: the layer of the last matrix product), reading `streamed`
        bytes of weights per call."""
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            self._add(op, self.layer if layer is None else layer, time.perf_counter() - start, streamed)
            return result
        return timed

    def _timed_project(self, project):
        def timed(x, scratch, *targets):
            layer, _ = self.weights.get(id(targets[0][0]), ("-", "?"))
            self.layer = layer
            op = "matvec " if x.shape[0] == 1 else "matmul "
            op += "+".join(self.weights.get(id(w), ("-", "?"))[1] for w, _ in targets)
            start = time.perf_counter()
            project(x, scratch, *targets)
            streamed = sum(w.nbytes for w, _ in targets) if x.shape[0] == 1 else 0
            self._add(op, layer, time.perf_counter() - start, streamed)
        return timed

    def _timed_forward(self, forward):
        def timed(tokens, cache, all_logits=False, first_logit=0):
            self.layer = "-"
            start = time.perf_counter()
            result = forward(tokens, cache, all_logits, first_logit)
            self.forward_seconds += time.perf_counter() - start
            self.forward_calls += 1
            self.tokens += len(tokens)
            return result
        return timed

    @contextmanager
    def active(self):
        """Patch the timers in for the duration of the block (this model only; not thread-safe)."""
        model = self.model
        patches = [(K, name, self._timed(op, getattr(K, name))) for name, op in KERNEL_OPS.items()]
        patches += [(model_module, "_project", self._timed_project(model_module._project)),
                    (model_module, "_batch_attention", self._timed("attention", model_module._batch_attention)),
                    (model, "embed", self._timed("embed", model.embed)),
                    (model, "forward", self._timed_forward(model.forward)),
                    (model.output, "matvec", self._timed("matvec output", model.output.matvec, "output",
                                                         model.output.nbytes)),
                    (model.output, "matmul", self._timed("matmul output", model.output.matmul, "output"))]
        activations = dict(model_module._ACTIVATIONS)
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
        try:
            for obj, name, wrapper in patches:
                setattr(obj, name, wrapper)
            for key, fn in activations.items():
                model_module._ACTIVATIONS[key] = self._timed("ffn gate", fn)
            yield self
        finally:
            for obj, name, original in reversed(saved):
                if isinstance(obj, types.ModuleType):
                    setattr(obj, name, original)
                else:
                    obj.__dict__.pop(name, None)          # back to the class's method
            model_module._ACTIVATIONS.update(activations)

    def _count(self, per):
        return max(1, self.tokens if per == "token" else self.forward_calls)

    def table(self, bandwidth=None, per="token"):
        """Markdown lines: per op, time per token (or per forward call, per="call"), share of the forward
        time, and for matvecs the GB/s of weights streamed next to the machine's read bandwidth."""
        n = self._count(per)
        by_op = defaultdict(lambda: [0.0, 0, 0])
        for (op, layer), s in self.seconds.items():
            by_op[op][0] += s
            by_op[op][1] += self.calls[op, layer]
            by_op[op][2] += self.weight_bytes[op, layer]
        kernels = sum(v[0] for v in by_op.values())
        python = max(0.0, self.forward_seconds - kernels)
        total = max(self.forward_seconds, 1e-12)
        unit = "ms/token" if per == "token" else "ms/call"
        lines = [f"| op | calls/{per} | {unit} | share | weights GB/s | % of bandwidth |", "|---|---:|---:|---:|---:|---:|"]
        rows = sorted(by_op.items(), key=lambda kv: -kv[1][0]) + [("python (between kernels)", [python, 0, 0])]
        for op, (s, calls, nbytes) in rows:
            gbps = nbytes / s / 1e9 if nbytes and s else None
            share = f"{100 * gbps / bandwidth:.0f}%" if gbps and bandwidth else ""
            lines.append(f"| {op} | {calls / n:.0f} | {1000 * s / n:.3f} | {100 * s / total:.1f}% | "
                         f"{f'{gbps:.1f}' if gbps else ''} | {share} |")
        memory_bound = sum(nb / (bandwidth * 1e9) for _, (_, _, nb) in by_op.items() if nb) if bandwidth else 0.0
        lines.append(f"| total | | {1000 * total / n:.3f} | 100% | | |")
        if bandwidth:
            lines.append(f"\nStreaming the weights once at {bandwidth:.1f} GB/s would take {1000 * memory_bound / n:.3f} "
                         f"{unit} ({100 * memory_bound / total:.0f}% of the time measured).")
        return lines

    def layer_line(self, per="token"):
        """Time of each layer (all its ops), per token or per forward call."""
        layers = defaultdict(float)
        for (op, layer), s in self.seconds.items():
            layers[layer] += s
        n = self._count(per)
        ordered = [k for k in layers if isinstance(k, int)]
        parts = [f"{i}: {1000 * layers[i] / n:.3f}" for i in sorted(ordered)]
        parts += [f"{k}: {1000 * layers[k] / n:.3f}" for k in layers if not isinstance(k, int)]
        return f"ms/{per} by layer: " + ", ".join(parts)
