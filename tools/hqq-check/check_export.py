"""One stage of check_export.sh, run inside the chroot (see check_export.sh for usage).

    python3 check_export.py v4 DIR ORIG RESULT.pt    # transformers 4.57 + PEFT 0.17
    python3 check_export.py v5 DIR ORIG RESULT.pt V4_RESULT.pt   # transformers 5.x + PEFT 0.20, compares with v4

v4: (a) AutoModelForCausalLM.from_pretrained(DIR, dtype=<checkpoint dtype>, device_map="cpu") -> HQQLinear count,
    nbits per module, logits on fixed tokens (a bf16 checkpoint is cast with model.to(cpu, bf16) first: transformers
    4.57 builds its HQQ layers in float32 and cannot run them on bf16 activations otherwise); DIR/loftq_hqq.py's
    load_model on 4.57 too, logits compared.
v5: (b) DIR/loftq_hqq.py load_model(DIR) -> same logits as v4 (asserted equal).
both: (c) PeftModel.from_pretrained(model, DIR/loftq_init, is_trainable=True), forward, and per HQQ module
    ‖W − dequantize() − (alpha/r)·B·A‖_F / ‖W‖_F against ORIG's weights, next to DIR/loftq-report.json's relError.
Prints a summary; exit status 1 when a check fails.
"""
import importlib.util
import json
import os
import sys

import torch
import transformers
from hqq.core.quantize import HQQLinear
from peft import PeftModel
from safetensors.torch import load_file

TOKENS = [int(t) for t in os.environ.get("TOKENS", "1,403,407,261,378,365,275,13,2,99,7,300").split(",")]
failures = []


def check(ok, what):
    print(("  ok    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)


def read_tensors(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.isfile(index) else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(load_file(os.path.join(d, f)))
    return out


def hqq_layers(model):
    return {n.replace("base_model.model.", "").replace(".base_layer", ""): m
            for n, m in model.named_modules() if isinstance(m, HQQLinear)}


def logits(model, vocab):
    ids = torch.tensor([[t % vocab for t in TOKENS]])
    with torch.no_grad():
        return model(input_ids=ids).logits.float().cpu()


def peft_errors(model, d, orig, report, table=True):
    """PEFT wraps the HQQ model; per module relError of dequantize() + scaling·B·A against the original weights."""
    pm = PeftModel.from_pretrained(model, os.path.join(d, "loftq_init"), is_trainable=True)
    wrapped = {n: m for n, m in pm.named_modules() if hasattr(m, "base_layer") and isinstance(m.base_layer, HQQLinear)}
    check(len(wrapped) == len(hqq_layers(model)), f"PEFT wraps {len(wrapped)} of {len(hqq_layers(model))} HQQ modules "
          f"({sorted({type(m).__name__ for m in wrapped.values()})})")
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    out = pm(input_ids=torch.tensor([[t % model.config.vocab_size for t in TOKENS]])).logits
    out.float().logsumexp(-1).mean().backward()
    grads = sum(1 for p in pm.parameters() if p.requires_grad and p.grad is not None)
    check(torch.isfinite(out).all().item() and grads > 0, f"PEFT forward + backward: {trainable} trainable, {grads} tensors got grads")
    errs = {}
    for n, m in wrapped.items():
        name = n.replace("base_model.model.", "")
        adapter = m.active_adapters[0]
        W = orig[name + ".weight"].double()
        BA = m.lora_B[adapter].weight.double() @ m.lora_A[adapter].weight.double()
        R = W - m.base_layer.dequantize().double() - m.scaling[adapter] * BA
        errs[name] = (R.norm() / W.norm()).item()
    worst = 0.0  # relative difference |e - report| / report
    if table:
        print(f"  {'module':44s} bits  relError(files)  report        rel. diff")
    for name, e in sorted(errs.items()):
        r = report.get(name + ".weight", {})
        rep = r.get("relError")
        diff = abs(e - rep) / max(abs(rep), 1e-30) if rep is not None else float("nan")
        worst = max(worst, diff) if rep is not None else worst
        if table:
            print(f"  {name:44s} {r.get('bits', '?'):>4}  {e:.9f}      " + (f"{rep:.9f}   {diff:.1e}" if rep is not None else "(no report)"))
    bad = sorted(n for n, e in errs.items() if not (e < 1.0))  # Q = B·A = 0 already gives 1
    check(not bad, f"every relError below 1 (1 = zero weights; above: {bad[:4]}{' …' if len(bad) > 4 else ''})")
    over = sorted(n for n, e in errs.items() if e > report.get(n + ".weight", {}).get("qloraRelError", float("inf")) * (1 + 1e-6))
    if over:
        print(f"  note  {len(over)} modules have relError above the report's qloraRelError (e.g. {over[:3]})")
    if report:
        check(worst <= 1e-5, f"relError from the files equals the report's for {len(errs)} modules "
              f"(max relative diff {worst:.1e}, tolerance 1e-5)")
    return out.detach().float(), errs


def main():
    stage, d, orig_dir, result = sys.argv[1:5]
    print(f"== {stage}: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"peft {importlib.import_module('peft').__version__}")
    cfg = json.load(open(os.path.join(d, "config.json")))
    dtype = getattr(torch, cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    rep_file = next((os.path.join(d, f) for f in ("loftq-report.json",) if os.path.isfile(os.path.join(d, f))), None)
    report = {m["name"]: m for m in json.load(open(rep_file)).get("matrices", [])} if rep_file else {}
    orig = {k: v for k, v in read_tensors(orig_dir).items()}
    orig = {k: v.to(dtype) for k, v in orig.items()}  # W as the run saw it: the input in the checkpoint's dtype
    spec = importlib.util.spec_from_file_location("loftq_hqq", os.path.join(d, "loftq_hqq.py"))
    loftq_hqq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loftq_hqq)
    vocab = cfg["vocab_size"]
    res = {}
    if stage == "v4":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, device_map="cpu")
        if dtype != torch.float32:
            model.to(device="cpu", dtype=dtype)
        layers = hqq_layers(model)
        bits = {n: l.meta["nbits"] for n, l in layers.items()}
        hist = {b: list(bits.values()).count(b) for b in sorted(set(bits.values()))}
        print(f"  (a) from_pretrained: {len(layers)} HQQLinear, by bits {hist}, compute dtype "
              f"{sorted({str(l.compute_dtype) for l in layers.values()})}")
        if report:
            wrong = [n for n, b in bits.items() if report.get(n + ".weight", {}).get("bits") not in (None, b)]
            check(not wrong and len(layers) == len(report), f"HQQ modules and bits match loftq-report.json "
                  f"({len(report)} matrices; mismatched: {wrong[:4]})")
        res["bits"] = bits
        res["logits_from_pretrained"] = logits(model, vocab)
        lm = loftq_hqq.load_model(d).to(dtype)  # same cast as above (rounds the rotary buffer the same way)
        check(torch.equal(logits(lm, vocab), res["logits_from_pretrained"]),
              "loftq_hqq.load_model on 4.57 gives from_pretrained's logits exactly")
        res["peft_logits"], res["errors"] = peft_errors(model, d, orig, report)
    else:
        ref = torch.load(sys.argv[5])
        model = loftq_hqq.load_model(d).to(dtype)
        layers = hqq_layers(model)
        bits = {n: l.meta["nbits"] for n, l in layers.items()}
        check(bits == ref["bits"], f"(b) load_model: {len(layers)} HQQLinear, same modules and bits as 4.57")
        got = logits(model, vocab)
        check(torch.equal(got, ref["logits_from_pretrained"]),
              f"(b) logits equal to 4.57 from_pretrained's (max |diff| {(got - ref['logits_from_pretrained']).abs().max().item():.3g})")
        res["peft_logits"], res["errors"] = peft_errors(model, d, orig, report, table=False)
        check(torch.equal(res["peft_logits"], ref["peft_logits"]), "PEFT logits equal on 4.57 and 5.x")
        check(res["errors"] == ref["errors"], "per-module relErrors identical on 4.57 and 5.x")
    torch.save(res, result)
    print(f"== {stage}: {'FAILED: ' + '; '.join(failures) if failures else 'all checks passed'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
