"""Hugging Face folders made by transformers (torch, CPU) for the convert tests.

Real models: transformers loads the GGUF, and a fresh model built from its config with that state dict
is saved (save_pretrained refuses a GGUF-loaded model). Tiny models: random weights per architecture."""
import shutil
from pathlib import Path

TINY_CONFIGS = {
    "LlamaForCausalLM": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                             rope_theta=10000.0, tie_word_embeddings=False),
    "Qwen2ForCausalLM": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                             rope_theta=1000000.0, tie_word_embeddings=True),
    "Gemma3ForCausalLM": dict(model_type="gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                              rms_norm_eps=1e-6, sliding_window=8, rope_theta=1000000.0,
                              rope_local_base_freq=10000.0, tie_word_embeddings=True,
                              layer_types=["sliding_attention"] * 5 + ["full_attention"]),
    # head_dim 32 is not hidden / heads: the file must say it
    "Qwen3ForCausalLM": dict(model_type="qwen3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
                             rope_theta=1000000.0, tie_word_embeddings=True),
    # partial rotary (half of each head), long/short RoPE factors (40 test tokens > 32 original positions: long),
    # a sliding window shorter than the test prompt
    "Phi3ForCausalLM": dict(model_type="phi3", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, partial_rotary_factor=0.5,
                            original_max_position_embeddings=32, sliding_window=16, tie_word_embeddings=False,
                            rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 1.7, 2.2],
                                          "long_factor": [1.5, 2.5, 4.0, 8.0]}),
    # small soft-caps, so that they change the result; even layers slide over 8 positions
    "Gemma2ForCausalLM": dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32,
                              rms_norm_eps=1e-6, sliding_window=8, attn_logit_softcapping=5.0,
                              final_logit_softcapping=3.0, tie_word_embeddings=True),
    "MistralForCausalLM": dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, sliding_window=8,
                               rope_theta=10000.0, tie_word_embeddings=False),
}


def export_gguf_to_hf(gguf_path, out_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def tiny_model(architecture, tokenizer_dir, out_dir, seed=0, **overrides):
    """A random model of `architecture` with the tokenizer files of `tokenizer_dir`; returns (folder, model)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    settings = {**TINY_CONFIGS[architecture], **overrides}
    settings.setdefault("max_position_embeddings", 256)
    config = AutoConfig.for_model(settings.pop("model_type"), vocab_size=49152, initializer_range=0.3,
                                  architectures=[architecture], **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                # norms around 1 (Gemma stores them as offsets from 1), biases around 0
                centre = 1.0 if "norm" in name and "gemma" not in config.model_type else 0.0
                param.copy_(torch.randn_like(param) * 0.3 + centre)
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tokenizer_dir) / name, Path(out_dir) / name)
    return Path(out_dir), model
