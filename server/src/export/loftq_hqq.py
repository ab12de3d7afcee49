"""Load a loftq-lens HQQ export with its HQQ layers, on any transformers >= 4.46 (5.x included).

Why this file exists: an HQQ folder written by `loftq quantize --format hqq` is a pre-quantized
HQQ checkpoint (each quantized module stored as HQQ serializes it: W_q, scale, zero and its meta).
transformers 4.46-4.57 load it with plain `AutoModelForCausalLM.from_pretrained` (on CPU from 4.54;
before that it asks for a GPU, while load_model runs on CPU there too).
transformers 5.x does NOT: measured on 5.4.0, `from_pretrained` drops W_q/scale/zero as unexpected
keys and leaves freshly initialised linear weights in their place -- the model runs, silently
wrong, with only a MISSING/UNEXPECTED notice. `load_model` here does the loading itself: it builds
the model from its config (no quantizer involved), replaces every module stored with `<name>.W_q`
by an `hqq.core.quantize.HQQLinear` loaded from that module's own tensors (hqq decodes its meta:
bits, group size, packing), and loads every other tensor strictly.

    from loftq_hqq import load_model
    from peft import PeftModel
    model = load_model("DIR")          # each module at its own bits (1/2/3/4/8)
    model = PeftModel.from_pretrained(model, "DIR/loftq_init", is_trainable=True)

    python3 loftq_hqq.py DIR           # smoke check: loads, prints the HQQ layers and their bits

dtype: None (default) computes in the dtype of the checkpoint's non-quantized tensors; the HQQ
layers compute in that same dtype (their scale/zero are cast to it, as transformers' `model.to(dtype)`
does), so activations and dequantized weights always agree. Pass dtype to choose another. Choose it
here, not with `model.to(other_dtype)` afterwards: the model returned carries no quantization_config,
so nothing re-casts the HQQ layers' meta then. Like any transformers model built in bfloat16, the
rotary `inv_freq` buffer stays float32; transformers 4.57's documented `from_pretrained(...)` then
`model.to(torch.bfloat16)` rounds it to bfloat16 as well, so its logits differ slightly
(`load_model(DIR).to(torch.bfloat16)` reproduces them bit for bit).
Needs torch, safetensors, transformers (>= 4.46) and hqq (>= 0.2.1); no network access.
"""
import importlib.util
import json
import os
import re
import sys

MIN_HQQ = (0, 2, 1)


class LoftqHqqError(RuntimeError):
    """A folder or environment this loader refuses; the message is one line."""


def _version(text):
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def read_hqq_config(path):
    """config.json of an HQQ export (as a dict); refuses a folder that is not one."""
    cfg_file = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_file):
        raise LoftqHqqError(f"loftq_hqq: {cfg_file} not found — not a model folder")
    with open(cfg_file, encoding="utf-8") as f:
        config = json.load(f)
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method != "hqq":
        raise LoftqHqqError(
            f"loftq_hqq: {cfg_file} has no HQQ quantization_config (quant_method: {method!r}) — "
            "not an HQQ export; load it with AutoModelForCausalLM.from_pretrained"
        )
    return config


def _check_stack():
    """Refuse in one line when a package is missing (checked before anything is imported)."""
    for module, hint in [
        ("hqq", "pip install hqq (≥ 0.2.1)"),
        ("torch", "pip install torch"),
        ("safetensors", "pip install safetensors"),
        ("transformers", "pip install transformers (≥ 4.46)"),
    ]:
        if importlib.util.find_spec(module) is None:
            raise LoftqHqqError(f"loftq_hqq: {module} is not installed — {hint}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        hqq_version = version("hqq")
    except PackageNotFoundError:  # a source checkout on sys.path: trust it
        return
    if _version(hqq_version) < MIN_HQQ:
        raise LoftqHqqError(f"loftq_hqq: hqq {hqq_version} is too old — pip install 'hqq>=0.2.1'")


def _read_tensors(path):
    """Every tensor of model.safetensors, or of the shards model.safetensors.index.json names."""
    from safetensors.torch import load_file

    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        raise LoftqHqqError(f"loftq_hqq: no model.safetensors or model.safetensors.index.json in {path}")
    tensors = {}
    for name in files:
        tensors.update(load_file(os.path.join(path, name), device="cpu"))
    return tensors


def _split_hqq_modules(tensors):
    """{module name: its HQQ state dict (prefix stripped)}; those keys are removed from tensors."""
    names = {key[: -len(".W_q")] for key in tensors if key.endswith(".W_q")}
    modules = {name: {} for name in names}
    for key in list(tensors):
        owner, _, attr = key.rpartition(".")
        if owner in modules:
            modules[owner][attr] = tensors.pop(key)
    return modules


def _default_dtype(tensors, modules):
    """The dtype holding most of the non-quantized float elements; else the modules' compute_dtype."""
    import torch

    count = {}
    for t in tensors.values():
        if t.is_floating_point():
            count[t.dtype] = count.get(t.dtype, 0) + t.numel()
    if count:
        return max(count, key=count.get)
    stored = next(iter(modules.values()))["compute_dtype"]  # hqq stores it as ASCII bytes
    return getattr(torch, bytes(stored.tolist()).decode().split(".")[-1])


def load_model(path, dtype=None, device="cpu"):
    """The transformers causal-LM model of the HQQ export at `path`, its quantized modules HQQLinear, in eval mode."""
    read_hqq_config(path)  # the folder first: its refusal is right whatever is installed
    _check_stack()
    import torch
    import transformers
    from hqq.core.quantize import HQQLinear
    from transformers import AutoConfig, AutoModelForCausalLM

    try:  # transformers gives HQQLinear a `weight` stub that some models read (.weight.dtype)
        import transformers.quantizers.quantizer_hqq  # noqa: F401
    except ImportError:
        pass

    tensors = _read_tensors(path)
    modules = _split_hqq_modules(tensors)
    if not modules:
        raise LoftqHqqError(f"loftq_hqq: no HQQ module (no '<module>.W_q' tensor) in {path}")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = _default_dtype(tensors, modules)

    config = AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # so that no quantizer runs: the modules are swapped in below
    dtype_kw = "dtype" if _version(transformers.__version__) >= (4, 56) else "torch_dtype"
    model = AutoModelForCausalLM.from_config(config, **{dtype_kw: dtype})

    # Non-quantized tensors, strictly: missing keys may only be the quantized modules' float weights
    # (replaced below) or aliases of loaded tensors (tied embeddings).
    result = model.load_state_dict(tensors, strict=False)
    aliases = {}
    for name, p in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
        aliases.setdefault(id(p), []).append(name)
    alias_of = {n: names for names in aliases.values() for n in names}
    missing = [
        k for k in result.missing_keys
        if k.rpartition(".")[0] not in modules and not any(a in tensors for a in alias_of.get(k, []))
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {', '.join(result.unexpected_keys[:4])})")
    if problems:
        raise LoftqHqqError(f"loftq_hqq: {path} does not match its config's model: tensors " + "; ".join(problems))
    model.to(device)  # before the swap: nn.Module.to does not move HQQLinear's meta

    for name, state in sorted(modules.items()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        if not isinstance(getattr(parent, child, None), torch.nn.Linear):
            raise LoftqHqqError(f"loftq_hqq: {name} holds HQQ tensors but is not a Linear module of this model")
        layer = HQQLinear(None, None, compute_dtype=dtype, device=device)
        layer.load_state_dict(state)  # decodes hqq's meta; pops the keys of `state`
        if isinstance(layer.bias, torch.Tensor):
            layer.bias = torch.nn.Parameter(layer.bias)  # as transformers' HQQ loader does
        setattr(parent, child, layer)
    return model.eval()


def main(argv):
    import argparse

    parser = argparse.ArgumentParser(description="Load an HQQ export and print its HQQ layers (smoke check).")
    parser.add_argument("dir")
    parser.add_argument("--dtype", default=None, help="e.g. float32, bfloat16 (default: the checkpoint's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        read_hqq_config(args.dir)
        _check_stack()
        import torch

        dtype = getattr(torch, args.dtype) if args.dtype else None
        model = load_model(args.dir, dtype=dtype, device=args.device)
    except LoftqHqqError as e:
        print(e, file=sys.stderr)
        return 2
    from hqq.core.quantize import HQQLinear

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, HQQLinear)]
    by_bits = {}
    for name, layer in layers:
        meta = layer.meta
        by_bits[meta["nbits"]] = by_bits.get(meta["nbits"], 0) + 1
        print(f"{name}: {meta['nbits']} bits, group {meta['group_size']}, {tuple(meta['shape'])}, {layer.compute_dtype}")
    summary = ", ".join(f"{c} at {b} bits" for b, c in sorted(by_bits.items()))
    vocab = model.config.vocab_size
    with torch.no_grad():
        logits = model(torch.arange(8, device=args.device)[None] % vocab).logits
    print(f"{len(layers)} HQQ layers ({summary}); logits {tuple(logits.shape)} {logits.dtype}, "
          f"finite: {bool(torch.isfinite(logits).all())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
